"""One sync run: lock, extract, shape, diff against the ledger, batch, upload, commit, report.

The engine wires the adapters (source, state store, uploader) and the pure pieces (shape,
delta, delivery). Its commit rule is the product's promise: a batch's ledger entries, its
quarantine records and the mark after its last row are written in one transaction, only after
AiTEMS acknowledged the batch and every earlier batch of the dataset has committed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aitems_sync.dataset_sync import DatasetSync, SyncSettings
from aitems_sync.delivery import Target, Uploader
from aitems_sync.errors import (
    AitemsSyncError,
    AuthError,
    InvalidRowsError,
    LockHeldError,
    UsageError,
)
from aitems_sync.report import FAILED, INTERRUPTED, INVALID, DatasetReport, RunReport
from aitems_sync.source import Source
from aitems_sync.spec import DatasetSpec, Spec
from aitems_sync.state import StateStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    """How to run: which datasets, and the knobs the CLI exposes."""

    datasets: tuple[str, ...] = ()
    full_refresh: bool = False
    lease_ttl: float = 60.0  # seconds; a killed run's lease is taken over after this
    chunk_rows: int = 1000  # rows read and diffed against the ledger at a time
    mark_every: int = 10_000  # rows after which a stretch with nothing to send commits its mark


def select_datasets(spec: Spec, names: Sequence[str]) -> list[DatasetSpec]:
    """The datasets to sync, in spec order; unknown names are a usage error."""
    unknown = [n for n in names if n not in spec.datasets]
    if unknown:
        known = ", ".join(spec.datasets) or "(none)"
        raise UsageError(f"unknown dataset {', '.join(unknown)}: the spec defines {known}")
    return [d for name, d in spec.datasets.items() if not names or name in names]


def new_run_id() -> str:
    """Sortable and unique: UTC time of the start plus a random suffix."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def run(
    spec: Spec,
    *,
    state: StateStore,
    uploader: Uploader,
    sources: Mapping[str, Source],
    options: RunOptions = RunOptions(),
    stop: threading.Event | None = None,
    run_id: str | None = None,
) -> RunReport:
    """Sync the selected datasets once and report what happened; see ``RunReport.exit_code``.

    Raises LockHeldError (exit 75) when another run holds one of the datasets, before any work.
    """
    selected = select_datasets(spec, options.datasets)
    run_id = run_id or new_run_id()
    stop = stop or threading.Event()
    report = RunReport(run_id=run_id)
    leases = Leases(state, [d.name for d in selected], run_id, options.lease_ttl, stop)
    leases.acquire()
    try:
        state.begin_run(
            run_id, datasets=[d.name for d in selected], host=socket.gethostname(),
            pid=os.getpid(),
        )
        _run_datasets(spec, selected, state, uploader, sources, options, stop, report)
    finally:
        leases.release()
        state.end_run(run_id, status=report.status, summary=report.to_dict())
    return report


def _run_datasets(
    spec: Spec, selected: Sequence[DatasetSpec], state: StateStore, uploader: Uploader,
    sources: Mapping[str, Source], options: RunOptions, stop: threading.Event, report: RunReport,
) -> None:
    fatal: AitemsSyncError | None = None
    for dataset in selected:
        if fatal is not None or stop.is_set():
            reason = f"not run: {fatal}" if fatal else "not run: stopped by a signal"
            report.datasets.append(
                DatasetReport(dataset.name, status=FAILED if fatal else INTERRUPTED, error=reason)
            )
            continue
        dataset_report = DatasetReport(dataset.name)
        report.datasets.append(dataset_report)
        settings = SyncSettings(
            run_id=report.run_id,
            target=Target(spec.aitems.service_id, dataset.dataset_id, dataset.type),
            batch=spec.aitems.batch,
            full_refresh=options.full_refresh,
            chunk_rows=options.chunk_rows,
            mark_every=options.mark_every,
        )
        try:
            DatasetSync(dataset, settings, state, uploader, sources[dataset.source], stop,
                        dataset_report).run()
        except AuthError as error:
            fatal = error  # the same keys fail every dataset: stop the run
            _record_failure(dataset_report, error, FAILED)
        except InvalidRowsError as error:
            _record_failure(dataset_report, error, INVALID)
        except AitemsSyncError as error:
            _record_failure(dataset_report, error, FAILED)


def _record_failure(report: DatasetReport, error: AitemsSyncError, status: str) -> None:
    report.status = status
    report.error = str(error)
    log.error("dataset %s stopped: %s", report.dataset, error,
              extra={"event": "dataset_failed", "dataset": report.dataset})


class Leases:
    """The run's leases on its datasets, renewed in a background thread while the run lives.

    If a renewal finds the lease taken over (this process stalled past the expiry), the run is
    asked to stop so two runs never commit to one dataset.
    """

    def __init__(
        self, state: StateStore, datasets: Sequence[str], run_id: str, ttl: float,
        stop: threading.Event,
    ) -> None:
        self._state = state
        self._datasets = list(datasets)
        self._owner = run_id
        self._ttl = ttl
        self._stop = stop
        self._done = threading.Event()
        self._held: list[str] = []
        self._thread = threading.Thread(target=self._renew, name="lease-renewer", daemon=True)

    def acquire(self) -> None:
        host, pid = socket.gethostname(), os.getpid()
        try:
            for name in self._datasets:
                self._state.acquire_lease(name, owner=self._owner, host=host, pid=pid,
                                          ttl=self._ttl)
                self._held.append(name)
        except LockHeldError:
            self.release()
            raise
        self._thread.start()

    def _renew(self) -> None:
        while not self._done.wait(self._ttl / 3):
            for name in self._held:
                try:
                    still_ours = self._state.renew_lease(name, owner=self._owner, ttl=self._ttl)
                except AitemsSyncError as error:
                    log.warning("could not renew the lease on %s: %s", name, error)
                    continue
                if not still_ours:
                    log.error("lost the lease on %s to another run: stopping", name,
                              extra={"event": "lease_lost", "dataset": name})
                    self._stop.set()

    def release(self) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()
        for name in self._held:
            try:
                self._state.release_lease(name, owner=self._owner)
            except AitemsSyncError as error:  # it expires on its own; say so and go on
                log.warning("could not release the lease on %s: %s", name, error)
        self._held = []
