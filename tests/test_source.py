"""Extraction from SQL sources: ordering, the mark, lookback, cursor types, streaming, errors.

Shared behaviour runs on SQLite, PostgreSQL and MariaDB; each dialect's own cursor types,
plans and streaming cursors have their own tests.
"""

from __future__ import annotations

import gc
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pymysql
import pytest
import sqlalchemy as sa

from aitems_sync.errors import QueryError, SourceError
from aitems_sync.source.extract import (
    KEYS_PER_READ,
    Source,
    extraction_statement,
    key_statement,
    lookback_start,
    sorting_pays,
    walks_an_index,
)
from aitems_sync.spec.model import SourceConfig
from aitems_sync.state.store import Mark
from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parent.parent

USERS_QUERY = "SELECT id AS USER_ID, name, updated_at FROM users"


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres), "mariadb"]
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database: a SQLite file, or one on the test PostgreSQL cluster or MariaDB server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'source.db'}"
    if request.param == "mariadb":
        return str(request.getfixturevalue("mariadb_url"))
    return str(request.getfixturevalue("pg_url"))


def run_sql(url: str, *statements: str) -> None:
    """Run setup SQL as written, straight through the driver (no parameter parsing)."""
    engine = sa.create_engine(url)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for statement in statements:
            cursor.execute(statement)
        raw.commit()
    finally:
        raw.close()
        engine.dispose()


def make_source(url: str, timezone_name: str = "UTC") -> Source:
    return Source(SourceConfig(name="shop", url=url, timezone=timezone_name))


def extract_rows(source: Source, query: str, **kw: Any) -> list[tuple[Any, ...]]:
    kw.setdefault("mark", None)
    with source.extract(query, **kw) as extraction:
        return [tuple(row) for chunk in extraction.chunks for row in chunk]


def is_pg(url: str) -> bool:
    return url.startswith("postgresql")


def is_mariadb(url: str) -> bool:
    return url.startswith(("mysql", "mariadb"))


def make_users(url: str, rows: Sequence[tuple[int, str, str | None]]) -> None:
    """``users(id, name, updated_at)``; timestamps as literals, TEXT on SQLite."""
    kind = "timestamp" if is_pg(url) else "datetime(6)" if is_mariadb(url) else "TEXT"
    values = ", ".join(f"({i}, '{n}', {'NULL' if t is None else repr(t)})" for i, n, t in rows)
    run_sql(
        url,
        f"CREATE TABLE users (id integer, name text, updated_at {kind})",
        f"INSERT INTO users VALUES {values}",
    )


def users_ids(rows: Sequence[tuple[Any, ...]]) -> list[int]:
    return [row[0] for row in rows]


# --- first extraction and column names --------------------------------------------------------


def test_first_extraction_returns_every_row_ordered_by_cursor_then_key(db_url: str) -> None:
    make_users(
        db_url,
        [
            (3, "c", "2024-05-01 10:00:00"),
            (1, "a", "2024-05-01 11:00:00"),
            (2, "b", "2024-05-01 10:00:00"),
            (4, "d", "2024-05-01 09:00:00"),
            (5, "e", None),
        ],
    )
    source = make_source(db_url)
    with source.extract(USERS_QUERY, cursor="updated_at", key=["USER_ID"], mark=None) as ex:
        rows = [tuple(row) for chunk in ex.chunks for row in chunk]
        assert ex.cursor_index == 2
        assert ex.key_indices == [0]
    assert users_ids(rows) == [4, 2, 3, 1]  # the NULL cursor row (5) is never extracted
    source.close()


def test_postgresql_lower_cased_aliases_are_matched_case_insensitively(db_url: str) -> None:
    make_users(db_url, [(1, "a", "2024-05-01 10:00:00")])
    source = make_source(db_url)
    expected = ["user_id" if is_pg(db_url) else "USER_ID", "name", "updated_at"]
    assert source.columns(USERS_QUERY) == expected
    with source.extract(USERS_QUERY, cursor="UPDATED_AT", key=["USER_ID"], mark=None) as ex:
        assert ex.columns == expected
        assert (ex.cursor_index, ex.key_indices) == (2, [0])
    source.close()


def test_columns_reads_no_rows_and_keeps_the_query_text_intact(db_url: str) -> None:
    # A trailing comment and semicolon, '%' and ':name' inside a literal: all the user's SQL.
    make_users(db_url, [(1, "a:b%", "2024-05-01 10:00:00"), (2, "zz", "2024-05-01 11:00:00")])
    query = "SELECT id, name, updated_at FROM users WHERE name LIKE 'a:b%' -- only a:b ;\n;"
    source = make_source(db_url)
    assert source.columns(query) == ["id", "name", "updated_at"]
    assert extract_rows(source, query, cursor="updated_at", key=["id"])[0][:2] == (1, "a:b%")
    source.close()


@pytest.mark.postgres
def test_postgresql_casts_in_the_query_are_not_bind_parameters(pg_url: str) -> None:
    source = make_source(pg_url)
    query = "SELECT g AS id, ('2024-05-01'::date + g) AS day FROM generate_series(1, 3) AS g"
    rows = extract_rows(source, query, cursor="day", key=["id"])
    assert [row[1] for row in rows] == [date(2024, 5, 2), date(2024, 5, 3), date(2024, 5, 4)]
    source.close()


def test_text_of_any_unicode_comes_back_intact(db_url: str) -> None:
    # 4-byte UTF-8 (emoji) needs utf8mb4 on MySQL, the connection's charset included.
    name = "Zoë 日本 😀"
    run_sql(db_url, "CREATE TABLE people (id integer, name varchar(40), c integer)"
            + (" CHARACTER SET utf8mb4" if is_mariadb(db_url) else ""),
            f"INSERT INTO people VALUES (1, '{name}', 1)")
    source = make_source(db_url)
    rows = extract_rows(source, "SELECT id, name, c FROM people", cursor="c", key=["name"])
    assert rows == [(1, name, 1)]
    after = extract_rows(source, "SELECT id, name, c FROM people", cursor="c", key=["name"],
                         mark=Mark(1, ("Zoë",)))
    assert after == [(1, name, 1)]
    source.close()


# --- the mark ---------------------------------------------------------------------------------

