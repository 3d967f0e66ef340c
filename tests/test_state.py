"""The state store, on a SQLite file, PostgreSQL and MariaDB: marks, ledger, journal, quarantine,
runs, leases, migrations, and the value codec they store with."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from aitems_sync.errors import LeaseLostError, LockHeldError, StateError
from aitems_sync.rows.encode import ROW_HASH
from aitems_sync.state.store import (
    INLINE_BOUNDARY,
    BatchCommit,
    Boundary,
    CursorValue,
    LedgerEntry,
    Mark,
    QuarantineEntry,
    Sending,
    StateStore,
    decode_value,
    encode_value,
)
from aitems_sync.state.tables import LATEST_VERSION

REPO = Path(__file__).resolve().parent.parent
KST = timezone(timedelta(hours=9))
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


class FakeClock:
    """A settable UTC clock for the store."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state/aitems-sync.db"
    if request.param == "mariadb":
        return str(request.getfixturevalue("mariadb_url"))
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(store_url: str, clock: FakeClock) -> Iterator[StateStore]:
    opened = StateStore.open(store_url, clock=clock)
    try:
        yield opened
    finally:
        opened.close()


def entries(keys: range | list[int], payload: int = 7, position: float | None = None) -> list[
    LedgerEntry
]:
    return [LedgerEntry(key_hash=k, payload_hash=payload, position=position) for k in keys]


def rejected(dataset: str = "users", **raw: Any) -> QuarantineEntry:
    return QuarantineEntry(
        dataset=dataset,
        run_id="run-1",
        key={"USER_ID": raw.get("id", "u1")},
        raw=raw or {"id": "u1"},
        errors=[{"path": "$.AGE", "message": "-3 is less than the minimum of 0"}],
    )


# -- the value codec ---------------------------------------------------------------------------

CODEC_CASES = [
    (None, ["null", None]),
    (True, ["bool", True]),
    (2**62, ["int", "4611686018427387904"]),
    (-(2**63), ["int", "-9223372036854775808"]),
    (0.1, ["float", "0.1"]),
    (float("inf"), ["float", "inf"]),
    (Decimal("1.50"), ["decimal", "1.50"]),
    (Decimal("12345678901234567890.123"), ["decimal", "12345678901234567890.123"]),
    ("héllo ✓ 日本", ["str", "héllo ✓ 日本"]),
    (datetime(2024, 1, 1, 10, 0, 0, 123456), ["datetime", "2024-01-01T10:00:00.123456"]),
    (datetime(2024, 1, 1, 10, 0, tzinfo=KST), ["datetimetz", "2024-01-01T10:00:00+09:00"]),
    (date(2024, 2, 29), ["date", "2024-02-29"]),
    (uuid.UUID(int=1), ["uuid", "00000000-0000-0000-0000-000000000001"]),
    (b"\x00\xff", ["bytes", "AP8="]),
    (timedelta(days=1, microseconds=5), ["timedelta", [1, 0, 5]]),
    ((1, "a"), ["tuple", [["int", "1"], ["str", "a"]]]),
    ({"a": [Decimal("1")]}, ["dict", {"a": ["list", [["decimal", "1"]]]}]),
]


@pytest.mark.parametrize(("value", "encoded"), CODEC_CASES)
def test_codec_encodes_each_kind_with_its_tag(value: Any, encoded: list[Any]) -> None:
    assert encode_value(value) == encoded


@pytest.mark.parametrize(("value", "encoded"), CODEC_CASES)
def test_codec_round_trips_type_and_value(value: Any, encoded: list[Any]) -> None:
    decoded = decode_value(encode_value(value))
    assert decoded == value
    assert type(decoded) is type(value)
    if isinstance(value, datetime):
        assert decoded.utcoffset() == value.utcoffset()


# Whole-second offsets (historic local mean times have seconds; none has microseconds).
_OFFSETS = st.integers(-86_399, 86_399).map(lambda s: timezone(timedelta(seconds=s)))
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
    st.decimals(allow_nan=False), st.text(), st.binary(), st.uuids(), st.dates(),
    st.timedeltas(),
    # fold (PEP 495) is not kept: database drivers never set it.
    st.datetimes().map(lambda v: v.replace(fold=0)),
    st.datetimes(timezones=_OFFSETS).map(lambda v: v.replace(fold=0)),
    st.times().map(lambda v: v.replace(fold=0)),
)


@given(st.recursive(_SCALARS, lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
                    max_leaves=8))
def test_codec_round_trips_any_supported_value(value: Any) -> None:
    decoded = decode_value(orjson.loads(orjson.dumps(encode_value(value))))
    assert decoded == value
    assert repr(decoded) == repr(value)  # same types all the way down, -0.0 and offsets too


@pytest.mark.parametrize("value", [object(), {1: "a"}, {1, 2}])
def test_codec_refuses_values_it_cannot_round_trip(value: Any) -> None:
    with pytest.raises(TypeError):
        encode_value(value)


@pytest.mark.parametrize("bad", [["nope", "1"], ["int"], []])
def test_codec_refuses_damaged_encodings(bad: list[Any]) -> None:
    with pytest.raises(ValueError, match="not an encoded value"):
        decode_value(bad)


# -- marks -------------------------------------------------------------------------------------

MARK_CURSORS: list[CursorValue] = [
    datetime(2024, 1, 1, 10, 0, 0, 123456),
    datetime(2024, 1, 1, 10, 0, 0, 654321, tzinfo=KST),
    datetime(2024, 1, 1, 1, 0, tzinfo=UTC),
    date(2024, 1, 1),
    2**62,
    Decimal("12345678901234567890.123"),
    1717243200.25,
    "ünïcode ✓ 日本語",
]


def test_marks_keep_cursor_and_key_types_and_values(store: StateStore) -> None:
    key = ("u-1", 2**62, None, True, uuid.UUID(int=5), b"\x01", Decimal("0.10"), date(2024, 1, 2))
    # One dataset per cursor kind: one store serves the whole table.
    for n, cursor in enumerate(MARK_CURSORS):
        store.set_mark(f"ds{n}", Mark(cursor=cursor, key=key))
    for n, cursor in enumerate(MARK_CURSORS):
        got = store.get_mark(f"ds{n}")
        assert got == Mark(cursor=cursor, key=key)
        assert got is not None
        assert type(got.cursor) is type(cursor)
        assert [type(v) for v in got.key] == [type(v) for v in key]
        if isinstance(cursor, datetime):
            assert isinstance(got.cursor, datetime)
            assert got.cursor.utcoffset() == cursor.utcoffset()


def test_mark_is_none_until_set_and_after_clearing(store: StateStore) -> None:
    assert store.get_mark("users") is None
    store.set_mark("users", Mark(cursor=1, key=("a",)))
    store.set_mark("users", Mark(cursor=2, key=("b",)))
    assert store.get_mark("users") == Mark(cursor=2, key=("b",))
    store.set_mark("users", None)
    assert store.get_mark("users") is None


