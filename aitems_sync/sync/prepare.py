"""Prepare extracted rows for the diff: shape, validate, encode and hash a chunk, in columns.

This is the stateless half of the reading path: it needs the dataset, the query's column
layout and the source's timezone, and nothing of the ledger, the mark or the window. So it runs
wherever the rows are read: on the dataset's reading thread, or in an extraction worker process
(:mod:`aitems_sync.sync.worker`), which hands the same :class:`Prepared` chunks over a pipe.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

import orjson

from aitems_sync.rows.encode import identity_hash, row_encoder, row_hash
from aitems_sync.rows.shape import Shaper
from aitems_sync.spec.model import DatasetSpec
from aitems_sync.sync.batches import cursor_position
from aitems_sync.undecodable import Undecodable

#: A row's place in the extraction order: its cursor value, then its key columns' values.
Place = tuple[Any, ...]


@dataclass(frozen=True)
class Layout:
    """Where the cursor and key are among the query's result columns."""

    columns: tuple[str, ...]
    cursor_index: int
    key_indices: tuple[int, ...]


@dataclass
class Prepared:
    """One chunk of rows, prepared, column by column (index ``i`` is the chunk's ``i``-th row).

    ``encoded[i]`` is None exactly when the row is invalid; ``invalid[i]`` then holds its raw
    values (quarantine records keep them) and the hash its key would have, where it has one
    (items and users: their coerced key; interactions with a key of their own: its columns as
    read; None for a whole-row key, whose values are what is invalid), and its hashes here
    are 0.
    """

    encoded: list[bytes | None]
    key_hashes: list[int]
    payloads: list[int]
    # The key value(s) of each valid row (None for invalid rows, and for interactions without a
    # key of their own).
    keys: list[Any]
    places: list[Place]
    positions: list[float | None] | None  # interactions: each row's numeric cursor position
    invalid: dict[int, tuple[tuple[Any, ...], int | None]]
    # The row the chunk stops before: its cursor or key could not be read (see Unplaceable).
    unplaceable: Unplaceable | None = None
    # Each valid row's shaped values, in order (Preparer ``keep_values``: a bootstrap file's).
    values: list[tuple[Any, ...]] | None = None

    def __len__(self) -> int:
        return len(self.encoded)

    def lookup_hashes(self) -> list[int]:
        """The key hashes to look up in the ledger: every valid row's, and every invalid row's
        that has one."""
        if not self.invalid:
            return self.key_hashes
        valid = [h for h, row in zip(self.key_hashes, self.encoded, strict=True) if row is not None]
        return valid + [h for _, h in self.invalid.values() if h is not None]


@dataclass(frozen=True)
class Unplaceable:
    """A row whose cursor or key the source's driver could not read: it cannot be ordered
    after a mark nor tracked in the ledger, so the dataset stops before it (the rows before it
    are delivered) and the operator is told which row and what to change."""

    column: str
    role: str  # "cursor" or "key"
    value: Undecodable
    place: Place  # the row's cursor and key values as read

    def message(self, dataset: str, outcome: str = "the rows before it were delivered and "
                "the mark stays before it") -> str:
        """What the run reports: the row, the value, what happened (``outcome``) and what to
        do."""
        where = ", ".join(f"{show(v)}" for v in self.place[1:])
        row = f"the row at cursor {show(self.place[0])}" + (f" with key {where}" if where else "")
        return (
            f"dataset {dataset}: {row} has a {self.role} value the source's driver cannot read: "
            f"column {self.column} = {self.value.describe()}; {outcome}. "
            f"{_fix_hint(self.column, self.value)}, then run again"
        )


def _fix_hint(column: str, value: Undecodable) -> str:
    if "UTF-8" in value.reason:
        return ("Fix the value in the database (its text is not valid UTF-8) or leave the row "
                "out in the query")
    return (f"Clamp the value in the query (LEAST(GREATEST({column}, '0001-01-01'), "
            f"'9999-12-31')) or leave such rows out (WHERE {column} BETWEEN '0001-01-01' AND "
            "'9999-12-31')")


def show(value: Any) -> str:
    """A place's value for a message: an unreadable one as its raw text."""
    return repr(value.raw) if isinstance(value, Undecodable) else repr(value)


