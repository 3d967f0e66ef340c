"""Delta run: 1,000 changed rows in a table of N users (default 1,000,000).

    .venv/bin/python benchmarks/bench_delta.py [--rows N] [--changed K]

Backfills the table once (reported too), changes K rows, then times the run that sends them:
rows/s, wall seconds including process start, and peak RSS. The delta query is indexed on the
cursor, so the delta run's time and memory should not grow with the table; run with --rows
100000 and 1000000 to compare.
"""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path

from harness import DATA, emulator, run_sync

SPEC = """\
version: 1
aitems:
  endpoint: {endpoint}
  service_id: svcdemo0001
  access_key: demo-access-key
  secret_key: demo-secret-key
state: sqlite:///{state}
sources:
  bench: {{url: "sqlite:///{source}"}}
datasets:
  users:
    type: user
    dataset_id: dsusers0001
    query: SELECT id AS USER_ID, age AS AGE, gender AS GENDER, updated_at FROM customers
    cursor: updated_at
    fields:
      - {{name: USER_ID, type: string}}
      - {{name: AGE, type: [int, "null"]}}
      - {{name: GENDER, type: [string, "null"]}}
"""


def make_customers(path: Path, rows: int) -> None:
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path)
    db.executescript("""
        PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
        CREATE TABLE customers (id TEXT PRIMARY KEY, age INTEGER, gender TEXT,
                                updated_at TEXT NOT NULL);""")
    step = 100_000
    for start in range(0, rows, step):
        db.executemany("INSERT INTO customers VALUES (?, ?, ?, ?)", [
            (f"u{i:08d}", 18 + i % 60, "FM"[i % 2],
             f"2026-01-{1 + i % 28:02d} {i % 24:02d}:{i % 60:02d}:{(i // 60) % 60:02d}")
            for i in range(start, min(rows, start + step))])
    db.execute("CREATE INDEX customers_updated_at ON customers (updated_at, id)")
    db.commit()
    db.close()


def change(path: Path, rows: int, changed: int) -> None:
    db = sqlite3.connect(path)
    stride = max(1, rows // changed)
    db.executemany("UPDATE customers SET age = age + 1, updated_at = '2026-12-01 00:00:00' "
                   "WHERE id = ?", [(f"u{i * stride:08d}",) for i in range(changed)])
    db.commit()
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--changed", type=int, default=1_000)
    args = parser.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    source, state = DATA / f"customers-{args.rows}.db", DATA / "delta-state.db"
    print(f"generating {args.rows:,} customers ...", flush=True)
    make_customers(source, args.rows)
    for leftover in DATA.glob("delta-state.db*"):
        leftover.unlink()
    with emulator() as endpoint:
        spec = DATA / "delta.yaml"
        spec.write_text(SPEC.format(endpoint=endpoint, state=state, source=source))
        backfill = run_sync(spec)
        assert backfill.exit_code == 0, backfill.output
        print(f"backfill   {args.rows:>10,} rows  {backfill.seconds:7.2f} s  "
              f"{backfill.rate(args.rows):>9,.0f} rows/s  peak RSS {backfill.peak_rss_mb:6.1f} MB")
        noop = run_sync(spec)
        print(f"no-op run  {0:>10,} rows  {noop.seconds:7.2f} s  "
              f"{'':>16}  peak RSS {noop.peak_rss_mb:6.1f} MB")
        change(source, args.rows, args.changed)
        delta = run_sync(spec)
        assert delta.exit_code == 0, delta.output
        print(f"delta run  {args.changed:>10,} rows  {delta.seconds:7.2f} s  "
              f"{delta.rate(args.changed):>9,.0f} rows/s  peak RSS {delta.peak_rss_mb:6.1f} MB")


if __name__ == "__main__":
    main()