def test_dataset_names_differing_only_in_case_keep_apart(store: StateStore) -> None:
    # Spec names are case-sensitive; MySQL's usual collations are not.
    store.set_mark("users", Mark(cursor=1, key=("a",)))
    store.set_mark("Users", Mark(cursor=2, key=("b",)))
    assert store.get_mark("users") == Mark(cursor=1, key=("a",))
    assert store.get_mark("Users") == Mark(cursor=2, key=("b",))
    assert store.get_mark("USERS") is None


# -- the atomic commit -------------------------------------------------------------------------


def _prepared(store: StateStore) -> int:
    """A dataset with a mark, a ledger of 10 keys and a batch in flight; that batch's id."""
    store.commit_batch("users", run_id="run-0", batch_id=None, ledger=entries(range(10)),
                       mark=Mark(cursor=100, key=("k100",)))
    return store.journal_sending("users", "run-1", rows=3, first=None, last=None)


def _assert_unchanged(store: StateStore, batch_id: int) -> None:
    assert store.get_mark("users") == Mark(cursor=100, key=("k100",))
    assert store.ledger_size("users") == 10
    assert store.ledger_lookup("users", [1, 50]) == {1: 7}
    assert [b.batch_id for b in store.unfinished_batches("users")] == [batch_id]
    assert store.quarantine_count() == 0


def test_commit_batch_stores_journal_ledger_mark_and_quarantine(store: StateStore) -> None:
    batch_id = _prepared(store)
    store.commit_batch("users", run_id="run-1", batch_id=batch_id,
                       ledger=entries([1, 50], payload=9), mark=Mark(cursor=200, key=("k200",)),
                       quarantine=[rejected(id="u9", AGE=-3)])
    assert store.get_mark("users") == Mark(cursor=200, key=("k200",))
    assert store.ledger_lookup("users", [1, 2, 50]) == {1: 9, 2: 7, 50: 9}
    assert store.unfinished_batches("users") == []
    assert [b.status for b in store.batches("users")] == ["committed"]
    assert store.quarantine_count("users") == 1


def test_commit_batch_rolls_everything_back_when_the_last_write_fails(store: StateStore) -> None:
    batch_id = _prepared(store)
    # The CHECK constraint on origin fails the quarantine insert, the transaction's last write.
    bad = QuarantineEntry(dataset="users", run_id="run-1", key={"USER_ID": "u9"},
                          raw={"AGE": "secret-value"}, errors=[], origin="bogus")
    with pytest.raises(StateError, match="commit batch") as caught:
        store.commit_batch("users", run_id="run-1", batch_id=batch_id,
                           ledger=entries([1, 50], payload=9),
                           mark=Mark(cursor=200, key=("k200",)), quarantine=[bad])
    assert "secret-value" not in str(caught.value)
    _assert_unchanged(store, batch_id)


def test_commit_batch_with_an_unstorable_raw_value_changes_nothing(store: StateStore) -> None:
    batch_id = _prepared(store)
    with pytest.raises(StateError, match=r"dataset 'users'.*builtins\.object.*cast"):
        store.commit_batch("users", run_id="run-1", batch_id=batch_id,
                           ledger=entries([1, 50], payload=9),
                           mark=Mark(cursor=200, key=("k200",)),
                           quarantine=[rejected(id="u9", odd=object())])
    _assert_unchanged(store, batch_id)


def test_commit_of_a_batch_missing_from_the_journal_changes_nothing(store: StateStore) -> None:
    store.commit_batch("users", run_id="run-0", batch_id=None, ledger=entries(range(10)),
                       mark=Mark(cursor=100, key=("k100",)))
    with pytest.raises(StateError, match="batch 999 of dataset 'users' is not in the journal"):
        store.commit_batch("users", run_id="run-1", batch_id=999, ledger=entries([50]),
                           mark=Mark(cursor=200, key=("k200",)))
    assert store.get_mark("users") == Mark(cursor=100, key=("k100",))
    assert store.ledger_lookup("users", [50]) == {}


# -- ledger ------------------------------------------------------------------------------------


def test_ledger_lookup_finds_thousands_of_keys_in_one_call(store: StateStore) -> None:
    keys = [-(2**63), 2**63 - 1, *range(-1200, 1300)]
    store.commit_batch("users", run_id="r", batch_id=None,
                       ledger=[LedgerEntry(k, k ^ 0x5555, None) for k in keys], mark=None)
    wanted = [*keys, *range(5000, 5600)]
    assert store.ledger_lookup("users", wanted) == {k: k ^ 0x5555 for k in keys}
    assert store.ledger_size("users") == len(keys)


def test_ledger_upsert_overwrites_the_payload_hash(store: StateStore) -> None:
    store.commit_batch("users", run_id="r", batch_id=None, ledger=entries(range(5)), mark=None)
    store.commit_batch("users", run_id="r", batch_id=None,
                       ledger=[LedgerEntry(3, -42, 1.5)], mark=None)
    assert store.ledger_lookup("users", [2, 3]) == {2: 7, 3: -42}
    assert store.ledger_size("users") == 5


def test_a_key_repeated_in_one_commit_keeps_its_last_entry(store: StateStore) -> None:
    ledger = [LedgerEntry(5, 1, None), LedgerEntry(6, 1, 2.0), LedgerEntry(5, 2, 3.0)]
    store.commit_batch("clicks", run_id="r", batch_id=None, ledger=ledger, mark=None)
    assert store.ledger_lookup("clicks", [5, 6]) == {5: 2, 6: 1}
    assert store.prune_ledger("clicks", before=2.5) == 1  # key 6; key 5 now sits at 3.0


def test_ledgers_of_datasets_are_apart(store: StateStore) -> None:
    store.commit_batch("users", run_id="r", batch_id=None, ledger=entries([1], 11), mark=None)
    store.commit_batch("items", run_id="r", batch_id=None, ledger=entries([1], 22), mark=None)
    assert store.ledger_lookup("users", [1]) == {1: 11}
    assert store.ledger_lookup("items", [1]) == {1: 22}
    assert store.ledger_lookup("unknown", [1]) == {}
    assert store.ledger_lookup("users", []) == {}


def test_prune_ledger_deletes_entries_before_a_position(store: StateStore) -> None:
    ledger = [LedgerEntry(k, 1, float(k)) for k in range(10)] + [LedgerEntry(99, 1, None)]
    store.commit_batch("clicks", run_id="r", batch_id=None, ledger=ledger, mark=None)
    store.commit_batch("users", run_id="r", batch_id=None, ledger=entries([1], position=0.0),
                       mark=None)
    assert store.prune_ledger("clicks", before=4.5) == 5
    assert sorted(store.ledger_lookup("clicks", list(range(100)))) == [5, 6, 7, 8, 9, 99]
    assert store.ledger_size("users") == 1