BOUNDARY_ROWS = [(1, 10), (2, 20), (3, 20), (4, 20), (5, 30), (6, 5)]


def make_events(url: str, rows: Sequence[tuple[Any, ...]], columns: str) -> None:
    values = ", ".join("(" + ", ".join(map(str, row)) + ")" for row in rows)
    run_sql(url, f"CREATE TABLE events ({columns})", f"INSERT INTO events VALUES {values}")


# Each table runs against one database per dialect: mark -> what comes after it.
AFTER_SINGLE_KEY = {
    Mark(20, (3,)): [4, 5],  # same cursor, greater key: returned; smaller or equal: not
    Mark(20, (1,)): [2, 3, 4, 5],
    Mark(20, (4,)): [5],
    Mark(10, (1,)): [2, 3, 4, 5],
    Mark(30, (5,)): [],
    Mark(25, (0,)): [5],  # a cursor value no row has
}


def test_mark_skips_rows_up_to_and_including_it_and_loses_none_after(db_url: str) -> None:
    make_events(db_url, BOUNDARY_ROWS, "id integer, c integer")
    source = make_source(db_url)
    query = "SELECT id, c FROM events"
    got = {
        mark: users_ids(extract_rows(source, query, cursor="c", key=["id"], mark=mark))
        for mark in AFTER_SINGLE_KEY
    }
    assert got == AFTER_SINGLE_KEY
    source.close()


COMPOSITE_ROWS = [(1, 1, 5), (1, 2, 5), (2, 0, 5), (2, 1, 5), (0, 9, 4), (0, 0, 6)]
AFTER_COMPOSITE_KEY = {
    Mark(5, (1, 2)): [(2, 0), (2, 1), (0, 0)],
    Mark(5, (1, 1)): [(1, 2), (2, 0), (2, 1), (0, 0)],
    Mark(5, (2, 0)): [(2, 1), (0, 0)],
    Mark(5, (1, 9)): [(2, 0), (2, 1), (0, 0)],  # a key no row has
    Mark(4, (0, 9)): [(1, 1), (1, 2), (2, 0), (2, 1), (0, 0)],
}


def test_composite_key_orders_and_resumes_on_every_key_column(db_url: str) -> None:
    make_events(db_url, COMPOSITE_ROWS, "a integer, b integer, c integer")
    source = make_source(db_url)
    query = "SELECT a, b, c FROM events"
    key = ["a", "b"]
    got = {
        mark: [row[:2] for row in extract_rows(source, query, cursor="c", key=key, mark=mark)]
        for mark in AFTER_COMPOSITE_KEY
    }
    assert got == AFTER_COMPOSITE_KEY
    source.close()


NULL_KEY_ORDER = [(None, None), (None, 1), (1, None), (1, 1), (0, 0)]


def test_null_key_values_sort_first_and_resume_exactly(db_url: str) -> None:
    # A whole-row key (the interaction default) can hold nullable fields.
    rows = [(1, 1, 5), (1, "NULL", 5), ("NULL", 1, 5), ("NULL", "NULL", 5), (0, 0, 6)]
    make_events(db_url, rows, "a integer, b integer, c integer")
    source = make_source(db_url)
    query = "SELECT a, b, c FROM events"
    everything = extract_rows(source, query, cursor="c", key=["a", "b"])
    assert [row[:2] for row in everything] == NULL_KEY_ORDER
    for position, key in enumerate(NULL_KEY_ORDER[:4]):
        after = extract_rows(source, query, cursor="c", key=["a", "b"], mark=Mark(5, key))
        assert [row[:2] for row in after] == NULL_KEY_ORDER[position + 1 :], key
    source.close()


def test_mark_with_a_different_key_length_is_a_source_error(db_url: str) -> None:
    make_events(db_url, BOUNDARY_ROWS, "id integer, c integer")
    source = make_source(db_url)
    with pytest.raises(SourceError, match="state reset"):
        extract_rows(
            source, "SELECT id, c FROM events", cursor="c", key=["id"], mark=Mark(20, (1, 2))
        )
    source.close()


# --- lookback ---------------------------------------------------------------------------------


def test_lookback_rereads_a_late_row_inside_the_window_but_not_before_it(db_url: str) -> None:
    make_users(
        db_url,
        [
            (1, "old", "2024-05-01 09:40:00"),
            (2, "acked", "2024-05-01 09:50:00"),
            (3, "mark", "2024-05-01 10:00:00"),
            (4, "new", "2024-05-01 10:05:00"),
        ],
    )
    source = make_source(db_url)
    last = extract_rows(source, USERS_QUERY, cursor="updated_at", key=["USER_ID"])[2]
    mark = Mark(last[2], (last[0],))
    # Committed late, with a cursor value behind the mark.
    run_sql(db_url, "INSERT INTO users VALUES (5, 'late', '2024-05-01 09:55:00')")
    without = extract_rows(source, USERS_QUERY, cursor="updated_at", key=["USER_ID"], mark=mark)
    assert users_ids(without) == [4]
    window = extract_rows(
        source,
        USERS_QUERY,
        cursor="updated_at",
        key=["USER_ID"],
        mark=mark,
        lookback=timedelta(minutes=10),
    )
    assert users_ids(window) == [2, 5, 3, 4]
    source.close()


UTC = UTC
KST = timezone(timedelta(hours=9))


