"""``bootstrap``: a dataset's first full load, through Object Storage, handed over to ``run``.

For each dataset, holding its lease (no run or other bootstrap writes it meanwhile):

1. unfinished multipart uploads a killed bootstrap left under the dataset's prefix are aborted;
2. the whole query is written as one gzip CSV, streamed by multipart upload while it is read
   (:class:`~aitems_sync.sync.fileload.FileLoad`; flat memory, no temporary file);
3. the AiTEMS dataset is modified to read it (``POST /datasets/{id}`` with its ``osInfo``), and
   polled until it is ``enable`` (or fails, or the timeout passes);
4. only then the state store takes the snapshot's mark, boundary, ledger and quarantine, in
   one transaction (:meth:`StateStore.adopt`), so the next ``run`` sends what changed after it.

A failure or a signal before step 4 moves nothing: the upload is aborted (or, after kill -9,
by the next bootstrap), the staging is discarded by the next bootstrap, and the dataset can be
bootstrapped again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from aitems_sync.errors import (
    EXIT_LOCKED,
    AitemsSyncError,
    ApiError,
    HandoverPendingError,
    InvalidRowsError,
    LockHeldError,
    ObjectStorageError,
    SpecError,
    SpecProblem,
)
from aitems_sync.objectstorage.upload import GzipWriter, MultipartUpload, abort_unfinished
from aitems_sync.source.extract import Source
from aitems_sync.spec.model import DatasetSpec, ObjectStorageConfig, Spec
from aitems_sync.state.records import Boundary, Handover
from aitems_sync.state.store import Mark, StateStore
from aitems_sync.sync.fileload import FileLoad, Snapshot, staging_name
from aitems_sync.sync.leases import Leases
from aitems_sync.sync.report import FAILED, INTERRUPTED, INVALID, OK, null_cursor_message
from aitems_sync.sync.schemacheck import SchemaCheck

log = logging.getLogger(__name__)

#: How long AiTEMS may take to read a file before bootstrap gives up waiting (seconds).
READY_TIMEOUT_SECONDS = 6 * 3600.0
#: Polls of a dataset while AiTEMS reads its file: the first soon, then each 1.5 times later,
#: up to POLL_SECONDS apart (a small file is seen ready at once, a large one costs few calls).
FIRST_POLL_SECONDS = 0.2
POLL_SECONDS = 10.0
#: The dataset statuses while AiTEMS reads a file, and when it has (aitems-api.md).
READING = ("waiting", "processing")
READY = "enable"
#: Statuses that say AiTEMS refused a file (the emulator's ``failed``; AiTEMS's undocumented).
FAILED_STATUSES = frozenset({"failed", "fail", "error"})
#: How long an ``enable`` with our file is awaited to be preceded by a reading status before
#: it counts as read anyway (AiTEMS may read a small file between two polls).
READ_GRACE_SECONDS = 30.0


class DatasetApi(Protocol):
    """What bootstrap needs of the AiTEMS client."""

    def get_dataset(self, dataset_id: str) -> dict[str, Any]: ...

    def get_schema(self, schema_name: str) -> dict[str, Any]: ...

    def modify_dataset(self, dataset_id: str, *, dataset_type: str, name: str, schema_name: str,
                       bucket: str, key: str, region: str = "KR",
                       description: str = "") -> dict[str, Any]: ...

    def create_dataset(self, *, dataset_type: str, name: str, schema_name: str, bucket: str,
                       key: str, region: str = "KR", description: str = "") -> dict[str, Any]: ...


@dataclass
class DatasetLoad:
    """One dataset's bootstrap, as reported."""

    dataset: str
    status: str = OK
    dataset_id: str = ""  # the AiTEMS dataset (created by this bootstrap when it had none)
    rows: int = 0  # in the file
    invalid: int = 0
    file: str = ""  # s3://bucket/key
    file_bytes: int = 0
    null_cursor: int = 0  # rows left out: their cursor is NULL
    seconds: float = 0.0
    error: str | None = None
    spec_error: bool = False  # failed on a mistake in the spec (exit 2)

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "status": self.status, "dataset_id": self.dataset_id,
                "rows": self.rows,
                "invalid": self.invalid, "null_cursor": self.null_cursor, "file": self.file,
                "file_bytes": self.file_bytes, "seconds": self.seconds, "error": self.error,
                "spec_error": self.spec_error}


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
        if stop.is_set():
            load.status, load.error = INTERRUPTED, "not started: stopped by a signal"
            continue
        started = time.monotonic()
        try:
            _Load(spec, dataset, where, state, sources[dataset.source], api, storage, settings,
                  stop, load).run()
        except LockHeldError as error:  # another run holds the dataset: exit 75, as run does
            load.status, load.error = LOCKED, str(error)
        except SpecError as error:
            located = [spec.locate(p) if p.line is None else p for p in error.problems]
            load.status, load.error, load.spec_error = FAILED, str(SpecError(located)), True
        except InvalidRowsError as error:
            load.status, load.error = INVALID, str(error)
        except AitemsSyncError as error:
            load.status = INTERRUPTED if stop.is_set() else FAILED
            load.error = str(error)
        finally:
            load.seconds = round(time.monotonic() - started, 3)
        if load.error:
            log.error("dataset %s: %s", dataset.name, load.error,
                      extra={"event": "bootstrap_failed", "dataset": dataset.name})
    return report


