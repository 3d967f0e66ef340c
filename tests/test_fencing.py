"""A run that stalls (SIGSTOP) past its lease and wakes after another run took the dataset over
sends and commits nothing more: the promise holds across the takeover.

Run 1 is stopped in the middle of its uploads; while it sleeps the shop changes (newer versions
of some users) and run 2 takes the expired lease over and finishes; then run 1 is woken. It must
exit 1 saying it lost the lease, its marks must not move, and after a last run every row is
delivered, every duplicate lies in a batch reported ambiguous, and AiTEMS holds the newest
version of every user: a request of run 1 that may have landed after the takeover is recorded
when its answer comes in, and the next run sends its keys' newest versions again.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aitems_sync.emulator.server import EmulatorServer, Faults
from aitems_sync.state.marks import Mark
from tests import mariadbserver, pgserver
from tests.chaos import USERS_ID, Chaos, check_delivery
from tests.shop import T0, Shop

ROWS = 2000  # per dataset: 40 batches of 50 rows
TTL = 2.0
CHANGED = range(0, ROWS, 7)  # users given a new AGE while run 1 sleeps


def _marks(chaos: Chaos) -> dict[str, Mark | None]:
    store = chaos.state()
    try:
        return {name: store.get_mark(name) for name in ("users", "events")}
    finally:
        store.close()


def _age_later(chaos: Chaos) -> None:
    """A newer version of every CHANGED user: AGE + 100, updated a day later."""
    shop = Shop(chaos.source_url)
    try:
        for index in CHANGED:
            shop.update_customer(f"u{index:05d}", age=200 + index % 50,
                                 updated_at=T0 + timedelta(days=1, seconds=index))
    finally:
        shop.close()


def _ages_at_aitems(emulator: EmulatorServer) -> dict[str, Any]:
    return {row["USER_ID"]: row["AGE"] for row in emulator.received(USERS_ID).rows}


def _newest_age(index: int) -> int:
    return 200 + index % 50 if index in CHANGED else 20 + index % 50


def _in_ambiguous(reports: list[dict[str, dict[str, Any]]], at: datetime) -> bool:
    return any(datetime.fromisoformat(b["first_cursor"]) <= at
               <= datetime.fromisoformat(b["last_cursor"])
               for r in reports if "users" in r for b in r["users"]["ambiguous"])


def _deliveries(chaos: Chaos) -> Counter[tuple[str, Any]]:
    """How many times each user version (USER_ID, AGE) reached AiTEMS."""
    return Counter((row["USER_ID"], row["AGE"])
                   for row in chaos.emulator.received(USERS_ID).deliveries)


def _check_user_versions(chaos: Chaos, reports: list[dict[str, dict[str, Any]]],
                         versions: Counter[tuple[str, Any]]) -> None:
    """Each user's newest version arrived (in ``versions``, the deliveries before the last
    run); a version that arrived twice lies in a batch some run reported ambiguous (by its
    cursor: the version's updated_at)."""
    ambiguous = [b for r in reports if "users" in r for b in r["users"]["ambiguous"]]
    missing = [i for i in range(ROWS) if versions[(f"u{i:05d}", _newest_age(i))] == 0]
    assert not missing, f"users never given their newest version: {missing[:5]}"
    for (user, age), copies in versions.items():
        index = int(user[1:])
        at = T0 + timedelta(days=1 if age >= 200 else 0, seconds=index)
        cover = sum(1 for b in ambiguous if datetime.fromisoformat(b["first_cursor"]) <= at
                    <= datetime.fromisoformat(b["last_cursor"]))
        assert copies - 1 <= cover, f"{user} AGE {age} arrived {copies} times, {cover} reported"


def _stall_and_take_over(chaos: Chaos, seed: int) -> bool:
    """One round; True when run 2 took the lease over while run 1 slept.

    A run stopped inside a state-store write transaction holds the store (SQLite) or the lease
    row (PostgreSQL, MariaDB) until it wakes: run 2 then waits, and takes over only after run 1
    has finished that transaction. The promise must hold either way.
    """
    rng = random.Random(seed)
    spec = chaos.spec(max_rows=50, in_flight=4)
    run1 = chaos.start(spec, "--parallel", "2", "--lease-ttl", str(TTL))
    assert chaos.wait_for_uploads(rng.randrange(3, 40), run1), "run 1 ended before its stall"
    time.sleep(rng.uniform(0, 0.03))
    run1.send_signal(signal.SIGSTOP)
    try:
        _age_later(chaos)
        run2 = chaos.start(spec, "--parallel", "2", "--wait=60")
        took_over = _ended_within(run2, TTL + 4)
        after_takeover = _marks(chaos) if took_over else {}
    finally:
        run1.send_signal(signal.SIGCONT)
    woken, second = chaos.finish(run1), chaos.finish(run2)
    after_wake = _marks(chaos)
    before_last = _deliveries(chaos)
    last = chaos.run(spec, "--parallel", "2")  # sends again what may have landed late
    final = chaos.run(spec, "--parallel", "2")

    assert second.code == 0, second.stderr[-2000:]
    if took_over:
        assert woken.code == 1, woken.stderr[-2000:]
        assert "lease" in woken.stderr
        assert after_wake == after_takeover, "the woken run moved a mark"
    assert last.code == 0, last.stderr[-2000:]
    reports = [second.report, last.report, woken.report]
    check_delivery(chaos, reports, datasets=("events",))
    _check_user_versions(chaos, reports, before_last)
    # A request that left, or landed, after run 2 took over may have put old versions over new
    # ones: run 1 recorded it when its answer came in, and the last run sent the newest
    # versions of its keys again. Every user now holds its newest version.
    stale = {user: age for user, age in _ages_at_aitems(chaos.emulator).items()
             if age != _newest_age(int(user[1:]))}
    assert not stale, f"users left with an old version: {stale}"
    repaired = _deliveries(chaos) - before_last
    outside = [u for u, _ in repaired if not _in_ambiguous(
        reports, T0 + timedelta(seconds=int(u[1:])))]
    assert not outside, f"users sent again outside any ambiguous batch: {outside[:5]}"
    assert final.code == 0 and all(d["sent"] == 0 for d in final.report.values()), final.report
    return took_over


def _ended_within(process: subprocess.Popen[str], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while process.poll() is None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _rounds(tmp: Path, emulator: EmulatorServer, seeds: range, takeovers: int,
            database: Callable[[], str] | None = None) -> None:
    """Rounds until ``takeovers`` of them saw run 2 take over while run 1 slept; ``database``
    makes a fresh database for a round's shop and state store (default: SQLite files)."""
    emulator.set_faults(Faults(latency=0.03))
    seen = 0
    for seed in seeds:
        emulator.model.reset_data()
        folder = tmp / f"round-{seed}"
        urls = {} if database is None else dict.fromkeys(("source_url", "state_url"), database())
        chaos = Chaos.build(folder, emulator, users=ROWS, events=ROWS, **urls)
        if database is None:  # a sleeping reader must not block the shop's writes
            with closing(sqlite3.connect(folder / "shop.db")) as db:
                db.execute("PRAGMA journal_mode=WAL")
        try:
            seen += _stall_and_take_over(chaos, seed)
        finally:
            chaos.stop_all()
        if seen >= takeovers:
            return
    raise AssertionError(f"only {seen} of {len(seeds)} rounds saw a takeover")


def test_a_run_woken_after_a_takeover_sends_and_commits_nothing_more(
        tmp_path: Path, emulator: EmulatorServer) -> None:
    _rounds(tmp_path, emulator, range(10), takeovers=3)


def test_a_run_woken_after_a_takeover_on_postgresql(
        tmp_path: Path, emulator: EmulatorServer, pg_cluster: str) -> None:
    _rounds(tmp_path, emulator, range(100, 106), takeovers=1,
            database=lambda: pgserver.create_database(pg_cluster))


def test_a_run_woken_after_a_takeover_on_mariadb(
        tmp_path: Path, emulator: EmulatorServer, mariadb_server: str) -> None:
    _rounds(tmp_path, emulator, range(200, 206), takeovers=1,
            database=lambda: mariadbserver.create_database(mariadb_server))


def test_a_straggler_that_lands_after_a_takeover_is_repaired_by_the_next_run(
        tmp_path: Path, emulator: EmulatorServer) -> None:
    """Run 1's only upload reaches AiTEMS 5 s late (the emulator holds it), after run 1 stalled
    and run 2 took over and sent newer versions of every user: AiTEMS then holds the old ones.
    Run 1 learns it when its answer comes in; the next run sends the newest versions again."""
    users = 50
    chaos = Chaos.build(tmp_path, emulator, users=users)
    spec = chaos.spec(max_rows=100, in_flight=1)
    emulator.set_faults(Faults(delays=[5.0]))
    try:
        run1 = chaos.start(spec, "users", "--lease-ttl", str(TTL))
        deadline = time.monotonic() + 20
        while emulator.faults.faults.delays:  # until the straggler is at the emulator
            assert time.monotonic() < deadline and run1.poll() is None
            time.sleep(0.01)
        arrived = time.monotonic()
        run1.send_signal(signal.SIGSTOP)
        shop = Shop(chaos.source_url)
        for index in range(users):
            shop.update_customer(f"u{index:05d}", age=200 + index,
                                 updated_at=T0 + timedelta(days=1, seconds=index))
        shop.close()
        second = chaos.run(spec, "users", "--wait=30")
        mark = _marks(chaos)["users"]
        time.sleep(max(0.0, arrived + 5.5 - time.monotonic()))  # the straggler is stored
        stale = sorted(_ages_at_aitems(emulator).values())
        run1.send_signal(signal.SIGCONT)
        woken = chaos.finish(run1)
        repair = chaos.run(spec, "users")
        after = chaos.run(spec, "users")
    finally:
        chaos.stop_all()

    assert second.code == 0 and second.report["users"]["sent"] == users
    assert stale == [20 + i % 50 for i in range(users)]  # the old versions won at AiTEMS
    assert woken.code == 1 and "may have reached AiTEMS after this run lost its lease" in (
        woken.stderr)
    assert repair.code == 0, repair.stderr[-2000:]
    assert repair.report["users"]["sent"] == users
    assert sorted(_ages_at_aitems(emulator).values()) == [200 + i for i in range(users)]
    assert after.report["users"]["sent"] == 0
    assert _marks(chaos)["users"] == mark  # the repair moved no mark back
