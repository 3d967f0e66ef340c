"""Rows whose cursor is NULL are never synced, and never silently: `plan` and `run` count them
per dataset in the summary, in `--json`, in a warning line and in a pushed metric."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from aitems_sync.emulator.server import EmulatorServer
from aitems_sync.source.extract import null_cursor_statement
from tests import pushgateway
from tests.conftest import require_server, source_and_state_urls
from tests.shop import T0, TIMESTAMP, write_spec

USERS, NULLS = 40, 7

members = sa.Table(
    "members", sa.MetaData(),
    sa.Column("id", sa.String(20), primary_key=True),
    sa.Column("age", sa.Integer),
    sa.Column("gender", sa.String(1)),
    sa.Column("updated_at", TIMESTAMP, nullable=True, index=True),
)


@pytest.fixture(params=["sqlite", "postgresql"])
def urls(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    return source_and_state_urls(request, tmp_path)


@pytest.fixture(scope="module")
def gateway() -> Iterator[str]:
    require_server(pushgateway.find_binary() is not None, "prometheus-pushgateway")
    with pushgateway.running_pushgateway() as url:
        yield url


def members_spec(tmp_path: Path, emulator: EmulatorServer, source_url: str, state_url: str,
                 append: str = "") -> Path:
    """The shop spec, its users read from ``members``: USERS rows, NULLS of them (every
    sixth, from the second on) with a NULL updated_at."""
    engine = sa.create_engine(source_url)
    members.create(engine)
    with engine.begin() as conn:
        conn.execute(members.insert(), [
            {"id": f"u{i:03d}", "age": 30, "gender": "F",
             "updated_at": None if i % 6 == 1 else T0 + timedelta(seconds=i)}
            for i in range(USERS)])
    engine.dispose()
    spec = write_spec(tmp_path / "sync.yaml", endpoint=emulator.base_url,
                      source_url=source_url, state_url=state_url)
    spec.write_text(spec.read_text().replace("FROM customers", "FROM members") + append)
    return spec


def cli(spec: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aitems_sync", "--config", str(spec), *args],
                          capture_output=True, text=True, env=dict(os.environ), timeout=120)


def users(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    report = json.loads(result.stdout)
    found: dict[str, object] = next(d for d in report["datasets"] if d["dataset"] == "users")
    return found


def test_plan_and_run_count_null_cursor_rows_in_json_summary_and_a_warning(
        tmp_path: Path, emulator: EmulatorServer, urls: tuple[str, str]) -> None:
    spec = members_spec(tmp_path, emulator, *urls)

    planned = cli(spec, "--json", "plan", "users")
    ran = cli(spec, "--json", "run", "users")
    summary = cli(spec, "run", "users")

    assert planned.returncode == 0, planned.stderr
    assert users(planned)["null_cursor"] == NULLS
    assert ran.returncode == 0, ran.stderr
    assert users(ran)["null_cursor"] == NULLS
    assert users(ran)["read"] == users(ran)["sent"] == USERS - NULLS
    warning = (f"dataset users: {NULLS} rows have a NULL cursor and will never be synced: make "
               "the cursor column updated_at NOT NULL, or COALESCE it in the query")
    for result in (planned, ran, summary):
        assert warning in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    # The rerun reads nothing new, and still counts them: they are never synced.
    assert summary.returncode == 0, summary.stderr
    assert f"users: warning: {NULLS} rows have a NULL cursor" in summary.stdout


def test_rows_whose_cursor_is_set_later_are_synced_and_no_longer_counted(
        tmp_path: Path, emulator: EmulatorServer) -> None:
    spec = members_spec(tmp_path, emulator, f"sqlite:///{tmp_path / 'shop.db'}",
                        f"sqlite:///{tmp_path / 'state.db'}")
    assert users(cli(spec, "--json", "run", "users"))["null_cursor"] == NULLS
    db = sqlite3.connect(tmp_path / "shop.db")
    db.execute("UPDATE members SET updated_at = '2026-04-01 00:00:00.000000' "
               "WHERE updated_at IS NULL")
    db.commit()
    db.close()

    again = cli(spec, "--json", "run", "users")

    assert users(again)["null_cursor"] == 0
    assert users(again)["sent"] == NULLS
    assert "NULL cursor" not in again.stderr


def test_the_null_cursor_count_is_pushed_as_a_metric(
        gateway: str, tmp_path: Path, emulator: EmulatorServer) -> None:
    spec = members_spec(tmp_path, emulator, f"sqlite:///{tmp_path / 'shop.db'}",
                        f"sqlite:///{tmp_path / 'state.db'}",
                        append=f"metrics: {{pushgateway: '{gateway}', job: nulls}}\n")

    ran = cli(spec, "run", "users")

    assert ran.returncode == 0, ran.stderr
    text = urllib.request.urlopen(gateway + "/metrics", timeout=5).read().decode()
    assert f'aitems_sync_rows_null_cursor{{dataset="users",instance="",job="nulls"}} {NULLS}' \
        in text


@pytest.mark.parametrize(("ddl", "plan", "cheap"), [
    # An index on the cursor: a range of it, the NULL entries only.
    ("CREATE TABLE t (id TEXT PRIMARY KEY, ts TEXT); CREATE INDEX t_ts ON t (ts)",
     "SEARCH t USING COVERING INDEX t_ts (ts=?)", True),
    # NOT NULL: SQLite knows no row matches and reads none (the plan still says SCAN).
    ("CREATE TABLE t (id TEXT PRIMARY KEY, ts TEXT NOT NULL)", "SCAN t", True),
    # Neither: a scan of the table, as a delta query on that cursor makes too.
    ("CREATE TABLE t (id TEXT PRIMARY KEY, ts TEXT)", "SCAN t", False),
])
def test_the_count_is_one_statement_answered_from_the_index_or_the_not_null_constraint(
        ddl: str, plan: str, cheap: bool) -> None:
    db = sqlite3.connect(":memory:")
    db.executescript(ddl)
    db.executemany("INSERT INTO t VALUES (?, ?)", [(str(i), str(i)) for i in range(20_000)])
    statement = null_cursor_statement("SELECT id, ts FROM t", ["id", "ts"], 1)
    sql = str(statement.compile(dialect=sa.create_engine("sqlite://").dialect))
    steps = [row[-1] for row in db.execute("EXPLAIN QUERY PLAN " + sql)]
    calls = []
    db.set_progress_handler(lambda: calls.append(1) and 0, 100)  # every 100 VM steps

    count = db.execute(sql).fetchone()

    assert steps == [plan]
    assert count == (0,)
    assert (len(calls) < 10) == cheap, len(calls)  # a scan of 20,000 rows takes far more
