"""`history` tells the truth about runs that did not end well: a run killed with -9 is recorded
as `crashed` (by the next run, with what its committed batches delivered), a run stopped by
SIGTERM as `interrupted`, one whose state store failed as `failed`; none stays `running` or
shows `ok`, and each that can still print prints its report and frees its leases."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import pytest

from aitems_sync.emulator.server import EmulatorServer, Faults
from tests.chaos import Chaos, history

ROWS = 2000


def test_a_killed_run_is_recorded_as_crashed_with_what_it_committed(
        tmp_path: Path, emulator: EmulatorServer) -> None:
    emulator.set_faults(Faults(latency=0.03))
    chaos = Chaos.build(tmp_path, emulator, users=ROWS)
    spec = chaos.spec()
    try:
        killed = chaos.start(spec, "users", "--lease-ttl", "0.5")
        assert chaos.wait_for_uploads(12, killed)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        before_rerun = history(spec)
        rerun = chaos.run(spec, "users", "--wait=30")
    finally:
        chaos.stop_all()
    runs = history(spec)

    assert [r["status"] for r in before_rerun] == ["running"]
    assert rerun.code == 0, rerun.stderr[-2000:]
    assert "recorded as crashed" in rerun.stderr
    assert [r["status"] for r in runs] == ["ok", "crashed"]
    [crashed] = runs[1]["datasets"]
    assert crashed["status"] == "crashed"
    # Its committed batches and the re-run's delivered each row once between them.
    assert crashed["sent"] > 0
    assert crashed["sent"] + runs[0]["datasets"][0]["sent"] == ROWS


def test_a_run_stopped_by_sigterm_is_recorded_as_interrupted(
        tmp_path: Path, emulator: EmulatorServer) -> None:
    emulator.set_faults(Faults(latency=0.03))
    chaos = Chaos.build(tmp_path, emulator, users=ROWS)
    spec = chaos.spec()
    try:
        stopped = chaos.start(spec, "users")
        assert chaos.wait_for_uploads(5, stopped)
        stopped.send_signal(signal.SIGTERM)
        outcome = chaos.finish(stopped)
    finally:
        chaos.stop_all()

    assert outcome.code == 143, outcome.stderr[-2000:]
    [run] = history(spec)
    assert run["status"] == "interrupted"
    assert run["datasets"][0]["status"] == "interrupted"


@pytest.mark.parametrize("how", ["second signal", "grace over"])
def test_a_run_that_exits_at_once_prints_its_report_records_it_and_frees_its_leases(
        tmp_path: Path, emulator: EmulatorServer, how: str) -> None:
    emulator.set_faults(Faults(latency=1.0))  # uploads still on the wire when it exits
    chaos = Chaos.build(tmp_path, emulator, users=ROWS)
    spec = chaos.spec()
    try:
        grace = ["--grace", "0.3"] if how == "grace over" else []
        stopped = chaos.start(spec, "users", "--lease-ttl", "60", *grace)
        assert chaos.wait_for_uploads(4, stopped)
        stopped.send_signal(signal.SIGTERM)
        if how == "second signal":
            time.sleep(0.2)
            stopped.send_signal(signal.SIGTERM)
        started = time.monotonic()
        outcome = chaos.finish(stopped)
        exited_in = time.monotonic() - started
        emulator.set_faults(Faults())
        runs = history(spec)
        after = chaos.run(spec, "users")  # no --wait: the lease must be free
    finally:
        chaos.stop_all()

    assert outcome.code == 143, outcome.stderr[-2000:]
    assert exited_in < 10
    assert outcome.report["users"]["status"] == "interrupted"
    assert "stopped at once" in outcome.report["users"]["error"]
    assert [r["status"] for r in runs] == ["interrupted"]
    assert after.code == 0, after.stderr[-2000:]
    assert sorted(set(chaos.user_deliveries())) == list(range(ROWS))


def test_a_run_whose_state_store_fails_records_failed_once_it_answers_again(
        tmp_path: Path, emulator: EmulatorServer) -> None:
    """The state store is locked by another process for longer than a writer waits (10 s):
    the dataset fails, and the run keeps trying to give its lease back and record its end
    until the store answers again, then prints its report."""
    emulator.set_faults(Faults(latency=0.03))
    chaos = Chaos.build(tmp_path, emulator, users=ROWS)
    spec = chaos.spec()
    try:
        failing = chaos.start(spec, "users", "--lease-ttl", "3")
        assert chaos.wait_for_uploads(3, failing)
        locker = sqlite3.connect(tmp_path / "state.db", isolation_level=None, timeout=30)
        locker.execute("BEGIN EXCLUSIVE")
        time.sleep(32)  # past the dataset's failure and the first tries to finish
        locker.execute("ROLLBACK")
        outcome = chaos.finish(failing)
        runs = history(spec)
        after = chaos.run(spec, "users")  # no --wait: the lease must be free
        locker.close()
    finally:
        chaos.stop_all()

    assert outcome.code == 1, outcome.stderr[-2000:]
    assert outcome.report["users"]["status"] == "failed"
    assert "database is locked" in outcome.report["users"]["error"]
    assert [r["status"] for r in runs] == ["failed"]
    assert after.code == 0, after.stderr[-2000:]
    assert sorted(set(chaos.user_deliveries())) == list(range(ROWS))
