"""Delivery under failure: pipelining, lost answers, faults, 413/400, auth, retries, leases,
signals. Everything real: `aitems-sync run` (in this process through click, or as a process
where signals and leases between processes matter), the emulator's fault injection over loopback,
SQLite files and PostgreSQL.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from aitems_sync.emulator.server import EmulatorServer, Faults
from aitems_sync.state.store import LedgerEntry, Mark, StateStore
from aitems_sync.sync import signals
from aitems_sync.sync.window import LOST_ANSWER
from tests.chaos import (
    Chaos,
    check_delivery,
    event_rows,
    no_batch_left_sending,
    user_index,
)
from tests.shop import Shop


@pytest.fixture(params=["sqlite", "postgresql"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _build(tmp: Path, emulator: EmulatorServer, kind: str, request: pytest.FixtureRequest,
           *, users: int, events: int = 0) -> Chaos:
    urls = {}
    if kind == "postgresql":
        pg_url = request.getfixturevalue("pg_url")
        urls = {"source_url": pg_url, "state_url": pg_url}
    return Chaos.build(tmp, emulator, users=users, events=events, **urls)


@pytest.fixture
def chaos_sqlite(tmp_path: Path, emulator: EmulatorServer) -> Iterator[Callable[..., Chaos]]:
    made: list[Chaos] = []

    def make(**counts: int) -> Chaos:
        made.append(Chaos.build(tmp_path, emulator, **counts))
        return made[-1]

    yield make
    for chaos in made:
        chaos.stop_all()


def _in_thread(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def _max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                    key=lambda e: (e[0], e[1]))
    most = live = 0
    for _, step in events:
        live += step
        most = max(most, live)
    return most


# -- pipelining -------------------------------------------------------------------------------

def test_in_flight_uploads_overlap_and_commit_in_order_with_a_monotonic_mark(
        chaos_sqlite: Callable[..., Chaos], emulator: EmulatorServer) -> None:
    chaos = chaos_sqlite(users=1000)
    emulator.set_faults(Faults(latency=0.05))
    marks: list[Mark] = []
    done = threading.Event()

    def watch_mark() -> None:
        store = chaos.state()
        try:
            while not done.is_set():
                mark = store.get_mark("users")
                if mark is not None:
                    marks.append(mark)
                time.sleep(0.002)
        finally:
            store.close()

    watcher = _in_thread(watch_mark)
    outcome = chaos.run_here(chaos.spec(max_rows=50, in_flight=4), "users")
    done.set()
    watcher.join()

    assert outcome.code == 0
    store = chaos.state()
    try:
        journal = store.batches("users", limit=None, oldest_first=True)
    finally:
        store.close()
    assert len(journal) == 20
    assert {b.status for b in journal} == {"committed"}
    commits = [b.updated_at for b in journal]
    assert commits == sorted(commits)  # batch ids committed in increasing order
    overlap = _max_overlap([(b.created_at, b.updated_at) for b in journal])
    assert 3 <= overlap <= 4  # up to in_flight batches between journalled and committed
    positions = [user_index(m.cursor) for m in marks]
    assert len(positions) > 5
    assert positions == sorted(positions)
    assert positions[-1] == 999
    assert all((p + 1) % 50 == 0 for p in positions)  # always the end of a batch
    assert check_delivery(chaos, [outcome.report], datasets=["users"]).extra_deliveries == 0


# -- lost answers and faults -------------------------------------------------------------------

@pytest.mark.parametrize("dataset", ["users", "events"])
def test_an_answer_lost_after_store_is_reported_ambiguous_and_nothing_else_is_duplicated(
        dataset: str, chaos_sqlite: Callable[..., Chaos], emulator: EmulatorServer) -> None:
    chaos = chaos_sqlite(users=500, events=500)
    emulator.set_faults(Faults(drop_after_store=1))

    outcome = chaos.run_here(chaos.spec(max_rows=50, in_flight=4), dataset)

    assert outcome.code == 0
    [ambiguous] = outcome.report[dataset]["ambiguous"]
    assert ambiguous["reason"] == LOST_ANSWER
    assert ambiguous["rows"] == 50
    tally = check_delivery(chaos, [outcome.report], datasets=[dataset])
    assert tally.duplicated_rows == 50  # the dropped batch, re-delivered, and nothing else
    assert tally.extra_deliveries == 50


def test_a_fault_soak_of_errors_and_dropped_answers_delivers_everything_with_exit_0(
        chaos_sqlite: Callable[..., Chaos], emulator: EmulatorServer) -> None:
    chaos = chaos_sqlite(users=1000, events=1000)
    # One upload in five fails: 429/500/503/504 answered without storing, or stored and dropped.
    emulator.set_faults(Faults(status_rate=0.15, drop_rate=0.05, retry_after=0.0, seed=7,
                               latency=0.002))

    outcome = chaos.run_here(chaos.spec(max_rows=25, in_flight=4, attempts=12), "--parallel",
                             "2")

    assert outcome.code == 0, outcome.stderr[-2000:]
    assert {d["status"] for d in outcome.report.values()} == {"ok"}
    assert "retrying" in outcome.stderr
    tally = check_delivery(chaos, [outcome.report])
    assert tally.rows == 2000
    no_batch_left_sending(chaos)


# -- 413 and 400 --------------------------------------------------------------------------------

def test_413_splits_batches_until_they_fit_and_quarantines_a_row_too_large_alone(
        chaos_sqlite: Callable[..., Chaos], emulator: EmulatorServer) -> None:
    chaos = chaos_sqlite(users=300)
    shop = Shop(chaos.source_url)
    shop.update_customer("u00150", gender="x" * 2000)  # SQLite keeps it whole
    shop.close()
    emulator.set_faults(Faults(max_body_bytes=1200))

    outcome = chaos.run_here(chaos.spec(max_rows=100, in_flight=2), "users")

    assert outcome.code == 0
    report = outcome.report["users"]
    assert report["sent"] == 299
    assert report["invalid"] == 1
    assert report["requests"] > report["batches"]
    delivered = chaos.user_deliveries()
    assert set(delivered) == set(range(300)) - {150}
    assert set(delivered.values()) == {1}
    store = chaos.state()
    try:
        [entry] = store.quarantined("users")
        mark = store.get_mark("users")
    finally:
        store.close()
    assert mark is not None and user_index(mark.cursor) == 299
    assert entry.key == {"USER_ID": "u00150"}
    assert entry.origin == "server"
    assert entry.errors[0]["message"].startswith("AiTEMS answered 413")


def test_400_bisects_to_the_rows_aitems_refuses_and_delivers_the_rest(
        store_kind: str, tmp_path: Path, emulator: EmulatorServer,
        request: pytest.FixtureRequest) -> None:
    chaos = _build(tmp_path, emulator, store_kind, request, users=200)
    # The spec says AGE is a long; the emulator's schema says int: 3e9 passes our validation
    # and AiTEMS refuses it.
    too_big = "CASE WHEN id IN ('u00003', 'u00077', 'u00078') THEN CAST(age AS BIGINT) + " \
              "3000000000 ELSE age END"
    spec = chaos.spec(max_rows=50, in_flight=4, age=too_big, age_type="long")

    outcome = chaos.run_here(spec, "users")

    assert outcome.code == 0
    assert outcome.report["users"]["invalid"] == 3
    delivered = chaos.user_deliveries()
    assert set(delivered) == set(range(200)) - {3, 77, 78}
    assert set(delivered.values()) == {1}
    store = chaos.state()
    try:
        rejected = store.quarantined("users")
    finally:
        store.close()
    assert sorted(e.key["USER_ID"] for e in rejected) == ["u00003", "u00077", "u00078"]
    for entry in rejected:
        assert entry.origin == "server"
        assert entry.raw["AGE"] > 2**31
        message = entry.errors[0]["message"]
        assert message.startswith("AiTEMS answered 400")
        assert "AGE" in message  # the emulator's own words name the field


# -- authentication and retries ------------------------------------------------------------

@pytest.mark.parametrize("parallel", ["1", "2"])
def test_a_wrong_secret_exits_1_moves_no_mark_and_stops_the_run(
        parallel: str, chaos_sqlite: Callable[..., Chaos], emulator: EmulatorServer) -> None:
    chaos = chaos_sqlite(users=200, events=200)

    outcome = chaos.run_here(chaos.spec(secret_key="not-the-secret"), "--parallel", parallel)

    assert outcome.code == 1
    users, events = outcome.report["users"], outcome.report["events"]
    assert users["status"] == events["status"] == "failed"
    assert "answered 401" in users["error"]
    assert "secret key" in users["error"] and "clock" in users["error"]
    if parallel == "1":
        assert events["error"].startswith("not run: ")
    store = chaos.state()
    try:
        assert store.get_mark("users") is None
        assert store.get_mark("events") is None
    finally:
        store.close()
    assert emulator.model.summary()["dsusers0001"]["uploads"] == 0


def test_retries_used_up_stop_the_dataset_at_its_last_committed_batch(
        chaos_sqlite: Callable[..., Chaos], emulator: EmulatorServer) -> None:
    chaos = chaos_sqlite(users=1000)
    spec = chaos.spec(max_rows=50, in_flight=4, attempts=3)
    emulator.set_faults(Faults(latency=0.01))

    def outage() -> None:
        chaos.wait_for_uploads(5)
        emulator.set_faults(Faults(status_rate=1.0, status_choices=(503,), retry_after=None))

    _in_thread(outage)
    failed = chaos.run_here(spec, "users")

    assert failed.code == 1
    assert failed.report["users"]["status"] == "failed"
    assert "failed 3 times" in failed.report["users"]["error"]
    store = chaos.state()
    try:
        mark = store.get_mark("users")
    finally:
        store.close()
    assert mark is not None
    last = user_index(mark.cursor)
    assert (last + 1) % 50 == 0  # the end of a batch
    delivered = chaos.user_deliveries()
    assert set(range(last + 1)) <= set(delivered)
    assert len(delivered) < 1000

    emulator.set_faults(Faults())
    rerun = chaos.run_here(spec, "users")

    assert rerun.code == 0
    delivered = chaos.user_deliveries()
    assert set(delivered) == set(range(1000))
    # 503s store nothing and what was acknowledged after the failure is in the ledger.
    assert set(delivered.values()) == {1}


def test_other_datasets_go_on_when_one_uses_up_its_retries(
        chaos_sqlite: Callable[..., Chaos], emulator: EmulatorServer) -> None:
    chaos = chaos_sqlite(users=100, events=100)
    emulator.set_faults(Faults(statuses=[503, 503, 503], retry_after=None))

    outcome = chaos.run_here(chaos.spec(max_rows=50, in_flight=1, attempts=3))

    assert outcome.code == 1
    assert outcome.report["users"]["status"] == "failed"
    assert outcome.report["events"]["status"] == "ok"
    assert outcome.report["events"]["sent"] == 100
    assert sorted(chaos.event_deliveries()) == list(range(1, 101))
    store = chaos.state()
    try:
        assert store.get_mark("users") is None
    finally:
        store.close()


# -- leases ------------------------------------------------------------------------------------

def test_a_run_that_loses_its_lease_stops_and_leaves_the_new_holder_alone(
        chaos_sqlite: Callable[..., Chaos], emulator: EmulatorServer) -> None:
    chaos = chaos_sqlite(users=1000)
    emulator.set_faults(Faults(latency=0.03))

    def steal() -> None:
        chaos.wait_for_uploads(3)
        store = chaos.state()
        try:
            holder = store.lease_holder("users")
            assert holder is not None
            store.release_lease("users", owner=holder.owner)
            store.acquire_lease("users", owner="thief", host="elsewhere", pid=1, ttl=60)
        finally:
            store.close()

    thief = _in_thread(steal)
    outcome = chaos.run_here(chaos.spec(max_rows=50, in_flight=2), "users", "--lease-ttl",
                             "0.3")
    thief.join()

    assert outcome.code == 1
    assert outcome.report["users"]["status"] == "failed"
    assert "lease" in outcome.report["users"]["error"]
    assert len(chaos.user_deliveries()) < 1000
    store = chaos.state()
    try:
        holder = store.lease_holder("users")
    finally:
        store.close()
    assert holder is not None and holder.owner == "thief"


def test_two_runs_started_together_one_syncs_and_the_other_exits_75(
        store_kind: str, tmp_path: Path, emulator: EmulatorServer,
        request: pytest.FixtureRequest) -> None:
    chaos = _build(tmp_path, emulator, store_kind, request, users=1000)
    emulator.set_faults(Faults(latency=0.05))
    spec = chaos.spec(max_rows=50, in_flight=1)
    try:
        first, second = chaos.start(spec, "users"), chaos.start(spec, "users")
        outcomes = sorted([chaos.finish(first), chaos.finish(second)], key=lambda o: o.code)
    finally:
        chaos.stop_all()

    assert [o.code for o in outcomes] == [0, 75]
    winner = next(p for p in (first, second) if p.returncode == 0)
    assert "is locked by another run" in outcomes[1].stderr
    assert f"(pid {winner.pid})" in outcomes[1].stderr
    assert set(chaos.user_deliveries().values()) == {1}
    assert len(chaos.user_deliveries()) == 1000


def test_a_killed_holders_lease_is_taken_over_once_it_expires(
        store_kind: str, tmp_path: Path, emulator: EmulatorServer,
        request: pytest.FixtureRequest) -> None:
    """The holder is made to look as if it ran on a node that was lost with it: a dead holder
    on this host is taken over at once instead (tests/test_lease_takeover.py)."""
    chaos = _build(tmp_path, emulator, store_kind, request, users=1000)
    emulator.set_faults(Faults(latency=0.03))
    spec = chaos.spec(max_rows=50, in_flight=4)
    try:
        holder = chaos.start(spec, "users", "--lease-ttl", "3")
        chaos.wait_for_uploads(3, holder)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        engine = sa.create_engine(chaos.state_url)
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE leases SET host = 'lost-node'"))
        engine.dispose()
        refused = chaos.run(spec, "users")
        took_over = chaos.run(spec, "users", "--wait=30")
    finally:
        chaos.stop_all()

    assert refused.code == 75
    assert f"on host lost-node (pid {holder.pid})" in refused.stderr
    assert took_over.code == 0
    assert "waiting for the lease on dataset users" in took_over.stderr
    check_delivery(chaos, [took_over.report], datasets=["users"])
    no_batch_left_sending(chaos, ["users"])


def test_wait_gives_up_after_its_timeout_or_waits_for_the_holder_to_finish(
        chaos_sqlite: Callable[..., Chaos], emulator: EmulatorServer) -> None:
    chaos = chaos_sqlite(users=1500)
    emulator.set_faults(Faults(latency=0.06))
    spec = chaos.spec(max_rows=50, in_flight=1)
    holder = chaos.start(spec, "users")
    chaos.wait_for_uploads(1, holder)
    impatient = chaos.start(spec, "users", "--wait=0.2")
    patient = chaos.start(spec, "users", "--wait")
    signalled = chaos.start(spec, "users", "--wait")
    deadline = time.monotonic() + 10
    log = chaos.tmp / f"stderr-{chaos.spawned.index(signalled)}.log"
    while "waiting for the lease" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    signalled.send_signal(signal.SIGTERM)

    gave_up, stopped = chaos.finish(impatient), chaos.finish(signalled)
    first, second = chaos.finish(holder), chaos.finish(patient)

    assert gave_up.code == 75
    assert "gave up after waiting 0.2 s" in gave_up.stderr
    assert f"(pid {holder.pid})" in gave_up.stderr
    assert stopped.code == 143
    assert stopped.report["users"]["status"] == "interrupted"
    assert first.code == 0 and first.report["users"]["sent"] == 1500
    assert second.code == 0
    assert "waiting for the lease on dataset users" in second.stderr
    # It waited, then found nothing left to send (the row at the mark is read again, skipped).
    assert (second.report["users"]["read"], second.report["users"]["sent"]) == (1, 0)
    assert set(chaos.user_deliveries().values()) == {1}


# -- signals -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_commits_what_was_acknowledged_and_the_rerun_sends_the_rest_once(
        signum: int, code: int, chaos_sqlite: Callable[..., Chaos],
        emulator: EmulatorServer) -> None:
    chaos = chaos_sqlite(users=2000, events=2000)
    emulator.set_faults(Faults(latency=0.03))
    spec = chaos.spec(max_rows=50, in_flight=4)
    run = chaos.start(spec, "--parallel", "2")
    assert chaos.wait_for_uploads(12, run)
    run.send_signal(signum)
    stopped = chaos.finish(run)

    assert stopped.code == code
    assert "interrupted" in {d["status"] for d in stopped.report.values()}
    no_batch_left_sending(chaos)
    store = chaos.state()
    try:
        users_mark, events_mark = store.get_mark("users"), store.get_mark("events")
    finally:
        store.close()
    # Every acknowledged batch committed: what AiTEMS holds is exactly what the marks cover.
    users_done = -1 if users_mark is None else user_index(users_mark.cursor)
    events_done = 0 if events_mark is None else int(events_mark.cursor)
    assert set(chaos.user_deliveries()) == set(range(users_done + 1))
    assert set(chaos.event_deliveries()) == set(range(1, events_done + 1))
    assert users_done + events_done < 3999  # it did stop early

    rerun = chaos.run(spec, "--parallel", "2")

    assert rerun.code == 0
    assert all(d["ambiguous"] == [] for d in rerun.report.values())
    assert set(chaos.user_deliveries().values()) == {1}
    assert set(chaos.event_deliveries().values()) == {1}
    assert sorted(chaos.event_deliveries()) == [e[0] for e in event_rows(2000)]
    assert len(chaos.user_deliveries()) == 2000


@pytest.mark.parametrize("how", ["grace period over", "second signal"])
def test_exiting_before_the_uploads_finish_leaves_them_ambiguous_for_the_next_run(
        how: str, chaos_sqlite: Callable[..., Chaos], emulator: EmulatorServer) -> None:
    chaos = chaos_sqlite(users=400)
    emulator.set_faults(Faults(latency=1.5))
    spec = chaos.spec(max_rows=50, in_flight=4)
    run = chaos.start(spec, "users", "--lease-ttl", "0.5",
                      "--grace", "0.2" if how == "grace period over" else "30")
    store = chaos.state()
    try:
        deadline = time.monotonic() + 10
        while len(store.unfinished_batches("users")) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        sent_at = time.monotonic()
        run.send_signal(signal.SIGTERM)
        if how == "second signal":
            time.sleep(0.1)
            run.send_signal(signal.SIGTERM)
        stopped = chaos.finish(run)
        took = time.monotonic() - sent_at
        on_the_wire = store.unfinished_batches("users")
    finally:
        store.close()

    assert stopped.code == 143
    assert took < 1.2  # well before the 1.5 s answers
    # Exited at once, with its report: nothing committed after the signal.
    assert stopped.report["users"]["status"] == "interrupted"
    assert stopped.report["users"]["ambiguous"] == []  # the next run reports those on the wire
    assert len(on_the_wire) == 4
    chaos.wait_for_uploads(4)  # the emulator stores them after its latency
    emulator.set_faults(Faults())

    rerun = chaos.run(spec, "users", "--wait=10")

    assert rerun.code == 0
    assert sorted(b["batch_id"] for b in rerun.report["users"]["ambiguous"]) == sorted(
        b.batch_id for b in on_the_wire)
    tally = check_delivery(chaos, [rerun.report], datasets=["users"])
    assert tally.extra_deliveries == 200  # the four batches, sent twice as reported


@pytest.mark.parametrize("wait", ["join", "result"])
def test_a_signal_the_kernel_hands_to_another_thread_is_heeded_while_the_main_thread_waits(
        wait: str) -> None:
    # Linux hands a process's signal to another thread when the main thread has one pending
    # already (a second SIGTERM right after the first, on a busy machine); CPython runs the
    # handler only on the main thread, between bytecodes, so a wait of the main thread that
    # nothing wakes would hold the handler back until it ends.
    seen: list[bool] = []
    with signals.stop_on_signals(grace=60) as request:
        def waited_for() -> None:
            time.sleep(0.2)  # the main thread is waiting by then
            signal.pthread_kill(threading.get_ident(), signal.SIGTERM)  # to this thread
            time.sleep(0.5)
            seen.append(request.event.is_set())

        if wait == "join":
            thread = threading.Thread(target=waited_for)
            thread.start()
            signals.join(thread)
        else:
            with ThreadPoolExecutor(1) as pool:
                signals.result(pool.submit(waited_for))
    assert seen == [True]  # handled while the main thread still waited
    assert request.exit_code == 143


# -- datasets in parallel ----------------------------------------------------------------------

def test_parallel_datasets_share_one_state_store_and_each_commits_in_order(
        store_kind: str, tmp_path: Path, emulator: EmulatorServer,
        request: pytest.FixtureRequest) -> None:
    chaos = _build(tmp_path, emulator, store_kind, request, users=1000, events=1000)
    emulator.set_faults(Faults(latency=0.02))

    outcome = chaos.run_here(chaos.spec(max_rows=50, in_flight=4), "--parallel", "2")

    assert outcome.code == 0
    assert check_delivery(chaos, [outcome.report]).extra_deliveries == 0
    store = chaos.state()
    try:
        spans = {}
        for name in ("users", "events"):
            journal = store.batches(name, limit=None, oldest_first=True)
            assert {b.status for b in journal} == {"committed"}
            commits = [b.updated_at for b in journal]
            assert commits == sorted(commits)
            spans[name] = (journal[0].created_at, journal[-1].updated_at)
    finally:
        store.close()
    (users_start, users_end), (events_start, events_end) = spans["users"], spans["events"]
    assert users_start < events_end and events_start < users_end  # they ran at the same time


def test_the_state_store_takes_journal_and_commits_from_many_threads_at_once(
        store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = (request.getfixturevalue("pg_url") if store_kind == "postgresql"
           else f"sqlite:///{tmp_path / 'state.db'}")
    store = StateStore.open(url)
    errors: list[BaseException] = []

    def sync(worker: int) -> None:
        name = f"dataset{worker}"
        try:
            store.acquire_lease(name, owner=f"run{worker}", host="h", pid=worker, ttl=60)
            for batch in range(40):
                first = Mark(batch * 10, (f"k{batch * 10}",))
                last = Mark(batch * 10 + 9, (f"k{batch * 10 + 9}",))
                batch_id = store.journal_sending(name, "run", rows=10, first=first, last=last)
                ledger = [LedgerEntry(worker * 10_000 + batch * 10 + i, i) for i in range(10)]
                store.commit_batch(name, run_id="run", batch_id=batch_id, ledger=ledger,
                                   mark=last)
                assert store.renew_lease(name, owner=f"run{worker}", ttl=60)
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    try:
        threads = [threading.Thread(target=sync, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert errors == []
        for worker in range(8):
            name = f"dataset{worker}"
            assert store.get_mark(name) == Mark(399, ("k399",))
            assert store.ledger_size(name) == 400
            journal = store.batches(name, limit=None)
            assert len(journal) == 40
            assert {b.status for b in journal} == {"committed"}
    finally:
        store.close()
