"""Latency hiding: the emulator answers each upload after 50 ms; in_flight 1 vs 4 vs 8.

    .venv/bin/python benchmarks/bench_latency.py [--rows 1000000] [--latency 0.05]
                                                 [--in-flight 1 4 8]

Each run backfills the same ``--rows`` events (1,000-row batches) into a fresh state. With
``in_flight`` N, up to N uploads wait on the wire at once, so the 50 ms should overlap. Printed:
each run's figures, then the speed-up of each in_flight over in_flight 1, by wall time (process
start included) and by the run's own dataset time (its report's seconds: start-up and set-up
excluded). Target: in_flight 4 >= 3.5x in_flight 1, judged by wall.

1,000,000 rows by default, the backfills' size (in_flight 1 alone takes ~1 minute). The ratio
is meant to show how well the round trips overlap. What a run pays once (~0.3 s of process
start, ~0.1 s from the dataset's start to its first upload) is judged by the no-op and delta
targets, and the fewer the rows, the more of the ratio it decides. At 200,000 rows in_flight 4
took 3.3-3.5 s, ~0.4 s of it before the first upload, and the ratio by wall followed the hour
(3.1-3.6x); at 1M rows the same build gave 3.89x and 3.92x by wall, 3.98x and 4.00x by dataset
time (benchmarks/README.md, eleventh round). At 50,000 rows in_flight 4 runs only ~12 round
trips: 2.6x by wall.
"""

from __future__ import annotations

import argparse

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

TARGET_RATIO = 3.5
#: Rows per run (see the module docstring for why not fewer).
LATENCY_ROWS = 1_000_000


def latency_runs(emu: Emulator, rows: int, in_flights: list[int]) -> list[Figure]:
    """One backfill of ``rows`` events per in_flight value, against a slow emulator."""
    source = source_db("events", rows)
    figures = []
    for in_flight in in_flights:
        spec = write_spec(workdir(f"latency-{in_flight}"), "events", emu.url, source,
                          in_flight=in_flight)
        measure = run_sync(spec, emu=emu)
        measure.check("events", read=rows, sent=rows)
        figures.append(Figure(f"50 ms latency, in_flight {in_flight}", rows, measure))
    return figures


def ratios(figures: list[Figure]) -> list[Figure]:
    """Mark each figure with its speed-up over the first (in_flight 1); returns them."""
    base = figures[0]
    for figure in figures[1:]:
        wall = base.measure.seconds / figure.measure.seconds
        own = base.sync_seconds / figure.sync_seconds if figure.sync_seconds else 0.0
        figure.note = f"{wall:.2f}x in_flight 1 by wall, {own:.2f}x by dataset time"
        if figure.name.endswith("in_flight 4"):
            figure.target, figure.met = ">= 3.5x in_flight 1", wall >= TARGET_RATIO
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=LATENCY_ROWS)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 4, 8])
    args = parser.parse_args()
    print(machine())
    with emulator("--latency", str(args.latency)) as emu:
        warm_up(emu)
        for figure in ratios(latency_runs(emu, args.rows, args.in_flight)):
            show(figure)


if __name__ == "__main__":
    main()
