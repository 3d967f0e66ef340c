"""One sync run: lock, extract, shape, diff against the ledger, batch, upload, commit, report.

The engine wires the adapters (source, state store, uploader) and the pure pieces (shape,
delta, delivery). Its commit rule is the product's promise: a batch's ledger entries, its
quarantine records and the mark after its last row are written in one transaction, only after
AiTEMS acknowledged the batch and every earlier batch of the dataset has committed.

Datasets run one after another, or ``parallel`` at a time in threads (each dataset still commits
in order; the state store is shared and thread-safe). A 401/403 stops the whole run (the same
keys fail every dataset); any other failure stops only its dataset.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from aitems_sync.aitems.delivery import Target, Uploader, UploadOutcome
from aitems_sync.errors import (
    AitemsSyncError,
    AuthError,
    InvalidRowsError,
    SpecError,
    SpecProblem,
    StateError,
)
from aitems_sync.source.extract import Source
from aitems_sync.spec.model import DatasetSpec, Spec
from aitems_sync.state.store import StateStore
from aitems_sync.sync import signals
from aitems_sync.sync.checks import check_dataset
from aitems_sync.sync.dataset import DatasetSync, SyncSettings
from aitems_sync.sync.leases import FencedUploader, Leases
from aitems_sync.sync.options import RunOptions
from aitems_sync.sync.report import FAILED, INTERRUPTED, INVALID, DatasetReport, RunReport
from aitems_sync.sync.schemacheck import SchemaCheck, SchemaReader

log = logging.getLogger(__name__)

#: Told a dataset's report after every chunk of rows, from the thread syncing that dataset.
Progress = Callable[[DatasetReport], None]

#: Seconds a run that ends keeps trying to give its leases back and record its end while the
#: state store does not answer (a failover, a lock held too long). After that its leases expire
#: by themselves, and the next run records it as crashed.
FINISH_SECONDS = 30.0


def _no_progress(_report: DatasetReport) -> None:
    return None


def new_run_id() -> str:
    """Sortable and unique: UTC time of the start plus a random suffix."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def run(
    spec: Spec,
    datasets: Sequence[DatasetSpec],
    *,
    state: StateStore,
    uploader: Uploader,
    sources: Mapping[str, Source],
    options: RunOptions = RunOptions(),
    stop: threading.Event | None = None,
    run_id: str | None = None,
    progress: Progress | None = None,
    report: RunReport | None = None,
    schemas: SchemaReader | None = None,
    preflight: Callable[[], None] | None = None,
) -> RunReport:
    """Sync the selected datasets once and report what happened; see ``RunReport.exit_code``.

    Before a dataset reads a row, its query's columns are matched to its fields, key and
    cursor, and its lookback to its mark; before its first batch with rows is sent, its fields
    are compared with its AiTEMS schema (with ``schemas``, the AiTEMS client; fetched once per
    run, and not at all by a run with nothing to send). A mismatch fails the dataset as a spec
    error (exit 2) before anything is sent, rather than having AiTEMS refuse every batch.

    ``progress`` is called with a dataset's report after every chunk of rows (for a display).
    ``report``: the report to fill in (and return), for a caller that must show it even if the
    process exits at once (:func:`aitems_sync.sync.signals.on_abort`); its ``run_id``, if set,
    is the run's.

    ``preflight``: called once the run is recorded, before any dataset reads a row (the one
    signed read that checks the credentials and the service); if it raises, every dataset
    fails with its error (the first in full) and nothing is read or sent.

    Raises LockHeldError (exit 75) when another run holds one of the datasets, before any work
    (with ``options.wait``, only once the wait is over). If ``stop`` is set while waiting, every
    dataset is reported as not run. Raises SpecError (exit 2) before anything when the state
    store's marks of a dataset belong to another AiTEMS dataset (``check_bindings``).
    """
    selected = list(datasets)
    unbound = check_bindings(spec, selected, state)
    report = report or RunReport(run_id="")
    run_id = report.run_id = run_id or report.run_id or new_run_id()
    stop = stop or threading.Event()
    leases = Leases(state, [d.name for d in selected], run_id, options.lease_ttl)
    if not leases.acquire(wait=options.wait, stop=stop):
        report.datasets = [DatasetReport(d.name, status=INTERRUPTED,
                                         error="not run: stopped by a signal while waiting "
                                               "for the lease") for d in selected]
        return report
    begun = False
    try:
        state.begin_run(
            run_id, datasets=[d.name for d in selected], host=socket.gethostname(),
            pid=os.getpid(),
        )
        begun = True
        for dataset in unbound:
            state.bind(dataset.name, spec.aitems.service_id, dataset.dataset_id, dataset.key)
        for crashed in state.mark_crashed_runs(but=run_id):
            log.warning("run %s ended without recording its end (killed, or lost with its "
                        "machine): recorded as crashed", crashed,
                        extra={"event": "run_crashed", "run_id": crashed})
        if preflight is not None and not _preflight(preflight, selected, report):
            return report
        syncing = _Run(spec, state, uploader, sources, options, _Halt(stop, leases.lost), leases,
                       report, progress or _no_progress,
                       SchemaCheck(schemas) if schemas is not None else None)
        with signals.on_abort(lambda code: _abort(state, leases, report, syncing.done, code)):
            syncing.sync(selected)
    finally:
        _finish(state, leases, report, recorded=begun)
    return report