@pytest.mark.parametrize(
    ("value", "lookback", "start"),
    [
        (datetime(2024, 5, 1, 10, 0), timedelta(minutes=10), datetime(2024, 5, 1, 9, 50)),
        (
            datetime(2024, 5, 1, 1, 0, tzinfo=KST),
            timedelta(hours=2),
            datetime(2024, 4, 30, 23, 0, tzinfo=KST),
        ),
        # Across the DST change: an absolute hour, not a wall-clock hour.
        (
            datetime(2024, 3, 10, 3, 30, tzinfo=ZoneInfo("America/New_York")),
            timedelta(hours=1),
            datetime(2024, 3, 10, 1, 30, tzinfo=ZoneInfo("America/New_York")),
        ),
        (date(2024, 5, 3), timedelta(days=2), date(2024, 5, 1)),
        (date(2024, 5, 3), timedelta(hours=1), date(2024, 5, 2)),  # whole days, rounded up
        (date(2024, 5, 3), timedelta(days=1, seconds=1), date(2024, 5, 1)),
        (1_714_550_400, timedelta(minutes=10), 1_714_549_800),
        (1_714_550_400, timedelta(seconds=1.5), 1_714_550_398),  # whole seconds, rounded up
        (100.5, timedelta(seconds=1.25), 99.25),
        (Decimal("100.000001"), timedelta(microseconds=2), Decimal("99.999999")),
        (Decimal("100"), timedelta(minutes=1), Decimal("40")),
        ("2024-05-01 10:00:00", timedelta(minutes=10), "2024-05-01 09:50:00"),
        ("2024-05-01T10:00:00", timedelta(hours=11), "2024-04-30T23:00:00"),
        ("2024-05-01 10:00", timedelta(seconds=30), "2024-05-01 09:59"),  # minute layout, floored
        ("2024-05-01 10:00:00.123", timedelta(seconds=1), "2024-05-01 09:59:59.123"),
        ("2024-05-01 10:00:00.123", timedelta(microseconds=1), "2024-05-01 10:00:00.122"),
        ("2024-05-01 10:00:00", timedelta(microseconds=1), "2024-05-01 09:59:59"),
        ("2024-05-01T10:00:00.123456789Z", timedelta(seconds=1), "2024-05-01T09:59:59.123456789Z"),
        ("2024-05-01T10:00:00.123+00:00", timedelta(minutes=1), "2024-05-01T09:59:00.123+00:00"),
        ("2024-05-01T01:00:00+09:00", timedelta(hours=2), "2024-04-30T23:00:00+09:00"),
        ("2024-05-01 10:00:00Z", timedelta(hours=1), "2024-05-01 09:00:00Z"),
        ("2024-05-01", timedelta(hours=1), "2024-04-30"),
        ("2024-05-01", timedelta(days=3), "2024-04-28"),
        (datetime(1, 1, 1, 0, 5), timedelta(hours=1), datetime(1, 1, 1)),  # clamped, not crashed
    ],
)
def test_lookback_start_keeps_the_type_and_the_text_layout(
    value: Any, lookback: timedelta, start: Any
) -> None:
    result = lookback_start(value, lookback)
    assert result == start
    assert type(result) is type(start)


def test_lookback_on_a_non_temporal_cursor_is_a_source_error_naming_the_source(
    db_url: str,
) -> None:
    make_events(db_url, [(1, "'Abe'")], "id integer, c text")
    source = make_source(db_url)
    with pytest.raises(SourceError, match=r"^source 'shop': lookback needs a temporal"):
        source.extract(
            "SELECT id, c FROM events",
            cursor="c",
            key=["id"],
            mark=Mark("Abe", (1,)),
            lookback=timedelta(minutes=1),
        )
    assert source.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    source.close()


@pytest.mark.parametrize("value", ["O'Brien", "2024-13-01 10:00:00", "10:00:00", "", True])
def test_lookback_start_rejects_a_non_temporal_cursor(value: Any) -> None:
    with pytest.raises(SourceError, match="lookback needs a temporal or numeric cursor"):
        lookback_start(value, timedelta(minutes=1))


# --- cursor types: the mark read from the driver goes back in as a parameter ------------------

PG_CURSORS = [
    (
        "timestamptz",
        ["'2024-05-01 09:00+09'", "'2024-05-01 10:00+09'", "'2024-05-01 11:00+09'"],
        timedelta(hours=1),
    ),
    (
        "timestamp",
        ["'2024-05-01 09:00'", "'2024-05-01 10:00'", "'2024-05-01 11:00'"],
        timedelta(hours=1),
    ),
    ("date", ["'2024-05-01'", "'2024-05-02'", "'2024-05-03'"], timedelta(hours=12)),
    ("integer", ["100", "200", "300"], timedelta(seconds=100)),
    ("bigint", ["3000000000000", "3000000000100", "3000000000200"], timedelta(seconds=100)),
    ("numeric(12,3)", ["1.5", "2.5", "3.5"], timedelta(seconds=1)),
    ("double precision", ["1.5", "2.5", "3.5"], timedelta(seconds=1)),
    ("text", ["'Abe'", "'O''Brien'", "'Zed'"], None),
]
SQLITE_CURSORS = [
    (
        "TEXT",
        ["'2024-05-01 09:00:00'", "'2024-05-01 10:00:00'", "'2024-05-01 11:00:00'"],
        timedelta(hours=1),
    ),
    (
        "TEXT",
        ["'2024-05-01T09:00:00.000Z'", "'2024-05-01T10:00:00.000Z'", "'2024-05-01T11:00:00.000Z'"],
        timedelta(hours=1),
    ),
    (
        "TEXT",
        [
            "'2024-05-01T09:00:00+09:00'",
            "'2024-05-01T10:00:00+09:00'",
            "'2024-05-01T11:00:00+09:00'",
        ],
        timedelta(hours=1),
    ),
    ("DATE", ["'2024-05-01'", "'2024-05-02'", "'2024-05-03'"], timedelta(hours=12)),
    ("INTEGER", ["100", "200", "300"], timedelta(seconds=100)),
    ("REAL", ["1.5", "2.5", "3.5"], timedelta(seconds=1)),
    ("TEXT", ["'Abe'", "'O''Brien'", "'Zed'"], None),
]
MARIADB_CURSORS = [
    (
        "datetime(6)",
        ["'2024-05-01 09:00:00.5'", "'2024-05-01 10:00:00.5'", "'2024-05-01 11:00:00.5'"],
        timedelta(hours=1),
    ),
    ("datetime", ["'2024-05-01 09:00'", "'2024-05-01 10:00'", "'2024-05-01 11:00'"],
     timedelta(hours=1)),
    ("timestamp(3)", ["'2024-05-01 09:00'", "'2024-05-01 10:00'", "'2024-05-01 11:00'"],
     timedelta(hours=1)),
    ("date", ["'2024-05-01'", "'2024-05-02'", "'2024-05-03'"], timedelta(hours=12)),
    ("integer", ["100", "200", "300"], timedelta(seconds=100)),
    ("bigint unsigned", ["3000000000000", "3000000000100", "3000000000200"],
     timedelta(seconds=100)),
    ("decimal(12,3)", ["1.5", "2.5", "3.5"], timedelta(seconds=1)),
    ("double", ["1.5", "2.5", "3.5"], timedelta(seconds=1)),
    ("varchar(20)", ["'Abe'", "'O''Brien'", "'Zed'"], None),
]