def test_reset_forgets_mark_ledger_and_journal_but_keeps_quarantine(store: StateStore) -> None:
    _prepared(store)
    store.add_quarantine([rejected(id="u9")])
    store.commit_batch("items", run_id="r", batch_id=None, ledger=entries([1]),
                       mark=Mark(cursor=1, key=(1,)))
    store.reset("users")
    assert store.get_mark("users") is None
    assert store.ledger_size("users") == 0
    assert store.batches("users") == []
    assert store.quarantine_count("users") == 1
    assert store.get_mark("items") == Mark(cursor=1, key=(1,))
    assert store.ledger_size("items") == 1


def test_commits_log_entries_that_lookups_see_before_they_are_merged(store: StateStore) -> None:
    store.commit_batch("users", run_id="r", batch_id=None, ledger=entries([1, 2]), mark=None)
    store.commit_batch("users", run_id="r", batch_id=None, ledger=[LedgerEntry(2, 8, None)],
                       mark=None)
    assert store.logged_count("users") == 3
    assert store.logged_entries("users") == {1: 7, 2: 8}
    assert store.ledger_lookup("users", [1, 2, 3]) == {1: 7, 2: 8}
    assert store.ledger_lookup("users", [1, 2, 3], logged=False) == {}
    assert store.has_ledger("users")
    assert store.ledger_size("users") == 2


def test_merging_moves_each_keys_newest_entry_into_the_ledger(store: StateStore) -> None:
    store.commit_batch("users", run_id="r", batch_id=None, ledger=entries(range(5)), mark=None)
    assert store.merge_ledger("users") == 5
    # Key 3 twice in one commit and again in the next; key 9 is new; key 0 is left alone.
    store.commit_batch("users", run_id="r", batch_id=None, mark=None,
                       ledger=[LedgerEntry(3, 30, 1.0), LedgerEntry(9, 90, None),
                               LedgerEntry(3, 31, 2.0)])
    store.commit_batch("users", run_id="r", batch_id=None, ledger=[LedgerEntry(3, 32, 3.0)],
                       mark=None)
    store.commit_batch("items", run_id="r", batch_id=None, ledger=entries([3]), mark=None)
    assert store.ledger_size("users") == 6  # keys 0-4 and 9, each once
    assert store.merge_ledger("users") == 4
    expected = {0: 7, 1: 7, 2: 7, 3: 32, 4: 7, 9: 90}
    assert store.ledger_lookup("users", list(range(10)), logged=False) == expected
    assert store.ledger_lookup("users", list(range(10))) == expected
    assert store.logged_count("users") == 0 and store.logged_entries("users") == {}
    assert store.logged_count("items") == 1  # other datasets' logs wait for their own merge
    assert store.merge_ledger("users") == 0
    assert store.prune_ledger("users", before=2.5) == 0  # key 3 sits at 3.0
    assert store.prune_ledger("users", before=3.5) == 1


def test_pruning_merges_the_log_first(store: StateStore) -> None:
    store.commit_batch("clicks", run_id="r", batch_id=None, mark=None,
                       ledger=[LedgerEntry(k, 1, float(k)) for k in range(6)])
    assert store.prune_ledger("clicks", before=2.0) == 2
    assert store.logged_count("clicks") == 0
    assert sorted(store.ledger_lookup("clicks", list(range(6)), logged=False)) == [2, 3, 4, 5]


@pytest.fixture
def levels(store_url: str, clock: FakeClock) -> Iterator[StateStore]:
    """A store whose ledger's second level is merged into the ledger at 4 keys."""
    opened = StateStore.open(store_url, clock=clock, recent_limit=4)
    try:
        yield opened
    finally:
        opened.close()


def keys_by_level(store_url: str, dataset: str) -> dict[str, list[int]]:
    """The dataset's keys in each of the ledger's tables, read from the database."""
    engine = sa.create_engine(store_url)
    try:
        with engine.connect() as conn:
            return {
                table: sorted(conn.execute(sa.text(
                    f"SELECT key_hash FROM {table} WHERE dataset_id = "
                    "(SELECT id FROM datasets WHERE name = :name)"), {"name": dataset}).scalars())
                for table in ("ledger_log", "ledger_recent", "ledger")
            }
    finally:
        engine.dispose()


def test_merges_gather_in_the_second_level_until_it_holds_its_limit(
        levels: StateStore, store_url: str) -> None:
    levels.commit_batch("users", run_id="r", batch_id=None, ledger=entries(range(3)), mark=None)
    assert levels.merge_ledger("users") == 3
    assert keys_by_level(store_url, "users") == {
        "ledger_log": [], "ledger_recent": [0, 1, 2], "ledger": []}
    assert levels.ledger_lookup("users", [0, 1, 2, 3], logged=False) == {0: 7, 1: 7, 2: 7}

    levels.commit_batch("users", run_id="r", batch_id=None, ledger=entries([3], 8), mark=None)
    assert levels.merge_ledger("users") == 1  # the fourth key: the level is moved
    assert keys_by_level(store_url, "users") == {
        "ledger_log": [], "ledger_recent": [], "ledger": [0, 1, 2, 3]}
    assert levels.ledger_lookup("users", [0, 1, 2, 3], logged=False) == {
        0: 7, 1: 7, 2: 7, 3: 8}
    assert levels.ledger_size("users") == 4


def test_a_keys_entry_in_the_second_level_overrides_the_ledgers(
        levels: StateStore, store_url: str) -> None:
    levels.commit_batch("users", run_id="r", batch_id=None, ledger=entries(range(4)), mark=None)
    levels.merge_ledger("users")
    levels.commit_batch("users", run_id="r", batch_id=None, ledger=entries([1, 5], 9), mark=None)
    levels.merge_ledger("users")
    levels.commit_batch("users", run_id="r", batch_id=None, ledger=entries([1], 10), mark=None)
    assert keys_by_level(store_url, "users") == {
        "ledger_log": [1], "ledger_recent": [1, 5], "ledger": [0, 1, 2, 3]}
    assert levels.ledger_lookup("users", list(range(6)), logged=False) == {
        0: 7, 1: 9, 2: 7, 3: 7, 5: 9}
    assert levels.ledger_lookup("users", list(range(6))) == {0: 7, 1: 10, 2: 7, 3: 7, 5: 9}
    assert levels.ledger_size("users") == 5  # keys 0-3 and 5, each once
    assert levels.has_ledger("users")
    levels.reset("users")
    assert keys_by_level(store_url, "users") == {
        "ledger_log": [], "ledger_recent": [], "ledger": []}


