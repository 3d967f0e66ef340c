"""The default benchmark set in one command, with a summary table against the issue's targets.

    .venv/bin/python benchmarks/run_all.py            # ~6 min at today's speed
    .venv/bin/python benchmarks/run_all.py --big      # adds the 10M-row backfill and no-op

Runs, sharing one emulator (and a second with 50 ms latency): backfill of 1M events and of 1M
items; the no-op rerun and a 10k-event delta on the events state; a 10k-item delta on the items
state; memory at 100k (the 1M points are the backfills); both 1M backfills again with
``run --extract-worker`` (a second process reads the rows; memory counts both processes);
in_flight 1/4/8 at 50 ms; validation (bench_shape.py). Prints each figure as it comes, then a
Markdown table, and writes every figure to benchmarks/data/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from bench_backfill import WORKER_LABEL, backfill
from bench_delta import delta
from bench_latency import LATENCY_ROWS, latency_runs, ratios
from bench_memory import FLAT_MB, TARGET_MB
from bench_noop import noop, startup_floor
from harness import (
    DATA,
    ROOT,
    Emulator,
    Figure,
    Measure,
    emulator,
    machine,
    show,
    speed_check,
    wait_for_quiet,
    warm_up,
)

VALIDATION_TARGET = 300_000


def _memory(figure: Figure, table: str) -> Figure:
    """The peak RSS of a backfill, as a figure of its own."""
    return Figure(f"memory: {table} {figure.rows:,}", figure.rows, figure.measure,
                  target="<= 100 MB", met=figure.measure.memory_mb <= TARGET_MB)


def _events(emu: Emulator, rows: int, big: int) -> list[Figure]:
    small, _, _ = backfill(emu, "events", 100_000)
    figures = [show(_memory(small, "events"))]
    full, spec, source = backfill(emu, "events", rows, private_source=True)
    figures += [show(full), show(_memory(full, "events"))]
    figures.append(show(noop(emu, spec, "events", rows)))
    figures.append(show(delta(emu, spec, source, "events", rows, 10_000)))
    if big:
        huge, spec, _ = backfill(emu, "events", big, name=f"backfill events {big:,}")
        figures += [show(huge), show(_memory(huge, "events"))]
        figures.append(show(noop(emu, spec, "events", big)))
    largest = figures[-2] if big else figures[2]
    growth = largest.measure.memory_mb - small.measure.memory_mb
    flat = Figure(f"memory flat, events 100k -> {largest.rows:,}", 0, largest.measure,
                  target=f"<= +{FLAT_MB:.0f} MB", met=growth <= FLAT_MB,
                  note=f"{growth:+.1f} MB")
    return [*figures, show(flat)]


def _items(emu: Emulator, rows: int) -> list[Figure]:
    small, _, _ = backfill(emu, "items", 100_000)
    figures = [show(_memory(small, "items"))]
    full, spec, source = backfill(emu, "items", rows, private_source=True)
    figures += [show(full), show(_memory(full, "items"))]
    figures.append(show(delta(emu, spec, source, "items", rows, 10_000)))
    growth = full.measure.memory_mb - small.measure.memory_mb
    figures.append(show(Figure(f"memory flat, items 100k -> {rows:,}", 0, full.measure,
                               target=f"<= +{FLAT_MB:.0f} MB", met=growth <= FLAT_MB,
                               note=f"{growth:+.1f} MB")))
    return figures


def _with_worker(emu: Emulator, rows: int) -> list[Figure]:
    """The backfills again with ``run --extract-worker``, and their memory, worker included."""
    figures = []
    for table in ("events", "items"):
        full, _, _ = backfill(emu, table, rows, worker=True)
        figures += [show(full), show(_memory(full, table + WORKER_LABEL))]
    return figures


def validation() -> str:
    """bench_shape.py's output, with the slowest case judged against 300k rows/s."""
    script = Path(__file__).with_name("bench_shape.py")
    wait_for_quiet()
    output = subprocess.run([sys.executable, str(script), "--rows", "200000"], check=True,
                            capture_output=True, text=True, cwd=ROOT).stdout
    rates = [int(m.replace(",", "")) for m in re.findall(r"([\d,]+) rows/s", output)]
    slowest = min(rates) if rates else 0
    verdict = "MET" if slowest >= VALIDATION_TARGET else "SHORT"
    return output + f"  validation: slowest case {slowest:,} rows/s (target >= 300,000)  {verdict}"


def _memory_cell(m: Measure) -> str:
    if not m.worker_rss_mb:
        return f"{m.peak_rss_mb:.1f}"
    return (f"{m.peak_rss_mb:.1f} + {m.worker_rss_mb:.1f} = {m.memory_mb:.1f} "
            f"(PSS {m.total_pss_mb:.1f})")


def table(figures: list[Figure]) -> str:
    """The figures as a Markdown table."""
    lines = ["| benchmark | rows | wall s | rows/s | peak RSS MB: run + worker = together "
             "| CPU % sync/emulator/others "
             "| target | verdict | note |",
             "|---|---:|---:|---:|---:|---|---|---|---|"]
    for f in figures:
        m = f.measure
        rate = f"{f.rows_per_second:,.0f}" if f.rows else "-"
        verdict = "" if f.met is None else ("met" if f.met else "**short**")
        cpu = "/".join(f"{100 * c / m.seconds:.0f}" for c in (
            m.cpu_seconds, m.emulator_cpu_seconds, m.other_cpu_seconds))
        lines.append(f"| {f.name} | {f.rows:,} | {m.seconds:.2f} | {rate} | "
                     f"{_memory_cell(m)} | {cpu} | {f.target} | {verdict} | {f.note} |")
    return "\n".join(lines)


def _revision() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=ROOT, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "aitems_sync"],
                               capture_output=True, text=True, cwd=ROOT, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown revision"
    return head + (" + uncommitted changes in aitems_sync/" if dirty.strip() else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--big", action="store_true", help="add the 10M-row backfill and no-op")
    parser.add_argument("--big-rows", type=int, default=10_000_000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    started, revision = time.monotonic(), _revision()
    at_start = machine()
    print(f"{at_start}; {revision}; load average {os.getloadavg()[0]:.2f} at start")
    figures: list[Figure] = []
    with emulator() as emu:
        warm_up(emu)
        figures += _events(emu, args.rows, args.big_rows if args.big else 0)
        figures += _items(emu, args.rows)
        figures += _with_worker(emu, args.rows)
    with emulator("--latency", "0.05") as emu:
        for figure in ratios(latency_runs(emu, LATENCY_ROWS, [1, 4, 8])):
            figures.append(show(figure))
    floor = startup_floor()
    print("\n".join(floor))
    checked = validation()
    print(checked)
    speed_at_end = speed_check()
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end, {speed_at_end}; "
          f"{time.monotonic() - started:.0f} s in all\n")
    print(table(figures))
    DATA.mkdir(parents=True, exist_ok=True)
    results = {"machine": at_start, "speed_check_at_end": speed_at_end.to_dict(),
               "revision": revision, "time": time.ctime(),
               "figures": [f.to_dict() for f in figures], "startup_floor": floor,
               "validation": checked}
    (DATA / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