def check_cursor_type(
    url: str, column_type: str, literals: list[str], lookback: timedelta | None
) -> None:
    # Two rows per cursor value so that the key part of the mark matters too.
    rows = [(i * 2 + j, literal) for i, literal in enumerate(literals) for j in (0, 1)]
    make_events(url, rows, f"id integer, c {column_type}")
    source = make_source(url)
    query = "SELECT id, c FROM events"
    everything = extract_rows(source, query, cursor="c", key=["id"])
    assert users_ids(everything) == [0, 1, 2, 3, 4, 5]
    middle = everything[2]
    after = extract_rows(source, query, cursor="c", key=["id"], mark=Mark(middle[1], (2,)))
    assert users_ids(after) == [3, 4, 5]
    if lookback is not None:
        last = everything[5]
        window = extract_rows(
            source, query, cursor="c", key=["id"], mark=Mark(last[1], (5,)), lookback=lookback
        )
        # Each lookback reaches back exactly to the middle value: its rows are read again.
        assert users_ids(window) == [2, 3, 4, 5]
    source.close()


@pytest.mark.postgres
@pytest.mark.parametrize(("column_type", "literals", "lookback"), PG_CURSORS)
def test_postgresql_cursor_types_round_trip_through_the_mark(
    pg_url: str, column_type: str, literals: list[str], lookback: timedelta | None
) -> None:
    check_cursor_type(pg_url, column_type, literals, lookback)


@pytest.mark.parametrize(("column_type", "literals", "lookback"), SQLITE_CURSORS)
def test_sqlite_cursor_types_round_trip_through_the_mark(
    tmp_path: Path, column_type: str, literals: list[str], lookback: timedelta | None
) -> None:
    check_cursor_type(f"sqlite:///{tmp_path / 'cursor.db'}", column_type, literals, lookback)


@pytest.mark.parametrize(("column_type", "literals", "lookback"), MARIADB_CURSORS)
def test_mariadb_cursor_types_round_trip_through_the_mark(
    mariadb_url: str, column_type: str, literals: list[str], lookback: timedelta | None
) -> None:
    check_cursor_type(mariadb_url, column_type, literals, lookback)


DIALECTS = [
    sa.create_engine("postgresql+psycopg://").dialect,
    sa.create_engine("sqlite://").dialect,
    sa.create_engine("mysql+pymysql://").dialect,
]


@pytest.mark.parametrize("dialect", DIALECTS, ids=["postgresql", "sqlite", "mysql"])
@pytest.mark.parametrize(
    ("mark", "lookback", "bound"),
    [
        (Mark("O'Brien", ("O'Brien-7",)), timedelta(0), {"O'Brien", "O'Brien-7"}),
        (Mark(987654321, (123456789,)), timedelta(0), {987654321, 123456789}),
        (Mark("2024-05-01 10:00:00", (123456789,)), timedelta(minutes=5), {"2024-05-01 09:55:00"}),
    ],
)
def test_the_mark_is_bound_and_never_formatted_into_the_sql(
    dialect: sa.Dialect, mark: Mark, lookback: timedelta, bound: set[Any]
) -> None:
    statement = extraction_statement(
        "SELECT id, c FROM t", ["id", "c"], 1, [0], mark, lookback, dialect.name
    )
    compiled = statement.compile(dialect=dialect)
    sql = str(compiled)
    for needle in ("Brien", "2024", "987654321", "123456789", "09:55"):
        assert needle not in sql
    assert set(compiled.params.values()) == bound


@pytest.mark.parametrize("dialect", DIALECTS, ids=["postgresql", "sqlite", "mysql"])
def test_keys_read_again_are_bound_and_never_formatted_into_the_sql(dialect: sa.Dialect) -> None:
    statement = key_statement("SELECT id, k2, c FROM t", ["id", "k2", "c"], 2, [0, 1],
                              [("O'Brien", 987654321), (123456789, None)], dialect.name)
    compiled = statement.compile(dialect=dialect)
    sql = str(compiled)

    for needle in ("Brien", "987654321", "123456789"):
        assert needle not in sql
    assert "IS NULL" in sql  # a NULL key value matches NULL
    assert set(compiled.params.values()) == {"O'Brien", 987654321, 123456789}


# --- reading rows again by key ----------------------------------------------------------------


def test_rows_by_key_reads_what_the_source_holds_for_each_key_in_extraction_order(
        db_url: str) -> None:
    make_users(db_url, [(1, "a", "2024-05-01 11:00:00"), (2, "b", "2024-05-01 10:00:00"),
                        (3, "c", "2024-05-01 09:00:00"), (4, "d", "2024-05-01 08:00:00")])
    source = make_source(db_url)

    read = source.rows_by_key(USERS_QUERY, cursor="updated_at", key=["USER_ID"],
                              keys=[(1,), (3,), (99,)])
    source.close()

    assert (read.cursor_index, read.key_indices) == (2, [0])
    assert [(row[0], row[1]) for row in read.rows] == [(3, "c"), (1, "a")]


def test_rows_by_key_reads_more_keys_than_one_statement_binds(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'source.db'}"
    count = 2 * KEYS_PER_READ + 7
    make_users(url, [(i, f"n{i}", f"2024-05-01 10:00:{i % 60:02d}") for i in range(count + 5)])
    source = make_source(url)

    read = source.rows_by_key(USERS_QUERY, cursor="updated_at", key=["USER_ID"],
                              keys=[(i,) for i in range(count)])
    source.close()

    assert sorted(row[0] for row in read.rows) == list(range(count))


# --- index use --------------------------------------------------------------------------------


