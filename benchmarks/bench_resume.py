"""Resume: a first load stopped part-way by SIGTERM, then run again to read and send the rest.

    .venv/bin/python benchmarks/bench_resume.py [--table items|events] [--rows 1000000]
                                                [--at 0.1] [--repeat 1]

A first load that crashed, or that a CronJob's deadline cut, goes on from its mark: the rows
after it are most of the table. The first run is stopped with SIGTERM once ``--at`` of the rows
are committed; its state store is kept, and each of ``--repeat`` resumed runs starts from a copy
of it. Printed: the resumed run's rows/s over the rows it read, its wall seconds (start
included) and peak RSS. No target of its own: the backfill's (>= 100,000 rows/s) is the
yardstick.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

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
    source_db,
    warm_up,
    workdir,
    write_spec,
)

POLL_SECONDS = 0.05


def committed_rows(state: Path) -> int:
    """Rows in the committed batches of the state store (read-only, beside a running run)."""
    with sqlite3.connect(f"file:{state}?mode=ro", uri=True) as conn:
        conn.execute("PRAGMA busy_timeout = 5000")
        [rows] = conn.execute(
            "SELECT coalesce(sum(rows), 0) FROM batches WHERE status = 'committed'").fetchone()
    return int(rows)


def stop_part_way(spec: Path, at_rows: int) -> int:
    """Run the first load, SIGTERM it once ``at_rows`` rows are committed; the rows committed
    when it exited."""
    state = spec.parent / "state.db"
    command = [str(CLI), "--config", str(spec), "--log-level", "warning", "run"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, env=CHILD_ENV)
    try:
        while process.poll() is None:
            if state.exists() and committed_rows(state) >= at_rows:
                process.send_signal(signal.SIGTERM)
                break
            time.sleep(POLL_SECONDS)
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    if code != 128 + signal.SIGTERM:
        raise SystemExit(f"the first run exited {code} before it was stopped: raise --rows")
    return committed_rows(state)


def resume(emu: Emulator, table: str, rows: int, at: float, repeat: int) -> Figure:
    """The median of ``repeat`` runs resuming the same stopped first load."""
    source = source_db(table, rows)
    first = workdir(f"resume-{table}-first")
    spec = write_spec(first, table, emu.url, source)
    done = stop_part_way(spec, int(rows * at))
    left = rows - done
    runs = []
    for n in range(repeat):
        here = workdir(f"resume-{table}-{n}")
        again = write_spec(here, table, emu.url, source)
        for path in first.glob("state.db*"):
            shutil.copy(path, here / path.name)
        measure = run_sync(again, emu=emu)
        measure.check(table, sent=left)  # items also re-read the rows at the mark's cursor
        runs.append(measure)
    chosen = median(runs)
    spread = ", ".join(f"{m.seconds:.2f}" for m in sorted(runs, key=lambda m: m.seconds))
    return Figure(f"resume {table}: {left:,} left of {rows:,}", left, chosen,
                  note=f"runs: {spread} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--table", choices=["events", "items"], default="items")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--at", type=float, default=0.1,
                        help="the share of the rows committed when the first run is stopped")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    print(machine())
    with emulator() as emu:
        warm_up(emu)
        show(resume(emu, args.table, args.rows, args.at, args.repeat))


if __name__ == "__main__":
    main()
