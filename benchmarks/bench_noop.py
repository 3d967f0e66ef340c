"""No-op rerun: a second `aitems-sync run` over a backfilled table in which nothing changed.

    .venv/bin/python benchmarks/bench_noop.py [--rows 1000000] [--table events|items]
                                              [--repeat 5]

    # the issue's case, 10M rows (generating takes ~10 s, the backfill several minutes):
    .venv/bin/python benchmarks/bench_noop.py --rows 10000000

Backfills the table (reported too), then times ``--repeat`` no-op runs from spawn to exit
(process start included) and prints the median. Also printed: the start-up floor, i.e. the
wall time of ``aitems-sync --version`` and of importing what ``run`` imports. Target: the no-op
run on 10M rows <= 0.5 s.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_backfill import backfill
from bench_profile import profiler, summarise_profile
from harness import (
    CHILD_ENV,
    CLI,
    Emulator,
    Figure,
    emulator,
    machine,
    median,
    run_sync,
    show,
    wait_for_quiet,
    warm_up,
)

TARGET_SECONDS = 0.5


def noop(emu: Emulator, spec: Path, table: str, rows: int, *, repeat: int = 5) -> Figure:
    """Median of ``repeat`` runs that find nothing to send, over a backfilled table."""
    runs = []
    for _ in range(repeat):
        measure = run_sync(spec, emu=emu)
        measure.check(table, sent=0, new=0, changed=0)  # items re-read the mark's rows
        runs.append(measure)
    chosen = median(runs)
    spread = ", ".join(f"{m.seconds:.2f}" for m in sorted(runs, key=lambda m: m.seconds))
    return Figure(f"no-op rerun, {table} {rows:,}", 0, chosen, target="<= 0.5 s",
                  met=chosen.seconds <= TARGET_SECONDS, note=f"runs: {spread} s")


def _wall(command: list[str], repeat: int) -> float:
    times = []
    wait_for_quiet()
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=CHILD_ENV)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def startup_floor(repeat: int = 5) -> list[str]:
    """Median wall seconds of the process starts a no-op run cannot avoid, as printable lines."""
    python = sys.executable
    imports = "import aitems_sync.cli.main, aitems_sync.commands"
    cases = [
        ("python -c pass", [python, "-c", "pass"]),
        ("python -c 'import aitems_sync.cli.main'", [python, "-c", "import aitems_sync.cli.main"]),
        (f"python -c '{imports}'", [python, "-c", imports]),
        ("aitems-sync --version", [str(CLI), "--version"]),
    ]
    return [f"  start-up floor: {label:<58} {_wall(command, repeat):6.3f} s"
            for label, command in cases]


def import_costs(emu: Emulator, spec: Path, table: str, top: int = 12) -> list[str]:
    """Import time per top-level package in a no-op run (``python -X importtime``): the sum of
    its modules' own times, so the lines add up to the whole import time; as printable lines."""
    measure = run_sync(spec, emu=emu, wrap=(sys.executable, "-X", "importtime"))
    measure.check(table, sent=0)
    totals: dict[str, int] = {}
    for found in map(_IMPORT.match, measure.log.splitlines()):
        if found:
            package = found["name"].split(".")[0]
            totals[package] = totals.get(package, 0) + int(found["own"])
    ranked = sorted(totals.items(), key=lambda item: -item[1])
    lines = [f"  imports in a no-op run: {package:<28} {micros / 1000:7.1f} ms"
             for package, micros in ranked[:top]]
    rest = sum(micros for _, micros in ranked[top:])
    lines.append(f"  imports in a no-op run: {'(the rest)':<28} {rest / 1000:7.1f} ms")
    lines.append(f"  imports in a no-op run: {'total':<28} {sum(totals.values()) / 1000:7.1f} ms"
                 " (-X importtime inflates it)")
    return lines


_IMPORT = re.compile(r"^import time:\s+(?P<own>\d+) \|\s+\d+ \| +(?P<name>\S+)$")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--table", choices=["events", "items"], default="events")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true",
                        help="also record one no-op run with py-spy (profile-noop.txt)")
    args = parser.parse_args()
    print(machine())
    with emulator() as emu:
        warm_up(emu)
        figure, spec, _ = backfill(emu, args.table, args.rows)
        show(figure)
        show(noop(emu, spec, args.table, args.rows, repeat=args.repeat))
        print("\n".join(import_costs(emu, spec, args.table)))
        if args.profile:
            run_sync(spec, emu=emu, wrap=profiler("noop")).check(args.table, sent=0)
            print(summarise_profile("noop"))
    for line in startup_floor():
        print(line)


if __name__ == "__main__":
    main()