def explain(url: str, statement: sa.Select[Any]) -> str:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        compiled = statement.compile(dialect=engine.dialect)
        if engine.dialect.name == "sqlite":
            params: Any = tuple(compiled.params[name] for name in compiled.positiontup or ())
            plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), params)
            text = "\n".join(str(row[-1]) for row in plan)
        elif engine.dialect.name in ("mysql", "mariadb"):
            plan = conn.exec_driver_sql("EXPLAIN " + str(compiled), compiled.params)
            text = "\n".join(str(row._asdict()) for row in plan)
        else:
            plan = conn.exec_driver_sql("EXPLAIN " + str(compiled), compiled.params)
            text = "\n".join(str(row[0]) for row in plan)
    engine.dispose()
    return text


def test_the_incremental_predicate_uses_the_cursor_index(db_url: str) -> None:
    kind = "timestamp" if is_pg(db_url) else "datetime" if is_mariadb(db_url) else "TEXT"
    if is_pg(db_url):
        fill = (
            "INSERT INTO events SELECT g, timestamp '2024-01-01' + g * interval '1 minute' "
            "FROM generate_series(1, 20000) AS g"
        )
    elif is_mariadb(db_url):
        # seq_1_to_N: MariaDB's SEQUENCE engine
        fill = ("INSERT INTO events SELECT seq, '2024-01-01' + INTERVAL seq MINUTE "
                "FROM seq_1_to_20000")
    else:
        fill = (
            "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 20000) "
            "INSERT INTO events SELECT n, datetime('2024-01-01', '+' || n || ' minutes') "
            "FROM g"
        )
    run_sql(
        db_url,
        f"CREATE TABLE events (id integer, c {kind})",
        fill,
        "CREATE INDEX events_c ON events (c)",
        "ANALYZE events" if is_pg(db_url) else "ANALYZE TABLE events" if is_mariadb(db_url)
        else "ANALYZE",
    )
    source = make_source(db_url)
    last = extract_rows(source, "SELECT id, c FROM events", cursor="c", key=["id"])[19_990]
    for lookback in (timedelta(0), timedelta(minutes=5)):
        statement = extraction_statement(
            "SELECT id, c FROM events",
            ["id", "c"],
            1,
            [0],
            Mark(last[1], (last[0],)),
            lookback,
            source.engine.dialect.name,
        )
        plan = explain(db_url, statement)
        assert "events_c" in plan, plan
        assert "Seq Scan" not in plan and "SCAN events" not in plan, plan
        assert "'type': 'ALL'" not in plan, plan  # MariaDB's full scan
    source.close()


def statements_run(source: Source) -> list[str]:
    """Every statement the source's engine sends from now on, as sent."""
    sent: list[str] = []
    sa.event.listen(source.engine, "before_cursor_execute",
                    lambda _conn, _cursor, sql, *_rest: sent.append(sql))
    return sent


ITEMS_ROWS = [(i, f"2024-05-{1 + (i * 7) % 28:02d}", None if i % 5 == 0 else f"n{i}")
              for i in range(1, 401)]


@pytest.mark.parametrize(
    ("index", "mark", "sort", "plan_wanted"),
    [
        # A read of all rows through an index that lacks a column: the table in storage order,
        # sorted; not the index, whose rows cost a random read of the table each.
        ("CREATE INDEX items_c ON items (c, id)", None, None, "USE TEMP B-TREE FOR ORDER BY"),
        # ... unless the caller wants the first rows at once (an extraction worker reads on).
        ("CREATE INDEX items_c ON items (c, id)", None, False, "SEARCH items USING INDEX"),
        # The index holds every column the query reads: it is read in order, nothing sorted.
        ("CREATE INDEX items_c ON items (c, id, name)", None, None,
         "USING COVERING INDEX items_c"),
        # A delta: the index's range after the mark, as before.
        ("CREATE INDEX items_c ON items (c, id)", (150, "2024-05-15"), None,
         "SEARCH items USING INDEX"),
        # The rest of a first load (an extraction worker's): the table, after the mark, sorted.
        ("CREATE INDEX items_c ON items (c, id)", (150, "2024-05-15"), True,
         "USE TEMP B-TREE FOR ORDER BY"),
    ],
)
def test_a_sqlite_full_read_through_an_index_lacking_columns_sorts_the_table_instead(
    tmp_path: Path, index: str, mark: tuple[int, str] | None, sort: bool | None, plan_wanted: str
) -> None:
    url = f"sqlite:///{tmp_path / 'source.db'}"
    values = ", ".join(f"({i}, '{c}', {'NULL' if n is None else repr(n)})"
                       for i, c, n in ITEMS_ROWS)
    run_sql(url, "CREATE TABLE items (id integer, c text, name text)",
            f"INSERT INTO items VALUES {values}", index)
    source = make_source(url)
    sent = statements_run(source)
    rows = extract_rows(source, "SELECT id, c, name FROM items", cursor="c", key=["id"],
                        mark=None if mark is None else Mark(mark[1], (mark[0],)), sort=sort)
    expected = sorted((r for r in ITEMS_ROWS if mark is None or (r[1], r[0]) > mark[::-1]),
                      key=lambda r: (r[1], r[0]))
    assert rows == expected
    extraction = next(sql for sql in sent if sql.lstrip().startswith("SELECT src."))
    plan = explain_sql(url, extraction, () if mark is None else (mark[1], mark[1], mark[1],
                                                                 mark[0]))
    assert plan_wanted in plan, plan
    assert ("TEMP B-TREE" in plan) == (plan_wanted == "USE TEMP B-TREE FOR ORDER BY"), plan
    source.close()


@pytest.mark.parametrize(
    ("read", "at_least", "sorted_", "counts"),
    [
        (350, 100, True, 3),  # a first load resumed early: most of the table is left
        (200, 100, True, 3),  # half of it
        (150, 100, False, 3),  # less than half: the index's range after the mark
        (350, 1000, False, 1),  # too few rows to matter: the table is not even counted
    ],
)
def test_a_sqlite_read_after_a_mark_is_sorted_when_most_of_the_table_is_left(
    tmp_path: Path, read: int, at_least: int, sorted_: bool, counts: int
) -> None:
    url = f"sqlite:///{tmp_path / 'source.db'}"
    values = ", ".join(f"({i}, '{c}', {'NULL' if n is None else repr(n)})"
                       for i, c, n in ITEMS_ROWS)
    run_sql(url, "CREATE TABLE items (id integer, c text, name text)",
            f"INSERT INTO items VALUES {values}", "CREATE INDEX items_c ON items (c, id)")
    in_order = sorted(ITEMS_ROWS, key=lambda r: (r[1], r[0]))
    last = in_order[len(in_order) - read - 1]
    source = Source(SourceConfig(name="shop", url=url), sort_after_rows=at_least)
    sent = statements_run(source)

    rows = extract_rows(source, "SELECT id, c, name FROM items", cursor="c", key=["id"],
                        mark=Mark(last[1], (last[0],)))

    assert rows == in_order[-read:]
    extraction = next(sql for sql in sent if sql.lstrip().startswith("SELECT src."))
    assert ("ORDER BY + src.c, + src.id" in extraction) == sorted_
    assert sum("count(*)" in sql for sql in sent) == counts
    source.close()


