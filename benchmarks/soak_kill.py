"""Kill soak: SIGKILL `aitems-sync run` at random moments, re-run, check the delivery promise.

    .venv/bin/python benchmarks/soak_kill.py [--rounds 100] [--rows 2000] [--latency 0.03]
                                             [--max-rows 50] [--in-flight 4] [--first-seed 0]

The loop of tests/test_kill.py, more times: each round builds a fresh SQLite shop (users and
interactions, ``--rows`` each) and a fresh emulator with ``--latency``, starts `aitems-sync run
--parallel 2` as a process, SIGKILLs it after a random number of accepted uploads (or at a random
time, possibly before any), runs it again with ``--wait`` to completion, and checks what the
emulator received: every source row delivered, and every row delivered more than once inside a
batch the re-run reported as ambiguous. Odd rounds identify events by their id
(``key: [event_id]``, a column that is not uploaded), even rounds by the whole row, as
tests/test_kill.py does. Prints one line per round and a summary; exits 1 if any round broke the
promise.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aitems_sync.emulator.server import EmulatorServer, Faults, load_seed  # noqa: E402
from tests.chaos import Chaos, KillResult, kill_and_resume  # noqa: E402

SEED_FILE = ROOT / "examples" / "emulator-seed.yaml"


def one_round(seed: int, args: argparse.Namespace, tmp: Path) -> KillResult:
    """Build, kill, resume and check once; AssertionError if the promise was broken."""
    server = EmulatorServer(seed=load_seed(SEED_FILE), port=0,
                            faults=Faults(latency=args.latency))
    server.start()
    chaos = Chaos.build(tmp, server, users=args.rows, events=args.rows)
    try:
        return kill_and_resume(chaos, seed, max_rows=args.max_rows, in_flight=args.in_flight,
                               events_key="key: [event_id]" if seed % 2 else "")
    finally:
        chaos.stop_all()
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--rows", type=int, default=2000, help="rows per dataset")
    parser.add_argument("--latency", type=float, default=0.03, help="emulator latency, s")
    parser.add_argument("--max-rows", type=int, default=50, help="batch.max_rows")
    parser.add_argument("--in-flight", type=int, default=4, help="batch.in_flight")
    parser.add_argument("--first-seed", type=int, default=0)
    args = parser.parse_args()

    results: list[KillResult] = []
    broken: list[tuple[int, str]] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="soak-kill-") as base:
        for seed in range(args.first_seed, args.first_seed + args.rounds):
            try:
                result = one_round(seed, args, Path(base) / f"round-{seed}")
            except AssertionError as error:
                broken.append((seed, str(error)))
                print(f"seed {seed:4d}: BROKEN: {error}", flush=True)
                continue
            results.append(result)
            t = result.tally
            print(f"seed {seed:4d}: killed after {result.killed_after_uploads:3d} uploads "
                  f"({'while running' if result.killed_mid_run else 'after it ended'}), "
                  f"{t.ambiguous_batches} ambiguous batch(es), {t.duplicated_rows} rows twice, "
                  f"{result.seconds:.1f} s", flush=True)

    print()
    print(f"rounds: {args.rounds}, {args.rows} users + {args.rows} interactions each, "
          f"batches of {args.max_rows}, in_flight {args.in_flight}, latency {args.latency} s")
    print(f"promise kept: {len(results)}, broken: {len(broken)}")
    if results:
        mid = sum(r.killed_mid_run for r in results)
        early = sum(r.killed_mid_run and r.killed_after_uploads == 0 for r in results)
        ambiguous = [r.tally.ambiguous_batches for r in results]
        duplicated = [r.tally.duplicated_rows for r in results]
        print(f"killed while running: {mid} ({early} before any upload landed); "
              f"ambiguous batches per round: mean "
              f"{statistics.mean(ambiguous):.1f}, max {max(ambiguous)}; rows delivered twice "
              f"per round: mean {statistics.mean(duplicated):.0f}, max {max(duplicated)} "
              f"(always inside a reported batch)")
    print(f"total time: {time.monotonic() - started:.0f} s")
    for seed, message in broken:
        print(f"BROKEN seed {seed}: {message}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