class Preparer:
    """Compiled once per dataset and per query's result columns (see :class:`Shaper`), with the
    row hash its ledger is written with (``StateStore.row_hash_of``)."""

    def __init__(self, dataset: DatasetSpec, layout: Layout, timezone: tzinfo,
                 row_hash: str, *, keep_values: bool = False) -> None:
        self.dataset = dataset
        self.keep_values = keep_values
        self.layout = layout
        self.timezone = timezone
        self.row_hash = row_hash
        self.shaper = Shaper(dataset, layout.columns, timezone)
        self.is_interaction = dataset.type == "interaction"
        names = self.shaper.field_names
        # Where a user or item row's key is among its fields (an interaction's need not be).
        self.key_positions = [] if self.is_interaction else [
            names.index(k) for k in dataset.key_fields]
        self.encode = row_encoder(names, None if self.is_interaction else self.key_positions,
                                  row_hash)
        self.place_of = _place_getter(layout.cursor_index, layout.key_indices)
        self.key_of = _key_getter(None if self.is_interaction else self.key_positions)
        # An interaction dataset with a key is identified by its key columns as read.
        self.keyed = self.is_interaction and bool(dataset.key)
        # The columns that place a row: its cursor, and its key where it has one of its own
        # (a whole-row key's values are fields: an unreadable one makes the row invalid).
        placing = (layout.cursor_index, *(layout.key_indices if dataset.key else ()))
        self.placing = [(i, operator.itemgetter(i)) for i in dict.fromkeys(placing)]

    def prepare(self, chunk: Sequence[Sequence[Any]]) -> Prepared:
        """The chunk's rows shaped, validated, encoded and hashed, up to the first row whose
        cursor or key could not be read (``Prepared.unplaceable``)."""
        found, unplaceable = self.unplaceable(chunk), None
        if found is not None:
            index, unplaceable = found
            chunk = chunk[:index]
        shape, encode, key_of = self.shaper.shape, self.encode, self.key_of
        encoded: list[bytes | None] = []
        key_hashes: list[int] = []
        payloads: list[int] = []
        keys: list[Any] = []
        invalid: dict[int, tuple[tuple[Any, ...], int | None]] = {}
        kept: list[tuple[Any, ...]] | None = [] if self.keep_values else None
        for raw in chunk:
            values = shape(raw)
            if kept is not None and values is not None:
                kept.append(values)
            if values is None:
                invalid[len(encoded)] = (tuple(raw), self._rejected_key_hash(raw))
                encoded.append(None)
                key_hashes.append(0)
                payloads.append(0)
                keys.append(None)
                continue
            row, key_hash, payload = encode(values)
            encoded.append(row)
            key_hashes.append(key_hash)
            payloads.append(payload)
            keys.append(key_of(values))
        places = [self.place_of(raw) for raw in chunk]
        if self.keyed:
            self._identify(encoded, key_hashes, keys, places)
        positions = None
        if self.is_interaction:
            at, timezone = self.layout.cursor_index, self.timezone
            positions = [cursor_position(raw[at], timezone) for raw in chunk]
        return Prepared(encoded, key_hashes, payloads, keys, places, positions, invalid,
                        unplaceable, kept)

    def unplaceable(self, chunk: Sequence[Sequence[Any]]) -> tuple[int, Unplaceable] | None:
        """The first row whose cursor or key is Undecodable, and its index; one C-speed pass
        per placing column finds that there is none."""
        first: tuple[int, int] | None = None
        for column, get in self.placing:
            if Undecodable in map(type, map(get, chunk)):
                index = next(i for i, raw in enumerate(chunk) if type(raw[column]) is Undecodable)
                if first is None or index < first[0]:
                    first = (index, column)
        if first is None:
            return None
        index, column = first
        raw = chunk[index]
        role = "cursor" if column == self.layout.cursor_index else "key"
        return index, Unplaceable(self.layout.columns[column], role, raw[column],
                                  tuple(self.place_of(raw)))

    def _identify(self, encoded: list[bytes | None], key_hashes: list[int], keys: list[Any],
                  places: list[Place]) -> None:
        """Key hashes and key values of an interaction dataset's valid rows, by its key."""
        scheme, single = self.row_hash, len(self.dataset.key) == 1
        for index, row in enumerate(encoded):
            if row is not None:
                values = places[index][1:]
                key_hashes[index] = identity_hash(values, scheme)
                keys[index] = values[0] if single else list(values)

    def _rejected_key_hash(self, raw: Sequence[Any]) -> int | None:
        """The key hash an invalid row would have, so its quarantine record can note what the
        ledger held for the key then (``quarantine retry`` compares), and a later version of
        the key close it. An interaction has one only with a key of its own (see Prepared)."""
        if self.keyed:
            return identity_hash(self.place_of(raw)[1:], self.row_hash)
        if self.is_interaction:
            return None
        coerced = self.shaper.coerce(raw)
        try:
            return row_hash(orjson.dumps([coerced[i] for i in self.key_positions]),
                            self.row_hash)
        except TypeError:
            return None


def _place_getter(cursor_index: int, key_indices: Sequence[int]) -> Callable[[Any], Place]:
    """A row's place as a tuple, by one C call where the key has a column at all."""
    if not key_indices:
        return lambda raw: (raw[cursor_index],)
    get: Callable[[Any], Place] = operator.itemgetter(cursor_index, *key_indices)
    return get


def _key_getter(positions: Sequence[int] | None) -> Callable[[tuple[Any, ...]], Any]:
    """A valid row's key value (one field), its key values in a list (several), or None (an
    interaction: its key is the whole row, and nothing reports it)."""
    if positions is None:
        return lambda values: None
    if len(positions) == 1:
        get: Callable[[tuple[Any, ...]], Any] = operator.itemgetter(positions[0])
        return get
    return lambda values: [values[i] for i in positions]
