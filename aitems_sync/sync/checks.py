"""``validate --connect``: the spec against its sources, its state store and AiTEMS, without a
run, every problem found at once and located by file:line and key.

Each check adds what it found to a ``ValidationReport``: a line for what passed, a located
``SpecProblem`` for what ``run`` would fail on, and a warning for what it would silently not do
(rows with a NULL cursor). ``column_problems`` is pure; ``check_dataset`` is the part of
these checks that ``run`` and ``plan`` make of each dataset before it reads a row.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from aitems_sync.aitems.client import AitemsClient
from aitems_sync.errors import (
    ApiError,
    AuthError,
    HandoverPendingError,
    NotFoundError,
    QueryError,
    SourceError,
    SpecError,
    SpecProblem,
    StateError,
)
from aitems_sync.rows.shape import Shaper
from aitems_sync.source.extract import Source
from aitems_sync.source.lookback import lookback_start
from aitems_sync.spec.columns import ColumnMatchError, match_column
from aitems_sync.spec.model import DatasetSpec, Spec
from aitems_sync.state import probe
from aitems_sync.state.store import StateStore
from aitems_sync.sync.resolve import resolve
from aitems_sync.sync.schemacheck import SchemaCheck

log = logging.getLogger(__name__)

#: What a failed query's message advises in validate (which is the command checking queries).
QUERY_HINT = ("fix the query: it runs as SELECT * FROM (<query>) AS src, so it must be one "
              "SELECT; try it in the database's own client")


@dataclass
class ValidationReport:
    """What ``validate`` checked (a line each), what it found, and what it warns about."""

    spec: Spec
    checks: list[str] = field(default_factory=list)
    problems: list[SpecProblem] = field(default_factory=list)
    warnings: list[SpecProblem] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """What ``validate --json`` prints: a spec with problems raises instead."""
        return {"valid": True, "checks": list(self.checks),
                "warnings": [str(w) for w in self.warnings]}

    def raise_problems(self) -> None:
        """SpecError with every problem found (and the warnings), if there is any."""
        if self.problems:
            raise SpecError(self.problems, warnings=self.warnings)


def column_problems(spec: Spec, dataset: DatasetSpec, columns: Sequence[str]
                    ) -> list[SpecProblem]:
    """Each field, the cursor and each key column that matches no result column, or several
    (two columns of one name, or names differing only in case), located in the spec (pure)."""
    base = ("datasets", dataset.name)
    wanted: list[tuple[tuple[str | int, ...], str, str]] = [
        (("fields", i), f"field {f.name}", f.name) for i, f in enumerate(dataset.fields)]
    wanted.append((("cursor",), "the cursor", dataset.cursor))
    wanted += [(("key", i), "the key column", k) for i, k in enumerate(dataset.key)]
    problems = []
    for where, role, name in wanted:
        try:
            index = match_column(name, columns)
        except ColumnMatchError as error:
            problems.append(spec.problem(
                (*base, *where), f"dataset {dataset.name}: {role} {name!r}: {error}; alias "
                f"exactly one column of the query to it (... AS {name})"))
            continue
        copies = [c for c in columns if re.fullmatch(rf"{re.escape(columns[index])}:[0-9]+", c)]
        if copies:
            problems.append(spec.problem(
                (*base, *where), f"dataset {dataset.name}: {role} {name!r}: the query returns "
                f"it {len(copies) + 1} times (SQLite names the copies {copies[0]}, ...; other "
                "databases give them all one name, which cannot be told apart); return it "
                "once"))
    return problems


def check_dataset(spec: Spec, dataset: DatasetSpec, source: Source, state: StateStore
                  ) -> None:
    """For ``run`` and ``plan``, before the dataset reads a row: HandoverPendingError while a
    bootstrap's hand-over is unfinished; SpecError when its query's columns do not match its
    fields, key and cursor, or its lookback cannot move its mark back."""
    pending = state.handover(dataset.name)
    if pending is not None:
        raise HandoverPendingError(
            f"dataset {dataset.name}: bootstrap {pending.run_id} asked AiTEMS to read "
            f"{pending.object_key} into dataset {pending.aitems_dataset_id} and did not take "
            "its snapshot: AiTEMS may hold those rows already, and a run would send them again. "
            f"Run `aitems-sync bootstrap {dataset.name}` to finish the hand-over (or give it "
            "up, if AiTEMS did not take the file)")
    try:
        columns = source.columns(dataset.query, hint=QUERY_HINT)
    except QueryError as error:  # running again cannot help: a spec mistake (exit 2)
        raise SpecError([spec.problem(("datasets", dataset.name, "query"),
                                      f"dataset {dataset.name}: {error}")]) from None
    problems = column_problems(spec, dataset, columns)
    mark = state.get_mark(dataset.name) if dataset.lookback > timedelta(0) else None
    if mark is not None:
        problem = lookback_problem(dataset, mark.cursor)
        if problem is not None:
            problems.append(spec.problem(("datasets", dataset.name, "lookback"), problem))
    if problems:
        raise SpecError(problems)


def check_state(spec: Spec, report: ValidationReport) -> None:
    """The state URL: its scheme and driver, and the store it names (created, or of a known
    schema version), without creating or migrating anything."""
    try:
        report.checks.append(probe.probe(spec.state_url))
    except StateError as error:
        report.problems.append(spec.problem(("state",), str(error)))


def check_queries(spec: Spec, sources: Mapping[str, Source], report: ValidationReport) -> None:
    """Every query against its source: its columns against the fields, key and cursor, the
    rows whose cursor is NULL, and a lookback against the cursor's values."""
    unreachable: set[str] = set()
    for name, source in sources.items():
        try:
            source.connect_check()
        except SourceError as error:
            unreachable.add(name)
            report.problems.append(spec.problem(("sources", name, "url"), str(error)))
    for dataset in spec.datasets.values():
        if dataset.source in unreachable:
            continue
        try:
            _check_query(spec, dataset, sources[dataset.source], report)
        except SourceError as error:
            report.problems.append(spec.problem(
                ("datasets", dataset.name, "query"), f"dataset {dataset.name}: {error}"))


