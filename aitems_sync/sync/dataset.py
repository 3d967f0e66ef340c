"""Sync one dataset: the streaming loop from extracted rows to committed batches.

Rows flow in source order (cursor, key). Each chunk is prepared (shaped, validated, encoded and
hashed: :mod:`aitems_sync.sync.prepare`; with ``worker_after``, by an extraction worker process past
that many rows: :mod:`aitems_sync.sync.worker`), then diffed against the ledger with one
lookup (made on a helper thread while the previous chunk is routed); sendable rows are cut
into batches that go to the dataset's upload window
(:mod:`aitems_sync.sync.window`), which commits them strictly in batch order, so the mark never
passes a batch that AiTEMS has not acknowledged.

A stop request (a signal, a lost lease, a 401/403 on another dataset) is checked every few dozen
rows (before each batch's worth of a chunk of new keys, which goes into batches in bulk): no
batch is cut after it, the batches already on the wire finish and commit, and the rows
not yet in a batch are read again by the next run (the mark is still before them).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import repeat
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, cast

from aitems_sync.aitems.delivery import Target, Uploader
from aitems_sync.errors import AitemsSyncError, InvalidRowsError, UnreadableRowError
from aitems_sync.rows.encode import row_hash
from aitems_sync.source.extract import Extraction, Source
from aitems_sync.spec.model import BatchPolicy, DatasetSpec
from aitems_sync.state.quarantine import WATCH_LIMIT
from aitems_sync.state.records import KEY_HASH, PAYLOAD_HASH
from aitems_sync.state.store import LateBatch, LedgerEntry, Mark, QuarantineEntry, StateStore
from aitems_sync.sync.batches import (
    Batch,
    BatchBuilder,
    BoundaryTracker,
    NewRows,
    cursor_position,
)
from aitems_sync.sync.options import RunOptions
from aitems_sync.sync.prepare import Layout, Place, Prepared, Preparer, Unplaceable
from aitems_sync.sync.report import (
    INTERRUPTED,
    INVALID,
    AmbiguousBatch,
    DatasetReport,
    null_cursor_message,
)
from aitems_sync.sync.window import DryWindow, Window, show
from aitems_sync.undecodable import Undecodable

if TYPE_CHECKING:  # imported here only when a run starts a worker, for start-up time
    from aitems_sync.sync.worker import ExtractWorker

log = logging.getLogger(__name__)

#: Rows routed between two looks at the stop request: often enough to stop at once, rarely
#: enough to cost nothing on the hot path.
STOP_CHECK_ROWS = 64
#: Seconds a run that starts with a worker (``worker_after`` 0) waits for it to be ready before
#: it reads on its own thread instead (and hands over later, if the worker gets ready).
WORKER_START_SECONDS = 10.0


class StopFlag(Protocol):
    """Anything with ``is_set()``: a threading.Event, or the engine's combined stop request."""

    def is_set(self) -> bool: ...


@dataclass(frozen=True)
class SyncSettings:
    """One dataset's part of a run: its run, where its rows go, how they are cut, the options."""

    run_id: str
    target: Target
    batch: BatchPolicy
    options: RunOptions = RunOptions()
    dry_run: bool = False  # plan: read, shape and diff, but upload and write nothing


def _no_check() -> None:
    return None


