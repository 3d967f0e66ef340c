"""The cost of counting NULL-cursor rows, which every run and plan pays once per dataset.

    .venv/bin/python benchmarks/bench_null_count.py [--rows 1000000] [--nulls 0.2]

For a SQLite table of ``--rows`` rows in each layout of its cursor column (NOT NULL or not, with
an index or not, and with no NULLs or a share ``--nulls`` of them), the milliseconds of the
count statement the run makes (``null_cursor_statement``), beside a delta query's (the rows
after a mark near the end: what a no-op or small delta reads anyway). Median of 5, in-process.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from aitems_sync.source.extract import null_cursor_statement

LAYOUTS = (
    ("NOT NULL, no index", "ts INTEGER NOT NULL", False, False),
    ("NOT NULL, index", "ts INTEGER NOT NULL", True, False),
    ("nullable, index, no NULLs", "ts INTEGER", True, False),
    ("nullable, index, NULLs", "ts INTEGER", True, True),
    ("nullable, no index, no NULLs", "ts INTEGER", False, False),
)
QUERY = "SELECT id, name, ts FROM t"


def median_ms(db: sqlite3.Connection, sql: str, params: tuple[object, ...] = ()) -> float:
    times = []
    for _ in range(5):
        started = time.perf_counter()
        db.execute(sql, params).fetchall()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--nulls", type=float, default=0.2)
    args = parser.parse_args()
    count_sql = str(null_cursor_statement(QUERY, ["id", "name", "ts"], 2)
                    .compile(dialect=sa.create_engine("sqlite://").dialect))
    delta_sql = f"SELECT * FROM ({QUERY}) AS src WHERE ts > ? ORDER BY ts, id"
    every = max(1, round(1 / args.nulls)) if args.nulls else 0
    print(f"{args.rows:,} rows; count: {' '.join(count_sql.split())}")
    with tempfile.TemporaryDirectory() as folder:
        for label, column, index, nulls in LAYOUTS:
            db = sqlite3.connect(Path(folder) / f"{len(label)}-{index}-{nulls}.db")
            db.execute(f"CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, {column})")
            ts = f"CASE WHEN i % {every} = 0 THEN NULL ELSE i END" if nulls and every else "i"
            db.execute(f"INSERT INTO t WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 "
                       f"FROM s WHERE i < {args.rows}) SELECT i, 'name ' || i, {ts} FROM s")
            if index:
                db.execute("CREATE INDEX t_ts ON t (ts, id)")
            db.commit()
            count = median_ms(db, count_sql)
            delta = median_ms(db, delta_sql, (args.rows - 10,))
            print(f"  {label:<30} count {count:8.2f} ms   delta query {delta:8.2f} ms")
            db.close()


if __name__ == "__main__":
    main()