def test_a_store_opened_again_counts_what_its_second_level_holds(
        store_url: str, clock: FakeClock) -> None:
    with StateStore.open(store_url, clock=clock, recent_limit=4) as first:
        first.commit_batch("users", run_id="r", batch_id=None, ledger=entries(range(3)),
                           mark=None)
        first.merge_ledger("users")
    with StateStore.open(store_url, clock=clock, recent_limit=4) as second:
        second.commit_batch("users", run_id="r", batch_id=None, ledger=entries([7]), mark=None)
        second.merge_ledger("users")
    assert keys_by_level(store_url, "users") == {
        "ledger_log": [], "ledger_recent": [], "ledger": [0, 1, 2, 7]}


@pytest.mark.parametrize(("older", "newer", "kept"), [
    (5.0, 1.0, {}),  # the newest entry is old: the key goes, its older entry does not return
    (1.0, 5.0, {3: 2}),  # the newest entry is recent: the key stays, with its newest payload
])
def test_pruning_judges_a_key_by_its_newest_entry_across_levels(
        levels: StateStore, older: float, newer: float, kept: dict[int, int]) -> None:
    levels.commit_batch("clicks", run_id="r", batch_id=None, mark=None,
                        ledger=[LedgerEntry(k, 1, older) for k in range(3, 7)])
    levels.merge_ledger("clicks")  # four keys: into the ledger
    levels.commit_batch("clicks", run_id="r", batch_id=None, mark=None,
                        ledger=[LedgerEntry(3, 2, newer)])
    levels.merge_ledger("clicks")  # into the second level
    levels.prune_ledger("clicks", before=2.0)
    found = levels.ledger_lookup("clicks", [3])
    assert found == kept
    expected_others = {} if older < 2.0 else {4: 1, 5: 1, 6: 1}
    assert levels.ledger_lookup("clicks", [4, 5, 6]) == expected_others


# -- journal -----------------------------------------------------------------------------------


def test_sending_batch_is_unfinished_until_a_run_that_ends_reports_it(store: StateStore) -> None:
    first = Mark(cursor=datetime(2024, 1, 1, tzinfo=KST), key=("a",))
    last = Mark(cursor=Decimal("2.5"), key=("z", 2**62))
    batch_id = store.journal_sending("users", "run-1", rows=3, first=first, last=last)
    (unfinished,) = store.unfinished_batches("users")
    assert (unfinished.batch_id, unfinished.status, unfinished.rows) == (batch_id, "sending", 3)
    assert (unfinished.first, unfinished.last, unfinished.run_id) == (first, last, "run-1")
    assert unfinished.created_at == T0
    store.mark_ambiguous("users", [batch_id])
    # Found by a run that may die too: still unfinished, now ambiguous.
    assert [b.status for b in store.unfinished_batches("users")] == ["ambiguous"]
    store.begin_run("run-2", datasets=["users"], host="h", pid=1)
    store.end_run("run-2", status="ok", summary={}, reported=[batch_id])
    assert store.unfinished_batches("users") == []
    assert [b.status for b in store.batches("users")] == ["reported"]


def test_a_batch_whose_answer_proves_it_unsent_is_failed_and_not_unfinished(
    store: StateStore
) -> None:
    batch_id = store.journal_sending("users", "run-1", rows=3, first=None, last=None)
    store.commit_batches("users", run_id="run-1", commits=(), failed=[batch_id])
    assert store.unfinished_batches("users") == []
    assert [b.status for b in store.batches("users")] == ["failed"]


def test_committed_batch_is_not_unfinished(store: StateStore) -> None:
    done = store.journal_sending("users", "run-1", rows=1, first=None, last=None)
    open_ = store.journal_sending("users", "run-1", rows=1, first=None, last=None)
    store.commit_batch("users", run_id="run-1", batch_id=done, ledger=[], mark=None)
    assert [b.batch_id for b in store.unfinished_batches("users")] == [open_]
    store.mark_ambiguous("users", [done, open_])
    assert [(b.batch_id, b.status) for b in store.batches()] == [
        (open_, "ambiguous"), (done, "committed")
    ]


def test_batch_ids_keep_increasing_after_a_reset(store: StateStore) -> None:
    ids = [store.journal_sending("users", "r", rows=1, first=None, last=None) for _ in range(3)]
    store.reset("users")
    later = store.journal_sending("users", "r", rows=1, first=None, last=None)
    assert ids == sorted(ids)
    assert later > ids[-1]


# -- quarantine --------------------------------------------------------------------------------


def test_quarantine_keeps_raw_values_with_their_types(store: StateStore) -> None:
    raw: dict[str, Any] = {
        "id": "u1", "AGE": Decimal("-3"), "seen": datetime(2024, 1, 1, 1, 2, 3, 4, tzinfo=KST),
        "born": date(1990, 1, 1), "blob": b"\x00", "n": 2**62, "none": None,
    }
    server = QuarantineEntry(dataset="users", run_id="run-2", key={"USER_ID": "u2"},
                             raw={"id": "u2"}, origin="server",
                             errors=[{"path": "$", "message": "400 Bad Request", "body": "{..}"}])
    store.add_quarantine([rejected(**raw), server, rejected("items", id="i1")])
    records = store.quarantined("users")
    assert [r.key for r in records] == [{"USER_ID": "u1"}, {"USER_ID": "u2"}]
    assert records[0].raw == raw
    assert type(records[0].raw["AGE"]) is Decimal
    assert records[0].raw["seen"].utcoffset() == timedelta(hours=9)
    assert records[0].errors == [{"path": "$.AGE", "message": "-3 is less than the minimum of 0"}]
    assert (records[1].origin, records[1].run_id) == ("server", "run-2")
    assert records[1].errors[0]["body"] == "{..}"
    assert records[0].created_at == T0
    assert store.quarantine_count() == 3
    assert len(store.quarantined(limit=2)) == 2


def test_a_large_quarantined_row_with_any_unicode_is_kept_whole(store: StateStore) -> None:
    # Past MySQL's 64 KiB TEXT, and 4-byte UTF-8 that MySQL's 3-byte "utf8" cannot hold.
    raw = {"id": "u1", "bio": "日本語 ✓ 😀 " * 20_000}
    store.add_quarantine([rejected(**raw)])
    [record] = store.quarantined("users")
    assert record.raw == raw


def test_dropping_quarantined_rows(store: StateStore) -> None:
    store.add_quarantine([rejected(id=f"u{i}") for i in range(5)])
    ids = [r.id for r in store.quarantined()]
    assert store.drop_quarantine([*ids[:2], 10_000]) == 2
    assert [r.id for r in store.quarantined()] == ids[2:]
    assert store.quarantine_count("users") == 3


# -- the quarantine tracks what was delivered ----------------------------------------------------


def of_key(key_hash: int | None, status: str = "open", **raw: Any) -> QuarantineEntry:
    """A rejected row of key ``key_hash`` (None: no key identifies it)."""
    return QuarantineEntry("users", "run-1", {"USER_ID": f"u{key_hash}"}, raw or {"AGE": -1},
                           [{"path": "$.AGE", "message": "-1 is less than the minimum of 0"}],
                           key_hash=key_hash, status=status)


