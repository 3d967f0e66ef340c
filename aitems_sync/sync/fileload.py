"""A dataset's first full load as one CSV file (``bootstrap``), and what the state store keeps
of it until AiTEMS has taken the file.

AiTEMS creates a dataset from a CSV(.gz) file in Object Storage; loading tens of millions of
rows through 1,000-row upload calls is the wrong path. :class:`FileLoad` reads the dataset's
whole query once (the same shaping, validation and quarantine as ``run``) and writes the valid
rows to a text sink (gzip, multipart upload: :mod:`aitems_sync.objectstorage.upload`), in the
format of :mod:`aitems_sync.rows.csvfile`.

What the next ``run`` needs, so that it sends only what changed after the snapshot, is staged
under a dataset of its own (:func:`staging_name`) while the file is written: the ledger of
what the file holds (user and item datasets, and interactions with a lookback) and the
quarantined rows. The snapshot's mark (its last row) and boundary (the rows at its cursor
value) come back in the :class:`Snapshot`. Only once AiTEMS has created the dataset from the
file does :meth:`StateStore.adopt` make them the dataset's, in one transaction: a load that
fails or is killed before that moves nothing, and the next load clears the staging.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aitems_sync.errors import InvalidRowsError, SourceError, UnreadableRowError
from aitems_sync.rows.csvfile import CsvEncoder
from aitems_sync.rows.encode import row_hash
from aitems_sync.source.extract import Source
from aitems_sync.spec.model import DatasetSpec
from aitems_sync.state.records import Boundary, LedgerEntry, QuarantineEntry
from aitems_sync.state.store import MERGE_EVERY, BatchCommit, Mark, StateStore
from aitems_sync.sync.batches import BoundaryTracker
from aitems_sync.sync.prepare import Layout, Place, Prepared, Preparer, show

#: What a dataset's staging is called in the state store: ``users~bootstrap``.
STAGING_SUFFIX = "~bootstrap"


def staging_name(dataset: str) -> str:
    """The state store's name for a first load's staging of ``dataset``."""
    return dataset + STAGING_SUFFIX


class TextSink(Protocol):
    def write(self, text: str) -> None: ...


class StopFlag(Protocol):
    def is_set(self) -> bool: ...


class _Never:
    def is_set(self) -> bool:
        return False


@dataclass
class Snapshot:
    """What a first load's file holds: its rows, and where a run goes on from."""

    rows: int = 0  # data rows in the file
    read: int = 0
    invalid: int = 0
    mark: Mark | None = None  # the last row read; None when the query returned none
    boundary: Boundary | None = None
    identity: tuple[str, ...] = field(default_factory=tuple)  # the key the ledger is by
    null_cursor: int = 0  # rows left out of the file: their cursor is NULL