@dataclass
class _NearLedger:
    """What the merged ledger does not cover yet: payload hashes of rows in batches cut and not
    merged (a committed batch's entries go to the ledger's log first), and the log earlier runs
    left. The reader consults it before the merged ledger, so a key seen again before its entry
    is merged is still compared; the log has no index by key, so it is not queried per chunk.
    Its size is bounded by the merge threshold plus the window."""

    hashes: dict[int, int] = field(default_factory=dict)  # key -> payload, the newest cut
    # Keys cut in more than one batch not yet covered -> the newest of those batches. Most keys
    # are cut once: a batch number per key would cost a tuple each (megabytes at the merge
    # threshold, on a run that peaks near the memory target).
    repeated: dict[int, int] = field(default_factory=dict)
    earlier: dict[int, int] = field(default_factory=dict)  # the earlier runs' log: key -> payload
    # Set by the window's committer thread: every batch up to this seq is covered (merged into
    # the ledger, or committed where the mark alone covers it), and whether a merge took the
    # earlier runs' log into the ledger too.
    covered_through: int = 0
    earlier_merged: bool = False
    _batches: deque[tuple[int, list[int]]] = field(default_factory=deque)  # seq, key hashes

    def add(self, batch: Batch) -> None:
        hashes, seq = self.hashes, batch.seq
        keys = list(map(KEY_HASH, batch.ledger))
        for key_hash in hashes.keys() & keys:  # a batch holds a key once
            self.repeated[key_hash] = seq
        hashes.update(zip(keys, map(PAYLOAD_HASH, batch.ledger), strict=True))
        self._batches.append((seq, keys))

    def holds_any(self, key_hashes: set[int]) -> bool:
        """Whether any of the keys is here."""
        return not (self.hashes.keys().isdisjoint(key_hashes)
                    and self.earlier.keys().isdisjoint(key_hashes))

    def get(self, key_hash: int) -> int | None:
        """The key's payload hash here (this run's batches first), or None."""
        held = self.hashes.get(key_hash)
        return held if held is not None else self.earlier.get(key_hash)

    def coverage(self) -> Coverage:
        """What the merged ledger covers now: read it before a lookup, and purge with it."""
        return Coverage(self.covered_through, self.earlier_merged)

    def purge(self, coverage: Coverage | None = None) -> None:
        """Forget what ``coverage`` covers (now, by default): what a ledger lookup begun after
        it was read will find. A key a later batch cut again stays until that batch is
        covered too."""
        through, merged = coverage or self.coverage()
        batches, hashes, repeated = self._batches, self.hashes, self.repeated
        while batches and batches[0][0] <= through:
            seq, keys = batches.popleft()
            again = repeated.keys() & keys if repeated else set()
            for key_hash in again:
                if repeated[key_hash] <= seq:
                    del hashes[key_hash], repeated[key_hash]
            once = [k for k in keys if k not in again] if again else keys
            deque(map(hashes.pop, once, repeat(None)), maxlen=0)  # a C loop
        if merged and self.earlier:
            self.earlier = {}


class Coverage(NamedTuple):
    """Every batch up to ``through`` is in the merged ledger (or covered by the mark alone),
    and, with ``merged``, so is the log earlier runs left."""

    through: int
    merged: bool