def states(store: StateStore) -> dict[int | None, tuple[str, str | None]]:
    """Each entry's key hash -> its state and the run that closed it."""
    return {r.key_hash: (r.status, r.resolved_by)
            for r in store.quarantined("users", states=None)}


@pytest.fixture(params=[None, 0], ids=["in-memory", "in-the-table"])
def watched(request: pytest.FixtureRequest, store_url: str, clock: FakeClock
            ) -> Iterator[StateStore]:
    """A store whose commits find open keys in memory, or (watch limit 0) in the table."""
    limit = {} if request.param is None else {"watch_limit": request.param}
    opened = StateStore.open(store_url, clock=clock, **limit)
    try:
        yield opened
    finally:
        opened.close()


def test_a_commit_closes_the_open_entries_of_the_keys_it_delivers(
        watched: StateStore, clock: FakeClock) -> None:
    store = watched
    store.commit_batch("users", run_id="run-1", batch_id=None, ledger=[], mark=None,
                       quarantine=[of_key(1), of_key(2), of_key(3), of_key(4), of_key(None)])
    clock.advance(5)

    store.commit_batches("users", run_id="run-2", commits=[
        BatchCommit(None, entries([1, 9])),  # delivered, the ledger keeps it
        BatchCommit(None, unlogged=entries([2])),  # delivered, the mark alone covers it
        BatchCommit(None, current=[3]),  # read unchanged: AiTEMS holds its newest version
    ])

    assert states(store) == {1: ("superseded", "run-2"), 2: ("superseded", "run-2"),
                             3: ("superseded", "run-2"), 4: ("open", None),
                             None: ("open", None)}
    [closed] = store.quarantined("users", ids=[store.quarantined("users", states=None)[0].id],
                                 states=None)
    assert closed.resolved_at == T0 + timedelta(seconds=5)
    assert store.quarantine_count("users") == 2
    assert store.quarantine_count("users", states=None) == 5
    assert [r.key_hash for r in store.quarantined("users")] == [4, None]


def test_in_a_group_a_commit_closes_what_was_rejected_before_it_not_after(
        watched: StateStore) -> None:
    watched.commit_batches("users", run_id="run-1", commits=[
        BatchCommit(None, quarantine=[of_key(5)]),
        BatchCommit(None, entries([5, 6])),  # 5 rejected in the commit before: closed
        BatchCommit(None, quarantine=[of_key(6)]),  # 6 rejected after its delivery: newer
        BatchCommit(None, quarantine=[of_key(7, AGE=-2), of_key(7, status="superseded")]),
    ])

    assert [(r.key_hash, r.status) for r in watched.quarantined("users", states=None)] == [
        (5, "superseded"), (6, "open"), (7, "open"), (7, "superseded")]


def test_an_entry_is_closed_only_by_a_commit_that_goes_through(store: StateStore,
                                                              clock: FakeClock) -> None:
    store.acquire_lease("users", owner="run-a", host="h", pid=1, ttl=10)
    store.commit_batch("users", run_id="run-a", batch_id=None, ledger=[], mark=None,
                       quarantine=[of_key(1)], fenced=True)
    clock.advance(11)
    store.acquire_lease("users", owner="run-b", host="h", pid=2, ttl=10)  # run-a stalled

    with pytest.raises(LeaseLostError):
        store.commit_batch("users", run_id="run-a", batch_id=None, ledger=entries([1]),
                           mark=None, fenced=True)
    assert states(store) == {1: ("open", None)}

    store.commit_batch("users", run_id="run-b", batch_id=None, ledger=entries([1]), mark=None,
                       fenced=True)
    assert states(store) == {1: ("superseded", "run-b")}


def test_a_failed_commit_leaves_the_open_keys_as_the_table_has_them(store: StateStore) -> None:
    """What a rolled-back commit noted in memory is forgotten with it."""
    store.commit_batch("users", run_id="run-1", batch_id=None, ledger=[], mark=None,
                       quarantine=[of_key(1)])
    bad = replace(of_key(2), origin="elsewhere")  # the CHECK on origin fails its insert
    with pytest.raises(StateError):
        store.commit_batches("users", run_id="run-1", commits=[
            BatchCommit(None, entries([1])), BatchCommit(None, quarantine=[bad])])
    assert states(store) == {1: ("open", None)}

    store.commit_batch("users", run_id="run-1", batch_id=None, ledger=entries([1]), mark=None)
    assert states(store) == {1: ("superseded", "run-1")}


def test_retry_closes_what_it_sent_resolved_and_older_entries_superseded(
        store: StateStore) -> None:
    store.add_quarantine([of_key(1), of_key(1, AGE=-2), of_key(2)])
    older, newest, other = (r.id for r in store.quarantined("users"))

    store.commit_batch("users", run_id="retry-1", batch_id=None, ledger=entries([1]), mark=None,
                       resolved=[newest], superseded=[older])

    assert [(r.status, r.resolved_by) for r in store.quarantined("users", states=None)] == [
        ("superseded", "retry-1"), ("resolved", "retry-1"), ("open", None)]
    assert [r.id for r in store.quarantined("users")] == [other]


def _as_version_9(conn: sa.Connection) -> None:
    """Take the store back to what version 9 left: entries with no key hash and no state."""
    conn.execute(sa.text("DROP INDEX ix_quarantine_dataset_status_key"
                         + (" ON quarantine" if conn.dialect.name == "mysql" else "")))
    for column in ("key_hash", "status", "resolved_at", "resolved_by"):
        conn.execute(sa.text(f"ALTER TABLE quarantine DROP COLUMN {column}"))
    conn.execute(sa.text("UPDATE schema_version SET version = 9"))


def test_a_version_9_store_keeps_its_entries_open_and_closes_them_from_then_on(
        store_url: str) -> None:
    with StateStore.open(store_url) as store:
        store.add_quarantine([of_key(None, AGE=-1)])
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:
        _as_version_9(conn)

    with StateStore.open(store_url) as store:
        [before] = store.quarantined("users")
        store.commit_batch("users", run_id="run-9", batch_id=None, ledger=[], mark=None,
                           quarantine=[of_key(3)])
        store.commit_batch("users", run_id="run-9", batch_id=None, ledger=entries([3]),
                           mark=None)
        after = states(store)
    with engine.connect() as conn:
        version = conn.execute(sa.text("SELECT version FROM schema_version")).scalar()
        indexes = {i["name"] for i in sa.inspect(conn).get_indexes("quarantine")}
    engine.dispose()

    assert (before.status, before.key_hash, before.raw) == ("open", None, {"AGE": -1})
    assert after == {None: ("open", None), 3: ("superseded", "run-9")}
    assert version == LATEST_VERSION == 10
    assert "ix_quarantine_dataset_status_key" in indexes


