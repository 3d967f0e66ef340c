"""A source that stops answering fails its dataset after `sources.*.read_timeout`, naming the
source; the run never hangs while its lease renewer keeps the datasets locked, and the mark
never passes a row AiTEMS did not acknowledge."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from aitems_sync import load_spec
from aitems_sync.commands import run
from aitems_sync.emulator.server import EmulatorServer, Faults
from aitems_sync.errors import SourceError, SpecError
from aitems_sync.source.extract import Source
from aitems_sync.spec.model import SourceConfig
from aitems_sync.state.store import StateStore
from aitems_sync.sync.report import DatasetReport
from tests.shop import T0, Shop, customer_rows, write_spec
from tests.stallproxy import StallProxy

USERS = 30_000
READ_TIMEOUT = 2.0
#: Seconds a failed run may take past its read_timeout: the watchdog looks every half second
#: (a quarter of the timeout), then the run commits what was acknowledged and ends.
SLACK = 4.0


def shop_spec(tmp_path: Path, emulator: EmulatorServer, source_url: str,
              read_timeout: str = f"{READ_TIMEOUT:g}s", rows: int = USERS,
              shop_url: str | None = None) -> Path:
    """The shop with ``rows`` customers (written through ``shop_url``, default the source's
    url) and a spec reading them through ``source_url`` with the given read_timeout."""
    shop = Shop(shop_url or source_url)
    shop.add_customers(customer_rows(rows))
    shop.close()
    spec = write_spec(tmp_path / "sync.yaml", endpoint=emulator.base_url, source_url=source_url,
                      state_url=f"sqlite:///{tmp_path / 'state.db'}")
    text = spec.read_text().replace("timezone: Asia/Seoul}",
                                    f"timezone: Asia/Seoul, read_timeout: {read_timeout}}}")
    spec.write_text(text)
    return spec


def check_mark_and_deliveries(tmp_path: Path, emulator: EmulatorServer) -> int:
    """Every row at or before the mark was delivered, none twice; returns how many were."""
    delivered = Counter(row["USER_ID"] for row in emulator.received("dsusers0001").deliveries)
    assert not [k for k, n in delivered.items() if n > 1]
    with StateStore.open(f"sqlite:///{tmp_path / 'state.db'}") as store:
        mark = store.get_mark("users")
    assert mark is not None
    behind = [f"u{i:05d}" for i in range(USERS) if T0.timestamp() + i <= mark.cursor.timestamp()]
    assert behind and set(behind) <= set(delivered)
    return len(delivered)


def frozen_backends(url: str) -> list[int]:
    """SIGSTOP every server process serving the database at ``url`` (but the one asking)."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        pids = list(conn.execute(sa.text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()")).scalars())
    engine.dispose()
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    return pids


