"""An extraction handed over to a worker process delivers exactly what the reading thread would.

Past ``worker_after`` rows (0: from the first), a child process reads, shapes, encodes and
hashes the rest and hands the chunks over a pipe; the main process keeps the ledger, batches,
uploads and marks. These runs check, on SQLite and PostgreSQL, that each row is delivered
once, invalid rows are quarantined, the mark ends at the last row, and that a worker that
dies, cannot start or is stopped loses nothing and leaves no process behind.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from aitems_sync.aitems.client import AitemsClient
from aitems_sync.commands import open_sources, open_state
from aitems_sync.emulator.server import EmulatorServer, Faults, load_seed
from aitems_sync.rows.encode import ROW_HASH
from aitems_sync.source.extract import Source
from aitems_sync.spec.load import load_spec
from aitems_sync.spec.model import SourceConfig
from aitems_sync.state.store import Mark, StateStore
from aitems_sync.sync import engine
from aitems_sync.sync import worker as extract_worker
from aitems_sync.sync.options import WORKER_AFTER, RunOptions
from aitems_sync.sync.prepare import Layout, Prepared
from aitems_sync.sync.report import FAILED, INTERRUPTED, OK, DatasetReport, RunReport
from aitems_sync.sync.worker import ExtractWorker, Start
from tests.conftest import DEMO_SEED, register_dataset, source_and_state_urls
from tests.shop import T0, Shop, customer_rows, write_spec

# Every customer aged 33 gets an AGE past the int range: invalid, quarantined.
AGE = "CASE WHEN age = 33 THEN age + 3000000000 ELSE age END"


def _spec(path: Path, endpoint: str, source_url: str, state_url: str, in_flight: int,
          extra: str = "") -> Path:
    return write_spec(path, endpoint=endpoint, source_url=source_url, state_url=state_url,
                      max_rows=50, in_flight=in_flight, age=AGE, events_lookback="1h",
                      extra=extra)


CUSTOMERS = 3000
MORE = 27_000


def _invalid(customers: int) -> set[str]:
    """The ids the spec's query makes invalid (age 33, as customer_rows gives them)."""
    return {f"u{i:05d}" for i in range(customers) if 20 + i % 50 == 33}


INVALID = _invalid(CUSTOMERS)
EVENTS = 2000
HANDOVER = "an extraction worker process reads the rest"


@dataclass
class Setup:
    shop: Shop
    emulator: EmulatorServer
    spec: Path
    source_url: str
    state_url: str

    def run(self, dataset: str, *, stop: threading.Event | None = None,
            progress: Callable[[DatasetReport], None] | None = None,
            **options: object) -> RunReport:
        spec = load_spec(self.spec)
        run_options = RunOptions(chunk_rows=100, **options)  # type: ignore[arg-type]
        with open_state(spec) as state, open_sources(spec) as sources:
            client = AitemsClient.from_config(spec.aitems)
            try:
                return engine.run(spec, [spec.datasets[dataset]], state=state, uploader=client,
                                  sources=sources,
                                  options=run_options, stop=stop, progress=progress)
            finally:
                client.close()

    def delivered(self, dataset_id: str, field: str) -> Counter[object]:
        return Counter(row[field] for row in self.emulator.received(dataset_id).deliveries)

    def state(self) -> StateStore:
        return StateStore.open(self.state_url)


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    source_url, state_url = source_and_state_urls(request, tmp_path)
    shop = Shop(source_url)
    shop.add_customers(customer_rows(CUSTOMERS))
    shop.add_events([(n, f"u{n % 97:05d}", f"i{n % 31:03d}", "view", T0 + timedelta(seconds=n))
                     for n in range(EVENTS)])
    # Each batch waits for its answer (one on the wire): the reading thread is held back long
    # enough for the worker to start before the rows run out.
    emulator = EmulatorServer(seed=load_seed(DEMO_SEED), port=0,
                              faults=Faults(latency=0.02))
    emulator.start()
    spec = _spec(tmp_path / "sync.yaml", emulator.base_url, source_url, state_url, in_flight=1)
    try:
        yield Setup(shop, emulator, spec, source_url, state_url)
    finally:
        emulator.stop()
        shop.close()