def _preflight(check: Callable[[], None], selected: Sequence[DatasetSpec],
               report: RunReport) -> bool:
    """Run the preflight check; on failure, fail every dataset with it (False)."""
    try:
        check()
        return True
    except AitemsSyncError as error:
        spec_error = isinstance(error, SpecError)
        report.datasets = [DatasetReport(d.name, status=FAILED, spec_error=spec_error,
                                         error=str(error) if i == 0 else
                                         f"not run: AiTEMS refused the run's first call (see "
                                         f"dataset {selected[0].name})")
                           for i, d in enumerate(selected)]
        log.error("the run stopped before reading a row: %s", error,
                  extra={"event": "preflight_failed"})
        return False


def _reported(report: RunReport) -> list[int]:
    """The journalled batches the report calls ambiguous."""
    return [a.batch_id for d in report.datasets for a in d.ambiguous if a.batch_id is not None]


def _finish(state: StateStore, leases: Leases, report: RunReport, *, recorded: bool) -> None:
    """Give the leases back and record the run's end (when its start was recorded), trying
    again while the state store does not answer, for up to FINISH_SECONDS."""
    deadline = time.monotonic() + FINISH_SECONDS
    pause = 0.25
    while not leases.release() and time.monotonic() + pause < deadline:
        time.sleep(pause)
        pause = min(2 * pause, 4.0)
    while recorded:
        try:
            state.end_run(report.run_id, status=report.status, summary=report.to_dict(),
                          reported=_reported(report))
            return
        except StateError as error:
            if time.monotonic() + pause >= deadline:
                log.error("could not record the end of run %s (%s): the next run records it as "
                          "crashed", report.run_id, error,
                          extra={"event": "run_not_recorded", "run_id": report.run_id})
                return
            time.sleep(pause)
            pause = min(2 * pause, 4.0)


def _abort(state: StateStore, leases: Leases, report: RunReport, done: set[str],
           code: int) -> None:
    """The run exits at once (a second signal, the grace period over): its report says so,
    and where the state store answers in time its leases go back and its end is recorded."""
    report.interrupted_exit_code = code
    for dataset in report.datasets:
        if dataset.dataset not in done:
            dataset.status = INTERRUPTED
            dataset.error = ("stopped at once with uploads on the wire: the next run reports "
                             "them as ambiguous and sends them again")
    leases.release()
    state.end_run(report.run_id, status=report.status, summary=report.to_dict(),
                  reported=_reported(report))


def check_bindings(spec: Spec, datasets: Sequence[DatasetSpec], state: StateStore
                   ) -> list[DatasetSpec]:
    """Refuse, with every problem at once, datasets whose marks and ledger the state store keeps
    for another AiTEMS service or dataset than the spec names now (the ledger would skip rows
    the new dataset never received), or whose ledger identifies rows by another key (it would
    not recognize the rows it holds). Returns the datasets whose binding or key is to be
    recorded."""
    problems, unbound = [], []
    for dataset in datasets:
        bound = state.binding(dataset.name)
        identity = state.identity(dataset.name)
        wanted = (spec.aitems.service_id, dataset.dataset_id)
        if bound is None or identity != dataset.key:
            problem = _key_change(spec, dataset, identity, state)
            if problem is not None:
                problems.append(problem)
            unbound.append(dataset)
        if bound is None or bound == wanted:
            continue
        problems.append(SpecProblem(
            str(spec.path), None, f"datasets.{dataset.name}.dataset_id",
            f"the state store's mark and ledger of dataset {dataset.name} were delivered to "
            f"AiTEMS dataset {bound[1]} of service {bound[0]}, but the spec names dataset "
            f"{wanted[1]} of service {wanted[0]}. If that AiTEMS dataset is new (recreated or "
            f"replaced), run `aitems-sync state reset {dataset.name}` so that every row is "
            "sent to it; if the spec is wrong, put the old ids back"))
    if problems:
        raise SpecError(problems)
    return unbound


