"""The pure rules of a delta: hashes, row encoding, cursor positions and cutting batches."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from aitems_sync.rows.encode import ROW_HASH, ROW_HASHES, encode_row, row_encoder
from aitems_sync.rows.encode import row_hash as hash_with
from aitems_sync.state.store import LedgerEntry, Mark, QuarantineEntry
from aitems_sync.sync.batches import BatchBuilder, NewRows, cursor_position

SEOUL = ZoneInfo("Asia/Seoul")


def row_hash(data: bytes) -> int:
    return hash_with(data, ROW_HASH)


def mark(row: Sequence[Any]) -> Mark:
    return Mark(cursor=row[0], key=(row[1],))


def builder(max_rows: int = 3, max_bytes: int = 1000) -> BatchBuilder:
    return BatchBuilder(max_rows, max_bytes, mark)


def add(b: BatchBuilder, cursor: int, key: str, payload: bytes) -> None:
    b.add(payload, LedgerEntry(row_hash(key.encode()), row_hash(payload)), key, (cursor, key))


@pytest.mark.parametrize("scheme", ROW_HASHES)
def test_row_hash_is_a_stable_signed_64_bit_integer(scheme: str) -> None:
    value = hash_with(b'{"USER_ID":"u1"}', scheme)

    assert value == hash_with(b'{"USER_ID":"u1"}', scheme)
    assert value != hash_with(b'{"USER_ID":"u2"}', scheme)
    assert -(2**63) <= value < 2**63


@pytest.mark.parametrize(("scheme", "expected"), [
    # What the ledgers of earlier versions hold: these numbers must never change.
    ("blake2b-64", 6455300059550759896),
    # XXH3-64 of b"abc" is 0x78AF5F94892F3950 (the reference implementation's test vector).
    ("xxh3-64", 0x78AF5F94892F3950),
])
def test_each_row_hash_is_the_published_function(scheme: str, expected: int) -> None:
    assert hash_with(b"abc", scheme) == expected


@pytest.mark.parametrize("scheme", ROW_HASHES)
def test_encode_row_keeps_schema_order_and_hashes_the_key_apart(scheme: str) -> None:
    encoded, key_hash, payload = encode_row(("USER_ID", "AGE"), ("u1", 30), [0], scheme)

    assert encoded == b'{"USER_ID":"u1","AGE":30}'
    assert payload == hash_with(encoded, scheme)
    assert key_hash == hash_with(b'["u1"]', scheme)
    assert encode_row(("USER_ID", "AGE"), ("u1", 31), [0], scheme)[1] == key_hash


def test_a_whole_row_key_hashes_the_payload() -> None:
    _, key_hash, payload = encode_row(("USER_ID", "ITEM_ID"), ("u1", "i1"), None, ROW_HASH)

    assert key_hash == payload


@pytest.mark.parametrize(("value", "expected"), [
    (datetime(2026, 1, 1, 9, 0), 1767225600.0),  # naive: read in Asia/Seoul (UTC+9)
    (datetime(2026, 1, 1, 0, 0, tzinfo=ZoneInfo("UTC")), 1767225600.0),
    (date(2026, 1, 1), 1767193200.0),  # midnight in Seoul
    ("2026-01-01 09:00:00", 1767225600.0),
    (1767225600, 1767225600.0),
    (Decimal("1.5"), 1.5),
    ("not a time", None),
    (True, None),
])
def test_cursor_position_orders_cursor_values_in_epoch_seconds(value: Any,
                                                              expected: float | None) -> None:
    assert cursor_position(value, SEOUL) == expected


def test_a_batch_is_cut_before_it_passes_max_rows() -> None:
    b = builder(max_rows=2)
    add(b, 1, "a", b"{1}")
    add(b, 2, "b", b"{2}")

    assert not b.fits(b"{3}")


def test_a_batch_is_cut_before_it_passes_max_bytes() -> None:
    b = builder(max_rows=100, max_bytes=60)
    add(b, 1, "a", b"x" * 10)

    assert b.fits(b"y" * 8)  # 40 of envelope + 10 + 8 + a comma each = 60
    assert not b.fits(b"y" * 9)


def test_a_first_row_always_fits_even_when_larger_than_the_limit() -> None:
    assert builder(max_bytes=10).fits(b"x" * 100)  # the server's 413 decides; the batch splits


def test_within_a_batch_the_last_version_of_a_key_wins() -> None:
    b = builder()
    add(b, 1, "a", b"old")
    add(b, 2, "b", b"other")
    add(b, 3, "a", b"new")

    batch = b.cut(Mark(3, ("a",)))

    assert batch.rows == [b"new", b"other"]
    assert b.superseded == 1
    assert batch.ledger[0].payload_hash == row_hash(b"new")


def test_cut_carries_the_sent_range_the_end_mark_and_the_quarantine_then_resets() -> None:
    b = builder()
    add(b, 1, "a", b"{1}")
    b.skip()
    rejected = QuarantineEntry("users", "r", {"USER_ID": "c"}, {}, [])
    b.reject(rejected)
    add(b, 4, "d", b"{4}")

    batch = b.cut(Mark(5, ("e",)))

    assert (batch.first, batch.last, batch.end) == (Mark(1, ("a",)), Mark(4, ("d",)),
                                                     Mark(5, ("e",)))
    assert batch.quarantine == [rejected]
    assert b.pending_rows == 0
    assert b.cut(None).empty


def rejected(key: str) -> QuarantineEntry:
    return QuarantineEntry("users", "r", {"USER_ID": key}, {}, [],
                           key_hash=row_hash(key.encode()))


@pytest.mark.parametrize("later", ["add", "extend", "confirm"])
def test_a_rejected_row_whose_key_comes_again_in_its_batch_is_stored_superseded(
        later: str) -> None:
    b = builder()
    b.reject(rejected("a"))
    b.reject(rejected("b"))
    if later == "add":
        add(b, 2, "a", b"{2}")
    elif later == "extend":
        rows = NewRows.of([b"{2}"], [row_hash(b"a")], [row_hash(b"{2}")], None, ["a"],
                          [(2, "a")])
        assert b.extend(rows, 0, 1) == 1
    else:
        b.skip()
        b.confirm(row_hash(b"a"))

    batch = b.cut(Mark(2, ("a",)))

    assert [(e.key["USER_ID"], e.status) for e in batch.quarantine] == [
        ("a", "superseded"), ("b", "open")]
    assert batch.current == ([row_hash(b"a")] if later == "confirm" else [])


def test_a_rejected_row_after_its_keys_valid_version_in_the_batch_stays_open() -> None:
    """The batch sends the older, valid version; the newer, invalid one is the key's newest."""
    b = builder()
    add(b, 1, "a", b"{1}")
    b.reject(rejected("a"))

    batch = b.cut(Mark(2, ("a",)))

    assert [e.status for e in batch.quarantine] == ["open"]
    assert b.cut(None).quarantine == []  # nothing of it carries over to the next batch