@pytest.fixture
def stopped() -> Iterator[list[int]]:
    """Processes a test stops; continued at teardown, whatever happened."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def test_a_postgresql_server_stopped_mid_extraction_fails_the_dataset_after_read_timeout(
        tmp_path: Path, emulator: EmulatorServer, pg_url: str, stopped: list[int]) -> None:
    spec = load_spec(shop_spec(tmp_path, emulator, pg_url))
    frozen_at: list[float] = []

    def freeze_once(report: DatasetReport) -> None:
        if not frozen_at and report.read > 5000:  # batches were cut: a mark to keep
            stopped.extend(frozen_backends(pg_url))
            frozen_at.append(time.monotonic())

    report = run(spec, ["users"], progress=freeze_once)
    took = time.monotonic() - frozen_at[0]

    users = report.datasets[0]
    assert stopped
    assert report.exit_code == 1
    assert users.status == "failed"
    assert users.error is not None
    assert "source 'shop': no answer for 2s" in users.error
    assert "sources.shop.read_timeout" in users.error
    assert took < READ_TIMEOUT + SLACK, took
    assert 0 < check_mark_and_deliveries(tmp_path, emulator) < USERS

    for pid in stopped:  # the server answers again: the rerun sends the rest, once
        os.kill(pid, signal.SIGCONT)
    stopped.clear()
    again = run(spec, ["users"])
    assert again.exit_code == 0, again.datasets[0].error
    assert check_mark_and_deliveries(tmp_path, emulator) == USERS


@pytest.mark.parametrize("server", ["postgresql", "mariadb"])
def test_a_network_partition_mid_extraction_exits_1_naming_the_source_in_time(
        tmp_path: Path, emulator: EmulatorServer, request: pytest.FixtureRequest,
        server: str) -> None:
    url = sa.make_url(request.getfixturevalue("pg_url" if server == "postgresql"
                                              else "mariadb_url"))
    assert url.host is not None and url.port is not None
    with StallProxy((url.host, url.port), limit=1_000_000) as proxy:
        through = url.set(host="127.0.0.1", port=proxy.port)
        spec = shop_spec(tmp_path, emulator, through.render_as_string(hide_password=False),
                         shop_url=url.render_as_string(hide_password=False))

        done = subprocess.run(
            [sys.executable, "-m", "aitems_sync", "--config", str(spec), "--json", "run",
             "users"], capture_output=True, text=True, env=dict(os.environ), timeout=120)
        ended = time.monotonic()

        assert proxy.stalled_at is not None, "the proxy never stalled: raise USERS"
        assert ended - proxy.stalled_at < READ_TIMEOUT + SLACK + 1.5  # + the process's exit
    report = json.loads(done.stdout)
    assert done.returncode == 1, done.stderr
    assert report["datasets"][0]["status"] == "failed"
    assert "source 'shop': no answer for 2s" in report["datasets"][0]["error"]
    assert "dataset users stopped: source 'shop': no answer for 2s" in done.stderr
    assert "Traceback" not in done.stderr
    assert 0 < check_mark_and_deliveries(tmp_path, emulator) < USERS


def test_a_pooled_connection_to_a_stopped_backend_is_replaced_after_read_timeout(
        pg_url: str, stopped: list[int]) -> None:
    # The pool pings an idle connection before reusing it: that ping waited for ever.
    Shop(pg_url).add_customers(customer_rows(10))
    source = Source(SourceConfig("shop", pg_url, read_timeout=1.0))
    query = "SELECT id AS USER_ID, updated_at FROM customers"
    source.columns(query)  # its connection is now idle in the pool
    stopped.extend(frozen_backends(pg_url))
    started = time.monotonic()

    with source.extract(query, cursor="updated_at", key=["USER_ID"], mark=None) as extraction:
        rows = [row for chunk in extraction.chunks for row in chunk]

    assert time.monotonic() - started < 1.0 + SLACK
    assert len(rows) == 10
    source.close()


def test_uploads_slower_than_read_timeout_do_not_trip_it(
        tmp_path: Path, emulator: EmulatorServer) -> None:
    # The reader waits on its upload window (AiTEMS), not on the source: no timer runs.
    spec = load_spec(shop_spec(tmp_path, emulator, f"sqlite:///{tmp_path / 'shop.db'}",
                               read_timeout="0.5s", rows=3000))
    emulator.set_faults(Faults(latency=0.8))

    report = run(spec, ["users"])

    assert report.exit_code == 0, report.datasets[0].error
    assert report.datasets[0].sent == 3000


def test_a_sqlite_query_that_never_yields_a_row_is_interrupted(tmp_path: Path) -> None:
    source = Source(SourceConfig("local", f"sqlite:///{tmp_path / 'x.db'}", read_timeout=1.0))
    endless = ("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) "
               "SELECT x AS id, x AS ts FROM n WHERE x < 0")
    started = time.monotonic()

    timed_out = r"source 'local': no answer for 1s .*sources\.local\.read_timeout"
    with pytest.raises(SourceError, match=timed_out), source.extract(
            endless, cursor="ts", key=["id"], mark=None) as extraction:
        list(extraction.chunks)

    assert time.monotonic() - started < 1.0 + 1.0
    source.close()


@pytest.mark.parametrize(("value", "message"), [
    ("0s", "must be more than 0"),
    ("31d", "must be at most 30d"),
    ("soon", "sources.shop.read_timeout"),
])
def test_read_timeout_is_a_bounded_duration(tmp_path: Path, value: str, message: str) -> None:
    spec = write_spec(tmp_path / "sync.yaml", endpoint="http://127.0.0.1:9",
                      source_url="sqlite:///shop.db", state_url="sqlite:///state.db")
    spec.write_text(spec.read_text().replace("timezone: Asia/Seoul}",
                                             f"timezone: Asia/Seoul, read_timeout: {value}}}"))

    with pytest.raises(SpecError, match=message) as raised:
        load_spec(spec)
    assert "sources.shop.read_timeout" in str(raised.value)


def test_read_timeout_defaults_to_30_minutes(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "sync.yaml", endpoint="http://127.0.0.1:9",
                      source_url="sqlite:///shop.db", state_url="sqlite:///state.db")

    assert load_spec(spec).sources["shop"].read_timeout == 1800.0