class DatasetSync:
    """Runs the sync of one dataset and fills in its report."""

    def __init__(
        self, dataset: DatasetSpec, settings: SyncSettings, state: StateStore,
        uploader: Uploader, source: Source, stop: StopFlag, report: DatasetReport,
        check_lease: Callable[[], None] = _no_check,
        progress: Callable[[DatasetReport], None] | None = None,
        overtaken: Callable[[], bool] | None = None,
        before_sending: Callable[[], None] = _no_check,
    ) -> None:
        self.dataset = dataset
        # Called once, before the first batch with rows goes to the window: the run compares
        # the fields with the AiTEMS schema there, so a run with nothing to send asks nothing.
        self.before_sending: Callable[[], None] | None = before_sending
        self.settings = settings
        self.state = state
        self.uploader = uploader
        self.source = source
        self.stop = stop
        self.report = report
        self.check_lease = check_lease
        self.overtaken = overtaken
        self.progress = progress
        self.builder = BatchBuilder(settings.batch.max_rows, settings.batch.max_bytes, _mark_at)
        self.near = _NearLedger()
        self.is_interaction = dataset.type == "interaction"
        self.old_mark: Mark | None = None
        # The rows handled at the mark's cursor value (identity -> content hash), which this
        # run reads again and skips; None when the mark records none (see _start).
        self.seen: dict[int, int] | None = None
        self.seen_map: dict[int, int] = {}  # the same, empty when None
        self.rereads_mark = True
        self.tracker = BoundaryTracker(valid_rows=self.is_interaction)
        self.last_place: Place | None = None  # the last row routed
        # Batches of earlier runs that may have landed late (user and item datasets): this run
        # reads again from the first of them, and cuts before the old mark move no mark.
        self.late: list[LateBatch] = []
        self.floor: Mark | None = None
        # Keys with open quarantine entries (read at the start, and rejected since): one read
        # unchanged closes them (BatchBuilder.confirm). None: too many to hold, or a dry run.
        self.watch: set[int] | None = None

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> None:
        started = time.monotonic()
        try:
            self._report_leftovers()
            self._start()
            mark = None if self.settings.options.full_refresh else self._repair(self.old_mark)
            # Interaction rows outside the lookback window are excluded by the mark alone: such
            # a dataset keeps no ledger, and consults one only if a failed run left entries.
            self.keeps_ledger = not self.is_interaction or self.dataset.lookback > timedelta(0)
            self.use_ledger = self.keeps_ledger or self.state.has_ledger(self.dataset.name)
            self.logged = self._earlier_log() if self.use_ledger else 0
            self.log_to_load = self.logged > 0
            with self._window() as self.window, self.source.extract(
                self.dataset.query, cursor=self.dataset.cursor, key=self.dataset.key_fields,
                mark=mark, lookback=self.dataset.lookback,
                chunk_rows=self.settings.options.chunk_rows, inclusive=self.rereads_mark,
                # With a worker, the first rows are read here at once, unsorted; the worker
                # sorts the rest (Start.sort): sorting the whole table here first delayed the
                # first upload and made a backfill measurably slower (docs/perf-history.md).
                sort=None if self.settings.options.worker_after is None else False,
                count_null_cursors=True,
            ) as extraction:
                self._report_null_cursors(extraction.null_cursors or 0)
                self._stream(extraction, mark)
            self._after_stream()
        finally:
            self.report.seconds = round(time.monotonic() - started, 3)

    def _start(self) -> None:
        """Read the mark and its boundary, and decide how the mark's cursor value is read.

        The mark's own cursor value is read again (``rereads_mark``) and the rows its boundary
        records are skipped, so a row committed later at that value is never lost whatever its
        key. User and item datasets do so at every mark: their ledger skips a delivered row
        anyway, and a mark without a boundary (written by an older version or by `state set`)
        at worst quarantines an invalid row at it once more. An interaction dataset reads
        strictly after a mark without a boundary, and its batches record none until the
        cursor value moves past the mark's, as the rows before the mark's key are not known.
        """
        self.old_mark = self.state.get_mark(self.dataset.name)
        self.seen = self.state.boundary(self.dataset.name) if self.old_mark else None
        self.rereads_mark = not self.is_interaction or self.seen is not None
        if (self.old_mark is not None and not self.rereads_mark
                and not self.settings.options.full_refresh):
            self.tracker = BoundaryTracker(after=self.old_mark.cursor,
                                           valid_rows=self.is_interaction)
        self.seen_map = self.seen or {}
        if not self.settings.dry_run:
            self.watch = self.state.open_quarantine_keys(self.dataset.name)

    def _repair(self, mark: Mark | None) -> Mark | None:
        """Where to read from, given batches of earlier runs that may have reached AiTEMS after
        their run lost the lease (and put older versions of their keys over newer ones): their
        keys' ledger entries are forgotten and the read starts at the first of them, so those
        keys' newest versions are sent again. Batches cut before the old mark move no mark."""
        if self.is_interaction or self.settings.dry_run or mark is None:
            return mark  # interactions: a late batch only doubles events, reported ambiguous
        self.late = self.state.late_batches(self.dataset.name)
        starts = [b.first.cursor for b in self.late if b.first is not None]
        if not starts:
            return mark
        keys = sorted({k for b in self.late for k in b.key_hashes})
        self.state.forget(self.dataset.name, self.settings.run_id, keys)
        try:
            start = min(mark.cursor, *starts)
        except TypeError:
            return None  # cursor values that do not compare: read everything
        log.warning("dataset %s: %d batches of earlier runs may have reached AiTEMS after their "
                    "run lost its lease; sending the newest version of their %d keys again, "
                    "reading from cursor %s", self.dataset.name, len(self.late), len(keys),
                    start, extra={"event": "late_repair", "dataset": self.dataset.name})
        self.floor = mark
        return Mark(start, mark.key)

    def _earlier_log(self) -> int:
        """How many ledger entries earlier runs left in the log. Half the merge threshold or
        more, the window merges them once this run has batches (the reader holds them in
        memory meanwhile; a small delta then does not pay a whole merge at its end); the
        threshold or more, they are merged here and now, as that many would not fit in
        memory. Nothing else writes the dataset's ledger while we hold its lease."""
        logged = self.state.logged_count(self.dataset.name)
        if logged >= self.settings.options.merge_every and not self.settings.dry_run:
            self.state.merge_ledger(self.dataset.name)
            return 0
        return logged

    def _covered(self, through: int, merged: bool) -> None:
        """From the committer thread: every batch up to ``through`` is covered (see Window)."""
        if merged:
            self.near.earlier_merged = True
        self.near.covered_through = through

    def _stream(self, extraction: Extraction, mark: Mark | None) -> None:
        layout = Layout(tuple(extraction.columns), extraction.cursor_index,
                        tuple(extraction.key_indices))
        self.preparer = Preparer(self.dataset, layout, self.source.timezone,
                                 self.state.row_hash_of(self.dataset.name))
        try:
            for chunk, ledger, coverage in self._looked_up(self._prepared(extraction, mark)):
                self.near.purge(coverage)
                if not self._route(chunk, ledger):
                    self.report.status = INTERRUPTED
                    break
                if chunk.unplaceable is not None:
                    self._stop_before(chunk.unplaceable)
                if self.progress is not None:
                    self.progress(self.report)
            else:
                if self.builder.pending_rows:
                    last = self._cut()
                    if not self._changes_nothing(last):
                        self._emit(last)
        except BaseException as error:
            # Batches cut before the failure are sound: commit what AiTEMS acknowledged, in
            # order (a failed upload among them abandons the rest), then report the failure.
            try:
                self.window.drain()
            except AitemsSyncError as also:
                if also is not error:
                    log.error("dataset %s: %s", self.dataset.name, also,
                              extra={"event": "batch_failed", "dataset": self.dataset.name})
            raise
        self.window.drain()
        if self.progress is not None:
            self.progress(self.report)  # the last batches committed after the last chunk

    def _stop_before(self, row: Unplaceable) -> None:
        """Send what was read before a row whose cursor or key cannot be read, then fail the
        dataset naming that row (the window commits the batches AiTEMS acknowledged)."""
        if self.builder.pending_rows:
            last = self._cut()
            if not self._changes_nothing(last):
                self._emit(last)
        raise UnreadableRowError(row.message(self.dataset.name))

    def _prepared(self, extraction: Extraction, mark: Mark | None) -> Iterator[Prepared]:
        """The extraction's chunks, prepared: on this thread, and once ``worker_after`` rows
        are read and a worker process is ready, by the worker, from the row after the last
        one read here (``mark``: where the extraction began, with the dataset's lookback)."""
        after = self.settings.options.worker_after
        if after is None or not self.source.shareable:
            for chunk in extraction.chunks:
                prepared = self.preparer.prepare(chunk)
                del chunk  # not kept while the prepared one is routed and the next one read
                yield prepared
                if prepared.unplaceable is not None:
                    return  # the dataset stops at that row (_stop_before): read no further
            return
        from aitems_sync.sync.worker import Start  # here: start-up time (see TYPE_CHECKING)

        # What the worker reads of a first load is most of the table: sorted. After a mark
        # (a delta, or a first load resumed), the source's counts decide.
        sort = True if mark is None else None
        start = Start(mark, self.dataset.lookback, sort=sort, inclusive=self.rereads_mark)
        worker: ExtractWorker | None = None
        try:
            if after == 0:
                worker = self._start_worker()
                worker.ready(timeout=WORKER_START_SECONDS)
            read = 0
            if worker is None or not worker.ready():
                for chunk in extraction.chunks:
                    prepared = self.preparer.prepare(chunk)
                    yield prepared
                    if prepared.unplaceable is not None:
                        return  # the dataset stops at that row (_stop_before)
                    read += len(prepared)
                    if not prepared.places or not _bindable(prepared.places[-1]):
                        continue  # the worker could not be told where to start: read on here
                    start = Start(_mark_at(prepared.places[-1]), sort=sort)
                    if worker is None and read >= after:
                        worker = self._start_worker()
                    elif worker is not None and worker.ready():
                        break
                else:
                    return  # read to the end here
            assert worker is not None
            extraction.close()
            log.info("dataset %s: %d rows read; an extraction worker process reads the rest",
                     self.dataset.name, read,
                     extra={"event": "worker_handover", "dataset": self.dataset.name})
            yield from worker.chunks(start)
        finally:
            if worker is not None:
                worker.close()

    def _start_worker(self) -> ExtractWorker:
        from aitems_sync.sync.worker import ExtractWorker  # here: start-up time, as above

        return ExtractWorker(self.source.config, self.dataset, self.preparer.layout,
                             self.preparer.row_hash, self.settings.options.chunk_rows)

    def _window(self) -> Window | DryWindow:
        if self.settings.dry_run:
            return DryWindow(self.report)
        return Window(
            self.dataset, self.settings.run_id, self.settings.target,
            self.settings.batch.in_flight, self.state, self.uploader, self.report,
            check_lease=self.check_lease, keep_ledger=self.keeps_ledger,
            logged=self.logged, on_covered=self._covered,
            merge_every=self.settings.options.merge_every,
            merge_first=self.logged >= self.settings.options.merge_every // 2,
            overtaken=None if self.is_interaction else self.overtaken,
        )

    def _after_stream(self) -> None:
        dataset, report = self.dataset, self.report
        if (self.is_interaction and self.use_ledger and self.last_place is not None
                and not self.settings.dry_run):
            self._prune_ledger()
        if report.status == INTERRUPTED:
            return
        if self.late:
            self.state.drop_late(dataset.name, [b.id for b in self.late])
        if report.invalid and dataset.max_invalid.exceeded(report.invalid, report.read):
            report.status = INVALID
            report.error = (
                f"{report.invalid} of {report.read} rows were invalid, over max_invalid; "
                f"they are in quarantine (aitems-sync quarantine list {dataset.name})"
            )
            log.error("dataset %s: %s", dataset.name, report.error,
                      extra={"event": "max_invalid", "dataset": dataset.name})

    # -- per chunk ------------------------------------------------------------------------

    def _looked_up(
        self, chunks: Iterator[Prepared]
    ) -> Iterator[tuple[Prepared, dict[int, int], Coverage]]:
        """Each chunk with its keys' payload hashes in the merged ledger, and the coverage
        read before that lookup (what the near ledger may forget before the chunk is routed).

        The next chunk's lookup runs on a helper thread while the caller routes this one: the
        database does it without the GIL, and a backfill's reading thread waited for it a
        quarter of its time."""
        if not self.use_ledger:
            for chunk in chunks:
                yield chunk, {}, self.near.coverage()
            return
        name = f"lookup-{self.dataset.name}"
        with ThreadPoolExecutor(1, thread_name_prefix=name) as lookups:
            ahead: tuple[Prepared, Future[tuple[dict[int, int], Coverage]]] | None = None
            for chunk in chunks:
                if self.log_to_load:  # on the first chunk: a run with nothing to read never
                    self.near.earlier = self.state.logged_entries(self.dataset.name)
                    self.log_to_load = False
                looking = lookups.submit(self._look_up, chunk)
                if ahead is not None:
                    yield ahead[0], *ahead[1].result()
                ahead = (chunk, looking)
            if ahead is not None:
                yield ahead[0], *ahead[1].result()

    def _look_up(self, chunk: Prepared) -> tuple[dict[int, int], Coverage]:
        coverage = self.near.coverage()  # before the lookup: it sees at least this much
        hashes = chunk.lookup_hashes()
        if not hashes:
            return {}, coverage
        return self.state.ledger_lookup(self.dataset.name, hashes, logged=False), coverage

    def _route(self, chunk: Prepared, ledger: dict[int, int]) -> bool:
        """Skip each valid row AiTEMS holds already (the batch being built, then the near
        ledger, then the merged ``ledger`` decide), add the others to the batch, quarantine
        the invalid ones. One loop with the per-row steps inlined; a chunk of new keys only,
        as a backfill reads, takes the bulk path instead (:meth:`_route_new`)."""
        if self._all_new(chunk, ledger):
            return self._route_new(chunk)
        stop, builder, report, near_get = self.stop, self.builder, self.report, self.near.get
        mark_every, positions = self.settings.options.mark_every, chunk.positions
        rereads = self.settings.options.full_refresh and self.is_interaction
        note, seen_get, watch = self.tracker.note_valid, self.seen_map.get, self.watch
        rows = zip(chunk.encoded, chunk.key_hashes, chunk.payloads, chunk.keys, chunk.places,
                   strict=True)
        for index, (encoded, key_hash, payload, key, place) in enumerate(rows):
            if not index % STOP_CHECK_ROWS and stop.is_set():
                return False
            report.read += 1
            if encoded is None:
                raw, rejected_key_hash = chunk.invalid[index]
                self._reject(raw, rejected_key_hash, place, ledger)
            else:
                near = near_get(key_hash)
                held = builder.holds(key_hash)
                if held is None:
                    held = near if near is not None else seen_get(key_hash)
                    if held is None:
                        held = ledger.get(key_hash)
                # A full refresh re-reads interactions the mark already covers; without a
                # ledger entry the mark is the record that they were delivered.
                if held == payload or (rereads and self._covered_by_mark(place)):
                    report.unchanged += 1
                    builder.skip()
                    # Only what the ledger knows was delivered is current: a row the mark
                    # covers may have changed since.
                    if watch and held == payload and key_hash in watch:
                        builder.confirm(key_hash)
                else:
                    if near is not None or key_hash in ledger:
                        report.changed += 1
                    else:
                        report.new += 1
                    entry = LedgerEntry(key_hash, payload,
                                        None if positions is None else positions[index])
                    if not builder.offer(encoded, entry, key, place):
                        self._emit(self._cut())
                        builder.add(encoded, entry, key, place)
                note(place[0], key_hash, payload)  # after a cut: the row is in the next batch
            self.last_place = place
            if builder.pending_rows >= mark_every:
                self._emit(self._cut())
        return True

    def _all_new(self, chunk: Prepared, ledger: dict[int, int]) -> bool:
        """Whether every row of the chunk is valid and sendable as new: its key is once in the
        chunk and nowhere else (the batch being built, the near ledger, the merged ledger).
        A full refresh of interactions compares rows with the mark, row by row."""
        if chunk.invalid or ledger or (self.settings.options.full_refresh and self.is_interaction):
            return False
        keys = set(chunk.key_hashes)
        return (len(keys) == len(chunk.key_hashes) and not self.builder.holds_any(keys)
                and not self.near.holds_any(keys) and (not self.seen or keys.isdisjoint(self.seen)))

    def _route_new(self, chunk: Prepared) -> bool:
        """Add a chunk of new rows to batches a batch's worth at a time (``_route`` does the
        same row by row: the same batches, cut at the same rows). The stop request is looked at
        before each batch's worth."""
        builder, report, mark_every = self.builder, self.report, self.settings.options.mark_every
        encoded = cast(list[bytes], chunk.encoded)  # no row is invalid: none is None
        rows = NewRows.of(encoded, chunk.key_hashes, chunk.payloads, chunk.positions, chunk.keys,
                          chunk.places)
        start, end = 0, len(chunk)
        while start < end:
            if self.stop.is_set():
                return False
            taken = builder.extend(rows, start, mark_every - builder.pending_rows)
            if taken:
                self.tracker.note_rows(chunk.places, chunk.key_hashes, chunk.payloads, start,
                                       start + taken)
                start += taken
                report.read += taken
                report.new += taken
                self.last_place = chunk.places[start - 1]
            if start < end or builder.pending_rows >= mark_every:
                self._emit(self._cut())
        return True

    def _covered_by_mark(self, place: Place) -> bool:
        """Whether the mark before this run covers a row a full refresh reads again: a row
        before its cursor value, or at it and before its key when it records no boundary (with
        one, the boundary decides)."""
        mark = self.old_mark
        if mark is None:
            return False
        try:
            if self.seen is not None:
                return bool(place[0] < mark.cursor)
            return bool((place[0], *place[1:]) <= (mark.cursor, *mark.key))
        except TypeError:
            return False

    def _changes_nothing(self, batch: Batch) -> bool:
        """Whether committing the run's last batch would change nothing: no rows, nothing
        quarantined, and the mark where it was (a run that read only the rows at the mark's
        cursor value again, and skipped them: a no-op run then writes nothing)."""
        return (batch.empty and not batch.quarantine and batch.end == self.old_mark
                and self.floor is None)

    def _cut(self) -> Batch:
        """Cut the batch being built at the last row routed, with the boundary it records; one
        that ends before the floor (a read started behind the mark) moves neither."""
        end, boundary = self._last_mark(), self.tracker.take()
        if self.floor is not None and end is not None and _before(end, self.floor):
            end, boundary = None, None
        return self.builder.cut(end, boundary)

    def _last_mark(self) -> Mark | None:
        """The mark of the last row routed: where a batch cut now moves the mark."""
        return None if self.last_place is None else _mark_at(self.last_place)

    def _held(self, key_hash: int, ledger: dict[int, int]) -> int | None:
        """The payload hash the key holds once what was cut so far is delivered: the batch
        being built, then batches cut or logged and not merged, then the merged ledger."""
        pending = self.builder.holds(key_hash)
        if pending is not None:
            return pending
        near = self.near.get(key_hash)
        return near if near is not None else ledger.get(key_hash)

    def _reject(self, raw: tuple[Any, ...], key_hash: int | None, place: Place,
                ledger: dict[int, int]) -> None:
        """Quarantine an invalid row (``key_hash``: its coerced key's, where it has one), or
        stop the dataset when on_invalid is fail. One the mark's boundary records (the same raw
        values, read again at the mark's cursor value) was quarantined already: skipped."""
        content = row_hash(repr(raw).encode(), self.preparer.row_hash)
        self.tracker.note(place[0], content, content)
        # Read again at the mark's cursor value, or behind the mark after a late batch: the
        # run that read it first quarantined it.
        if self.seen_map.get(content) == content or (
                self.floor is not None and _before(_mark_at(place), self.floor)):
            self.report.unchanged += 1
            self.builder.skip()
            return
        errors = [{"path": e.path, "message": e.message}
                  for e in self.preparer.shaper.explain(raw)]
        key = dict(zip(self.dataset.key_fields, place[1:], strict=False))
        self.report.invalid += 1
        if self.dataset.on_invalid == "fail":
            first = "; ".join(f"{e['path']}: {e['message']}" for e in errors[:3])
            raise InvalidRowsError(
                f"dataset {self.dataset.name}: row {_describe_key(key)} is invalid ({first}) "
                "and on_invalid is fail: nothing after it was sent and the mark stays before it; "
                "fix the data or the spec and run again"
            )
        columns = self.preparer.layout.columns
        held = None if key_hash is None or self.is_interaction else self._held(key_hash, ledger)
        self.builder.reject(QuarantineEntry(
            dataset=self.dataset.name, run_id=self.settings.run_id, key=key,
            raw=dict(zip(columns, raw, strict=False)), errors=errors, origin="local",
            ledger_hash=held, key_hash=key_hash,
        ))
        if key_hash is not None and self.watch is not None:
            self.watch.add(key_hash)
            if len(self.watch) > WATCH_LIMIT:
                self.watch = None  # bounded memory: the commits still close delivered keys

    # -- batches -------------------------------------------------------------------------

    def _emit(self, batch: Batch) -> None:
        if not batch.empty and self.before_sending is not None:
            check, self.before_sending = self.before_sending, None
            check()
        if not batch.empty:
            self.near.add(batch)
        self.window.emit(batch)
        self.report.superseded = self.builder.superseded

    # -- reporting and housekeeping -------------------------------------------------------

    def _report_leftovers(self) -> None:
        """Batches an earlier run journalled as sending and never committed: it died with them
        on the wire, so AiTEMS may hold them already. They are re-read and sent again."""
        leftovers = self.state.unfinished_batches(self.dataset.name)
        for record in leftovers:
            ambiguous = AmbiguousBatch(
                rows=record.rows,
                first_cursor=show(record.first), last_cursor=show(record.last),
                reason=f"left sending by run {record.run_id}", batch_id=record.batch_id,
            )
            self.report.ambiguous.append(ambiguous)
            log.warning(
                "dataset %s: batch %d of run %s (%d rows, cursor %s .. %s) was on the wire when "
                "that run ended; it is sent again and AiTEMS may now hold those rows twice",
                self.dataset.name, record.batch_id, record.run_id, record.rows,
                ambiguous.first_cursor, ambiguous.last_cursor,
                extra={"event": "ambiguous_batch", "dataset": self.dataset.name},
            )
        if leftovers and not self.settings.dry_run:
            self.state.mark_ambiguous(self.dataset.name, [r.batch_id for r in leftovers])

    def _report_null_cursors(self, count: int) -> None:
        """Rows whose cursor is NULL are never read (they have no place after a mark): count
        them in the report and warn, every run, so that they are never skipped silently."""
        self.report.null_cursor = count
        if count:
            log.warning("dataset %s: %s", self.dataset.name,
                        null_cursor_message(count, self.dataset.cursor),
                        extra={"event": "null_cursor", "dataset": self.dataset.name,
                               "rows": count})

    def _prune_ledger(self) -> None:
        mark = self.state.get_mark(self.dataset.name)
        position = None if mark is None else cursor_position(mark.cursor, self.source.timezone)
        if position is not None:
            before = position - self.dataset.lookback.total_seconds()
            self.state.prune_ledger(self.dataset.name, before)


def _mark_at(place: Sequence[Any]) -> Mark:
    """The high-water mark a row's place stands for."""
    return Mark(cursor=place[0], key=tuple(place[1:]))


def _bindable(place: Place) -> bool:
    """Whether a row's place can start a read after it: none of its values is Undecodable (an
    invalid row's, under a whole-row key)."""
    return Undecodable not in map(type, place)


def _before(mark: Mark, floor: Mark) -> bool:
    """Whether ``mark`` sorts before ``floor`` (values that do not compare: taken as before)."""
    try:
        return bool((mark.cursor, *mark.key) < (floor.cursor, *floor.key))
    except TypeError:
        return True


def _describe_key(key: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in key.items())