def test_a_batch_with_only_skipped_rows_moves_the_mark_without_rows() -> None:
    b = builder()
    b.skip()
    b.skip()

    batch = b.cut(Mark(9, ("z",)))

    assert batch.empty
    assert (batch.first, batch.end) == (None, Mark(9, ("z",)))


def new_rows(sizes: Sequence[int]) -> NewRows:
    keys = [f"k{i}" for i in range(len(sizes))]
    encoded = [b"x" * size for size in sizes]
    key_hashes = [row_hash(key.encode()) for key in keys]
    return NewRows.of(encoded, key_hashes, [row_hash(e) for e in encoded], None, keys,
                      [(i, key) for i, key in enumerate(keys)])


@given(st.integers(1, 12), st.integers(40, 100), st.integers(0, 4),
       st.lists(st.integers(0, 12), min_size=1, max_size=20), st.integers(1, 25))
@example(12, 50, 0, [5, 4], 5)  # 40 of envelope + 5 + 1 = 46: the 4 and its comma overflow by 1
def test_extend_takes_exactly_the_rows_offer_would_take_one_by_one(
    max_rows: int, max_bytes: int, held: int, sizes: list[int], limit: int
) -> None:
    rows = new_rows(sizes)
    bulk, single = builder(max_rows, max_bytes), builder(max_rows, max_bytes)
    for b in (bulk, single):  # the batch may hold rows already
        for i in range(held):
            b.offer(b"h" * 5, LedgerEntry(row_hash(b"held%d" % i), 0), f"h{i}", (-1, f"h{i}"))

    taken = bulk.extend(rows, 0, limit)
    one_by_one = 0
    for i in range(min(limit, len(sizes))):
        entry = rows.entries[i]
        if not single.offer(rows.encoded[i], entry, rows.keys[i], rows.places[i]):
            break
        one_by_one += 1

    assert taken == one_by_one
    assert bulk.cut(None) == single.cut(None)


def test_extend_starts_a_row_larger_than_max_bytes_in_an_empty_batch_alone() -> None:
    b = builder(max_rows=5, max_bytes=60)

    assert b.extend(new_rows([100, 1]), 0, 5) == 1
    assert b.extend(new_rows([100, 1]), 1, 5) == 0  # the next one waits for a cut


def test_new_rows_carry_each_rows_ledger_entry() -> None:
    rows = NewRows.of([b"a", b"b"], [1, 2], [10, 20], [0.5, 1.5], ["a", "b"], [(0,), (1,)])

    assert rows.entries == [LedgerEntry(1, 10, 0.5), LedgerEntry(2, 20, 1.5)]
    assert all(type(entry) is LedgerEntry for entry in rows.entries)


_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))


@given(st.data())
def test_a_compiled_row_encoder_gives_encode_rows_bytes_and_hashes(data: st.DataObject) -> None:
    names = data.draw(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=6,
                               unique=True))
    keys = data.draw(st.none() | st.lists(st.integers(0, len(names) - 1), min_size=1,
                                          max_size=len(names), unique=True))
    scheme = data.draw(st.sampled_from(ROW_HASHES))
    encode = row_encoder(names, keys, scheme)
    for _ in range(3):
        values = tuple(data.draw(_VALUES) for _ in names)
        assert encode(values) == encode_row(names, values, keys, scheme)


def test_a_compiled_row_encoder_takes_field_names_as_data_not_code() -> None:
    names = ["ITEM_ID", "x'] + __import__('os').getcwd() + ['", '"quoted"', "값"]
    values = ("i1", 1, 2.5, "ü")
    assert row_encoder(names, [0], ROW_HASH)(values) == encode_row(names, values, [0], ROW_HASH)
