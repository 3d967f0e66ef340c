"""``bootstrap --from``: a file another engine exported (a warehouse export, Spark) registered as
a dataset's first load, instead of a file bootstrap writes: how a table too large for one
process to read gets into AiTEMS.

1. The one ``.csv`` or ``.csv.gz`` file at the URL is found
   (:func:`~aitems_sync.objectstorage.exports.find_export`) and its header line read by ranged
   GETs; it must equal the dataset's field names in order and case (:func:`header_diff`).
   Nothing is asked of AiTEMS, and nothing written to the state store, before it does.
2. Holding the dataset's lease: an earlier bootstrap's unfinished hand-over is finished (or
   given up) as ``bootstrap`` does; the fields are checked against the AiTEMS schema; the
   hand-over is recorded; the AiTEMS dataset is pointed at the file and polled until it has
   read it (:mod:`aitems_sync.sync.handover`).
3. The mark is set to the operator's cursor value, with no ledger and no row recorded at that
   value: what the file holds is not known. The next run reads from that value on, inclusive.

Nothing is uploaded, so nothing is left to abort.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

from aitems_sync.errors import ExportError, ObjectStorageError, UsageError
from aitems_sync.objectstorage.exports import (
    ExportFile,
    ExportLocation,
    find_export,
    read_header,
)
from aitems_sync.spec.model import DatasetSpec, Spec
from aitems_sync.state.marks import CursorValue, check_cursor, parse_cursor
from aitems_sync.state.records import Boundary
from aitems_sync.state.store import Mark, StateStore
from aitems_sync.sync.bootstrap import (
    BootstrapReport,
    BootstrapSettings,
    DatasetLoad,
    attempt,
    shown_cursor,
)
from aitems_sync.sync.fileload import staging_name
from aitems_sync.sync.handover import DatasetApi, FileHandover
from aitems_sync.sync.leases import Leases

log = logging.getLogger(__name__)

#: Finds the ids of what the spec names (the service, a dataset not created yet: see
#: ``sync.resolve``), asking AiTEMS: called once the file has passed its checks.
Resolver = Callable[[Spec, DatasetSpec], tuple[Spec, DatasetSpec]]

#: The mark's boundary: no row at its cursor value is known to be delivered, so the next run
#: reads that value again and sends every row at it.
NO_ROWS = Boundary({}, fresh=True)
#: Text that reads as a date or a datetime, which ``auto`` alone would keep as a string.
_DATE_LIKE = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}.*)?")


def mark_cursor(text: str, kind: str, current: Mark | None) -> CursorValue:
    """The ``--mark`` value, parsed and checked as ``state set --cursor`` is (``auto``: the
    type of the current mark). With no current mark, a date or datetime given with ``auto``
    is refused (UsageError): a string mark on a datetime column reads the wrong rows."""
    like = current.cursor if current is not None else None
    if kind == "auto" and like is None and _DATE_LIKE.fullmatch(text.strip()):
        raise UsageError(
            f"--mark {text!r} looks like a date or a datetime, and the dataset has no mark "
            "whose type --type auto could follow: give --type datetime (or date) for a "
            "timestamp column, or --type str for a text column that holds such values")
    value: CursorValue = parse_cursor(text, kind, like, option="--mark")
    check_cursor(value, text, like, option="--mark")
    return value


def header_diff(fields: Sequence[str], header: Sequence[str]) -> list[str]:
    """How a file's header differs from the dataset's field names (pure): one line per
    difference, empty when it equals them in name, order and case."""
    if list(header) == list(fields):
        return []
    lines: list[str] = []
    folded = {f.lower(): f for f in fields}
    seen: dict[str, int] = {}
    for column, name in enumerate(header, 1):
        if name in seen:
            lines.append(f"column {column} {name!r} repeats column {seen[name]}")
            continue
        seen[name] = column
        like = folded.get(name.strip().lower())
        if name in fields:
            continue
        if like is None:
            lines.append(f"column {column} {name!r} is not a field")
        else:
            lines.append(f"column {column} {name!r} is field {like!r} written otherwise "
                         "(names must match exactly: letter case, no spaces)")
    named = {name.strip().lower() for name in header}
    lines += [f"field {f!r} has no column" for f in fields if f.lower() not in named]
    present = list(dict.fromkeys(folded[n] for n in (h.strip().lower() for h in header)
                                 if n in folded))
    if present != [f for f in fields if f in present] or not lines:
        lines.append("the columns are in another order than the fields")
    return lines


def register(
    spec: Spec, dataset: DatasetSpec, export: ExportLocation, cursor: CursorValue, *,
    state: StateStore, api: DatasetApi, storage: Any, settings: BootstrapSettings,
    stop: threading.Event | None = None, resolve: Resolver | None = None,
) -> BootstrapReport:
    """Register the file at ``export`` as ``dataset``'s first load and set its mark to
    ``cursor`` (see the module docstring); a dataset without an id is created from the file.
    ``resolve`` finds the ids of what the spec names, after the file's checks. Never raises
    for the dataset's failure: the report says what happened."""
    report = BootstrapReport(settings.run_id)
    load = DatasetLoad(dataset.name, dataset_id=dataset.dataset_id, rows=None)
    report.datasets.append(load)
    stop = stop or threading.Event()
    attempt(spec, load, stop, _Register(spec, dataset, export, cursor, state, api, storage,
                                        settings, stop, load, resolve).run)
    return report