@pytest.mark.parametrize(
    ("after", "rows", "pays"),
    [
        (9_000_000, 10_000_000, True),
        (5_000_000, 10_000_000, True),
        (4_999_999, 10_000_000, False),
        (499_999, 500_000, False),  # most of a small table: walking it costs little
        (500_000, 500_000, True),
    ],
)
def test_sorting_pays_for_a_large_read_of_half_the_table_or_more(
        after: int, rows: int, pays: bool) -> None:
    assert sorting_pays(after, rows) == pays


_READ_ALL = """
import sys
from aitems_sync.errors import SourceError
from aitems_sync.source.extract import Source
from aitems_sync.spec.model import SourceConfig

source = Source(SourceConfig(name="shop", url=sys.argv[1]))
try:
    with source.extract("SELECT * FROM items", cursor="c", key=["id"], mark=None) as read:
        print(sum(len(chunk) for chunk in read.chunks), "rows")
except SourceError as error:
    print(error)
"""


def test_a_sort_that_fills_sqlites_temporary_directory_says_where_to_make_room(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'source.db'}"
    run_sql(url, "CREATE TABLE items (id integer, c text, name text)",
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) "
            "INSERT INTO items SELECT i, printf('2024-05-%02d', 1 + i % 28), "
            "hex(randomblob(100)) FROM n",
            "CREATE INDEX items_c ON items (c, id)")
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    # SQLITE_TMPDIR on a 64 KiB file system, mounted in a user namespace of the child's own;
    # the sort of 20,000 rows of ~200 bytes spills past SQLite's 2 MB cache into it.
    mount = f"mount -t tmpfs -o size=64k tmpfs {tiny}"
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", mount],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        message = f"this machine cannot mount a tmpfs in a user namespace: {probe.stderr}"
        if IN_CI:
            pytest.fail(message + " (CI=true: tests must not skip)")
        pytest.skip(message)
    script = f'{mount} && exec "$0" -c "$1" "$2"'
    env = dict(os.environ, SQLITE_TMPDIR=str(tiny), PYTHONPATH=str(ROOT))
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                           script, sys.executable, _READ_ALL, url],
                          capture_output=True, text=True, env=env, timeout=60, check=True)

    assert "database or disk is full" in done.stdout, done
    assert "set SQLITE_TMPDIR to a disk with room" in done.stdout, done
    assert "validate" not in done.stdout, done  # the query is fine: the disk is not


def test_a_sqlite_full_read_in_rowid_order_is_scanned_without_a_sort(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'source.db'}"
    run_sql(url, "CREATE TABLE events (id integer PRIMARY KEY, c integer)",
            "INSERT INTO events VALUES " + ", ".join(f"({i}, {i % 7})" for i in range(1, 101)))
    source = make_source(url)
    sent = statements_run(source)
    rows = extract_rows(source, "SELECT id, c FROM events", cursor="id", key=[])
    assert [row[0] for row in rows] == list(range(1, 101))
    extraction = next(sql for sql in sent if sql.lstrip().startswith("SELECT src."))
    assert explain_sql(url, extraction, ()) == "SCAN events"
    source.close()


def explain_sql(url: str, sql: str, params: tuple[Any, ...]) -> str:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        text = "\n".join(str(row[-1]) for row in
                         conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params))
    engine.dispose()
    return text


@pytest.mark.parametrize(
    ("plan", "walks"),
    [
        (["SCAN items USING INDEX items_c"], True),
        (["SCAN o USING INDEX o_at", "SEARCH c USING INTEGER PRIMARY KEY (rowid=?)"], True),
        (["SCAN items USING COVERING INDEX items_c"], False),
        (["SCAN items"], False),
        (["SCAN items", "USE TEMP B-TREE FOR ORDER BY"], False),
        (["SEARCH items USING INDEX items_c (c>?)"], True),  # a nullable cursor: c IS NOT NULL
        (["SEARCH items USING COVERING INDEX items_c (c>?)"], False),
        (["SEARCH items USING INTEGER PRIMARY KEY (rowid>?)"], False),
    ],
)
def test_only_a_read_in_the_order_of_an_index_lacking_columns_walks_an_index(
    plan: list[str], walks: bool
) -> None:
    assert walks_an_index(plan) is walks


def test_a_signal_is_heeded_while_a_sqlite_source_statement_runs(tmp_path: Path) -> None:
    source = make_source(f"sqlite:///{tmp_path / 'source.db'}")
    heeded: list[float] = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: heeded.append(time.monotonic()))
    try:
        with source.engine.connect() as conn:
            threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGUSR1)).start()
            conn.exec_driver_sql(  # ~1 s before its one row
                "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g "
                "WHERE n < 5000000) SELECT max(n) FROM g").fetchall()
            finished = time.monotonic()
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert heeded and heeded[0] < finished - 0.2, (heeded, finished)
    source.close()


# --- streaming and releasing the connection ---------------------------------------------------


@pytest.mark.postgres
def test_postgresql_rows_stream_through_a_server_side_cursor_in_chunks(pg_url: str) -> None:
    source = make_source(pg_url)
    cursors: list[object] = []
    sa.event.listen(
        source.engine, "after_cursor_execute", lambda conn, cursor, *rest: cursors.append(cursor)
    )
    query = "SELECT g AS id, g AS c FROM generate_series(1, 200000) AS g"
    with source.extract(query, cursor="c", key=["id"], mark=None, chunk_rows=5000) as ex:
        sizes = [len(chunk) for chunk in ex.chunks]
    assert isinstance(cursors[-1], psycopg.ServerCursor)
    assert sizes == [1000] + [5000] * 39 + [4000]  # a small first chunk, for a quick start
    assert source.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    source.close()


