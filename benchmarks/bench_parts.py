"""The ceiling of each part of the backfill path on this machine, one core, in-process.

    .venv/bin/python benchmarks/bench_parts.py [--rows 1000000]

Each line times one step over the same 1M events (generated like bench_backfill's), best of
three, so the end-to-end figures can be read against what the parts allow: reading through
SQLAlchemy Core (the engine's way) and through the bare sqlite3 cursor; the engine's Shaper;
orjson of a dict per row; the row hashes (``rows.encode.row_hash``: BLAKE2b, which the datasets of
stores older than state schema version 4 keep, and XXH3, every newer one's); one frozen
dataclass (like Mark or LedgerEntry) per row; and ledger upserts of random keys into a growing
SQLite ledger (1,000 and 10,000 entries per commit, as commit_batch writes them, synchronous
FULL).
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from harness import ROOT, source_db, wait_for_quiet

from aitems_sync.rows.encode import ROW_HASHES, row_hash
from aitems_sync.rows.shape import Shaper
from aitems_sync.spec.model import DatasetSpec, Field

QUERY = "SELECT id, user_id, item_id, ts, event_type FROM events ORDER BY id"
NAMES = ("USER_ID", "ITEM_ID", "TIMESTAMP", "EVENT_TYPE")


@dataclass(frozen=True)
class _Frozen:
    cursor: Any
    key: tuple[Any, ...]


def _best(label: str, rows: int, step: Callable[[], object]) -> None:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - started)
    print(f"  {label:<62} {rows / best:>12,.0f} rows/s", flush=True)


def _read_sqlalchemy(path: Path) -> Callable[[], object]:
    engine = sa.create_engine(f"sqlite:///{path}")

    def step() -> int:
        count = 0
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=1000).execute(
                sa.text(QUERY))
            for part in result.partitions(1000):
                count += len(part)
        return count

    return step


def _read_sqlite3(path: Path) -> Callable[[], object]:
    def step() -> int:
        count = 0
        db = sqlite3.connect(path)
        cursor = db.execute(QUERY)
        while part := cursor.fetchmany(1000):
            count += len(part)
        db.close()
        return count

    return step


def _ledger(per_commit: int, total: int) -> Callable[[], object]:
    sql = ("INSERT INTO ledger VALUES (?, ?, ?, ?) ON CONFLICT (dataset_id, key_hash) DO UPDATE "
           "SET payload_hash = excluded.payload_hash, position = excluded.position")

    def step() -> None:
        rng = random.Random(1)
        with tempfile.TemporaryDirectory(dir=ROOT / "benchmarks" / "data") as tmp:
            db = sqlite3.connect(Path(tmp) / "ledger.db", isolation_level=None)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("CREATE TABLE ledger (dataset_id INTEGER NOT NULL, key_hash BIGINT NOT "
                       "NULL, payload_hash BIGINT NOT NULL, position DOUBLE, PRIMARY KEY "
                       "(dataset_id, key_hash)) WITHOUT ROWID")
            for _ in range(total // per_commit):
                entries = [(1, rng.getrandbits(64) - 2**63, rng.getrandbits(63), None)
                           for _ in range(per_commit)]
                db.execute("BEGIN IMMEDIATE")
                db.executemany(sql, entries)
                db.execute("COMMIT")
            db.close()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    rows = parser.parse_args().rows
    path = source_db("events", rows)
    raw = sqlite3.connect(path).execute(QUERY).fetchall()
    dataset = DatasetSpec(name="events", type="interaction", dataset_id="d", source="s",
                          query="q", cursor="id", key=(),
                          fields=(Field("USER_ID", ("string",)), Field("ITEM_ID", ("string",)),
                                  Field("TIMESTAMP", ("long",)),
                                  Field("EVENT_TYPE", ("string",))))
    shaper = Shaper(dataset, ["id", *NAMES], UTC)
    shaped = [shaper.shape(r) for r in raw]
    encoded = [orjson.dumps(dict(zip(NAMES, v, strict=True))) for v in shaped if v]
    wait_for_quiet()
    print(f"parts over {rows:,} events (best of 3):")
    _best("read: SQLAlchemy Core, stream_results + partitions(1000)", rows,
          _read_sqlalchemy(path))
    _best("read: bare sqlite3 cursor, fetchmany(1000)", rows, _read_sqlite3(path))
    _best("shape + validate: Shaper.shape", rows, lambda: [shaper.shape(r) for r in raw])
    _best("encode: orjson.dumps(dict(zip(names, values)))", rows,
          lambda: [orjson.dumps(dict(zip(NAMES, v, strict=True))) for v in shaped if v])
    for scheme in ROW_HASHES:
        _best(f"hash: row_hash(row, {scheme!r})", rows,
              lambda scheme=scheme: [row_hash(e, scheme) for e in encoded])
    _best("objects: one frozen dataclass per row (Mark, LedgerEntry)", rows,
          lambda: [_Frozen(r[0], (r[1],)) for r in raw])
    ledger_rows = min(rows, 1_000_000)
    _best(f"state: ledger upsert, 1,000 per commit, to {ledger_rows:,} entries", ledger_rows,
          _ledger(1000, ledger_rows))
    _best(f"state: ledger upsert, 10,000 per commit, to {ledger_rows:,} entries", ledger_rows,
          _ledger(10_000, ledger_rows))


if __name__ == "__main__":
    main()
