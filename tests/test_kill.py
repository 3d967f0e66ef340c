"""SIGKILL at a random moment, then a re-run: every row delivered, duplicates only where reported.

Each case starts `aitems-sync run` (users and interactions, two datasets in parallel, small
batches, 4 in flight) as a real process against the emulator with 30 ms of latency, kills it with
SIGKILL after a random number of accepted uploads, and runs it again to completion with
``--wait`` (the dead run's lease expires half a second after its last renewal). The emulator's
record of every delivery is then checked against the source: nothing is missing, and each row
delivered twice lies in a batch the re-run reported as ambiguous. benchmarks/soak_kill.py runs
the same loop 100 times.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aitems_sync.emulator.server import EmulatorServer, Faults
from tests.chaos import Chaos, KillResult, kill_and_resume

ROWS = 2000  # per dataset: 40 batches of 50 rows each


def _kill_round(tmp: Path, emulator: EmulatorServer, seed: int, **urls: str) -> KillResult:
    """Odd seeds identify events by their id (``key: [event_id]``, not a field), even seeds by
    the whole row."""
    emulator.set_faults(Faults(latency=0.03))
    chaos = Chaos.build(tmp, emulator, users=ROWS, events=ROWS, **urls)
    try:
        return kill_and_resume(chaos, seed, events_key="key: [event_id]" if seed % 2 else "")
    finally:
        chaos.stop_all()


@pytest.mark.parametrize("seed", range(20))
def test_sigkill_then_rerun_delivers_every_row_and_duplicates_only_in_ambiguous_batches(
        seed: int, tmp_path: Path, emulator: EmulatorServer) -> None:
    result = _kill_round(tmp_path, emulator, seed)

    assert result.tally.rows == 2 * ROWS
    # A row can only be duplicated through a batch that was on the wire when the run died.
    assert result.tally.duplicated_rows <= 50 * result.tally.ambiguous_batches


@pytest.mark.parametrize("seed", [100, 101])
def test_sigkill_then_rerun_on_postgresql(seed: int, tmp_path: Path, emulator: EmulatorServer,
                                         pg_url: str) -> None:
    result = _kill_round(tmp_path, emulator, seed, source_url=pg_url, state_url=pg_url)

    assert result.tally.rows == 2 * ROWS
    assert result.tally.duplicated_rows <= 50 * result.tally.ambiguous_batches
