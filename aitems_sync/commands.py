"""One plain function per command, each taking the loaded spec first: the library under the CLI,
and the public Python API (``aitems_sync.run``, ``plan``, ``validate`` are these functions).

Each function opens what its command needs from the spec (sources, state store, AiTEMS client),
does the work, closes everything, and returns data for the caller to render. None of them exits
the process or configures logging; failures raise the documented errors (``aitems_sync.errors``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from aitems_sync.aitems.client import AitemsClient
from aitems_sync.aitems.schemas import PulledSchema
from aitems_sync.errors import SpecError, SpecProblem, UsageError
from aitems_sync.objectstorage.client import s3_client
from aitems_sync.objectstorage.exports import parse_export_url
from aitems_sync.source.extract import Source
from aitems_sync.spec.model import DatasetSpec, DatasetType, Spec
from aitems_sync.state.marks import CURSOR_TYPES, Mark, check_cursor, parse_cursor
from aitems_sync.state.probe import url_problem
from aitems_sync.state.records import (
    DatasetState,
    QuarantineListing,
    QuarantineRecord,
    RunRecord,
)
from aitems_sync.state.store import StateStore
from aitems_sync.sync import engine
from aitems_sync.sync.bootstrap import (
    READY_TIMEOUT_SECONDS,
    BootstrapReport,
    BootstrapSettings,
    object_storage_of,
)
from aitems_sync.sync.bootstrap import bootstrap as run_bootstrap
from aitems_sync.sync.checks import (
    ValidationReport,
    check_aitems,
    check_queries,
    check_service,
    check_state,
)
from aitems_sync.sync.leases import Leases
from aitems_sync.sync.options import WORKER_AFTER, RunOptions
from aitems_sync.sync.quarantine import RetryReport, retry_quarantine
from aitems_sync.sync.register import mark_cursor, register
from aitems_sync.sync.report import RunReport
from aitems_sync.sync.resolve import bound_ids, needs_lookup, resolve
from aitems_sync.sync.status import StatusReport
from aitems_sync.sync.status import gather as gather_status

if TYPE_CHECKING:  # what ``init`` returns, re-exported for the CLI's type checks
    from aitems_sync.scaffold.create import InitReport as InitReport
    from aitems_sync.sync.apply import ApplyReport
    from aitems_sync.sync.provision import Plan

__all__ = ["CURSOR_TYPES"]  # the --type choices of ``state set``, re-exported for the CLI

# -- the sync -------------------------------------------------------------------------------


def validate(spec: Spec, *, connect: bool = False) -> ValidationReport:
    """Check the loaded spec; with ``connect`` also the state store, every query against its
    source, and the endpoint, credentials, service and each dataset's schema against AiTEMS.

    Raises SpecError listing every problem found (what ``run`` would fail on), with the
    warnings; otherwise returns what was checked and the warnings.
    """
    report = ValidationReport(spec)
    report.checks.append(f"spec {spec.path}: {len(spec.datasets)} dataset(s), "
                         f"{len(spec.sources)} source(s)")
    report.problems.extend(state_url_problems(spec))
    if connect:
        if not report.problems:
            check_state(spec, report)
        with open_sources(spec) as sources:
            check_queries(spec, sources, report)
        check_aitems(spec, report)
    report.raise_problems()
    return report


def run(
    spec: Spec,
    datasets: Sequence[str] = (),
    *,
    full_refresh: bool = False,
    lease_ttl: float | None = None,
    wait: float | None = None,
    parallel: int = 1,
    extract_worker: bool = False,
    stop: threading.Event | None = None,
    progress: engine.Progress | None = None,
    report: RunReport | None = None,
) -> RunReport:
    """Sync the new and changed rows of the ``datasets`` named (all when none) once.

    Returns the report whatever happened to each dataset (``exit_code`` says how it went);
    raises UsageError for an unknown dataset and LockHeldError (exit 75) when another run holds
    a dataset's lease. Setting ``stop`` stops reading, finishes what is on the wire, commits and
    returns. See ``RunOptions`` for ``lease_ttl``, ``wait`` and ``parallel``, and
    ``engine.run`` for ``report``.
    """
    selected = select_datasets(spec, datasets)  # a usage error before anything is opened
    options = RunOptions(full_refresh=full_refresh, wait=wait, parallel=parallel,
                         worker_after=WORKER_AFTER if extract_worker else None)
    if lease_ttl is not None:
        options = replace(options, lease_ttl=lease_ttl)
    # Every upload thread of every dataset running at once keeps a connection.
    uploads = spec.aitems.batch.in_flight * max(1, min(parallel, len(selected)))
    with open_state(spec) as state, open_sources(spec) as sources, \
            AitemsClient.from_config(spec.aitems, pool_size=max(8, uploads * 2)) as client:
        spec, selected = resolved(spec, client, selected, state)
        # The preflight: keys AiTEMS refuses fail even a run with nothing to send.
        report = engine.run(spec, selected, state=state, uploader=client, sources=sources,
                            options=options, stop=stop, progress=progress, report=report,
                            schemas=client,
                            preflight=lambda: check_service(spec, client, selected))
    if spec.metrics.pushgateway:
        # Imported here for start-up time: prometheus_client is needed only by runs that push.
        from aitems_sync.sync.metrics import push_run_metrics

        push_run_metrics(report, spec.metrics, now=time.time())
    return report


def bootstrap(
    spec: Spec,
    datasets: Sequence[str] = (),
    *,
    timeout: float = READY_TIMEOUT_SECONDS,
    lease_ttl: float | None = None,
    wait: float | None = None,
    stop: threading.Event | None = None,
) -> BootstrapReport:
    """Load each named dataset (all when none) whole, through Object Storage: one gzip CSV
    file of its query, read by AiTEMS into the dataset, then handed over to ``run`` (see
    :mod:`aitems_sync.sync.bootstrap`). ``timeout``: seconds AiTEMS may take to read a file;
    ``lease_ttl`` and ``wait`` as for :func:`run` (by default a held lease fails the dataset
    at once)."""
    selected = select_datasets(spec, datasets)
    where = object_storage_of(spec)  # a spec error before anything is opened
    storage = s3_client(where.endpoint, where.region, spec.aitems.access_key,
                        spec.aitems.secret_key)
    settings = BootstrapSettings(run_id=engine.new_run_id(), ready_timeout=timeout,
                                 lease_ttl=lease_ttl or RunOptions.lease_ttl, wait=wait)
    with open_state(spec) as state, open_sources(spec) as sources, \
            AitemsClient.from_config(spec.aitems) as client:
        spec, selected = resolved(spec, client, selected, state, datasets_needed=False)
        selected = [with_schema(spec, client, dataset) for dataset in selected]
        return run_bootstrap(spec, selected, state=state, sources=sources, api=client,
                             storage=storage, settings=settings, stop=stop)


def apply(
    spec: Spec,
    *,
    allow_replace: bool = False,
    plan_only: bool = False,
    confirm: Callable[[Plan], bool] = lambda _: True,
    timeout: float = READY_TIMEOUT_SECONDS,
    stop: threading.Event | None = None,
) -> ApplyReport:
    """Plan the changes that make AiTEMS match the spec, and (unless ``plan_only``, when the
    plan has changes, none is refused and ``confirm(plan)`` says yes) carry them out; see
    :mod:`aitems_sync.sync.apply`. The report's ``exit_code``: 0 done or nothing to do, 1 a step
    failed or the plan was not confirmed, 2 a change the plan refuses (the reason in ``error``);
    LockHeldError (exit 75) while another apply runs.
    """
    # Imported here: apply's modules are start-up time every other command need not pay.
    from aitems_sync.sync.apply import ApplyOptions
    from aitems_sync.sync.apply import apply as run_apply

    with open_state(spec) as state, open_sources(spec) as sources, \
            AitemsClient.from_config(spec.aitems) as client:
        return run_apply(spec, state=state, sources=sources, api=client,
                         storage=lambda where: s3_client(where.endpoint, where.region,
                                                         spec.aitems.access_key,
                                                         spec.aitems.secret_key),
                         options=ApplyOptions(allow_replace=allow_replace, plan_only=plan_only,
                                              timeout=timeout),
                         confirm=confirm, stop=stop)


def bootstrap_from(
    spec: Spec, dataset: str, url: str, mark: str, kind: str = "auto", *,
    timeout: float = READY_TIMEOUT_SECONDS, lease_ttl: float | None = None,
    wait: float | None = None, stop: threading.Event | None = None,
) -> BootstrapReport:
    """Register the file another engine exported at ``url`` (``s3://bucket/path``) as
    ``dataset``'s first load, then set its mark to ``mark`` (typed as ``state set --cursor``
    is, ``kind`` as its ``--type``): see :mod:`aitems_sync.sync.register`. Usage and spec
    errors are raised before anything is asked of Object Storage or AiTEMS."""
    chosen = dataset_named(spec, dataset)
    where = object_storage_of(spec)  # its endpoint and region; the bucket is the URL's
    export = parse_export_url(url)
    storage = s3_client(where.endpoint, where.region, spec.aitems.access_key,
                        spec.aitems.secret_key)
    settings = BootstrapSettings(run_id=engine.new_run_id(), ready_timeout=timeout,
                                 lease_ttl=lease_ttl or RunOptions.lease_ttl, wait=wait)
    with open_state(spec) as state, AitemsClient.from_config(spec.aitems) as client:
        cursor = mark_cursor(mark, kind, state.get_mark(dataset))

        def named(spec: Spec, chosen: DatasetSpec) -> tuple[Spec, DatasetSpec]:
            spec, (chosen,) = resolved(spec, client, [chosen], state, datasets_needed=False)
            return spec, with_schema(spec, client, chosen)

        return register(spec, chosen, export, cursor, state=state, api=client,
                        storage=storage, settings=settings, stop=stop, resolve=named)


def plan(spec: Spec, datasets: Sequence[str] = (), *, full_refresh: bool = False) -> RunReport:
    """What ``run`` would send now, without sending or writing anything; see ``engine.plan``."""
    selected = select_datasets(spec, datasets)
    with open_state(spec, read_only=True) as state, open_sources(spec) as sources:
        if needs_lookup(spec, selected):  # names to find: the one read of AiTEMS a plan makes
            with AitemsClient.from_config(spec.aitems) as client:
                spec, selected = resolved(spec, client, selected, state)
        return engine.plan(spec, selected, state=state, sources=sources,
                           options=RunOptions(full_refresh=full_refresh))


def quarantine_retry(spec: Spec, datasets: Sequence[str] = ()) -> list[RetryReport]:
    """Read the open quarantine entries' rows again (from the source by key where the run
    rejected them, else their stored copy), shape them with the current spec and send those
    that now pass (``sync.quarantine``).

    Refused (SpecError, exit 2) like a run when the state store's ledger of a dataset belongs
    to another AiTEMS dataset or key (``engine.check_bindings``)."""
    selected = select_datasets(spec, datasets)
    reports = []
    with open_state(spec) as state, open_sources(spec) as sources, \
            AitemsClient.from_config(spec.aitems) as client:
        spec, selected = resolved(spec, client, selected, state)
        engine.check_bindings(spec, selected, state)
        for dataset in selected:
            reports.append(retry_quarantine(
                spec, dataset, state=state, uploader=client, source=sources[dataset.source],
                run_id=engine.new_run_id()))
    return reports


# -- inspecting and repairing state ---------------------------------------------------------


def state_show(spec: Spec) -> list[DatasetState]:
    """The mark, ledger size, quarantine count, unfinished batches and lease of each dataset."""
    with open_state(spec) as store:
        return [
            DatasetState(
                dataset=name,
                mark=store.get_mark(name),
                ledger_size=store.ledger_size(name),
                quarantined=store.quarantine_count(name),
                unfinished=store.unfinished_batches(name),
                lease=store.lease_holder(name),
            )
            for name in spec.datasets
        ]


def state_reset(spec: Spec, dataset: str) -> None:
    """Forget a dataset's mark, ledger and journal: the next run sends every row again.
    LockHeldError (exit 75) while a run or bootstrap holds the dataset: it would write its own
    mark and ledger over the reset (a bootstrap waiting on AiTEMS would hand its snapshot
    over afterwards)."""
    dataset_named(spec, dataset)
    with open_state(spec) as store, _holding(store, dataset):
        store.reset(dataset)


@contextmanager
def _holding(store: StateStore, dataset: str) -> Iterator[None]:
    """The dataset's lease, for a command that changes its state: LockHeldError at once when
    another holds it (a run that died keeps it until its lease expires)."""
    leases = Leases(store, [dataset], f"state-{engine.new_run_id()}", RunOptions.lease_ttl)
    leases.acquire()
    try:
        yield
    finally:
        leases.release()


def state_set(spec: Spec, dataset: str, cursor: str, kind: str = "auto", *,
              resend: bool = False) -> Mark:
    """Move a dataset's mark so the next run reads rows with a cursor at or after ``cursor``.

    The key part of the mark is set below every key (NULLs, which sort first), so rows whose
    cursor equals the value are read again too. On a user or item dataset the ledger skips
    those already delivered; an interaction dataset keeps no such record beyond its lookback,
    so moving its mark back sends the events after it again: that needs ``resend`` (the CLI's
    ``--yes``), else UsageError says so. ``kind`` picks the cursor's type; ``auto`` keeps the
    type of the current mark. A value of another type than the current mark's, NaN, an
    infinity or an integer past 64 bits is refused. LockHeldError (exit 75) while a run or
    bootstrap holds the dataset.
    """
    chosen = dataset_named(spec, dataset)
    with open_state(spec) as store, _holding(store, dataset):
        current = store.get_mark(dataset)
        like = current.cursor if current else None
        value = parse_cursor(cursor, kind, like)
        check_cursor(value, cursor, like)
        if chosen.type == "interaction" and current is not None and value < like and not resend:
            raise UsageError(
                f"moving the mark of interaction dataset {dataset} back from {like!r} to "
                f"{value!r} sends every event after {value!r} to AiTEMS again (events are "
                "appended, and no ledger records them all): add --yes if that is what you want")
        mark = Mark(cursor=value, key=tuple(None for _ in chosen.key_fields))
        store.set_mark(dataset, mark)
    return mark


def quarantine_list(spec: Spec, dataset: str | None = None, limit: int | None = None, *,
                    closed: bool = False) -> QuarantineListing:
    """The open quarantine entries (of ``dataset``, or all; with ``closed`` the superseded and
    resolved ones too), oldest first, the first ``limit`` of them, and how many there are."""
    with open_state(spec) as store:
        return store.quarantine_listing(dataset, limit=limit,
                                        states=None if closed else ("open",))


def quarantine_show(spec: Spec, entry_id: int) -> QuarantineRecord:
    """One quarantine entry, whatever its state; a usage error if there is none with that
    id."""
    with open_state(spec) as store:
        for record in store.quarantined(ids=[entry_id], states=None):
            return record
    raise UsageError(f"no quarantined row has id {entry_id} (see aitems-sync quarantine list)")


def quarantine_drop(spec: Spec, ids: Sequence[int]) -> int:
    """Delete quarantined rows for good; returns how many were deleted."""
    with open_state(spec) as store:
        return store.drop_quarantine(list(ids))


def history(spec: Spec, limit: int = 20) -> list[RunRecord]:
    """Past runs, newest first."""
    with open_state(spec) as store:
        return store.runs(limit)


def status(spec: Spec, datasets: Sequence[str] = ()) -> StatusReport:
    """How the service and each named dataset (all when none) stand at AiTEMS and in the state
    store: ``exit_code`` 1 when one alerts (a failed dataset or latest train). Writes
    nothing."""
    selected = select_datasets(spec, datasets)
    with open_state(spec) as state, AitemsClient.from_config(spec.aitems) as client:
        spec, selected = resolved(spec, client, selected, state, service_needed=False,
                                  datasets_needed=False)
        return gather_status(spec, selected, api=client, state=state)


def schema_pull(spec: Spec, dataset: str | None = None, *, dataset_id: str | None = None
                ) -> PulledSchema:
    """The AiTEMS schema of a spec dataset, or of any AiTEMS dataset by its ``dataset_id``
    (one of the two), in the spec's terms; the CLI prints it as ``fields:`` YAML or JSON."""
    if (dataset is None) == (dataset_id is None):
        raise UsageError("schema pull takes a dataset of the spec, or an AiTEMS dataset ID "
                         "(--dataset-id), not both")
    chosen = None if dataset is None else dataset_named(spec, dataset)
    with AitemsClient.from_config(spec.aitems) as client:
        if chosen is not None:
            spec, (chosen,) = resolved(spec, client, [chosen], None, service_needed=False)
        target = chosen.dataset_id if chosen is not None else str(dataset_id)
        remote = client.get_dataset(target)
        return PulledSchema.of(target, client.get_schema(str(remote["schemaName"])))