def _key_change(spec: Spec, dataset: DatasetSpec, identity: tuple[str, ...] | None,
                state: StateStore) -> SpecProblem | None:
    """The problem with changing the key a dataset's ledger and boundary were written with, if
    they hold anything. A store older than version 7 recorded none: interaction ledgers were
    written by the whole row then, and user and item ledgers by their key, which is fixed."""
    if identity is None:
        identity = () if dataset.type == "interaction" else dataset.key
    if identity == dataset.key or not (state.has_ledger(dataset.name)
                                       or state.has_boundary(dataset.name)):
        return None
    return SpecProblem(
        str(spec.path), None, f"datasets.{dataset.name}.key",
        f"the state store recognizes the rows of dataset {dataset.name} it delivered by "
        f"{_shown(identity)}, but the spec identifies them by {_shown(dataset.key)}: it would not "
        "recognize them and could send them again. Put the old key back; or, to change it, run "
        f"`aitems-sync state show {dataset.name}`, `aitems-sync state reset {dataset.name}` and "
        f"`aitems-sync state set {dataset.name} --cursor <the mark's cursor value>`: the next "
        "run then sends the rows after that value, and those at it again")


def _shown(key: tuple[str, ...]) -> str:
    return f"key [{', '.join(key)}]" if key else "the whole row"


class _Halt:
    """Why datasets should stop: a signal, a lost lease, or a 401/403 on another dataset."""

    def __init__(self, signal: threading.Event, lease_lost: threading.Event) -> None:
        self.signal = signal
        self.lease_lost = lease_lost
        self.fatal: AitemsSyncError | None = None
        self._fatal_set = threading.Event()

    def is_set(self) -> bool:
        return self.signal.is_set() or self.lease_lost.is_set() or self._fatal_set.is_set()

    def fail_run(self, error: AitemsSyncError) -> None:
        if self.fatal is None:
            self.fatal = error
        self._fatal_set.set()

    def reason(self) -> tuple[str, str] | None:
        """(status, message) for a dataset that was halted or never started."""
        if self.fatal is not None:
            return FAILED, f"stopped: {self.fatal}"
        if self.lease_lost.is_set():
            return FAILED, "stopped: this run lost a lease to another run"
        if self.signal.is_set():
            return INTERRUPTED, "stopped by a signal"
        return None