# -- runs --------------------------------------------------------------------------------------


def test_runs_are_listed_newest_first_with_summary(store: StateStore, clock: FakeClock) -> None:
    store.begin_run("run-a", datasets=["users"], host="h1", pid=10)
    clock.advance(60)
    store.end_run("run-a", status="ok", summary={"users": {"sent": 3, "ratio": 0.5}})
    store.begin_run("run-b", datasets=["users", "items"], host="h2", pid=11)
    newest, oldest = store.runs()
    assert (newest.run_id, newest.status, newest.finished_at) == ("run-b", "running", None)
    assert newest.datasets == ["users", "items"]
    assert (oldest.run_id, oldest.status, oldest.host, oldest.pid) == ("run-a", "ok", "h1", 10)
    assert oldest.started_at == T0
    assert oldest.finished_at == T0 + timedelta(seconds=60)
    assert oldest.summary == {"users": {"sent": 3, "ratio": 0.5}}
    assert len(store.runs(limit=1)) == 1


def test_ending_an_unknown_run_is_an_error(store: StateStore) -> None:
    with pytest.raises(StateError, match="run nope is not in"):
        store.end_run("nope", status="ok", summary={})


# -- leases ------------------------------------------------------------------------------------


def test_second_owner_is_refused_with_the_holder_named(store: StateStore) -> None:
    store.acquire_lease("users", owner="run-a", host="pod-1", pid=101, ttl=60)
    store.acquire_lease("users", owner="run-a", host="pod-1", pid=101, ttl=60)  # ours: fine
    with pytest.raises(LockHeldError) as caught:
        store.acquire_lease("users", owner="run-b", host="pod-2", pid=202, ttl=60)
    message = str(caught.value)
    for part in ("'users'", "run-a", "pod-1", "101", "2024-05-01 12:01:00 UTC", "expire"):
        assert part in message
    assert caught.value.exit_code == 75
    store.acquire_lease("items", owner="run-b", host="pod-2", pid=202, ttl=60)  # other dataset


def test_expired_lease_is_taken_over(store: StateStore, clock: FakeClock) -> None:
    store.acquire_lease("users", owner="run-a", host="pod-1", pid=1, ttl=30)
    clock.advance(31)
    store.acquire_lease("users", owner="run-b", host="pod-2", pid=2, ttl=30)
    holder = store.lease_holder("users")
    assert holder is not None
    assert (holder.owner, holder.host, holder.pid) == ("run-b", "pod-2", 2)
    assert holder.expires_at == T0 + timedelta(seconds=61)
    assert store.renew_lease("users", owner="run-a", ttl=30) is False


def test_a_live_lease_is_taken_from_a_gone_holder_only_while_that_holder_has_it(
        store: StateStore) -> None:
    store.acquire_lease("users", owner="run-a", host="h", pid=1, ttl=60, process="b n 10")
    store.acquire_lease("users", owner="run-c", host="h", pid=3, ttl=60,
                        take_from="run-a")  # run-a judged gone: the same conditional write
    holder = store.lease_holder("users")
    with pytest.raises(LockHeldError, match="run-c"):  # run-a is no longer the holder
        store.acquire_lease("users", owner="run-b", host="h", pid=2, ttl=60, take_from="run-a")

    assert holder is not None
    assert (holder.owner, holder.pid, holder.process) == ("run-c", 3, None)
    assert store.renew_lease("users", owner="run-a", ttl=60) is False
    with pytest.raises(LeaseLostError, match="is held by run run-c now"):  # fenced
        store.commit_batch("users", run_id="run-a", batch_id=None, ledger=entries([1]),
                           mark=Mark(cursor=5, key=("u5",)), fenced=True)


def test_renewed_lease_outlives_its_first_ttl(store: StateStore, clock: FakeClock) -> None:
    store.acquire_lease("users", owner="run-a", host="h", pid=1, ttl=30)
    clock.advance(20)
    assert store.renew_lease("users", owner="run-a", ttl=30) is True
    clock.advance(20)
    with pytest.raises(LockHeldError):
        store.acquire_lease("users", owner="run-b", host="h", pid=2, ttl=30)


def test_released_lease_is_free_for_the_next_run(store: StateStore) -> None:
    store.acquire_lease("users", owner="run-a", host="h", pid=1, ttl=60)
    store.release_lease("users", owner="run-b")  # not the holder: no effect
    assert store.lease_holder("users") is not None
    store.release_lease("users", owner="run-a")
    assert store.lease_holder("users") is None
    assert store.renew_lease("users", owner="run-a", ttl=60) is False
    store.acquire_lease("users", owner="run-b", host="h", pid=2, ttl=60)


def test_lease_renews_from_another_thread_while_batches_commit(store: StateStore) -> None:
    store.acquire_lease("users", owner="run-a", host="h", pid=1, ttl=60)
    renewed: list[bool] = []

    def renew() -> None:
        for _ in range(20):
            renewed.append(store.renew_lease("users", owner="run-a", ttl=60))

    thread = threading.Thread(target=renew)
    thread.start()
    for n in range(20):
        store.commit_batch("users", run_id="r", batch_id=None,
                           ledger=entries(range(n * 100, n * 100 + 100)), mark=Mark(n, (n,)))
    thread.join(timeout=30)
    assert renewed == [True] * 20
    assert store.ledger_size("users") == 2000


_CONTENDER = """
import sys, time
from pathlib import Path
from aitems_sync.errors import LockHeldError
from aitems_sync.state.store import StateStore
url, owner, sync = sys.argv[1], sys.argv[2], Path(sys.argv[3])
store = StateStore.open(url)
store.lease_holder("users")
(sync / owner).touch()
while not (sync / "go").exists():
    time.sleep(0.002)
try:
    store.acquire_lease("users", owner=owner, host="h", pid=0, ttl=60)
    print("won")
except LockHeldError:
    print("held")
"""