# -- a new spec ----------------------------------------------------------------------------


def init(url: str, *, output: Path, seed: Path | None = None,
         tables: Mapping[DatasetType, str] | None = None, schema: str | None = None,
         url_variable: str | None = None, force: bool = False) -> InitReport:
    """Write a starter spec and an emulator seed from the tables of the database at ``url``.
    The one command without a spec: it makes one (see ``scaffold.create.create_starter``)."""
    # Imported here for start-up time: only init needs the scaffold, and its modules cost
    # every other command's process about 20 ms.
    from aitems_sync.scaffold.create import create_starter

    return create_starter(url, output=output, seed=seed, tables=tables, schema=schema,
                          url_variable=url_variable, force=force)


# -- shared by the commands -----------------------------------------------------------------


def select_datasets(spec: Spec, names: Sequence[str]) -> list[DatasetSpec]:
    """The datasets named (all when none), in spec order; unknown names are a usage error."""
    unknown = [n for n in names if n not in spec.datasets]
    if unknown:
        known = ", ".join(spec.datasets) or "(none)"
        raise UsageError(f"unknown dataset {', '.join(unknown)}: the spec defines {known}")
    return [d for name, d in spec.datasets.items() if not names or name in names]


def resolved(spec: Spec, client: AitemsClient, selected: Sequence[DatasetSpec],
             state: StateStore | None, *, service_needed: bool = True,
             datasets_needed: bool = True) -> tuple[Spec, list[DatasetSpec]]:
    """The spec and the selected datasets with the ids of what the spec names found at AiTEMS
    (:mod:`aitems_sync.sync.resolve`; among datasets of one name, the one ``state`` binds the
    dataset's marks to)."""
    bound = bound_ids(state, selected) if state is not None and needs_lookup(spec, selected) \
        else {}
    spec = resolve(spec, client, selected, bound=bound, service_needed=service_needed,
                   datasets_needed=datasets_needed)
    return spec, [spec.datasets[d.name] for d in selected]


