"""Peak RSS of `aitems-sync run` backfilling 100k, 1M (and, opt-in, 10M) rows.

    .venv/bin/python benchmarks/bench_memory.py [--rows 100000 1000000] [--table events items]
                                                [--extract-worker]

    # with the issue's 10M case (the events backfill then takes several minutes):
    .venv/bin/python benchmarks/bench_memory.py --rows 100000 1000000 10000000 --table events

The peak resident set of the run process and its extraction worker together (sampled from
/proc, see harness.py) should not grow with the table: rows stream in chunks and batches are
bounded. Targets: <= 100 MB at every size, and flat: the largest size's peak at most 10 MB
above the smallest's.
"""

from __future__ import annotations

import argparse

from bench_backfill import WORKER_LABEL, backfill
from harness import Emulator, Figure, emulator, machine, show, warm_up

TARGET_MB = 100.0
FLAT_MB = 10.0


def memory_runs(emu: Emulator, table: str, sizes: list[int], *,
                worker: bool = False) -> list[Figure]:
    """One backfill per size; each figure judged against 100 MB."""
    figures = []
    suffix = WORKER_LABEL if worker else ""
    for rows in sizes:
        figure, _, _ = backfill(emu, table, rows, name=f"memory: {table} backfill{suffix}",
                                worker=worker)
        figure.name = f"memory: {table} {rows:,}{suffix}"
        figure.target, figure.met = "<= 100 MB", figure.measure.memory_mb <= TARGET_MB
        figures.append(show(figure))
    return figures


def flatness(figures: list[Figure]) -> str:
    """One line: growth of the peak from the smallest to the largest size."""
    small, large = figures[0], figures[-1]
    growth = large.measure.memory_mb - small.measure.memory_mb
    verdict = "MET" if growth <= FLAT_MB else "SHORT"
    return (f"  flat: {small.rows:,} -> {large.rows:,} rows: {small.measure.memory_mb:.1f} -> "
            f"{large.measure.memory_mb:.1f} MB ({growth:+.1f} MB; target <= +{FLAT_MB:.0f} MB)"
            f"  {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--table", nargs="+", choices=["events", "items"],
                        default=["events", "items"])
    parser.add_argument("--extract-worker", action="store_true",
                        help="run with --extract-worker (the worker's memory counts too)")
    args = parser.parse_args()
    print(machine())
    with emulator() as emu:
        warm_up(emu)
        for table in args.table:
            print(flatness(memory_runs(emu, table, sorted(args.rows),
                                       worker=args.extract_worker)))


if __name__ == "__main__":
    main()