def test_concurrent_processes_get_exactly_one_lease(store_url: str, tmp_path: Path) -> None:
    # The store is new: the contenders also race to create its tables.
    sync = tmp_path / "sync"
    sync.mkdir()
    owners = [f"p{i}" for i in range(3)]
    procs = [
        subprocess.Popen([sys.executable, "-c", _CONTENDER, store_url, owner, str(sync)],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for owner in owners
    ]
    deadline = time.monotonic() + 30
    while not all((sync / o).exists() for o in owners) and time.monotonic() < deadline:
        time.sleep(0.01)
    (sync / "go").touch()  # all of them race from here
    results = [proc.communicate(timeout=60) for proc in procs]
    outcomes = [out.strip() for out, _err in results]
    assert sorted(outcomes) == ["held", "held", "won"], results
    with StateStore.open(store_url) as store:
        holder = store.lease_holder("users")
    assert holder is not None
    assert holder.owner == owners[outcomes.index("won")]


# -- opening and migrations --------------------------------------------------------------------


def test_opening_twice_keeps_the_data_and_the_version(store_url: str) -> None:
    with StateStore.open(store_url) as first:
        first.set_mark("users", Mark(cursor=1, key=(1,)))
    with StateStore.open(store_url) as second:
        assert second.get_mark("users") == Mark(cursor=1, key=(1,))
    engine = sa.create_engine(store_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version FROM schema_version")).all() == [
            (LATEST_VERSION,)
        ]
    engine.dispose()


def test_a_version_1_store_is_upgraded_in_place_keeping_its_data(store_url: str) -> None:
    with StateStore.open(store_url) as store:
        store.set_mark("users", Mark(cursor=5, key=("u5",)))
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:  # what version 1 left: no quarantine.ledger_hash, no log, ...
        conn.execute(sa.text("ALTER TABLE quarantine DROP COLUMN ledger_hash"))
        conn.execute(sa.text("DROP TABLE ledger_log"))
        conn.execute(sa.text("DROP TABLE ledger_recent"))
        conn.execute(sa.text("ALTER TABLE datasets DROP COLUMN row_hash"))  # ... no row hash
        conn.execute(sa.text("ALTER TABLE datasets DROP COLUMN aitems_service_id"))  # no binding
        conn.execute(sa.text("ALTER TABLE datasets DROP COLUMN aitems_dataset_id"))
        conn.execute(sa.text("ALTER TABLE leases DROP COLUMN process"))  # no process token
        conn.execute(sa.text("UPDATE schema_version SET version = 1"))

    with StateStore.open(store_url) as store:
        store.add_quarantine([QuarantineEntry("users", "r", {"USER_ID": "u1"}, {"id": "u1"},
                                              [], ledger_hash=42)])
        [record] = store.quarantined("users")
        assert store.get_mark("users") == Mark(cursor=5, key=("u5",))
        store.commit_batch("users", run_id="r", batch_id=None, ledger=entries([3]), mark=None)
        assert store.ledger_lookup("users", [3]) == {3: 7}
        # The dataset's ledger was written with the BLAKE2b of versions 1-3; a new one's is not.
        assert store.row_hash_of("users") == "blake2b-64"
        store.set_mark("items", None)
        assert store.row_hash_of("items") == ROW_HASH
        store.acquire_lease("users", owner="r", host="h", pid=1, ttl=60, process="b n 7")
        holder = store.lease_holder("users")
    assert record.ledger_hash == 42
    assert holder is not None and holder.process == "b n 7"
    with engine.connect() as conn:
        version = conn.execute(sa.text("SELECT version FROM schema_version")).scalar()
    assert version == LATEST_VERSION
    engine.dispose()


def _as_version_6(conn: sa.Connection) -> None:
    """Take the store back to what version 6 left: no boundary, no recorded key, and a journal
    whose statuses are sending, committed and ambiguous only."""
    conn.execute(sa.text("DROP TABLE boundary"))
    conn.execute(sa.text("ALTER TABLE marks DROP COLUMN boundary"))
    conn.execute(sa.text("ALTER TABLE datasets DROP COLUMN identity"))
    old = "status IN ('sending', 'committed', 'ambiguous')"
    if conn.dialect.name != "sqlite":
        conn.execute(sa.text("ALTER TABLE batches DROP CONSTRAINT batch_status"))
        conn.execute(sa.text(f"ALTER TABLE batches ADD CONSTRAINT batch_status CHECK ({old})"))
    else:
        table_sql = conn.execute(sa.text("SELECT sql FROM sqlite_master WHERE name = 'batches'"))
        create = re.sub(r"status IN \([^)]*\)", old, table_sql.scalar_one())
        counter = conn.execute(sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'batches'"))
        seq = counter.scalar_one()
        conn.execute(sa.text("DROP INDEX ix_batches_dataset_status"))
        conn.execute(sa.text("ALTER TABLE batches RENAME TO batches_now"))
        conn.execute(sa.text(create))
        conn.execute(sa.text("INSERT INTO batches SELECT * FROM batches_now"))
        conn.execute(sa.text("DROP TABLE batches_now"))
        conn.execute(sa.text("UPDATE sqlite_sequence SET seq = :n WHERE name = 'batches'"),
                     {"n": seq})
        conn.execute(sa.text("CREATE INDEX ix_batches_dataset_status ON batches "
                             "(dataset_id, status)"))
    conn.execute(sa.text("UPDATE schema_version SET version = 6"))


def test_a_version_6_store_gets_boundaries_keys_and_every_journal_outcome(
    store_url: str
) -> None:
    with StateStore.open(store_url) as store:
        ids = [store.journal_sending("users", "r", rows=1, first=None, last=None)
               for _ in range(3)]
        store.commit_batch("users", run_id="r", batch_id=ids[0], ledger=[], mark=None)
        store.mark_ambiguous("users", [ids[1]])
        store.set_mark("users", Mark(cursor=5, key=("u5",)))
        store.reset("items")
        for _ in range(2):
            store.journal_sending("items", "r", rows=1, first=None, last=None)
        store.reset("items")  # the newest batch ids are gone
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:
        _as_version_6(conn)

    with StateStore.open(store_url) as store:
        before = [(b.batch_id, b.status) for b in store.batches("users")]
        store.commit_batches("users", run_id="r", commits=(), failed=[ids[2]])
        after = [b.status for b in store.batches("users")]
        mark, boundary, identity = (store.get_mark("users"), store.boundary("users"),
                                    store.identity("users"))
        newest = store.journal_sending("users", "r", rows=1, first=None, last=None)
    engine.dispose()

    assert before == [(ids[2], "sending"), (ids[1], "ambiguous"), (ids[0], "committed")]
    assert after == ["failed", "ambiguous", "committed"]
    assert (mark, boundary, identity) == (Mark(cursor=5, key=("u5",)), None, None)
    assert newest > ids[2] + 2  # ids never go back, the migration's rebuild included


def test_a_dataset_hashed_in_a_way_this_version_does_not_know_is_refused(store_url: str) -> None:
    with StateStore.open(store_url) as store:
        store.set_mark("users", None)
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE datasets SET row_hash = 'sha3-64'"))
    engine.dispose()

    with StateStore.open(store_url) as store, pytest.raises(
            StateError, match=r"dataset 'users' .* hashed with 'sha3-64'.*upgrade aitems-sync"):
        store.row_hash_of("users")


def test_a_store_from_a_newer_version_is_refused(store_url: str) -> None:
    StateStore.open(store_url).close()
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE schema_version SET version = :v"), {"v": LATEST_VERSION + 1})
    engine.dispose()
    with pytest.raises(StateError, match=rf"schema version {LATEST_VERSION + 1}.*upgrade"):
        StateStore.open(store_url)


def test_a_mariadb_dialect_url_builds_the_same_binary_utf8mb4_store(mariadb_url: str) -> None:
    url = mariadb_url.replace("mysql+pymysql://", "mariadb+pymysql://")
    with StateStore.open(url) as store:
        store.set_mark("users", Mark(cursor="ü", key=("a",)))
        store.set_mark("Users", Mark(cursor="u", key=("A",)))
        assert store.get_mark("users") == Mark(cursor="ü", key=("a",))
    engine = sa.create_engine(mariadb_url)
    with engine.connect() as conn:
        collations = conn.execute(sa.text(
            "SELECT DISTINCT TABLE_COLLATION FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = DATABASE()")).scalars().all()
    engine.dispose()
    assert collations == ["utf8mb4_bin"]


def test_sqlite_store_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "state.db"
    with StateStore.open(f"sqlite:///{path}") as store:
        store.set_mark("users", Mark(cursor=1, key=(1,)))
        assert oct(path.stat().st_mode & 0o777) == oct(0o600)
        wal = Path(f"{path}-wal")
        assert wal.exists()
        assert oct(wal.stat().st_mode & 0o777) == oct(0o600)
        with sqlite3.connect(path) as raw:
            assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


@pytest.mark.parametrize("dialect", ["postgresql+psycopg", "mysql+pymysql"])
def test_open_failure_names_the_url_without_its_password(dialect: str) -> None:
    url = f"{dialect}://sync:hunter2@127.0.0.1:1/state?connect_timeout=2"
    with pytest.raises(StateError, match=r"cannot open the state store .*sync:\*\*\*@") as caught:
        StateStore.open(url)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "not a SQLAlchemy URL"),
        ("mssql+pyodbc://u:pw@host/db", "cannot use mssql"),
    ],
)
def test_unusable_urls_are_refused_clearly(url: str, message: str) -> None:
    with pytest.raises(StateError, match=message) as caught:
        StateStore.open(url)
    assert "pw" not in str(caught.value)


