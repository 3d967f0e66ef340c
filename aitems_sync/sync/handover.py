"""A first load's file, from the moment AiTEMS is asked to read it until the state store takes
its snapshot: shared by ``bootstrap`` (a file it wrote) and ``bootstrap --from`` (a file
another engine exported).

From the moment AiTEMS is asked (``POST /datasets/{id}`` with the file's ``osInfo``), it may
hold the file's rows whatever happens next, so the state store records the hand-over first
(:meth:`StateStore.begin_handover`): runs refuse the dataset meanwhile, and the next bootstrap
of the dataset finishes it (:meth:`FileHandover.settle`) or gives it up when AiTEMS's answer
proves it did not take the file. :func:`read_verdict` is the one rule for what AiTEMS's answer
says; :meth:`FileHandover.take` makes the snapshot the dataset's in one transaction
(:meth:`StateStore.adopt`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

from aitems_sync.errors import (
    AitemsSyncError,
    ApiError,
    HandoverPendingError,
    ObjectStorageError,
    SpecError,
)
from aitems_sync.spec.model import DatasetSpec, Spec
from aitems_sync.state.records import Boundary, Handover
from aitems_sync.state.store import Mark, StateStore
from aitems_sync.sync.fileload import staging_name
from aitems_sync.sync.schemacheck import SchemaCheck

log = logging.getLogger(__name__)

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

#: Said of a hand-over left unfinished: AiTEMS may have taken (or still take) the file.
UNFINISHED = ("; AiTEMS may have taken the file: run bootstrap again for this dataset to "
              "finish the hand-over (runs refuse the dataset until then)")


class DatasetApi(Protocol):
    """What bootstrap needs of the AiTEMS client."""

    def get_dataset(self, dataset_id: str) -> dict[str, Any]: ...

    def get_schema(self, schema_name: str) -> dict[str, Any]: ...

    def modify_dataset(self, dataset_id: str, *, dataset_type: str, name: str, schema_name: str,
                       bucket: str, key: str, region: str = "KR",
                       description: str = "") -> dict[str, Any]: ...

    def create_dataset(self, *, dataset_type: str, name: str, schema_name: str, bucket: str,
                       key: str, region: str = "KR", description: str = "") -> dict[str, Any]: ...


class FileNotRead(ObjectStorageError):
    """AiTEMS's answer proves it did not take the file: the hand-over is given up."""


