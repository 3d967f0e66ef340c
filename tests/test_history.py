"""`history` tells the truth about runs that did not end well: a run killed with -9 is recorded
as `crashed` (by the next run, with what its committed batches delivered), a run stopped by
SIGTERM as `interrupted`; neither stays `running` or shows `ok`."""

from __future__ import annotations

import signal
from pathlib import Path

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