@pytest.mark.parametrize("scheme", ["mysql+pymysql://", "mariadb+pymysql://"])
def test_mariadb_rows_stream_through_an_unbuffered_cursor_in_chunks(
    mariadb_url: str, scheme: str
) -> None:
    source = make_source(mariadb_url.replace("mysql+pymysql://", scheme))
    cursors: list[object] = []
    sa.event.listen(
        source.engine, "after_cursor_execute", lambda conn, cursor, *rest: cursors.append(cursor)
    )
    query = "SELECT seq AS id, seq AS c FROM seq_1_to_100000"
    with source.extract(query, cursor="c", key=["id"], mark=None, chunk_rows=5000) as ex:
        sizes = [len(chunk) for chunk in ex.chunks]
    assert isinstance(cursors[-1], pymysql.cursors.SSCursor)
    assert sizes == [1000] + [5000] * 19 + [4000]
    assert source.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    source.close()


def test_memory_stays_flat_while_streaming_a_large_result(db_url: str) -> None:
    if is_pg(db_url):
        query = "SELECT g AS id, g AS c, repeat('x', 200) AS pad FROM generate_series(1, 100000) g"
    elif is_mariadb(db_url):
        query = "SELECT seq AS id, seq AS c, repeat('x', 200) AS pad FROM seq_1_to_100000"
    else:
        run_sql(
            db_url,
            "CREATE TABLE big (id integer, c integer, pad text)",
            "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 100000) "
            "INSERT INTO big SELECT n, n, printf('%.200c', 'x') FROM g",
        )
        query = "SELECT id, c, pad FROM big"
    source = make_source(db_url)
    source.columns(query)  # connect before measuring
    tracemalloc.start()
    try:
        with source.extract(query, cursor="c", key=["id"], mark=None, chunk_rows=1000) as ex:
            total = sum(len(chunk) for chunk in ex.chunks)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == 100_000
    assert peak < 4_000_000, f"{peak} bytes for ~25 MB of rows: the result was buffered"
    source.close()


def test_a_sqlite_extraction_keeps_no_chunk_its_caller_is_done_with(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'source.db'}"
    run_sql(url, "CREATE TABLE big (id integer, c integer, pad text)",
            "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 30000) "
            "INSERT INTO big SELECT n, n, printf('%.200c', 'x') FROM g")
    source = make_source(url)
    source.columns("SELECT id, c, pad FROM big")  # connect before measuring
    tracemalloc.start()
    try:
        with source.extract("SELECT id, c, pad FROM big", cursor="c", key=["id"], mark=None,
                            chunk_rows=5000) as extraction:
            chunks = iter(extraction.chunks)
            next(chunks)  # the first chunk is smaller: measure a full one
            before = tracemalloc.get_traced_memory()[0]
            one = next(chunks)
            chunk_bytes = tracemalloc.get_traced_memory()[0] - before
            del one
            tracemalloc.reset_peak()
            at_rest = tracemalloc.get_traced_memory()[0]
            sizes = list(map(len, chunks))  # each chunk dropped once counted
            peak = tracemalloc.get_traced_memory()[1] - at_rest
    finally:
        tracemalloc.stop()
    assert sizes == [5000] * 4 + [4000]
    # Each chunk replaces the last one, which is let go before the next is read: reading adds
    # no second chunk to what the extraction held when it was last asked (it held two).
    assert peak < 0.5 * chunk_bytes, (peak, chunk_bytes)
    source.close()


@pytest.mark.parametrize("how", ["close", "context", "garbage", "exhausted", "generator_closed"])
def test_an_abandoned_extraction_releases_its_connection(db_url: str, how: str) -> None:
    make_events(db_url, [(i, i) for i in range(50)], "id integer, c integer")
    source = make_source(db_url)
    query = "SELECT id, c FROM events"
    if how == "context":
        with source.extract(query, cursor="c", key=["id"], mark=None, chunk_rows=10) as ex:
            assert len(next(iter(ex.chunks))) == 10
            assert source.engine.pool.checkedout() == 1  # type: ignore[attr-defined]
    else:
        ex = source.extract(query, cursor="c", key=["id"], mark=None, chunk_rows=10)
        chunks = ex.chunks
        assert len(next(chunks)) == 10
        assert source.engine.pool.checkedout() == 1  # type: ignore[attr-defined]
        if how == "close":
            ex.close()
            ex.close()  # twice is fine
            assert list(chunks) == []  # and iterating on after close just ends
        elif how == "garbage":
            del ex, chunks
            gc.collect()
        elif how == "exhausted":
            assert sum(len(chunk) for chunk in chunks) == 40
        elif how == "generator_closed":
            chunks.close()  # type: ignore[attr-defined]
    assert source.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    # The released connection is usable again.
    assert len(extract_rows(source, query, cursor="c", key=["id"])) == 50
    source.close()


def test_mariadb_stream_survives_a_pause_longer_than_net_write_timeout(
    mariadb_server: str, mariadb_url: str
) -> None:
    # Uploads can hold the reader back for minutes (retries); a server whose buffers stay
    # full for net_write_timeout seconds drops an unbuffered stream. Here the timeout is 1 s.
    admin = sa.create_engine(mariadb_server)
    with admin.connect() as conn:
        before = conn.exec_driver_sql("SELECT @@GLOBAL.net_write_timeout").scalar()
        conn.exec_driver_sql("SET GLOBAL net_write_timeout = 1")
    try:
        source = make_source(mariadb_url)
        query = "SELECT seq AS id, seq AS c, repeat('x', 2000) AS pad FROM seq_1_to_20000"
        with source.extract(query, cursor="c", key=["id"], mark=None, chunk_rows=100) as ex:
            total = len(next(ex.chunks))
            time.sleep(2.5)
            total += sum(len(chunk) for chunk in ex.chunks)
        assert total == 20_000
        source.close()
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"SET GLOBAL net_write_timeout = {int(before)}")
        admin.dispose()


