"""``bootstrap``: a dataset's first full load, through Object Storage, handed over to ``run``.

For each dataset, holding its lease (no run or other bootstrap writes it meanwhile):

1. unfinished multipart uploads a killed bootstrap left under the dataset's prefix
   (``<prefix><service id>/<dataset>/``) are aborted;
2. the whole query is written as one gzip CSV, streamed by multipart upload while it is read
   (:class:`~aitems_sync.sync.fileload.FileLoad`; flat memory, no temporary file);
3. the AiTEMS dataset is modified to read it (``POST /datasets/{id}`` with its ``osInfo``), and
   polled until it is ``enable`` (or fails, or the timeout passes);
4. only then the state store takes the snapshot's mark, boundary, ledger and quarantine, in
   one transaction (:meth:`StateStore.adopt`), so the next ``run`` sends what changed after it.

A failure or a signal before step 4 moves nothing: the upload is aborted (or, after kill -9,
by the next bootstrap), the staging is discarded by the next bootstrap, and the dataset can be
bootstrapped again. Steps 3 and 4 are :mod:`aitems_sync.sync.handover`'s, shared with
``bootstrap --from`` (:mod:`aitems_sync.sync.register`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from aitems_sync.errors import (
    EXIT_LOCKED,
    AitemsSyncError,
    ExportError,
    InvalidRowsError,
    LockHeldError,
    ObjectStorageError,
    SpecError,
    SpecProblem,
)
from aitems_sync.objectstorage.upload import GzipWriter, MultipartUpload, abort_unfinished
from aitems_sync.source.extract import Source
from aitems_sync.spec.model import DatasetSpec, ObjectStorageConfig, Spec
from aitems_sync.state.records import Boundary
from aitems_sync.state.store import Mark, StateStore
from aitems_sync.sync.fileload import FileLoad, Snapshot, staging_name
from aitems_sync.sync.handover import POLL_SECONDS, DatasetApi, FileHandover
from aitems_sync.sync.leases import Leases
from aitems_sync.sync.report import FAILED, INTERRUPTED, INVALID, OK, null_cursor_message

log = logging.getLogger(__name__)

#: How long AiTEMS may take to read a file before bootstrap gives up waiting (seconds).
READY_TIMEOUT_SECONDS = 6 * 3600.0


@dataclass
class DatasetLoad:
    """One dataset's bootstrap, as reported."""

    dataset: str
    status: str = OK
    dataset_id: str = ""  # the AiTEMS dataset (created by this bootstrap when it had none)
    rows: int | None = 0  # in the file; None: not known (a file registered with --from)
    invalid: int = 0
    file: str = ""  # s3://bucket/key
    file_bytes: int = 0
    null_cursor: int = 0  # rows left out: their cursor is NULL
    seconds: float = 0.0
    error: str | None = None
    spec_error: bool = False  # failed on a mistake in the spec or the export (exit 2)
    mark: str | None = None  # the cursor value of the mark handed over

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "status": self.status, "dataset_id": self.dataset_id,
                "rows": self.rows,
                "invalid": self.invalid, "null_cursor": self.null_cursor, "file": self.file,
                "file_bytes": self.file_bytes, "seconds": self.seconds, "error": self.error,
                "spec_error": self.spec_error, "mark": self.mark}


def shown_cursor(value: Any) -> str:
    """A cursor value as the report shows it (ISO 8601 for dates and datetimes)."""
    return value.isoformat() if isinstance(value, date) else str(value)


#: A dataset's status when another run held its lease.
LOCKED = "locked"