class _Load:
    """One dataset's bootstrap."""

    def __init__(self, spec: Spec, dataset: DatasetSpec, where: ObjectStorageConfig,
                 state: StateStore, source: Source, api: DatasetApi, storage: Any,
                 settings: BootstrapSettings, stop: threading.Event, load: DatasetLoad) -> None:
        self.spec, self.dataset, self.where = spec, dataset, where
        self.state, self.source, self.api, self.storage = state, source, api, storage
        self.settings, self.stop, self.load = settings, stop, load
        self.prefix = f"{where.prefix}{dataset.name}/"
        self.key = f"{self.prefix}{settings.run_id}.csv.gz"

    def run(self) -> None:
        remote = self._remote()
        # The dataset's lease keeps runs and other bootstraps off it; its staging's, a bootstrap
        # that stalled and lost them off the staging this one writes.
        leases = Leases(self.state, [self.dataset.name, staging_name(self.dataset.name)],
                        self.settings.run_id, self.settings.lease_ttl)
        if not leases.acquire(wait=self.settings.wait, stop=self.stop):
            raise ObjectStorageError("stopped by a signal while waiting for the dataset's "
                                     "lease: nothing was done")
        try:
            remote = self._remote()  # again: the lease may have been waited for
            pending = self.state.handover(self.dataset.name)
            if pending is not None and self._finish(pending, remote):
                return
            if remote is not None and remote.get("status") in READING:
                raise ObjectStorageError(
                    f"AiTEMS dataset {self.dataset.dataset_id} is reading a file now (status "
                    f"{remote.get('status')!r}); wait until it is done, then run bootstrap "
                    "again")
            self._check_schema()
            snapshot = self._write_file()
            leases.check(self.dataset.name)  # a run past its lease asks AiTEMS nothing
            self._have_aitems_read_it(remote, snapshot)
            leases.check(self.dataset.name)
            self._hand_over(snapshot.mark, snapshot.boundary, snapshot.identity)
        finally:
            leases.release()

    def _finish(self, pending: Handover, remote: Mapping[str, Any] | None) -> bool:
        """An earlier bootstrap's hand-over: taken once AiTEMS has read its file (True), given
        up when AiTEMS proves it did not take it (False: this bootstrap starts afresh), left
        pending (HandoverPendingError) when AiTEMS's answer says neither."""
        name, file = self.dataset.name, f"s3://{self.where.bucket}/{pending.object_key}"
        verdict = "not read" if remote is None else read_verdict(
            remote, pending.object_key, reading=False, waited=READ_GRACE_SECONDS)
        if (remote is None or pending.aitems_dataset_id != self.dataset.dataset_id
                or verdict == "not read"):
            log.warning("dataset %s: AiTEMS did not take the file of bootstrap %s (%s, status "
                        "%s): starting afresh", name, pending.run_id, file,
                        (remote or {}).get("status"),
                        extra={"event": "bootstrap_given_up", "dataset": name})
            self.state.end_handover(name, run_id=self.settings.run_id)
            return False
        if verdict is None:
            raise HandoverPendingError(
                f"dataset {name}: AiTEMS dataset {self.dataset.dataset_id} is in status "
                f"{remote.get('status')!r}, which says neither that it read {file} (bootstrap "
                f"{pending.run_id}) nor that it refused it: check the dataset in the NCP "
                "console, then run bootstrap again")
        log.info("dataset %s: finishing the hand-over of bootstrap %s (%s)", name,
                 pending.run_id, file, extra={"event": "bootstrap_resumed", "dataset": name})
        self.load.file = file
        if verdict == "reading":
            self._wait(file, pending.object_key, reading=True)
        self._hand_over(pending.mark, pending.boundary, pending.identity)
        return True

    def _check_schema(self) -> None:
        """The spec's fields against the AiTEMS schema, before anything is written: the file's
        header must match it in name, order and case, or AiTEMS refuses the whole file."""
        if not self.dataset.dataset_id:  # created with the schema that holds its fields
            return
        problems, warnings = SchemaCheck(self.api).problems(self.spec, self.dataset)
        for warning in warnings:
            log.warning("%s", warning, extra={"event": "schema_warning",
                                              "dataset": self.dataset.name})
        if problems:
            raise SpecError(problems)

    def _remote(self) -> dict[str, Any] | None:
        """The AiTEMS dataset, checked to be of the spec's type; None: it is to be created."""
        if not self.dataset.dataset_id:
            return None
        remote = self.api.get_dataset(self.dataset.dataset_id)
        if remote.get("type") != self.dataset.type:
            raise SpecError([self.spec.problem(
                ("datasets", self.dataset.name, "dataset_id"),
                f"AiTEMS dataset {self.dataset.dataset_id} is of type {remote.get('type')!r}, "
                f"the spec says {self.dataset.type!r}")])
        return remote

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

    def _have_aitems_read_it(self, remote: Mapping[str, Any] | None, snapshot: Snapshot) -> None:
        """Point the AiTEMS dataset at the file and wait until it has read it. From the moment
        it is asked until the snapshot is taken, the store records the hand-over (runs refuse
        the dataset meanwhile, and a bootstrap after a failure finishes it): it is given up only
        when AiTEMS's answer proves it did not take the file."""
        dataset_id, name = self.dataset.dataset_id, self.dataset.name
        self.state.begin_handover(
            name, run_id=self.settings.run_id, aitems_dataset_id=dataset_id,
            object_key=self.key, mark=snapshot.mark, boundary=snapshot.boundary,
            identity=snapshot.identity)
        try:
            if remote is None:
                answer = self._create(dataset_id)
                dataset_id = self.dataset.dataset_id
            else:
                answer = self.api.modify_dataset(
                    dataset_id, dataset_type=self.dataset.type, name=str(remote.get("name", "")),
                    schema_name=str(remote.get("schemaName", "")), bucket=self.where.bucket,
                    key=self.key, region="KR", description=str(remote.get("description") or ""))
        except ApiError as error:
            # Kept even when refused: only the dataset's own answer, read by the next bootstrap,
            # tells whether AiTEMS took the file (an error may follow a modify that landed).
            raise type(error)(f"AiTEMS answered the modify of dataset {dataset_id} (to read "
                              f"{self.load.file}) with an error: {error}{_UNFINISHED}"
                              ) from error
        self._wait(self.load.file, self.key, reading=answer.get("status") in READING)

    def _create(self, dataset_id: str) -> dict[str, Any]:
        """Create the AiTEMS dataset from the file, under the spec's ``dataset_name`` and the
        schema chosen for its fields. A bootstrap killed before the hand-over is recorded with
        the new id leaves a dataset the next one finds by name and loads afresh."""
        answer = self.api.create_dataset(
            dataset_type=self.dataset.type, name=str(self.dataset.dataset_name),
            schema_name=str(self.dataset.schema_name), bucket=self.where.bucket, key=self.key,
            region="KR", description=self.dataset.description)
        created = str(answer.get("datasetId") or "")
        if not created:
            raise ObjectStorageError(f"AiTEMS created dataset {self.dataset.dataset_name} "
                                     "without answering its datasetId")
        log.info("dataset %s: created AiTEMS dataset %s (%s)", self.dataset.name, created,
                 self.dataset.dataset_name, extra={"event": "dataset_created",
                                                   "dataset": self.dataset.name})
        self.dataset = replace(self.dataset, dataset_id=created)
        self.load.dataset_id = created
        return answer

    def _wait(self, file: str, key: str, *, reading: bool) -> None:
        try:
            wait_until_read(self.api, self.dataset.dataset_id,
                            timeout=self.settings.ready_timeout, poll=self.settings.poll_seconds,
                            stop=self.stop, file=file, key=key, reading=reading)
        except FileNotRead:
            self.state.end_handover(self.dataset.name, run_id=self.settings.run_id)
            raise
        except AitemsSyncError as error:
            raise type(error)(f"{error}{_UNFINISHED}") from error

    def _hand_over(self, mark: Mark | None, boundary: Boundary | None,
                   identity: Sequence[str]) -> None:
        name = self.dataset.name
        binding = (self.spec.aitems.service_id, self.dataset.dataset_id)
        if mark is None:  # an empty file: a run reads everything from the start
            self.state.reset(name)
            self.state.discard(staging_name(name))
            return
        self.state.adopt(name, staging_name(name), run_id=self.settings.run_id, mark=mark,
                         boundary=boundary, binding=binding, identity=identity)
        self.state.discard(staging_name(name))


