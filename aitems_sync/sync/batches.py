"""Pure decisions about a delta: ledger comparison, last version wins, cutting rows into batches.

Nothing here touches a database, the network or the clock: the engine feeds shaped rows in and
gets batches out, so the rules (last version wins, bounded by rows and bytes, the mark moves only
with a batch) can be tested on their own.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, tzinfo
from decimal import Decimal
from itertools import accumulate, repeat
from typing import Any

from aitems_sync.state.marks import Mark
from aitems_sync.state.records import Boundary, LedgerEntry, QuarantineEntry

#: Bytes of ``{"type":"interaction","value":[]}`` rounded up: the body around the rows.
ENVELOPE_BYTES = 40


def cursor_position(value: Any, timezone: tzinfo) -> float | None:
    """A number that orders cursor values, used to prune ledgers behind the lookback window.

    Datetimes and dates become epoch seconds (naive ones read in ``timezone``), numbers stay
    numbers, ISO 8601 text is parsed; anything else has no position (its ledger is not pruned).
    """
    if type(value) is int or type(value) is float:  # the common cases, first and cheaply
        return float(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | Decimal):
        return float(value)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=timezone)
        return aware.timestamp()
    if isinstance(value, date):
        return datetime.combine(value, time(), timezone).astimezone(UTC).timestamp()
    return None


@dataclass
class Batch:
    """Rows cut from the delta, committed as one unit once they are acknowledged.

    ``rows`` may be empty: such a batch only moves the mark (and writes quarantine entries)
    past rows that were unchanged or invalid, so a re-run does not read them again.
    """

    seq: int
    rows: list[bytes]
    ledger: list[LedgerEntry]
    keys: list[Any]  # the key values of each row, for quarantine records and reports
    first: Mark | None  # first and last row sent, for the journal
    last: Mark | None
    end: Mark | None  # where the mark moves when this batch commits
    quarantine: list[QuarantineEntry]
    body_bytes: int
    boundary: Boundary | None = None  # recorded with the mark when the batch commits
    # Keys read unchanged whose open quarantine entries its commit closes: AiTEMS holds their
    # newest version already (BatchBuilder.confirm).
    current: list[int] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.rows


@dataclass(frozen=True)
class NewRows:
    """Valid rows of new keys (each once), in columns, for :meth:`BatchBuilder.extend`."""

    encoded: Sequence[bytes]
    key_hashes: Sequence[int]
    entries: Sequence[LedgerEntry]
    keys: Sequence[Any]
    places: Sequence[Sequence[Any]]

    @classmethod
    def of(cls, encoded: Sequence[bytes], key_hashes: Sequence[int], payloads: Sequence[int],
           positions: Sequence[float | None] | None, keys: Sequence[Any],
           places: Sequence[Sequence[Any]]) -> NewRows:
        # tuple.__new__ mapped over the columns makes the entries without a Python call per
        # row (a LedgerEntry(...) call runs the named tuple's Python __new__, about twice as
        # dear).
        columns = zip(key_hashes, payloads, [None] * len(key_hashes) if positions is None
                      else positions, strict=True)
        entries: list[LedgerEntry] = list(map(tuple.__new__, repeat(LedgerEntry), columns))
        return cls(encoded, key_hashes, entries, keys, places)


@dataclass
class BatchBuilder:
    """Collects sendable rows in delta order and cuts batches bounded by rows and bytes.

    Within one batch a key seen twice keeps its last version (AiTEMS wants unique keys per
    upload); the replaced version is counted as superseded. So does a rejected row whose key
    comes again, valid, later in the same batch: its quarantine entry is stored ``superseded``
    (its commit closes the open entries of the batch's keys stored before it, not its own,
    which may be newer than the version the batch sends).
    """

    max_rows: int
    max_bytes: int
    mark_of: Callable[[Sequence[Any]], Mark]  # a row's mark; built only when a batch is cut
    seq: int = 0
    superseded: int = 0
    _rows: list[bytes] = field(default_factory=list)
    _ledger: list[LedgerEntry] = field(default_factory=list)
    _keys: list[Any] = field(default_factory=list)
    _slot: dict[int, int] = field(default_factory=dict)
    _quarantine: list[QuarantineEntry] = field(default_factory=list)
    # Key hash -> where its rejected rows are in _quarantine, while they are open.
    _rejected: dict[int, list[int]] = field(default_factory=dict)
    _current: list[int] = field(default_factory=list)
    _bytes: int = ENVELOPE_BYTES
    _first: Sequence[Any] | None = None  # first and last rows sent
    _last: Sequence[Any] | None = None
    pending_rows: int = 0  # rows taken in (sent, skipped or rejected) since the last cut

    def fits(self, encoded: bytes) -> bool:
        """Whether one more row of this size stays within the batch's bounds."""
        if not self._rows:
            return True
        return len(self._rows) < self.max_rows and self._bytes + len(encoded) + 1 <= self.max_bytes

    def add(self, encoded: bytes, entry: LedgerEntry, key: Any, row: Sequence[Any]) -> None:
        """Take in a row to send. The caller checks ``fits`` first and cuts when it does not."""
        if self._rejected and entry.key_hash in self._rejected:
            self._supersede(entry.key_hash)
        slot = self._slot.get(entry.key_hash)
        if slot is not None:
            self._bytes += len(encoded) - len(self._rows[slot])
            self._rows[slot] = encoded
            self._ledger[slot] = entry
            self.superseded += 1
        else:
            self._slot[entry.key_hash] = len(self._rows)
            self._rows.append(encoded)
            self._ledger.append(entry)
            self._keys.append(key)
            self._bytes += len(encoded) + 1
        if self._first is None:
            self._first = row
        self._last = row
        self.pending_rows += 1

    def offer(self, encoded: bytes, entry: LedgerEntry, key: Any, row: Sequence[Any]) -> bool:
        """``add`` the row if it ``fits``; False, taking nothing, when the batch must be cut
        first (the routing's one call per row)."""
        if not self.fits(encoded):
            return False
        self.add(encoded, entry, key, row)
        return True

    def extend(self, rows: NewRows, start: int, limit: int) -> int:
        """Take rows ``start``.. of ``rows``, whose keys this batch does not hold: as many as
        the batch's bounds allow, up to ``limit``. How many were taken; 0 when the batch must
        be cut first. The bulk form of ``offer``: a backfill's chunk goes in with a few C
        calls per batch instead of Python steps per row."""
        taken_rows = self._rows
        room = min(self.max_rows - len(taken_rows), limit, len(rows.encoded) - start)
        if room <= 0:
            return 0
        sizes = list(accumulate(map(len, rows.encoded[start:start + room])))
        # Row i of the slice fits when the bytes so far, plus each row's and its separator's
        # up to i, stay within the bound; that total grows with i, so bisect finds the end.
        budget = self.max_bytes - self._bytes
        taken = bisect_right(range(room), budget, key=lambda i: sizes[i] + i + 1)
        if not taken:
            if taken_rows:
                return 0
            taken = 1  # a row alone over max_bytes still goes, in a batch of its own (fits)
        end = start + taken
        if self._rejected:
            for key_hash in self._rejected.keys() & set(rows.key_hashes[start:end]):
                self._supersede(key_hash)
        slot = len(taken_rows)
        self._slot.update(zip(rows.key_hashes[start:end], range(slot, slot + taken), strict=True))
        taken_rows.extend(rows.encoded[start:end])
        self._ledger.extend(rows.entries[start:end])
        self._keys.extend(rows.keys[start:end])
        self._bytes += sizes[taken - 1] + taken
        if self._first is None:
            self._first = rows.places[start]
        self._last = rows.places[end - 1]
        self.pending_rows += taken
        return taken

    def holds_any(self, key_hashes: set[int]) -> bool:
        """Whether this batch holds any of the keys."""
        return not self._slot.keys().isdisjoint(key_hashes)

    def skip(self) -> None:
        """Note a row that needs no upload (unchanged); it still counts towards the next cut."""
        self.pending_rows += 1

    def reject(self, entry: QuarantineEntry) -> None:
        """Note an invalid row: it is quarantined when the batch it falls in commits."""
        if entry.key_hash is not None:
            self._rejected.setdefault(entry.key_hash, []).append(len(self._quarantine))
        self._quarantine.append(entry)
        self.pending_rows += 1

    def confirm(self, key_hash: int) -> None:
        """Note that a key with quarantined rows was read unchanged (call with ``skip``): AiTEMS
        holds its newest version, so its entries are closed when this batch commits."""
        if key_hash in self._rejected:
            self._supersede(key_hash)
        self._current.append(key_hash)

    def _supersede(self, key_hash: int) -> None:
        """A later version of a key rejected earlier in this batch came: its entries are
        stored closed."""
        quarantine = self._quarantine
        for index in self._rejected.pop(key_hash):
            quarantine[index] = replace(quarantine[index], status="superseded")

    @property
    def sendable(self) -> int:
        return len(self._rows)

    def holds(self, key_hash: int) -> int | None:
        """The payload hash this batch holds for a key, if any."""
        slot = self._slot.get(key_hash)
        return None if slot is None else self._ledger[slot].payload_hash

    def cut(self, end: Mark | None, boundary: Boundary | None = None) -> Batch:
        """Close the current batch; the mark moves to ``end`` (recording ``boundary``) when it
        commits."""
        self.seq += 1
        batch = Batch(
            seq=self.seq,
            rows=self._rows,
            ledger=self._ledger,
            keys=self._keys,
            first=None if self._first is None else self.mark_of(self._first),
            last=None if self._last is None else self.mark_of(self._last),
            end=end,
            quarantine=self._quarantine,
            body_bytes=self._bytes,
            boundary=boundary,
            current=self._current,
        )
        self._rows, self._ledger, self._keys, self._quarantine = [], [], [], []
        self._slot, self._rejected, self._current = {}, {}, []
        self._bytes = ENVELOPE_BYTES
        self._first = self._last = None
        self.pending_rows = 0
        return batch