@dataclass
class BootstrapReport:
    run_id: str
    datasets: list[DatasetLoad] = field(default_factory=list)
    # The exit code of the signal that stopped the bootstrap (143, 130), if one did.
    interrupted_exit_code: int | None = None

    @property
    def exit_code(self) -> int:
        """The signal's code when one stopped it; else 2 when a dataset failed on a spec
        mistake, 1 when one failed otherwise, 75 when another run held one, 3 when one had
        too many invalid rows, 0 when all went well."""
        if self.interrupted_exit_code is not None:
            return self.interrupted_exit_code
        if any(d.spec_error for d in self.datasets):
            return 2
        statuses = {d.status for d in self.datasets}
        if FAILED in statuses or INTERRUPTED in statuses:
            return 1
        if LOCKED in statuses:
            return EXIT_LOCKED
        return 3 if INVALID in statuses else 0

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "exit_code": self.exit_code,
                "datasets": [d.to_dict() for d in self.datasets]}


@dataclass(frozen=True)
class BootstrapSettings:
    run_id: str
    lease_ttl: float = 60.0
    # Seconds to wait for a lease another run holds (math.inf: no limit); None: fail at once.
    wait: float | None = None
    ready_timeout: float = READY_TIMEOUT_SECONDS
    poll_seconds: float = POLL_SECONDS
    chunk_rows: int = 5000


def object_storage_of(spec: Spec) -> ObjectStorageConfig:
    """The spec's object_storage, or the spec error that says to add one."""
    if spec.object_storage is None:
        raise SpecError([SpecProblem(
            str(spec.path), None, "object_storage",
            "bootstrap writes each dataset's first load to Object Storage: add an "
            "object_storage section with the bucket (object_storage: {bucket: NAME})")])
    return spec.object_storage


def bootstrap(
    spec: Spec, datasets: Sequence[DatasetSpec], *, state: StateStore,
    sources: Mapping[str, Source], api: DatasetApi, storage: Any, settings: BootstrapSettings,
    stop: threading.Event | None = None,
) -> BootstrapReport:
    """Bootstrap each dataset in turn (see the module docstring); never raises for one
    dataset's failure: its report says what happened."""
    where = object_storage_of(spec)
    report = BootstrapReport(settings.run_id)
    stop = stop or threading.Event()
    for dataset in datasets:
        load = DatasetLoad(dataset.name, dataset_id=dataset.dataset_id)
        report.datasets.append(load)
        attempt(spec, load, stop, _Load(spec, dataset, where, state, sources[dataset.source],
                                        api, storage, settings, stop, load).run)
    return report


def attempt(spec: Spec, load: DatasetLoad, stop: threading.Event,
            action: Callable[[], None]) -> None:
    """Run one dataset's bootstrap, its outcome (or why it failed) recorded in ``load``."""
    if stop.is_set():
        load.status, load.error = INTERRUPTED, "not started: stopped by a signal"
        return
    started = time.monotonic()
    try:
        action()
    except LockHeldError as error:  # another run holds the dataset: exit 75, as run does
        load.status, load.error = LOCKED, str(error)
    except SpecError as error:
        located = [spec.locate(p) if p.line is None else p for p in error.problems]
        load.status, load.error, load.spec_error = FAILED, str(SpecError(located)), True
    except ExportError as error:
        load.status, load.error, load.spec_error = FAILED, str(error), True
    except InvalidRowsError as error:
        load.status, load.error = INVALID, str(error)
    except AitemsSyncError as error:
        load.status = INTERRUPTED if stop.is_set() else FAILED
        load.error = str(error)
    finally:
        load.seconds = round(time.monotonic() - started, 3)
    if load.error:
        log.error("dataset %s: %s", load.dataset, load.error,
                  extra={"event": "bootstrap_failed", "dataset": load.dataset})