class _Run:
    """The datasets of one run, one after another or ``parallel`` at a time."""

    def __init__(
        self, spec: Spec, state: StateStore, uploader: Uploader, sources: Mapping[str, Source],
        options: RunOptions, halt: _Halt, leases: Leases, report: RunReport, progress: Progress,
        schemas: SchemaCheck | None = None,
    ) -> None:
        self.spec, self.state, self.uploader, self.sources = spec, state, uploader, sources
        self.options, self.halt, self.leases, self.report = options, halt, leases, report
        self.progress, self.schemas = progress, schemas
        self.done: set[str] = set()  # the datasets whose sync has ended

    def sync(self, selected: Sequence[DatasetSpec]) -> None:
        reports = [DatasetReport(d.name) for d in selected]
        self.report.datasets = reports
        parallel = max(1, min(self.options.parallel, len(selected)))
        if parallel == 1:
            for dataset, dataset_report in zip(selected, reports, strict=True):
                self.one(dataset, dataset_report)
            return
        for name in {d.source for d in selected}:
            _ = self.sources[name].engine  # created lazily: create it before threads share it
        with ThreadPoolExecutor(parallel, thread_name_prefix="dataset") as pool:
            for done in [pool.submit(self.one, d, r)
                         for d, r in zip(selected, reports, strict=True)]:
                signals.result(done)

    def one(self, dataset: DatasetSpec, report: DatasetReport) -> None:
        """Sync one dataset into ``report``; its failure is recorded, never raised."""
        try:
            self._one(dataset, report)
        finally:
            self.done.add(dataset.name)

    def _one(self, dataset: DatasetSpec, report: DatasetReport) -> None:
        reason = self.halt.reason()
        if reason is not None:
            report.status, message = reason
            report.error = f"not run: {message.removeprefix('stopped: ')}"
            return
        settings = _settings(self.spec, dataset, self.options, self.report.run_id)
        def check_lease() -> None:
            self.leases.check(dataset.name)

        try:
            check_dataset(self.spec, dataset, self.sources[dataset.source], self.state)
            DatasetSync(dataset, settings, self.state, FencedUploader(self.uploader, check_lease),
                        self.sources[dataset.source], self.halt, report,
                        check_lease=check_lease, progress=self.progress,
                        overtaken=lambda: self.leases.overtaken(dataset.name),
                        before_sending=lambda: self._check_schema(dataset)).run()
        except AuthError as error:
            self.halt.fail_run(error)  # the same keys fail every dataset: stop the run
            _record_failure(report, error, FAILED)
        except InvalidRowsError as error:
            _record_failure(report, error, INVALID)
        except SpecError as error:
            _record_spec_error(self.spec, report, error)
        except AitemsSyncError as error:
            _record_failure(report, error, FAILED)
        if report.status == INTERRUPTED:
            reason = self.halt.reason()
            if reason is not None and reason[0] == FAILED:
                report.status, report.error = reason

    def _check_schema(self, dataset: DatasetSpec) -> None:
        """SpecError when the dataset's fields differ from its AiTEMS schema (fetched once per
        run); its warnings are logged."""
        if self.schemas is None:
            return
        problems, warnings = self.schemas.problems(self.spec, dataset)
        for warning in warnings:
            log.warning("%s", warning, extra={"event": "schema_warning", "dataset": dataset.name})
        if problems:
            raise SpecError(problems)


def _record_failure(report: DatasetReport, error: AitemsSyncError, status: str) -> None:
    report.status = status
    report.error = str(error)
    log.error("dataset %s stopped: %s", report.dataset, error,
              extra={"event": "dataset_failed", "dataset": report.dataset})


def _record_spec_error(spec: Spec, report: DatasetReport, error: SpecError) -> None:
    """The dataset failed on a spec mistake: exit 2, each problem at its line of the spec."""
    located = [spec.locate(p) if p.line is None else p for p in error.problems]
    _record_failure(report, SpecError(located), FAILED)
    report.spec_error = True


def _settings(spec: Spec, dataset: DatasetSpec, options: RunOptions, run_id: str,
              *, dry_run: bool = False) -> SyncSettings:
    target = Target(spec.aitems.service_id, dataset.dataset_id, dataset.type)
    return SyncSettings(run_id=run_id, target=target, batch=spec.aitems.batch, options=options,
                        dry_run=dry_run)


class _NoUploads:
    """The uploader of a dry run, which never uploads."""

    def upload_encoded(self, service_id: str, dataset_id: str, dataset_type: str,
                       rows: Sequence[bytes]) -> UploadOutcome:
        raise AssertionError("a dry run must not upload")  # a bug, not an operator error


def plan(
    spec: Spec,
    datasets: Sequence[DatasetSpec],
    *,
    state: StateStore,
    sources: Mapping[str, Source],
    options: RunOptions = RunOptions(),
) -> RunReport:
    """What a run would do now, per dataset: the rows new, changed, unchanged and invalid, and
    the batches and rows it would send. Reads the delta and the ledger; uploads nothing, writes
    nothing to the state store and takes no lease.
    """
    check_bindings(spec, datasets, state)
    report = RunReport(run_id="plan")
    for dataset in datasets:
        dataset_report = DatasetReport(dataset.name)
        report.datasets.append(dataset_report)
        settings = _settings(spec, dataset, options, report.run_id, dry_run=True)
        try:
            check_dataset(spec, dataset, sources[dataset.source], state)
            DatasetSync(dataset, settings, state, _NoUploads(), sources[dataset.source],
                        threading.Event(), dataset_report).run()
        except InvalidRowsError as error:
            _record_failure(dataset_report, error, INVALID)
        except SpecError as error:
            _record_spec_error(spec, dataset_report, error)
        except AitemsSyncError as error:
            _record_failure(dataset_report, error, FAILED)
    return report
