"""Delta run: 10,000 changed rows in a backfilled table of 1,000,000.

    .venv/bin/python benchmarks/bench_delta.py [--rows 1000000] [--changed 10000]
                                               [--table items|events|both] [--repeat 3]

``items``: after the backfill (reported too), ``--changed`` items spread over the table get a
new price and a later ``updated_at``; the run reads exactly those rows, finds each key's
ledger entry with a different payload hash, and sends them. Repeated ``--repeat`` times (each
time the same items change again) and the median printed. ``events``: ``--changed`` new
events are appended and sent. Wall seconds include process start. Target: <= 0.6 s.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench_backfill import backfill
from bench_profile import profiler, summarise_profile
from harness import (
    Emulator,
    Figure,
    append_events,
    change_items,
    emulator,
    machine,
    median,
    run_sync,
    show,
    warm_up,
)

TARGET_SECONDS = 0.6


def delta(
    emu: Emulator, spec: Path, source: Path, table: str, rows: int, changed: int, *,
    repeat: int = 3, wrap: tuple[str, ...] = (),
) -> Figure:
    """Median of ``repeat`` runs, each after ``changed`` rows of ``source`` changed (items)
    or were appended (events)."""
    runs = []
    for n in range(repeat):
        if table == "items":
            change_items(source, rows, changed, stamp=f"2026-12-{n + 1:02d} 00:00:00")
        else:
            append_events(source, rows + n * changed + 1, changed)
        measure = run_sync(spec, emu=emu, wrap=wrap)
        # Items: the rows at the mark's cursor value are read again too (and skipped).
        kind = "changed" if table == "items" else "new"
        measure.check(table, sent=changed, **{kind: changed})
        runs.append(measure)
    chosen = median(runs)
    spread = ", ".join(f"{m.seconds:.2f}" for m in sorted(runs, key=lambda m: m.seconds))
    how = "changed" if table == "items" else "appended"
    return Figure(f"delta {table}: {changed:,} {how} of {rows:,}", changed, chosen,
                  target="<= 0.6 s", met=chosen.seconds <= TARGET_SECONDS,
                  note=f"runs: {spread} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--changed", type=int, default=10_000)
    parser.add_argument("--table", choices=["items", "events", "both"], default="both")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true",
                        help="record the delta runs with py-spy (profile-delta-TABLE.txt; the "
                        "last run is kept)")
    args = parser.parse_args()
    print(machine())
    tables = ["items", "events"] if args.table == "both" else [args.table]
    with emulator() as emu:
        warm_up(emu)
        for table in tables:
            figure, spec, source = backfill(emu, table, args.rows, private_source=True,
                                            name=f"backfill {table} for delta")
            show(figure)
            wrap = profiler(f"delta-{table}") if args.profile else ()
            show(delta(emu, spec, source, table, args.rows, args.changed, repeat=args.repeat,
                       wrap=wrap))
            if args.profile:
                print(summarise_profile(f"delta-{table}"))


if __name__ == "__main__":
    main()