#: Said of a hand-over left unfinished: AiTEMS may have taken (or still take) the file.
_UNFINISHED = ("; AiTEMS may have taken the file: run bootstrap again for this dataset to "
               "finish the hand-over (runs refuse the dataset until then)")


class FileNotRead(ObjectStorageError):
    """AiTEMS's answer proves it did not take the file: the hand-over is given up."""


def read_verdict(answer: Mapping[str, Any], key: str, *, reading: bool,
                 waited: float) -> str | None:
    """What a dataset's answer says of AiTEMS reading the file ``key`` (pure): ``"read"``,
    ``"reading"``, ``"not read"`` (it proves AiTEMS did not take the file), or None (it says
    nothing yet: poll again).

    ``reading``: a reading status was seen since the modify. An ``enable`` holding our key
    counts as read once reading was seen, or once READ_GRACE_SECONDS have passed without
    seeing it (AiTEMS read the file faster than the polls; its statuses are undocumented). An
    ``enable`` with a ``statusReason`` read nothing (the emulator without Object Storage says
    so); a status of FAILED is a refusal. Any other status says nothing.
    """
    status = str(answer.get("status", ""))
    ours = (answer.get("osInfo") or {}).get("key") in (None, key)
    if status in READING:
        return "reading" if ours else "not read"
    if status.lower() in FAILED_STATUSES:
        return "not read"
    if status == READY:
        if not ours or answer.get("statusReason"):
            return "not read"
        return "read" if reading or waited >= READ_GRACE_SECONDS else None
    return None