def test_sqlite_file_mode_survives_umask_zero(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        StateStore.open(f"sqlite:///{tmp_path}/s.db").close()
    finally:
        os.umask(old)
    assert (tmp_path / "s.db").stat().st_mode & 0o777 == 0o600


def test_in_memory_sqlite_store_works_for_dry_runs() -> None:
    with StateStore.open("sqlite://") as store:
        store.set_mark("users", Mark(cursor=date(2024, 1, 1), key=("a",)))
        assert store.get_mark("users") == Mark(cursor=date(2024, 1, 1), key=("a",))
        assert store.url_for_display == "sqlite://"


def test_a_fenced_commit_after_a_takeover_writes_nothing(store: StateStore, clock: FakeClock
                                                         ) -> None:
    store.acquire_lease("users", owner="run-a", host="h", pid=1, ttl=10)
    [sending] = store.commit_batches("users", run_id="run-a", commits=(),
                                     sending=[Sending(2, None, None)], fenced=True)
    clock.advance(11)
    store.acquire_lease("users", owner="run-b", host="h", pid=2, ttl=10)  # run-a stalled

    with pytest.raises(LeaseLostError, match="is held by run run-b now"):
        store.commit_batch("users", run_id="run-a", batch_id=sending, ledger=entries([1, 2]),
                           mark=Mark(cursor=5, key=("u5",)), fenced=True)
    with pytest.raises(LeaseLostError):
        store.journal_sending("users", "run-a", rows=1, first=None, last=None, fenced=True)

    assert store.get_mark("users") is None
    assert store.ledger_lookup("users", [e.key_hash for e in entries([1, 2])]) == {}
    assert [b.batch_id for b in store.unfinished_batches("users")] == [sending]


def test_a_fenced_commit_by_the_holder_goes_through(store: StateStore) -> None:
    store.acquire_lease("users", owner="run-a", host="h", pid=1, ttl=10)

    store.commit_batch("users", run_id="run-a", batch_id=None, ledger=entries([1]),
                       mark=Mark(cursor=5, key=("u5",)), fenced=True)

    assert store.get_mark("users") == Mark(cursor=5, key=("u5",))


def test_a_fenced_commit_without_any_lease_is_refused(store: StateStore) -> None:
    with pytest.raises(LeaseLostError, match="it was released"):
        store.commit_batch("users", run_id="run-a", batch_id=None, ledger=[],
                           mark=Mark(cursor=5, key=("u5",)), fenced=True)


def test_a_dataset_is_bound_once_to_its_aitems_dataset_until_reset(store: StateStore) -> None:
    assert store.binding("users") is None

    store.bind("users", "svc1", "ds1", ["USER_ID"])
    store.bind("users", "svc2", "ds2", ["USER_ID"])  # a binding is never overwritten silently
    bound = store.binding("users")
    store.reset("users")
    after_reset = store.binding("users"), store.identity("users")
    store.bind("users", "svc2", "ds2", ["USER_ID"])

    assert bound == ("svc1", "ds1")
    assert after_reset == (None, None)
    assert store.binding("users") == ("svc2", "ds2")
    assert store.identity("users") == ("USER_ID",)


@pytest.mark.parametrize("size", [1, INLINE_BOUNDARY, INLINE_BOUNDARY + 1, 500])
def test_the_marks_boundary_is_replaced_when_its_cursor_value_moves_and_grows_while_not(
    store_url: str, size: int
) -> None:
    """Kept in the marks row while small and in its own table past INLINE_BOUNDARY entries,
    through every switch between the two; a second store reads what the first wrote."""
    def commit(store: StateStore, cursor: int, entries: dict[int, int], fresh: bool) -> None:
        store.commit_batches("users", run_id="r", commits=[BatchCommit(
            None, mark=Mark(cursor=cursor, key=("k",)), boundary=Boundary(entries, fresh))])

    first = {n: n + 1 for n in range(size)}
    more = {-n: n for n in range(1, size + 1)}
    with StateStore.open(store_url) as store:
        commit(store, 5, first, fresh=True)
        at_five = store.boundary("users")
        commit(store, 5, more, fresh=False)
    with StateStore.open(store_url) as reader:
        grown = reader.boundary("users")
    with StateStore.open(store_url) as store:  # adds to what it has not read itself
        commit(store, 5, {10**6: 7}, fresh=False)
        grown_again = store.boundary("users")
        commit(store, 6, {4: 4}, fresh=True)
        moved = store.boundary("users")
        store.set_mark("users", Mark(cursor=7, key=("k",)))
        by_hand = store.boundary("users")
        commit(store, 8, first, fresh=True)
        after_hand = store.boundary("users")

    assert at_five == first
    assert grown == {**first, **more}
    assert grown_again == {**first, **more, 10**6: 7}
    assert moved == {4: 4}
    assert by_hand is None  # a mark set by hand records none
    assert after_hand == first