class FileHandover:
    """One dataset's dealings with AiTEMS around a first load's file, for a bootstrap that
    holds the dataset's lease and its staging's (``run_id``). A dataset without a
    ``dataset_id`` (named in the spec, not created yet) is created from the file; ``dataset``
    then holds the new id."""

    def __init__(self, spec: Spec, dataset: DatasetSpec, state: StateStore, api: DatasetApi, *,
                 run_id: str, ready_timeout: float, poll_seconds: float,
                 stop: threading.Event) -> None:
        self.spec, self.dataset, self.state, self.api = spec, dataset, state, api
        self.run_id, self.ready_timeout, self.poll_seconds = run_id, ready_timeout, poll_seconds
        self.stop = stop

    def remote(self) -> dict[str, Any] | None:
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

    def refuse_if_reading(self, remote: Mapping[str, Any] | None) -> None:
        """A dataset reading another file now cannot be asked to read ours."""
        if remote is not None and remote.get("status") in READING:
            raise ObjectStorageError(
                f"AiTEMS dataset {self.dataset.dataset_id} is reading a file now (status "
                f"{remote.get('status')!r}); wait until it is done, then run bootstrap again")

    def check_schema(self) -> None:
        """The spec's fields against the AiTEMS schema, before AiTEMS is asked to read a file:
        the file's header must match it in name, order and case, or AiTEMS refuses it."""
        if not self.dataset.dataset_id:  # created with the schema that holds its fields
            return
        problems, warnings = SchemaCheck(self.api).problems(self.spec, self.dataset)
        for warning in warnings:
            log.warning("%s", warning, extra={"event": "schema_warning",
                                              "dataset": self.dataset.name})
        if problems:
            raise SpecError(problems)

    def settle(self, pending: Handover, remote: Mapping[str, Any] | None,
               bucket: str) -> str | None:
        """An earlier bootstrap's hand-over: the file's ``s3://`` URL once AiTEMS has read it
        (waiting while it reads; the caller then takes the snapshot), None when AiTEMS proves
        it did not take it (the record is removed: start afresh), HandoverPendingError when
        AiTEMS's answer says neither. ``bucket``: the file's, unless AiTEMS names it. With no
        dataset (``remote`` None: the one created then is not found) it is given up."""
        name = self.dataset.name
        os_info = (remote or {}).get("osInfo") or {}
        if os_info.get("key") == pending.object_key and os_info.get("bucket"):
            bucket = str(os_info["bucket"])
        file = f"s3://{bucket}/{pending.object_key}"
        verdict = "not read" if remote is None else read_verdict(
            remote, pending.object_key, reading=False, waited=READ_GRACE_SECONDS)
        if pending.aitems_dataset_id != self.dataset.dataset_id or verdict == "not read":
            log.warning("dataset %s: AiTEMS did not take the file of bootstrap %s (%s, status "
                        "%s): giving that hand-over up", name, pending.run_id, file,
                        (remote or {}).get("status"),
                        extra={"event": "bootstrap_given_up", "dataset": name})
            self.state.end_handover(name, run_id=self.run_id)
            return None
        if verdict is None:
            raise HandoverPendingError(
                f"dataset {name}: AiTEMS dataset {self.dataset.dataset_id} is in status "
                f"{(remote or {}).get('status')!r}, which says neither that it read {file} "
                f"(bootstrap "
                f"{pending.run_id}) nor that it refused it: check the dataset in the NCP "
                "console, then run bootstrap again")
        log.info("dataset %s: finishing the hand-over of bootstrap %s (%s)", name,
                 pending.run_id, file, extra={"event": "bootstrap_resumed", "dataset": name})
        if verdict == "reading":
            self.wait(file, pending.object_key, reading=True)
        return file

    def ask(self, remote: Mapping[str, Any] | None, *, bucket: str, key: str,
            mark: Mark | None, boundary: Boundary | None, identity: Sequence[str]) -> None:
        """Record the hand-over, point the AiTEMS dataset at ``s3://bucket/key`` (create it
        from the file when ``remote`` is None) and wait until it has read it. The record is
        removed only when AiTEMS's answer proves it did not take the file (FileNotRead); any
        other failure keeps it for the next bootstrap."""
        dataset_id, file = self.dataset.dataset_id, f"s3://{bucket}/{key}"
        self.state.begin_handover(
            self.dataset.name, run_id=self.run_id, aitems_dataset_id=dataset_id,
            object_key=key, mark=mark, boundary=boundary, identity=identity)
        try:
            if remote is None:
                answer = self._create(bucket, key)
                dataset_id = self.dataset.dataset_id
            else:
                answer = self.api.modify_dataset(
                    dataset_id, dataset_type=self.dataset.type,
                    name=str(remote.get("name", "")),
                    schema_name=str(remote.get("schemaName", "")), bucket=bucket, key=key,
                    region="KR", description=str(remote.get("description") or ""))
        except ApiError as error:
            # Kept even when refused: only the dataset's own answer, read by the next bootstrap,
            # tells whether AiTEMS took the file (an error may follow a modify that landed).
            raise type(error)(f"AiTEMS answered the modify of dataset {dataset_id} (to read "
                              f"{file}) with an error: {error}{UNFINISHED}") from error
        self.wait(file, key, reading=answer.get("status") in READING)

    def _create(self, bucket: str, key: str) -> dict[str, Any]:
        """Create the AiTEMS dataset from the file, under the spec's ``dataset_name`` and the
        schema chosen for its fields. A bootstrap killed before the hand-over is recorded with
        the new id leaves a dataset the next one finds by name and loads afresh."""
        answer = self.api.create_dataset(
            dataset_type=self.dataset.type, name=str(self.dataset.dataset_name),
            schema_name=str(self.dataset.schema_name), bucket=bucket, key=key,
            region="KR", description=self.dataset.description)
        created = str(answer.get("datasetId") or "")
        if not created:
            raise ObjectStorageError(f"AiTEMS created dataset {self.dataset.dataset_name} "
                                     "without answering its datasetId")
        log.info("dataset %s: created AiTEMS dataset %s (%s)", self.dataset.name, created,
                 self.dataset.dataset_name, extra={"event": "dataset_created",
                                                   "dataset": self.dataset.name})
        self.dataset = replace(self.dataset, dataset_id=created)
        return answer

    def wait(self, file: str, key: str, *, reading: bool) -> None:
        """Poll until AiTEMS has read the file; a proof it did not ends the hand-over."""
        try:
            wait_until_read(self.api, self.dataset.dataset_id, timeout=self.ready_timeout,
                            poll=self.poll_seconds, stop=self.stop, file=file, key=key,
                            reading=reading)
        except FileNotRead:
            self.state.end_handover(self.dataset.name, run_id=self.run_id)
            raise
        except AitemsSyncError as error:
            raise type(error)(f"{error}{UNFINISHED}") from error

    def take(self, mark: Mark | None, boundary: Boundary | None,
             identity: Sequence[str]) -> None:
        """Make the snapshot (and what the staging holds) the dataset's, in one transaction,
        ending the hand-over; a file without rows (``mark`` None) leaves no mark."""
        name = self.dataset.name
        if mark is None:  # an empty file: a run reads everything from the start
            self.state.reset(name)
            self.state.discard(staging_name(name))
            return
        binding = (self.spec.aitems.service_id, self.dataset.dataset_id)
        self.state.adopt(name, staging_name(name), run_id=self.run_id, mark=mark,
                         boundary=boundary, binding=binding, identity=identity)
        self.state.discard(staging_name(name))


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