def wait_until_read(api: DatasetApi, dataset_id: str, *, timeout: float, poll: float,
                    stop: threading.Event, file: str, key: str, reading: bool = False,
                    clock: Callable[[], float] = time.monotonic) -> None:
    """Poll the dataset until AiTEMS has read the file (:func:`read_verdict`). FileNotRead when
    AiTEMS proves it did not take the file; ObjectStorageError when the timeout passes or
    ``stop`` is set (it may still read it: the hand-over stays pending)."""
    started = clock()
    deadline = started + timeout
    last = None
    delay = min(FIRST_POLL_SECONDS, poll)
    while True:
        answer = api.get_dataset(dataset_id)
        status = str(answer.get("status", ""))
        verdict = read_verdict(answer, key, reading=reading, waited=clock() - started)
        if verdict == "read":
            return
        if verdict == "not read":
            reason = answer.get("statusReason") or "AiTEMS gives no reason"
            raise FileNotRead(
                f"AiTEMS did not read {file} into dataset {dataset_id} (status {status!r}: "
                f"{reason}); fix what it says, then run bootstrap again")
        reading = reading or verdict == "reading"
        if status != last:
            log.info("dataset %s: AiTEMS is reading the file (%s)", dataset_id, status,
                     extra={"event": "bootstrap_status", "status": status})
            last = status
        if clock() >= deadline:
            raise ObjectStorageError(
                f"AiTEMS had not read {file} into dataset {dataset_id} after {timeout:g} s "
                f"(status {status!r}; raise --timeout if it needs longer)")
        if stop.wait(min(delay, max(0.0, deadline - clock()))):
            raise ObjectStorageError(
                f"stopped while AiTEMS was reading {file} into dataset {dataset_id}")
        delay = min(delay * 1.5, poll)