def _check_query(spec: Spec, dataset: DatasetSpec, source: Source,
                 report: ValidationReport) -> None:
    columns = source.columns(dataset.query, hint=QUERY_HINT)
    problems = column_problems(spec, dataset, columns)
    if problems:
        report.problems.extend(problems)
        return
    try:
        Shaper(dataset, columns, source.timezone)
    except SpecError as error:
        report.problems.extend(spec.locate(p) for p in error.problems)
        return
    report.checks.append(f"dataset {dataset.name}: query columns match the fields, key and "
                         "cursor")
    cursor = match_column(dataset.cursor, columns)
    nulls, greatest = source.cursor_summary(dataset.query, columns, cursor, hint=QUERY_HINT)
    if nulls:
        report.warnings.append(spec.problem(
            ("datasets", dataset.name, "cursor"),
            f"dataset {dataset.name}: {nulls} row{'s' if nulls != 1 else ''} of the query "
            f"{'have' if nulls != 1 else 'has'} a NULL cursor {dataset.cursor}, which no run "
            f"ever reads; give them a value (COALESCE({dataset.cursor}, ...) in the query) or "
            f"leave them out on purpose (WHERE {dataset.cursor} IS NOT NULL)"))
    if dataset.lookback > timedelta(0):
        _check_lookback(spec, dataset, greatest, report)


def _check_lookback(spec: Spec, dataset: DatasetSpec, greatest: Any,
                    report: ValidationReport) -> None:
    """A lookback moves the cursor's value back in time: text that is no ISO timestamp (or a
    value of another kind) cannot be, and every run after the first would fail."""
    if greatest is None:
        report.checks.append(f"dataset {dataset.name}: lookback not checked: the query has no "
                             "row with a cursor value yet")
        return
    problem = lookback_problem(dataset, greatest)
    if problem is None:
        report.checks.append(f"dataset {dataset.name}: lookback fits the cursor's values")
    else:
        report.problems.append(spec.problem(("datasets", dataset.name, "lookback"), problem))