_NO_CURSOR: Any = object()  # unequal to every cursor value


class BoundaryTracker:
    """Follows the rows routed at the newest cursor value, for the boundary each cut batch
    records with its mark (:class:`Boundary`): the next run reads that cursor value again and
    skips those rows, so a row committed later with the same value is read whatever its key.

    Every routed row is noted (sent, skipped or quarantined) with its identity and content
    hashes; without ``valid_rows`` (user and item datasets, whose ledger already skips a valid
    row delivered) a valid row's only moves the cursor value, and the boundary holds the invalid
    rows. ``after`` is the cursor value of a mark recorded without a boundary, which a run reads
    strictly after: batches that end at that value record none either, since the rows before
    the mark's key at it are not known.
    """

    def __init__(self, after: Any = _NO_CURSOR, *, valid_rows: bool = True) -> None:
        self.cursor = after
        self.unknown = after is not _NO_CURSOR
        self.valid_rows = valid_rows
        self.entries: dict[int, int] = {}
        self.fresh = False

    def note(self, cursor: Any, key_hash: int, content: int) -> None:
        """A row routed at ``cursor``, kept in the boundary."""
        if cursor != self.cursor:
            self._restart(cursor)
        self.entries[key_hash] = content

    def note_valid(self, cursor: Any, key_hash: int, content: int) -> None:
        """A valid row routed at ``cursor``: kept with ``valid_rows`` (see the class)."""
        if cursor != self.cursor:
            self._restart(cursor)
        if self.valid_rows:
            self.entries[key_hash] = content

    def note_rows(self, places: Sequence[Sequence[Any]], key_hashes: Sequence[int],
                  contents: Sequence[int], start: int, end: int) -> None:
        """Valid rows ``start..end`` routed in order (``end`` > ``start``): ``note_valid`` for
        each, by looking only at those that share the last one's cursor value."""
        last = places[end - 1][0]
        first = end - 1
        while first > start and places[first - 1][0] == last:
            first -= 1
        if first > start or last != self.cursor:
            self._restart(last)
        if self.valid_rows:
            self.entries.update(zip(key_hashes[first:end], contents[first:end], strict=True))

    def _restart(self, cursor: Any) -> None:
        self.cursor, self.entries, self.fresh, self.unknown = cursor, {}, True, False

    def take(self) -> Boundary | None:
        """The boundary of the batch cut now (None while it is unknown), and start the next."""
        boundary = None if self.unknown else Boundary(self.entries, self.fresh)
        self.entries, self.fresh = {}, False
        return boundary