class _Register:
    """One dataset's registration of an exported file."""

    def __init__(self, spec: Spec, dataset: DatasetSpec, export: ExportLocation,
                 cursor: CursorValue, state: StateStore, api: DatasetApi, storage: Any,
                 settings: BootstrapSettings, stop: threading.Event, load: DatasetLoad,
                 resolve: Resolver | None) -> None:
        self.spec, self.dataset, self.export = spec, dataset, export
        self.state, self.api, self.storage = state, api, storage
        self.settings, self.stop, self.load, self.resolve = settings, stop, load, resolve
        # The key part below every key (NULLs sort first), as `state set` writes it.
        self.mark = Mark(cursor=cursor, key=tuple(None for _ in dataset.key_fields))

    def run(self) -> None:
        found = self._checked_file()  # before AiTEMS is asked anything
        if self.resolve is not None:
            self.spec, self.dataset = self.resolve(self.spec, self.dataset)
        spec, dataset = self.spec, self.dataset
        self.aitems = FileHandover(spec, dataset, self.state, self.api,
                                   run_id=self.settings.run_id,
                                   ready_timeout=self.settings.ready_timeout,
                                   poll_seconds=self.settings.poll_seconds, stop=self.stop)
        leases = Leases(self.state, [dataset.name, staging_name(dataset.name)],
                        self.settings.run_id, self.settings.lease_ttl)
        if not leases.acquire(wait=self.settings.wait, stop=self.stop):
            raise ObjectStorageError("stopped by a signal while waiting for the dataset's "
                                     "lease: nothing was done")
        try:
            self._register(found, leases)
        finally:
            self.load.dataset_id = self.aitems.dataset.dataset_id  # created, if it had none
            leases.release()

    def _checked_file(self) -> ExportFile:
        """The export's one file, its header equal to the fields: ExportError otherwise."""
        found = find_export(self.storage, self.export)
        self.load.file, self.load.file_bytes = found.url, found.size
        header = read_header(self.storage, found)
        problems = header_diff(self.dataset.field_names, header)
        if problems:
            raise ExportError(
                f"the header of {found.url} does not match the fields of dataset "
                f"{self.dataset.name} in name, order and case, so AiTEMS would refuse the file "
                "(nothing was asked of it):\n"
                f"  fields: {','.join(self.dataset.field_names)}\n"
                f"  header: {','.join(header)}\n"
                + "".join(f"  {line}\n" for line in problems)
                + "Fix the export's header row (or the spec's fields), then run bootstrap "
                "--from again")
        return found

    def _register(self, found: ExportFile, leases: Leases) -> None:
        name = self.dataset.name
        remote = self.aitems.remote()
        pending = self.state.handover(name)
        if pending is not None and self.aitems.settle(pending, remote, found.bucket):
            if pending.object_key == found.key:  # this file, read: with the mark given now
                self._take()
                return
            self.aitems.take(pending.mark, pending.boundary, pending.identity)
            remote = self.aitems.remote()
        self.aitems.refuse_if_reading(remote)
        self.aitems.check_schema()
        self.state.discard(staging_name(name))  # no ledger: what the file holds is not known
        leases.check(name)  # a bootstrap past its lease asks AiTEMS nothing
        self.aitems.ask(remote, bucket=found.bucket, key=found.key, mark=self.mark,
                        boundary=NO_ROWS, identity=self.dataset.key)
        leases.check(name)
        self._take()

    def _take(self) -> None:
        self.aitems.take(self.mark, NO_ROWS, self.dataset.key)
        self.load.mark = shown_cursor(self.mark.cursor)
        name, lookback = self.dataset.name, self.dataset.lookback
        log.info("dataset %s: %s registered; the next run reads from %s %r on (inclusive)",
                 name, self.load.file, self.dataset.cursor, self.mark.cursor,
                 extra={"event": "bootstrap_registered", "dataset": name})
        if self.dataset.type == "interaction" and lookback.total_seconds() > 0:
            log.warning(
                "dataset %s: its lookback (%s) makes the next run read the events from %s "
                "less the lookback on; no ledger records what the file holds, so the events "
                "of that window in the file are sent again (AiTEMS appends interactions)",
                name, lookback, self.mark.cursor,
                extra={"event": "bootstrap_lookback", "dataset": name})