class _Load:
    """One dataset's bootstrap."""

    def __init__(self, spec: Spec, dataset: DatasetSpec, where: ObjectStorageConfig,
                 state: StateStore, source: Source, api: DatasetApi, storage: Any,
                 settings: BootstrapSettings, stop: threading.Event, load: DatasetLoad) -> None:
        self.dataset, self.where, self.state, self.source = dataset, where, state, source
        self.storage, self.settings, self.stop, self.load = storage, settings, stop, load
        self.aitems = FileHandover(spec, dataset, state, api, run_id=settings.run_id,
                                   ready_timeout=settings.ready_timeout,
                                   poll_seconds=settings.poll_seconds, stop=stop)
        self.prefix = upload_prefix(where, _service_of(spec), dataset.name)
        self.key = f"{self.prefix}{settings.run_id}.csv.gz"

    def run(self) -> None:
        self.aitems.remote()  # the dataset's type, before waiting for a lease
        # The dataset's lease keeps runs and other bootstraps off it; its staging's, a bootstrap
        # that stalled and lost them off the staging this one writes.
        leases = Leases(self.state, [self.dataset.name, staging_name(self.dataset.name)],
                        self.settings.run_id, self.settings.lease_ttl)
        if not leases.acquire(wait=self.settings.wait, stop=self.stop):
            raise ObjectStorageError("stopped by a signal while waiting for the dataset's "
                                     "lease: nothing was done")
        try:
            remote = self.aitems.remote()  # again: the lease may have been waited for
            pending = self.state.handover(self.dataset.name)
            if pending is not None:
                file = self.aitems.settle(pending, remote, self.where.bucket)
                if file is not None:  # AiTEMS read that file: its snapshot, no new file
                    self.load.file = file
                    self._take(pending.mark, pending.boundary, pending.identity)
                    return
            self.aitems.refuse_if_reading(remote)
            self.aitems.check_schema()
            snapshot = self._write_file()
            leases.check(self.dataset.name)  # a run past its lease asks AiTEMS nothing
            self.aitems.ask(remote, bucket=self.where.bucket, key=self.key, mark=snapshot.mark,
                            boundary=snapshot.boundary, identity=snapshot.identity)
            leases.check(self.dataset.name)
            self._take(snapshot.mark, snapshot.boundary, snapshot.identity)
        finally:
            self.load.dataset_id = self.aitems.dataset.dataset_id  # created, if it had none
            leases.release()

    def _take(self, mark: Mark | None, boundary: Boundary | None,
              identity: Sequence[str]) -> None:
        self.aitems.take(mark, boundary, identity)
        self.load.mark = None if mark is None else shown_cursor(mark.cursor)

    def _write_file(self) -> Snapshot:
        bucket = self.where.bucket
        abort_unfinished(self.storage, bucket, self.prefix)
        self.load.file = f"s3://{bucket}/{self.key}"
        log.info("dataset %s: writing its first load to %s", self.dataset.name, self.load.file,
                 extra={"event": "bootstrap_file", "dataset": self.dataset.name})
        with MultipartUpload(self.storage, bucket, self.key) as upload:
            gzip = GzipWriter(upload)
            snapshot = FileLoad(self.dataset, self.source, self.state,
                                run_id=self.settings.run_id, chunk_rows=self.settings.chunk_rows,
                                stop=self.stop, fenced=True).write(gzip)
            gzip.close()
            upload.complete()
            self.load.file_bytes = upload.bytes_written
        self.load.rows, self.load.invalid = snapshot.rows, snapshot.invalid
        self.load.null_cursor = snapshot.null_cursor
        if snapshot.null_cursor:
            log.warning("dataset %s: %s", self.dataset.name,
                        null_cursor_message(snapshot.null_cursor, self.dataset.cursor),
                        extra={"event": "null_cursor", "dataset": self.dataset.name})
        return snapshot


def upload_prefix(where: ObjectStorageConfig, service_id: str, dataset: str) -> str:
    """Where a dataset's bootstrap files go: ``<prefix><service id>/<dataset>/``. The service
    id keeps two environments (their specs name other services) that share a bucket and a
    prefix apart: neither aborts, nor is mistaken for, the other's uploads."""
    return f"{where.prefix}{service_id}/{dataset}/"


def _service_of(spec: Spec) -> str:
    """The service id, or, where it is not known (a replacement of ``apply`` before the service
    is found), the service's name: a part of the key either way."""
    return spec.aitems.service_id or (spec.service.name if spec.service else "") or "_"