class FileLoad:
    """Reads one dataset's whole query into a CSV text sink, staging its ledger and quarantine
    under :func:`staging_name` in the state store."""

    def __init__(self, dataset: DatasetSpec, source: Source, state: StateStore, *, run_id: str,
                 chunk_rows: int = 5000, stop: StopFlag | None = None,
                 fenced: bool = False) -> None:
        self.dataset = dataset
        self.source = source
        self.state = state
        self.run_id = run_id
        self.chunk_rows = chunk_rows
        self.stop = stop or _Never()
        # Write the staging only while run_id holds its lease (the caller took it): a load that
        # stalled and lost it must not write into another load's staging.
        self.fenced = fenced
        self.staging = staging_name(dataset.name)
        self.is_interaction = dataset.type == "interaction"
        # The ledger a run consults: user and item datasets always, interactions with a lookback.
        self.keeps_ledger = not self.is_interaction or dataset.lookback.total_seconds() > 0
        self.tracker = BoundaryTracker(valid_rows=self.is_interaction)
        self.logged = 0  # ledger entries staged in the log since it was last merged

    def write(self, sink: TextSink) -> Snapshot:
        """Write the header and every valid row to ``sink``; stage the rest. Raises
        SourceError (the query), UnreadableRowError (a cursor or key the driver cannot read),
        InvalidRowsError (on_invalid fail, or more invalid rows than max_invalid allows), or
        SourceError for a key the query returns twice (a file holds each key once)."""
        self.state.discard(self.staging)
        snapshot = Snapshot(identity=self.dataset.key)
        last: Place | None = None
        with self.source.extract(self.dataset.query, cursor=self.dataset.cursor,
                                 key=self.dataset.key_fields, mark=None, sort=True,
                                 chunk_rows=self.chunk_rows,
                                 count_null_cursors=True) as extraction:
            snapshot.null_cursor = extraction.null_cursors or 0
            layout = Layout(tuple(extraction.columns), extraction.cursor_index,
                            tuple(extraction.key_indices))
            preparer = Preparer(self.dataset, layout, self.source.timezone,
                                self.state.row_hash_of(self.staging), keep_values=True)
            encoder = CsvEncoder(self.dataset.field_names,
                                 [f.types for f in self.dataset.fields])
            sink.write(encoder.header)
            for chunk in extraction.chunks:
                if self.stop.is_set():
                    raise SourceError(f"dataset {self.dataset.name}: the first load was stopped; "
                                      "nothing was handed over: run bootstrap again")
                self._refuse_unplaceable(preparer, chunk)
                if self.keeps_ledger:
                    prepared = preparer.prepare(chunk)
                    self._stage(preparer, prepared, snapshot)
                    assert prepared.values is not None
                    values = prepared.values
                else:
                    values = self._shape(preparer, chunk, snapshot)
                if chunk:
                    last = preparer.place_of(chunk[-1])
                sink.write(encoder.encode(values))
                snapshot.rows += len(values)
        self._check_invalid(snapshot)
        if last is not None:
            snapshot.mark = Mark(cursor=last[0], key=tuple(last[1:]))
            snapshot.boundary = self.tracker.take()
        return snapshot

    def _refuse_unplaceable(self, preparer: Preparer, chunk: Sequence[Sequence[Any]]) -> None:
        found = preparer.unplaceable(chunk)
        if found is not None:
            raise UnreadableRowError(found[1].message(self.dataset.name,
                                                      "nothing was handed over"))

    def _shape(self, preparer: Preparer, chunk: Sequence[Sequence[Any]],
               snapshot: Snapshot) -> list[tuple[Any, ...]]:
        """A chunk of a dataset that keeps no ledger (interactions without a lookback): its
        rows shaped, the invalid ones staged, and only the rows at its last cursor value
        hashed, for the boundary. The file needs nothing else: no JSON, no hashes per row."""
        shaped: list[tuple[Any, ...] | None] = list(map(preparer.shaper.shape, chunk))
        snapshot.read += len(chunk)
        if None in shaped:
            rejected = [self._reject(preparer, tuple(chunk[i]), preparer.place_of(chunk[i]))
                        for i, row in enumerate(shaped) if row is None]
            snapshot.invalid += len(rejected)
            self.state.commit_batches(self.staging, run_id=self.run_id,
                                      commits=[BatchCommit(None, (), None, rejected)],
                                      fenced=self.fenced)
        if chunk:
            at = preparer.layout.cursor_index
            start, newest = len(chunk) - 1, chunk[-1][at]
            while start > 0 and chunk[start - 1][at] == newest:
                start -= 1
            self._note(preparer.prepare(chunk[start:]), preparer.row_hash)
        return [row for row in shaped if row is not None]

    def _stage(self, preparer: Preparer, chunk: Prepared, snapshot: Snapshot) -> None:
        """The chunk's ledger entries and quarantined rows, in the staging; its boundary."""
        snapshot.read += len(chunk)
        rejected: list[QuarantineEntry] = []
        for index, (raw, _) in chunk.invalid.items():
            rejected.append(self._reject(preparer, raw, chunk.places[index]))
        snapshot.invalid += len(rejected)
        self._note(chunk, preparer.row_hash)
        entries: list[LedgerEntry] = []
        if self.keeps_ledger:
            valid = [i for i, row in enumerate(chunk.encoded) if row is not None]
            if not self.is_interaction:
                self._refuse_duplicates(chunk, valid)
            positions = chunk.positions
            entries = [LedgerEntry(chunk.key_hashes[i], chunk.payloads[i],
                                   None if positions is None else positions[i]) for i in valid]
        if entries or rejected:
            self.state.commit_batches(self.staging, run_id=self.run_id,
                                      commits=[BatchCommit(None, entries, None, rejected)],
                                      fenced=self.fenced)
        self.logged += len(entries)
        if self.logged >= MERGE_EVERY:
            # The duplicate check looks keys up in the staging: in the log, without an index
            # by key, each lookup would cost more as the log grows (quadratic in all).
            self.state.merge_ledger(self.staging)
            self.logged = 0

    def _note(self, chunk: Prepared, scheme: str) -> None:
        """The boundary tracker follows the rows at the newest cursor value."""
        if not chunk.invalid:
            if len(chunk):
                self.tracker.note_rows(chunk.places, chunk.key_hashes, chunk.payloads, 0,
                                       len(chunk))
            return
        for index, place in enumerate(chunk.places):
            if chunk.encoded[index] is None:
                content = row_hash(repr(chunk.invalid[index][0]).encode(), scheme)
                self.tracker.note(place[0], content, content)
            else:
                self.tracker.note_valid(place[0], chunk.key_hashes[index], chunk.payloads[index])

    def _refuse_duplicates(self, chunk: Prepared, valid: Sequence[int]) -> None:
        """A user or item file holds each key once (AiTEMS requires it): a key the query
        returns twice, in this chunk or an earlier one, stops the load."""
        hashes = [chunk.key_hashes[i] for i in valid]
        seen: dict[int, int] = {}
        twice = None
        for i, key_hash in zip(valid, hashes, strict=True):
            if key_hash in seen:
                twice = i
                break
            seen[key_hash] = i
        if twice is None:
            earlier = self.state.ledger_lookup(self.staging, hashes)
            twice = next((i for i, h in zip(valid, hashes, strict=True) if h in earlier), None)
        if twice is not None:
            key = self.dataset.key[0]
            raise SourceError(
                f"dataset {self.dataset.name}: the query returns {key} "
                f"{show(chunk.keys[twice])} more than once; a first load file holds each {key} "
                f"once (AiTEMS requires it): make the query return one row per {key} (its "
                "newest version), then run bootstrap again; nothing was handed over")

    def _reject(self, preparer: Preparer, raw: tuple[Any, ...], place: Place) -> QuarantineEntry:
        errors = [{"path": e.path, "message": e.message} for e in preparer.shaper.explain(raw)]
        if self.dataset.on_invalid == "fail":
            first = "; ".join(f"{e['path']}: {e['message']}" for e in errors[:3])
            raise InvalidRowsError(
                f"dataset {self.dataset.name}: a row is invalid ({first}) and on_invalid is "
                "fail: nothing was handed over; fix the data or the spec and run bootstrap again")
        key = dict(zip(self.dataset.key_fields, place[1:], strict=False))
        return QuarantineEntry(dataset=self.staging, run_id=self.run_id, key=key,
                               raw=dict(zip(preparer.layout.columns, raw, strict=False)),
                               errors=errors, origin="local")

    def _check_invalid(self, snapshot: Snapshot) -> None:
        if self.dataset.max_invalid.exceeded(snapshot.invalid, snapshot.read):
            raise InvalidRowsError(
                f"dataset {self.dataset.name}: {snapshot.invalid} of {snapshot.read} rows are "
                "invalid, more than max_invalid allows; nothing was handed over: see them with "
                f"`aitems-sync quarantine list {staging_name(self.dataset.name)}`, fix the data "
                "or the spec, and run bootstrap again")