def _worker_processes() -> list[int]:
    """Pids of this process's extraction workers still alive (zombies included)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == os.getpid() and b"aitems_sync.sync.worker" in cmdline:
            found.append(int(entry))
    return found


def _handed_over_after(caplog: pytest.LogCaptureFixture) -> list[int]:
    """Rows read in-process before each handover the run logged."""
    return [int(r.getMessage().split(": ")[1].split()[0]) for r in caplog.records
            if HANDOVER in r.getMessage()]


@pytest.mark.parametrize("worker_after", [0, 300])
def test_rows_read_by_a_worker_are_delivered_once_and_invalid_ones_quarantined(
        setup: Setup, worker_after: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aitems_sync")

    report = setup.run("users", worker_after=worker_after).datasets[0]

    handovers = _handed_over_after(caplog)
    assert len(handovers) == 1
    assert 0 <= handovers[0] < CUSTOMERS
    if worker_after == 0:
        assert handovers == [0]
    else:
        assert handovers[0] >= worker_after
    assert (report.status, report.read, report.invalid) == (OK, CUSTOMERS, len(INVALID))
    assert report.sent == report.new == CUSTOMERS - len(INVALID)
    delivered = setup.delivered("dsusers0001", "USER_ID")
    assert set(delivered) == {f"u{i:05d}" for i in range(CUSTOMERS)} - INVALID
    assert set(delivered.values()) == {1}
    store = setup.state()
    try:
        quarantined = store.quarantined("users")
        mark = store.get_mark("users")
    finally:
        store.close()
    assert sorted(e.key["USER_ID"] for e in quarantined) == sorted(INVALID)
    # PostgreSQL folds the unquoted AS AGE to "age".
    assert all({k.upper(): v for k, v in e.raw.items()}["AGE"] > 2**31 and e.origin == "local"
               for e in quarantined)
    assert mark is not None and mark.key == (f"u{CUSTOMERS - 1:05d}",)
    assert _worker_processes() == []


def test_a_worker_validates_with_the_datasets_own_json_schema(setup: Setup) -> None:
    _spec(setup.spec, setup.emulator.base_url, setup.source_url, setup.state_url, in_flight=1,
          extra="    json_schema: {properties: {AGE: {maximum: 60}}}")

    report = setup.run("users", worker_after=0).datasets[0]

    too_old = {f"u{i:05d}" for i in range(CUSTOMERS) if 20 + i % 50 > 60}
    assert (report.status, report.invalid) == (OK, len(INVALID | too_old))
    store = setup.state()
    try:
        quarantined = {e.key["USER_ID"]: e for e in store.quarantined("users")}
    finally:
        store.close()
    assert set(quarantined) == INVALID | too_old
    assert all("60" in quarantined[k].errors[0]["message"] for k in too_old)
    assert not set(setup.delivered("dsusers0001", "USER_ID")) & too_old


@pytest.mark.parametrize("worker_after", [None, 300])
def test_a_full_read_is_sorted_by_sqlite_only_where_no_worker_reads_on_from_a_mark(
        setup: Setup, worker_after: int | None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="aitems_sync.source.extract")
    report = setup.run("users", worker_after=worker_after).datasets[0]

    assert report.read == CUSTOMERS
    sorted_reads = [r for r in caplog.records if getattr(r, "event", None) == "sorted_read"]
    # customers(updated_at) is indexed: SQLite would walk the index, reading the table at random.
    assert len(sorted_reads) == (worker_after is None and setup.source_url.startswith("sqlite"))


def test_a_worker_reads_only_what_changed_after_the_mark(setup: Setup) -> None:
    setup.run("users", worker_after=None)
    for id_ in ("u00005", "u01500", "u02999"):
        setup.shop.update_customer(id_, gender="X", updated_at=T0 + timedelta(days=1))

    report = setup.run("users", worker_after=0).datasets[0]

    assert (report.read, report.changed, report.sent) == (3, 3, 3)
    delivered = setup.delivered("dsusers0001", "USER_ID")
    assert {k for k, n in delivered.items() if n == 2} == {"u00005", "u01500", "u02999"}


def test_a_worker_hashes_rows_with_the_datasets_own_row_hash(setup: Setup) -> None:
    """A dataset registered before state schema version 4 keeps BLAKE2b, in a worker too."""
    register_dataset(setup.state_url, "users", "blake2b-64")
    setup.run("users", worker_after=None)  # the ledger written in-process
    for id_ in ("u00005", "u01500", "u02999"):
        setup.shop.update_customer(id_, updated_at=T0 + timedelta(days=1))  # touched only

    report = setup.run("users", worker_after=0).datasets[0]

    assert (report.read, report.unchanged, report.sent) == (3, 3, 0)


def test_interactions_read_by_a_worker_are_delivered_once_within_the_lookback(
        setup: Setup) -> None:
    first = setup.run("events", worker_after=0).datasets[0]
    setup.shop.add_events([(EVENTS + n, "u00001", f"i{n:03d}", "buy", T0 + timedelta(hours=2))
                           for n in range(10)])

    second = setup.run("events", worker_after=0).datasets[0]

    assert (first.read, first.sent) == (EVENTS, EVENTS)
    # The lookback reads the last hour again; the ledger keeps those rows off the wire.
    assert second.sent == 10 and second.unchanged == second.read - 10
    events = setup.emulator.received("dsevent0001").deliveries
    assert len(events) == EVENTS + 10


def test_a_worker_killed_mid_run_fails_the_dataset_and_the_next_run_sends_the_rest_once(
        setup: Setup) -> None:
    # Enough rows that the worker is still reading when it is killed: it runs ahead of the
    # routing by what the pipe holds (PIPE_BYTES), ~10,000 of these rows.
    setup.emulator.set_faults(Faults())
    setup.shop.add_customers(customer_rows(MORE, start=CUSTOMERS))
    chunks = 0

    def kill_the_worker(_report: DatasetReport) -> None:
        nonlocal chunks
        chunks += 1
        if chunks == 5:
            for pid in _worker_processes():
                os.kill(pid, signal.SIGKILL)

    failed = setup.run("users", worker_after=0, progress=kill_the_worker).datasets[0]

    assert failed.status == FAILED
    assert failed.error is not None
    assert "the extraction worker process exited (killed by SIGKILL)" in failed.error
    assert "run again" in failed.error
    assert 0 < failed.read < CUSTOMERS + MORE
    assert _worker_processes() == []

    rest = setup.run("users", worker_after=0).datasets[0]

    assert rest.status == OK
    everyone = {f"u{i:05d}" for i in range(CUSTOMERS + MORE)}
    delivered = setup.delivered("dsusers0001", "USER_ID")
    assert set(delivered) == everyone - _invalid(CUSTOMERS + MORE)
    assert set(delivered.values()) == {1}


def test_a_run_stopped_while_a_worker_reads_commits_what_it_cut_and_leaves_no_worker(
        setup: Setup) -> None:
    stop = threading.Event()

    def stop_soon(report: DatasetReport) -> None:
        if report.read >= 1000:
            stop.set()

    stopped = setup.run("users", worker_after=0, stop=stop, progress=stop_soon).datasets[0]

    assert stopped.status == INTERRUPTED
    assert _worker_processes() == []
    rest = setup.run("users", worker_after=0).datasets[0]
    assert rest.status == OK
    delivered = setup.delivered("dsusers0001", "USER_ID")
    assert set(delivered) == {f"u{i:05d}" for i in range(CUSTOMERS)} - INVALID
    assert set(delivered.values()) == {1}


def test_a_worker_that_cannot_reach_the_source_is_never_ready_and_says_why(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spec = _spec(tmp_path / "sync.yaml", "http://127.0.0.1:9/api/v1",
                 f"sqlite:///{tmp_path}/shop.db", f"sqlite:///{tmp_path}/state.db", in_flight=1)
    dataset = load_spec(spec).datasets["users"]
    unreachable = SourceConfig(name="shop", url=f"sqlite:///{tmp_path}/no/such/dir/shop.db")
    layout = Layout(("USER_ID", "AGE", "GENDER", "updated_at"), 3, (0,))

    with ExtractWorker(unreachable, dataset, layout, ROW_HASH, chunk_rows=100) as worker:
        assert worker.ready(timeout=30) is False
        assert worker.ready(timeout=30) is False  # asked again: still not, and no new wait

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "dataset users: the extraction worker did not start" in warnings[0]
    assert "cannot connect" in warnings[0]
    assert "the rows are read in the main process" in warnings[0]
    assert _worker_processes() == []


def _served_here(setup: extract_worker.Setup, start: Start) -> list[Prepared]:
    """The worker's side of the protocol, served on a thread of this process over pipes: the
    chunks it prepares from ``start``."""
    to_worker, from_worker = os.pipe(), os.pipe()
    with open(to_worker[0], "rb", buffering=0) as requests, \
            open(to_worker[1], "wb", buffering=0) as asks, \
            open(from_worker[0], "rb", buffering=0) as answers, \
            open(from_worker[1], "wb", buffering=0) as replies:
        server = threading.Thread(target=extract_worker._serve, args=(requests, replies))
        server.start()
        extract_worker._write(asks, setup)
        assert extract_worker._read(answers) == extract_worker.READY
        extract_worker._write(asks, start)
        chunks = []
        while (message := extract_worker._read(answers)) != extract_worker.END:
            chunks.append(message)
        server.join()
    return chunks


@pytest.mark.parametrize(("after", "sort"),
                         [(None, True), (250, True), (250, False), (250, None)])
def test_a_worker_sorts_the_rest_of_a_first_load_and_reads_a_delta_through_the_index(
        tmp_path: Path, after: int | None, sort: bool | None) -> None:
    url = f"sqlite:///{tmp_path}/shop.db"
    shop = Shop(url)
    shop.add_customers(customer_rows(500))
    spec = _spec(tmp_path / "sync.yaml", "http://127.0.0.1:9/api/v1", url,
                 f"sqlite:///{tmp_path}/state.db", in_flight=1)
    dataset = load_spec(spec).datasets["users"]
    setup = extract_worker.Setup(
        SourceConfig(name="shop", url=url), replace(dataset, json_schema=None),
        Layout(("USER_ID", "AGE", "GENDER", "updated_at"), 3, (0,)), ROW_HASH, 100)
    everything = [place for chunk in _served_here(setup, Start(None, sort=True))
                  for place in chunk.places]
    mark = None if after is None else Mark(everything[after - 1][0], (everything[after - 1][1],))
    sent: list[str] = []

    def record(_conn: object, _cursor: object, sql: str, *_rest: object) -> None:
        sent.append(sql)

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", record)
    try:
        chunks = _served_here(setup, Start(mark, sort=sort))
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", record)
    shop.close()

    read = [place[1] for chunk in chunks for place in chunk.places]
    assert read == [f"u{i:05d}" for i in range(after or 0, 500)]
    extraction = [sql for sql in sent if sql.lstrip().startswith("SELECT src.")]
    # customers(updated_at) is indexed: + on the columns keeps SQLite from walking it. Left
    # to the counts (None), 250 rows are a delta.
    assert [("ORDER BY + src.updated_at" in sql) for sql in extraction] == [sort is True]


@pytest.mark.parametrize("switch", [["--extract-worker"], []], ids=["flag", "env"])
def test_run_extract_worker_hands_a_large_extraction_to_a_worker(
        tmp_path: Path, emulator: EmulatorServer, switch: list[str]) -> None:
    customers = WORKER_AFTER + 15_000
    emulator.set_faults(Faults(latency=0.01))  # the worker starts before the rows run out
    shop = Shop(f"sqlite:///{tmp_path / 'shop.db'}")
    shop.add_customers(customer_rows(customers))
    shop.close()
    spec = _spec(tmp_path / "sync.yaml", emulator.base_url, f"sqlite:///{tmp_path / 'shop.db'}",
                 f"sqlite:///{tmp_path / 'state.db'}", in_flight=4)
    env = {**os.environ, "AITEMS_SYNC_EXTRACT_WORKER": "" if switch else "1"}

    done = subprocess.run(
        [sys.executable, "-m", "aitems_sync", "--config", str(spec), "--json", "run", "users",
         *switch], capture_output=True, text=True, timeout=120, env=env)

    assert done.returncode == 0, done.stderr
    assert HANDOVER in done.stderr
    report = json.loads(done.stdout)["datasets"][0]
    assert report["read"] == customers
    assert report["sent"] == customers - len(_invalid(customers))


@pytest.mark.parametrize(("url", "own_engine", "shareable"), [
    ("sqlite:///{tmp}/shop.db", True, True),
    ("sqlite://", True, False),
    ("sqlite:///:memory:", True, False),
    ("sqlite:///file:shop?mode=memory&cache=shared&uri=true", True, False),
    ("sqlite:///{tmp}/shop.db", False, False),
])
def test_only_a_source_another_process_can_open_by_its_url_gets_a_worker(
        tmp_path: Path, url: str, own_engine: bool, shareable: bool) -> None:
    config = SourceConfig(name="shop", url=url.format(tmp=tmp_path))
    engine_ = None if own_engine else sa.create_engine(config.url)
    try:
        assert Source(config, engine=engine_).shareable is shareable
    finally:
        if engine_ is not None:
            engine_.dispose()
