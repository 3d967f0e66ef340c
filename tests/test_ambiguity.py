"""Ambiguity is reported exactly where it exists: a batch whose answer proves nothing was
stored (connection refused, 401, 429 ...) is journalled `failed` and never called ambiguous,
while a batch a dead run left on the wire stays listed until a run that completes has reported
it, even when the run that found it is killed too."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from aitems_sync.emulator.server import EmulatorServer, Faults
from aitems_sync.state.store import Mark
from tests.chaos import Chaos, history
from tests.test_client import closed_port

ROWS = 500





def statuses(chaos: Chaos, dataset: str = "users") -> list[str]:
    with chaos.state() as store:
        return [b.status for b in store.batches(dataset, limit=None)]


@pytest.mark.parametrize("failure", ["refused", "401", "429"])
def test_a_batch_that_certainly_never_landed_is_failed_not_ambiguous(
        tmp_path: Path, emulator: EmulatorServer, failure: str) -> None:
    chaos = Chaos.build(tmp_path, emulator, users=ROWS)
    good = chaos.spec(attempts=2)
    if failure == "refused":
        bad = good.with_name("bad.yaml")
        bad.write_text(good.read_text().replace(emulator.base_url,
                                                f"http://127.0.0.1:{closed_port()}/api/v1"))
    elif failure == "401":
        bad = chaos.spec(attempts=2, secret_key="not-the-secret", name="bad.yaml")
    else:
        bad = good
        emulator.set_faults(Faults(statuses=[429] * 10, retry_after=None))

    failed = chaos.run_here(bad, "users")
    emulator.set_faults(Faults())
    journal = statuses(chaos)
    rerun = chaos.run_here(good, "users")

    assert failed.code == 1
    if failure == "429":  # the emulator's faults hit uploads: the batch was journalled
        assert journal and set(journal) == {"failed"}
    else:  # the run's first call (its read of the service) met it: nothing was journalled
        assert journal == []
        assert "GET /api/v1/services/svcdemo0001" in failed.report["users"]["error"]
    assert rerun.code == 0, rerun.stderr
    assert rerun.report["users"]["ambiguous"] == []
    assert "AiTEMS may now hold those rows twice" not in rerun.stderr
    assert rerun.report["users"]["sent"] == ROWS
    assert sorted(chaos.user_deliveries().values()) == [1] * ROWS


def test_a_failure_that_may_have_landed_is_reported_ambiguous_once(
        tmp_path: Path, emulator: EmulatorServer) -> None:
    """A 502 may have been stored: the run that got it reports the batch ambiguous, and, as it
    completed, the next run (which sends those rows again) does not report it a second time."""
    chaos = Chaos.build(tmp_path, emulator, users=ROWS)
    emulator.set_faults(Faults(statuses=[502] * 10, retry_after=None))

    failed = chaos.run_here(chaos.spec(attempts=2), "users")
    emulator.set_faults(Faults())
    journal = statuses(chaos)
    rerun = chaos.run_here(chaos.spec(), "users")

    assert failed.code == 1
    ambiguous = failed.report["users"]["ambiguous"]
    assert ambiguous and all("may have landed" in a["reason"] for a in ambiguous)
    assert sorted(b for b in journal if b != "committed") == ["reported"] * len(ambiguous)
    assert rerun.report["users"]["ambiguous"] == []
    assert rerun.report["users"]["sent"] == ROWS


def test_ambiguous_batches_are_reported_by_the_first_run_that_completes(
        tmp_path: Path, emulator: EmulatorServer) -> None:
    """A dead run left a batch `sending`; the run that finds it is killed too; the run after
    that still reports it, and once reported it is not reported again."""
    chaos = Chaos.build(tmp_path, emulator, users=ROWS)
    spec = chaos.spec(max_rows=50)
    with chaos.state() as store:  # what a run killed mid-upload leaves
        store.acquire_lease("users", owner="dead-run", host="elsewhere", pid=1, ttl=60)
        left = store.journal_sending("users", "dead-run", rows=50,
                                     first=Mark("2026-03-01 12:00:00", ("u00000",)),
                                     last=Mark("2026-03-01 12:00:49", ("u00049",)))
        store.release_lease("users", owner="dead-run")
    emulator.set_faults(Faults(latency=0.2))
    try:
        finder = chaos.start(spec, "users", "--lease-ttl", "0.5")
        log = tmp_path / "stderr-0.log"
        deadline = time.monotonic() + 30
        while "ambiguous_batch" not in log.read_text() and "was on the wire" not in log.read_text():
            assert time.monotonic() < deadline and finder.poll() is None, log.read_text()
            time.sleep(0.01)
        finder.send_signal(signal.SIGKILL)
        finder.wait()
        emulator.set_faults(Faults())
        final = chaos.run(spec, "users", "--wait=30")
        after = chaos.run(spec, "users")
    finally:
        chaos.stop_all()

    assert final.code == 0, final.stderr[-2000:]
    assert [a["batch_id"] for a in final.report["users"]["ambiguous"]] == [left]
    assert after.report["users"]["ambiguous"] == []
    runs = history(spec)
    reported = [r for r in runs if any(d.get("ambiguous") for d in r["datasets"])]
    assert [r["status"] for r in reported] == ["ok"]
    with chaos.state() as store:
        [record] = [b for b in store.batches("users", limit=None) if b.batch_id == left]
    assert record.status == "reported"