def running_queries(url: str, needle: str, wait: float = 10.0) -> int:
    """How many other sessions still run a query containing ``needle`` (waits for it to be 0)."""
    sql = ("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
           "WHERE INFO LIKE %s AND ID <> CONNECTION_ID()")
    engine = sa.create_engine(url)
    deadline = time.monotonic() + wait
    with engine.connect() as conn:
        while (count := conn.exec_driver_sql(sql, (f"%{needle}%",)).scalar()) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
    engine.dispose()
    return int(count or 0)


def test_sqlite_rows_come_in_chunks_the_first_one_small(tmp_path: Path) -> None:
    source = make_source(f"sqlite:///{tmp_path / 'source.db'}")
    query = ("WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 12500) "
             "SELECT n AS id, n AS c FROM g")
    with source.extract(query, cursor="c", key=["id"], mark=None, chunk_rows=5000) as ex:
        sizes = [len(chunk) for chunk in ex.chunks]
    assert sizes == [1000, 5000, 5000, 1500]
    source.close()


def test_mariadb_stream_abandoned_early_is_not_read_to_its_end(mariadb_url: str) -> None:
    source = make_source(mariadb_url)
    query = "SELECT seq AS id, seq AS c, repeat('x', 100) AS pad FROM seq_1_to_3000000"
    ex = source.extract(query, cursor="c", key=["id"], mark=None, chunk_rows=1000)
    assert len(next(ex.chunks)) == 1000
    started = time.monotonic()
    ex.close()
    assert time.monotonic() - started < 1.0  # reading the other ~330 MB took 8 s
    assert source.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert running_queries(mariadb_url, "seq_1_to_3000000") == 0  # the server stopped it
    assert extract_rows(source, "SELECT 1 AS id, 1 AS c", cursor="c", key=["id"]) == [(1, 1)]
    source.close()


# --- errors -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("dialect", ["postgresql+psycopg", "mysql+pymysql"])
def test_an_unreachable_server_is_a_source_error_without_the_password(dialect: str) -> None:
    url = f"{dialect}://alice:s3cret-pw@127.0.0.1:{_free_port()}/shop"
    source = make_source(url)
    with pytest.raises(SourceError) as caught:
        source.columns("SELECT 1 AS c")
    message = str(caught.value)
    assert "s3cret-pw" not in message
    assert "'shop'" in message and "alice:***@127.0.0.1" in message
    assert "check that the server is running" in message
    source.close()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("not a url at all", "not a SQLAlchemy URL"),
        ("nosuchdialect://u:s3cret-pw@host/db", "cannot use nosuchdialect://u:***@host/db"),
        ("mysql+nosuchdriver://u:s3cret-pw@host/db", "mysql+pymysql://"),
    ],
)
def test_a_bad_url_is_a_source_error_without_the_password(url: str, expected: str) -> None:
    source = make_source(url)
    with pytest.raises(SourceError, match=re.escape(expected)) as caught:
        source.columns("SELECT 1 AS c")
    assert "s3cret-pw" not in str(caught.value)


def test_a_missing_sqlite_directory_is_a_connection_error(tmp_path: Path) -> None:
    source = make_source(f"sqlite:///{tmp_path / 'missing' / 'x.db'}")
    with pytest.raises(SourceError, match="source 'shop': cannot connect"):
        source.columns("SELECT 1 AS c")


def test_a_query_the_database_refuses_names_the_source_and_suggests_validate(
    db_url: str
) -> None:
    source = make_source(db_url)
    with pytest.raises(QueryError) as caught:  # a SourceError that running again cannot fix
        source.extract("SELEC id FROM nowhere", cursor="c", key=["id"], mark=None)
    message = str(caught.value)
    assert message.startswith("source 'shop': the database refused the query: ")
    assert "aitems-sync validate --connect" in message
    assert "\n" not in message
    assert source.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    source.close()


@pytest.mark.parametrize(
    ("cursor", "key", "expected"),
    [
        ("modified_at", ["id"], r"cursor 'modified_at'.*returns: id, c"),
        ("c", ["ID", "sku"], r"key 'sku'.*returns: id, c"),
    ],
)
def test_a_missing_cursor_or_key_column_lists_the_columns(
    db_url: str, cursor: str, key: list[str], expected: str
) -> None:
    make_events(db_url, [(1, 1)], "id integer, c integer")
    source = make_source(db_url)
    with pytest.raises(SourceError, match=expected):
        source.extract("SELECT id, c FROM events", cursor=cursor, key=key, mark=None)
    source.close()


@pytest.mark.postgres
def test_a_sql_error_while_streaming_is_a_source_error_and_releases(pg_url: str) -> None:
    source = make_source(pg_url)
    query = "SELECT g AS id, g AS c, 1 / (g - 3000) AS boom FROM generate_series(1, 5000) AS g"
    with pytest.raises(SourceError, match="division by zero"):  # noqa: SIM117
        with source.extract(query, cursor="c", key=["id"], mark=None, chunk_rows=100) as ex:
            for _chunk in ex.chunks:
                pass
    assert source.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    source.close()


def test_a_sqlite_error_while_streaming_is_a_source_error_and_releases(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'source.db'}"
    rows = ", ".join(f"({i}, '[{i}]')" for i in range(1, 3001))
    run_sql(url, "CREATE TABLE docs (id integer PRIMARY KEY, body text)",
            f"INSERT INTO docs VALUES {rows}", "UPDATE docs SET body = '{oops' WHERE id = 2500")
    source = make_source(url)
    query = "SELECT id, id AS c, json_extract(body, '$[0]') AS n FROM docs"
    read = 0
    with pytest.raises(SourceError, match=r"^source 'shop': the query failed: malformed JSON"):  # noqa: SIM117
        with source.extract(query, cursor="c", key=["id"], mark=None, chunk_rows=100) as ex:
            for chunk in ex.chunks:
                read += len(chunk)
    assert read == 2400  # the chunks before the failing row arrived, as tuples
    assert source.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    source.close()


def test_the_source_timezone_is_the_configured_zone(tmp_path: Path) -> None:
    assert make_source("sqlite://", "Asia/Seoul").timezone == ZoneInfo("Asia/Seoul")
    with pytest.raises(SourceError, match="unknown timezone 'Mars/Base'"):
        make_source("sqlite://", "Mars/Base")
