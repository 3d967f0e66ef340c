"""What takes time in the emulator: dataset ingests and interval services' trains, on threads.

The model decides every transition (``model.py``); this module waits between them and reads the
files. An ingest: the dataset is ``waiting`` for ``ingest_seconds``, then ``processing`` while the
file is read and checked and for ``ingest_seconds`` more, then ``enable`` (the file's rows are
the dataset's rows) or ``failed`` (``statusReason`` says why). A running schedule starts a train
at once and then one every term (an emulated hour lasts ``hour_seconds``); each train runs for
``train_seconds``. `stop` ends every thread; what it cut short is failed at the next start-up
(`Model.recover`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aitems_sync.emulator.content import Document
from aitems_sync.emulator.csvfile import FileRejected, read_rows
from aitems_sync.emulator.model import Model
from aitems_sync.emulator.objects import IngestJob
from aitems_sync.emulator.objectstorage import ObjectReader, ObjectStorage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timing:
    """How long the emulator's slow things take, in real seconds."""

    ingest_seconds: float = 1.0  # each of waiting and processing lasts at least this
    hour_seconds: float = 3600.0  # one emulated hour of an interval term
    train_seconds: float = 1.0  # how long a train runs


#: The statusReason of a dataset an emulator without Object Storage created or modified: it is
#: enable, but no file was read (so that a client can tell; bootstrap does).
NOT_READ = "no file read: the emulator runs without --object-storage"


class Lifecycle:
    """Starts ingests and schedules for the API calls that need them, and stops them all."""

    def __init__(
        self, model: Model, keys: Mapping[str, str], storage: ObjectStorage | None = None,
        timing: Timing = Timing(),
    ) -> None:
        self.model = model
        self.keys = keys  # the emulator's key pairs: an ingest reads with the caller's
        self.storage = storage
        self._reader = ObjectReader(storage) if storage is not None else None
        self.timing = timing
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._cancels: dict[str, threading.Event] = {}  # per service with a running schedule

    # -- the API calls that start something ----------------------------------------------------

    def create_dataset(self, body: Any, access_key: str) -> Document:
        """``POST /datasets``: with Object Storage, the file is ingested; without, ``enable``."""
        dataset = self.model.create_dataset(body, ingest=self.storage is not None,
                                            unread=NOT_READ)
        self._ingest_later(dataset, access_key)
        return dataset

    def modify_dataset(self, dataset_id: str, body: Any, access_key: str) -> Document:
        """``POST /datasets/{datasetId}``: the file is ingested again (with Object Storage)."""
        dataset = self.model.modify_dataset(dataset_id, body, ingest=self.storage is not None,
                                            unread=NOT_READ)
        self._ingest_later(dataset, access_key)
        return dataset

    def set_schedule(self, service_id: str, action: str | None) -> Document:
        """``PUT /services/{serviceId}/schedule?action=start|stop``."""
        service, started = self.model.set_schedule(service_id, action)
        if started:
            self._run_schedule(service_id)
        elif action == "stop":
            with self._lock:
                cancel = self._cancels.pop(service_id, None)
            if cancel is not None:
                cancel.set()
        return service

    def resume(self) -> None:
        """At start-up: fail what the last process left unfinished, go on with schedules."""
        for service_id in self.model.recover():
            self._run_schedule(service_id)

    def stop(self, timeout: float = 5.0) -> None:
        """End every thread (an ingest reading a file is waited for up to ``timeout``)."""
        self._closing.set()
        with self._lock:
            for cancel in self._cancels.values():
                cancel.set()
            threads = list(self._threads)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # -- threads -------------------------------------------------------------------------------

    def _start(self, name: str, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _ingest_later(self, dataset: Document, access_key: str) -> None:
        if self.storage is not None:
            credentials = (access_key, self.keys.get(access_key, ""))
            self._start(f"ingest-{dataset['datasetId']}", self._ingest, dataset["datasetId"],
                        credentials)

    def _ingest(self, dataset_id: str, credentials: tuple[str, str]) -> None:
        if self._closing.wait(self.timing.ingest_seconds):
            return
        job = self.model.begin_ingest(dataset_id)
        if job is None:
            return
        rows, reason = self._read(job, credentials)
        if self._closing.wait(self.timing.ingest_seconds):
            return
        self.model.finish_ingest(dataset_id, rows, reason)

    def _read(
        self, job: IngestJob, credentials: tuple[str, str]
    ) -> tuple[list[Document] | None, str | None]:
        assert self._reader is not None  # only called with Object Storage
        try:
            rows = self._reader.read(job.os_info, credentials, lambda stream, gz: read_rows(
                stream, gz, job.schema, job.dataset_type))
        except FileRejected as rejected:
            log.info("dataset %s failed: %s", job.dataset_id, rejected.reason)
            return None, rejected.reason
        except Exception:  # a bug: the dataset still ends, and the traceback goes to the log
            log.exception("the ingest of dataset %s failed", job.dataset_id)
            return None, "the emulator failed to read the file; see its log"
        return rows, None

    def _run_schedule(self, service_id: str) -> None:
        cancel = threading.Event()
        with self._lock:
            self._cancels[service_id] = cancel
        if self._closing.is_set():
            cancel.set()
        self._start(f"schedule-{service_id}", self._schedule, service_id, cancel)

    def _schedule(self, service_id: str, cancel: threading.Event) -> None:
        next_at = time.monotonic()
        while not cancel.is_set():
            train_id = self.model.start_train(service_id)
            if train_id is None:
                return
            term = self.model.term_hours(service_id) * self.timing.hour_seconds
            next_at += term
            if self._closing.wait(self.timing.train_seconds):
                return
            self.model.finish_train(service_id, train_id)
            # A train starts every term, or when the previous one ends if that is later.
            if cancel.wait(max(0.0, next_at - time.monotonic())):
                return
            next_at = max(next_at, time.monotonic())
