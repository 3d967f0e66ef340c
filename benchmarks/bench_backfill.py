"""Backfill: the first run over a table, every row read, shaped, validated, hashed and sent.

    .venv/bin/python benchmarks/bench_backfill.py [--table events|items|both] [--rows 1000000]
                                                  [--in-flight 4] [--extract-worker] [--profile]

``events`` is an interaction table (4 fields, integer cursor); ``items`` an item table of 8
fields (text, nullable text, double, int, float, long) with a text ``updated_at`` cursor. Rows go
to the emulator in 1,000-row batches. Printed per table: rows/s and wall seconds of the
``aitems-sync run`` process (start included), its peak RSS and CPU, and the emulator's CPU.
Target: >= 100,000 rows/s. ``--extract-worker`` runs ``aitems-sync run --extract-worker``: past
20,000 rows a second process reads and prepares the rows (its CPU counts in the run's, and its
memory is shown beside the run's).

``--profile`` runs the child under py-spy (installed in .venv) and writes
``benchmarks/data/profile-<table>.txt`` (collapsed stacks, every thread, idle included) and its
summary by pipeline stage (``bench_profile.py``) in ``profile-<table>-summary.txt``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench_profile import profiler, summarise_profile
from harness import (
    Emulator,
    Figure,
    emulator,
    machine,
    run_sync,
    show,
    source_db,
    warm_up,
    workdir,
    write_spec,
)

TARGET_ROWS_PER_SECOND = 100_000
WORKER_LABEL = ", extract worker"


def backfill(
    emu: Emulator, table: str, rows: int, *, in_flight: int = 4, name: str | None = None,
    private_source: bool = False, wrap: tuple[str, ...] = (), worker: bool = False,
) -> tuple[Figure, Path, Path]:
    """Sync a fresh copy of ``rows`` rows of ``table`` into an empty state; the figure, the
    spec (its state now holds the backfill) and the source file. ``worker``: with
    ``--extract-worker``."""
    label = name or f"backfill {table}{WORKER_LABEL if worker else ''}"
    copy = f"{label.replace(' ', '-')}.db" if private_source else None
    source = source_db(table, rows, copy_as=copy)
    spec = write_spec(workdir(label.replace(" ", "-")), table, emu.url, source,
                      in_flight=in_flight)
    measure = run_sync(spec, *(["--extract-worker"] if worker else []), emu=emu, wrap=wrap)
    measure.check(table, read=rows, sent=rows)
    met = measure.rate(rows) >= TARGET_ROWS_PER_SECOND
    figure = Figure(label, rows, measure, target=">= 100,000 rows/s", met=met)
    return figure, spec, source


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--table", choices=["events", "items", "both"], default="both")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--extract-worker", action="store_true",
                        help="run with --extract-worker (a second process reads the rows)")
    parser.add_argument("--profile", action="store_true",
                        help="record the run with py-spy (the figures then include its cost)")
    args = parser.parse_args()
    print(machine())
    tables = ["events", "items"] if args.table == "both" else [args.table]
    with emulator() as emu:
        warm_up(emu)
        for table in tables:
            wrap = profiler(table) if args.profile else ()
            figure, _, _ = backfill(emu, table, args.rows, in_flight=args.in_flight, wrap=wrap,
                                    worker=args.extract_worker)
            show(figure)
            if args.profile:
                print(summarise_profile(table))


if __name__ == "__main__":
    main()