def with_schema(spec: Spec, client: AitemsClient, dataset: DatasetSpec) -> DatasetSpec:
    """A dataset bootstrap is to create, with the AiTEMS schema that holds its fields (a
    SpecError saying to run ``apply`` when there is none); any other dataset as it is."""
    if dataset.dataset_id:
        return dataset
    from aitems_sync.sync.provision import matching_schema  # here, for start-up: see apply()

    schema = matching_schema(dataset, client.list_schemas(dataset.type))
    if schema is None:
        raise SpecError([spec.problem(
            ("datasets", dataset.name, "fields"),
            f"dataset {dataset.name}: no AiTEMS schema {dataset.schema_base} (or a later "
            "version of it) holds these fields, and bootstrap creates the dataset with one: run "
            "`aitems-sync apply` first, which creates it")])
    return replace(dataset, schema_name=str(schema["name"]))


def dataset_named(spec: Spec, name: str) -> DatasetSpec:
    """The dataset called ``name``; a usage error naming the known ones otherwise."""
    return select_datasets(spec, [name])[0]


@contextmanager
def open_state(spec: Spec, *, read_only: bool = False) -> Iterator[StateStore]:
    """The spec's state store, closed on exit; a URL no store can have is a SpecError.
    ``read_only``: as it is, created and migrated never (``StateStore.read``)."""
    problems = state_url_problems(spec)
    if problems:
        raise SpecError(problems)
    store = StateStore.read(spec.state_url) if read_only else StateStore.open(spec.state_url)
    try:
        yield store
    finally:
        store.close()


def state_url_problems(spec: Spec) -> list[SpecProblem]:
    """The state URL's problem that no database can change (its form, scheme or driver)."""
    problem = url_problem(spec.state_url)
    return [spec.problem(("state",), f"the state URL {problem}")] if problem else []


@contextmanager
def open_sources(spec: Spec) -> Iterator[dict[str, Source]]:
    """One Source per spec source (connections open lazily), all closed on exit."""
    with ExitStack() as stack:
        sources: dict[str, Source] = {}
        for name, config in spec.sources.items():
            source = Source(config)
            stack.callback(source.close)
            sources[name] = source
        yield sources
