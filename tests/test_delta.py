"""The pure rules of a delta: hashes, row encoding, cursor positions and cutting batches."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aitems_sync.delta import BatchBuilder, cursor_position, encode_row, row_encoder, row_hash
from aitems_sync.state import LedgerEntry, Mark, QuarantineEntry

SEOUL = ZoneInfo("Asia/Seoul")


def mark(row: Sequence[Any]) -> Mark:
    return Mark(cursor=row[0], key=(row[1],))


def builder(max_rows: int = 3, max_bytes: int = 1000) -> BatchBuilder:
    return BatchBuilder(max_rows, max_bytes, mark)


def add(b: BatchBuilder, cursor: int, key: str, payload: bytes) -> None:
    b.add(payload, LedgerEntry(row_hash(key.encode()), row_hash(payload)), key, (cursor, key))


def test_row_hash_is_a_stable_signed_64_bit_integer() -> None:
    value = row_hash(b'{"USER_ID":"u1"}')

    assert value == row_hash(b'{"USER_ID":"u1"}')
    assert value != row_hash(b'{"USER_ID":"u2"}')
    assert -(2**63) <= value < 2**63


def test_encode_row_keeps_schema_order_and_hashes_the_key_apart() -> None:
    encoded, key_hash, payload = encode_row(("USER_ID", "AGE"), ("u1", 30), [0])

    assert encoded == b'{"USER_ID":"u1","AGE":30}'
    assert payload == row_hash(encoded)
    assert key_hash == row_hash(b'["u1"]')
    assert encode_row(("USER_ID", "AGE"), ("u1", 31), [0])[1] == key_hash


def test_a_whole_row_key_hashes_the_payload() -> None:
    _, key_hash, payload = encode_row(("USER_ID", "ITEM_ID"), ("u1", "i1"), None)

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


def test_a_batch_with_only_skipped_rows_moves_the_mark_without_rows() -> None:
    b = builder()
    b.skip()
    b.skip()

    batch = b.cut(Mark(9, ("z",)))

    assert batch.empty
    assert (batch.first, batch.end) == (None, Mark(9, ("z",)))


_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))


@given(st.data())
def test_a_compiled_row_encoder_gives_encode_rows_bytes_and_hashes(data: st.DataObject) -> None:
    names = data.draw(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=6,
                               unique=True))
    keys = data.draw(st.none() | st.lists(st.integers(0, len(names) - 1), min_size=1,
                                          max_size=len(names), unique=True))
    encode = row_encoder(names, keys)
    for _ in range(3):
        values = tuple(data.draw(_VALUES) for _ in names)
        assert encode(values) == encode_row(names, values, keys)


def test_a_compiled_row_encoder_takes_field_names_as_data_not_code() -> None:
    names = ["ITEM_ID", "x'] + __import__('os').getcwd() + ['", '"quoted"', "값"]
    values = ("i1", 1, 2.5, "ü")
    assert row_encoder(names, [0])(values) == encode_row(names, values, [0])
