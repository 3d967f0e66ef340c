"""One plain function per command, taking the spec path: the library under the CLI.

Each function builds the adapters the command needs from the spec (sources, state store,
AiTEMS client), calls the engine, closes everything, and returns data for the CLI to render.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from aitems_sync.aitems.client import AitemsClient
from aitems_sync.errors import SpecError, SpecProblem
from aitems_sync.rows.shape import Shaper
from aitems_sync.source.extract import Source
from aitems_sync.spec.model import Spec, load_spec
from aitems_sync.state.store import StateStore
from aitems_sync.sync import engine
from aitems_sync.sync.quarantine import RetryReport, retry_quarantine
from aitems_sync.sync.report import RunReport


@dataclass
class ValidationResult:
    """What ``validate`` checked, line by line, for the operator."""

    spec: Spec
    checks: list[str] = field(default_factory=list)


def validate(config: Path, *, connect: bool = False) -> ValidationResult:
    """Check the spec; with ``connect`` also every source query's columns and AiTEMS itself.

    Raises SpecError listing every problem; connection failures raise their own errors.
    """
    spec = load_spec(config)
    result = ValidationResult(spec)
    result.checks.append(f"spec {config}: {len(spec.datasets)} dataset(s), "
                         f"{len(spec.sources)} source(s)")
    if connect:
        with open_sources(spec) as sources:
            _check_queries(spec, sources, result)
        _check_aitems(spec, result)
    return result


def _check_queries(spec: Spec, sources: Mapping[str, Source], result: ValidationResult) -> None:
    problems: list[SpecProblem] = []
    for dataset in spec.datasets.values():
        source = sources[dataset.source]
        columns = source.columns(dataset.query)
        try:
            Shaper(dataset, columns, source.timezone)
        except SpecError as error:
            problems.extend(error.problems)
            continue
        lowered = [c.lower() for c in columns]
        if dataset.cursor not in columns and lowered.count(dataset.cursor.lower()) != 1:
            problems.append(SpecProblem(
                str(spec.path), None, f"datasets.{dataset.name}.cursor",
                f"{dataset.cursor!r} is not a result column of the query "
                f"(it returns: {', '.join(columns)})",
            ))
            continue
        result.checks.append(f"dataset {dataset.name}: query columns match the fields")
    if problems:
        raise SpecError(problems)


def _check_aitems(spec: Spec, result: ValidationResult) -> None:
    client = AitemsClient.from_config(spec.aitems)
    try:
        service = client.get_service(spec.aitems.service_id)
        attached = {str(d.get("datasetId", d)) if isinstance(d, dict) else str(d)
                    for d in service.get("datasets", [])}
        result.checks.append(f"AiTEMS: credentials accepted, service {spec.aitems.service_id} "
                             "found")
        problems = []
        for dataset in spec.datasets.values():
            remote = client.get_dataset(dataset.dataset_id)
            key = f"datasets.{dataset.name}.dataset_id"
            if remote.get("type") != dataset.type:
                problems.append(SpecProblem(
                    str(spec.path), None, key,
                    f"AiTEMS dataset {dataset.dataset_id} is of type {remote.get('type')!r}, "
                    f"the spec says {dataset.type!r}"))
            elif attached and dataset.dataset_id not in attached:
                problems.append(SpecProblem(
                    str(spec.path), None, key,
                    f"AiTEMS dataset {dataset.dataset_id} is not attached to service "
                    f"{spec.aitems.service_id}"))
            else:
                result.checks.append(f"dataset {dataset.name}: AiTEMS dataset "
                                     f"{dataset.dataset_id} ({dataset.type}) is attached")
        if problems:
            raise SpecError(problems)
    finally:
        client.close()


def run(
    config: Path,
    *,
    datasets: Sequence[str] = (),
    full_refresh: bool = False,
    stop: threading.Event | None = None,
    lease_ttl: float | None = None,
    wait: float | None = None,
    parallel: int = 1,
    progress: engine.Progress | None = None,
    extract_worker: bool = False,
) -> RunReport:
    """Load the spec and run the sync once; see ``engine.run`` and ``engine.RunOptions``."""
    spec = load_spec(config)
    options = engine.RunOptions(datasets=tuple(datasets), full_refresh=full_refresh,
                                wait=wait, parallel=parallel,
                                worker_after=engine.WORKER_AFTER if extract_worker else None)
    if lease_ttl is not None:
        options = replace(options, lease_ttl=lease_ttl)
    selected = engine.select_datasets(spec, options.datasets)  # a usage error before anything
    # Every upload thread of every dataset running at once keeps a connection.
    uploads = spec.aitems.batch.in_flight * max(1, min(parallel, len(selected)))
    with open_state(spec) as state, open_sources(spec) as sources:
        client = AitemsClient.from_config(spec.aitems, pool_size=max(8, uploads * 2))
        try:
            report = engine.run(spec, state=state, uploader=client, sources=sources,
                                options=options, stop=stop, progress=progress)
        finally:
            client.close()
    if spec.metrics.pushgateway:
        from aitems_sync.sync.metrics import push_run_metrics

        push_run_metrics(report, spec.metrics, now=time.time())
    return report


def plan(config: Path, *, datasets: Sequence[str] = (), full_refresh: bool = False
         ) -> RunReport:
    """What ``run`` would send now, without sending or writing anything; see ``engine.plan``."""
    spec = load_spec(config)
    options = engine.RunOptions(datasets=tuple(datasets), full_refresh=full_refresh)
    engine.select_datasets(spec, options.datasets)
    with open_state(spec) as state, open_sources(spec) as sources:
        return engine.plan(spec, state=state, sources=sources, options=options)


def quarantine_retry(config: Path, *, datasets: Sequence[str] = ()) -> list[RetryReport]:
    """Re-shape quarantined rows with the current spec and send those that now pass."""
    spec = load_spec(config)
    selected = engine.select_datasets(spec, datasets)
    reports = []
    with open_state(spec) as state, open_sources(spec) as sources, \
            AitemsClient.from_config(spec.aitems) as client:
        for dataset in selected:
            reports.append(retry_quarantine(
                spec, dataset, state=state, uploader=client,
                timezone=sources[dataset.source].timezone, run_id=engine.new_run_id()))
    return reports


@contextmanager
def open_state(spec: Spec) -> Iterator[StateStore]:
    """The spec's state store, closed on exit."""
    store = StateStore.open(spec.state_url)
    try:
        yield store
    finally:
        store.close()


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