def lookback_problem(dataset: DatasetSpec, value: Any) -> str | None:
    """Why ``lookback`` cannot move the cursor value ``value`` back, or None (pure)."""
    try:
        lookback_start(value, dataset.lookback)
    except SourceError:
        kind = "text that is not an ISO 8601 date or timestamp" if isinstance(value, str) \
            else f"{type(value).__name__} values"
        return (f"dataset {dataset.name}: lookback needs a cursor of timestamps, dates or "
                f"numbers, but cursor {dataset.cursor} holds {kind}; every run after the first "
                "would fail. Remove lookback, or use a timestamp, date or number cursor")
    return None


def check_service(spec: Spec, client: AitemsClient, datasets: Sequence[DatasetSpec]) -> None:
    """The one signed read a run makes before it reads anything: the credentials and the
    service (an AuthError, or a SpecError at ``aitems.service_id``), so that broken keys fail a
    run even when there is nothing to send. A selected dataset the service does not list as
    attached is logged as a warning (AiTEMS refuses uploads to it)."""
    try:
        from aitems_sync.aitems.probe import read_service  # here, for start-up: a run reads it

        service = read_service(spec.aitems, client)
    except NotFoundError as error:
        raise SpecError([spec.problem(("aitems", "service_id"), f"AiTEMS: {error}")]) from None
    attached = {str(d.get("datasetId")) for d in service.get("datasets") or []
                if isinstance(d, dict)}
    for dataset in datasets:
        if attached and dataset.dataset_id not in attached:
            log.warning("dataset %s: AiTEMS dataset %s is not attached to service %s: AiTEMS "
                        "refuses uploads to it until it is (aitems-sync apply attaches it)",
                        dataset.name, dataset.dataset_id, spec.aitems.service_id,
                        extra={"event": "not_attached", "dataset": dataset.name})


def check_aitems(spec: Spec, report: ValidationReport) -> None:
    """The endpoint and credentials, the service, and each dataset's type, attachment and
    fields, against AiTEMS."""
    client = AitemsClient.from_config(spec.aitems)
    try:
        _check_aitems(spec, client, report)
    finally:
        client.close()


def _check_aitems(spec: Spec, client: AitemsClient, report: ValidationReport) -> None:
    try:
        spec = resolve(spec, client)
        service = client.get_service(spec.aitems.service_id)
    except SpecError as error:
        report.problems.extend(error.problems)
        return
    except ApiError as error:
        which = ("access_key" if isinstance(error, AuthError) else
                 "service_id" if isinstance(error, NotFoundError) else "endpoint")
        report.problems.append(spec.problem(("aitems", which), f"AiTEMS: {error}"))
        return
    attached = {str(d.get("datasetId", d)) if isinstance(d, dict) else str(d)
                for d in service.get("datasets", [])}
    report.checks.append(f"AiTEMS: credentials accepted, service {spec.aitems.service_id} "
                         "found")
    schemas = SchemaCheck(client)
    for dataset in spec.datasets.values():
        key = ("datasets", dataset.name, "dataset_id")
        try:
            problems, warnings = schemas.problems(spec, dataset)
        except ApiError as error:
            report.problems.append(spec.problem(key, f"dataset {dataset.name}: AiTEMS: {error}"))
            continue
        if attached and dataset.dataset_id not in attached:
            problems.append(spec.problem(
                key, f"AiTEMS dataset {dataset.dataset_id} is not attached to service "
                f"{spec.aitems.service_id}: attach it in AiTEMS, or fix dataset_id"))
        report.problems.extend(problems)
        report.warnings.extend(warnings)
        if not problems:
            report.checks.append(f"dataset {dataset.name}: AiTEMS dataset {dataset.dataset_id} "
                                 f"({dataset.type}) is attached and its schema matches the "
                                 "fields")
