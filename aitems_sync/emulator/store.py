"""The emulator's optional SQLite file (``--state``): objects and received rows survive a restart.

The model writes every change through (one transaction per change, under the model's lock), so a
killed emulator loses nothing it answered for. Tables: ``objects`` (schemas, datasets and services
as their JSON documents), ``counts`` (uploads and rows received per dataset), ``deliveries`` (every
accepted row in arrival order), ``content`` (user and item rows upserted by key; interaction
content is the deliveries), ``loads`` (per dataset, the rows of the last file an ingest read and
the rows received by then) and ``loaded`` (that file's interaction rows). Trains are objects too.
With ``record=False`` only ``counts`` and ``loads`` grow.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from aitems_sync.emulator.content import Snapshot
from aitems_sync.errors import StateError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (kind, id));
CREATE TABLE IF NOT EXISTS counts (
    dataset_id TEXT PRIMARY KEY, uploads INTEGER NOT NULL, rows_received INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
    dataset_id TEXT NOT NULL, position INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (dataset_id, position));
CREATE TABLE IF NOT EXISTS content (
    dataset_id TEXT NOT NULL, key TEXT NOT NULL, position INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (dataset_id, key));
CREATE TABLE IF NOT EXISTS loads (
    dataset_id TEXT PRIMARY KEY, rows_loaded INTEGER NOT NULL, received_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS loaded (
    dataset_id TEXT NOT NULL, position INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (dataset_id, position));
"""
_KIND_ORDER = {"schema": 0, "dataset": 1, "service": 2, "train": 3}
_DATA_TABLES = ("counts", "deliveries", "content", "loads", "loaded")


class SqliteJournal:
    """A `Journal` over one SQLite file; `load` reads it back as a `Snapshot`."""

    def __init__(self, path: Path) -> None:
        self._path = path
        try:
            # The HTTP threads write through the model, which serialises them with its lock.
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as error:
            raise StateError(f"cannot open the emulator state file {path}: {error}; "
                             "check the path, or delete the file to start empty") from error
        self._lock = threading.Lock()

    def load(self) -> Snapshot:
        """Everything stored, objects in creation order (schemas, then datasets, then services)."""
        snapshot = Snapshot()
        with self._lock:
            objects = self._db.execute("SELECT kind, body FROM objects ORDER BY rowid").fetchall()
            snapshot.objects = sorted(((k, orjson.loads(b)) for k, b in objects),
                                      key=lambda item: _KIND_ORDER[item[0]])
            for dataset_id, uploads, rows in self._db.execute("SELECT * FROM counts"):
                snapshot.counts[dataset_id] = (uploads, rows)
            query = "SELECT dataset_id, body FROM {} ORDER BY dataset_id, position"
            for dataset_id, rows_loaded, received_at in self._db.execute("SELECT * FROM loads"):
                snapshot.loads[dataset_id] = (rows_loaded, received_at)
            for table, into in (("deliveries", snapshot.deliveries), ("content", snapshot.rows),
                                ("loaded", snapshot.loaded)):
                for dataset_id, body in self._db.execute(query.format(table)):
                    into.setdefault(dataset_id, []).append(orjson.loads(body))
        return snapshot

    def save_object(self, kind: str, object_id: str, document: Mapping[str, Any]) -> None:
        """Insert or replace one schema, dataset or service (keeping its creation order)."""
        sql = ("INSERT INTO objects (kind, id, body) VALUES (?, ?, ?) "
               "ON CONFLICT (kind, id) DO UPDATE SET body = excluded.body")
        with self._lock:
            self._db.execute(sql, (kind, object_id, orjson.dumps(document).decode()))

    def record_upload(
        self, dataset_id: str, key: str | None, rows: Sequence[dict[str, Any]],
        first_position: int, record: bool,
    ) -> None:
        """Add one accepted upload: counts, and (when recording) deliveries and upserted rows."""
        with self._lock, self._transaction():
            self._db.execute(
                "INSERT INTO counts VALUES (?, 1, ?) ON CONFLICT (dataset_id) DO UPDATE SET "
                "uploads = uploads + 1, rows_received = rows_received + excluded.rows_received",
                (dataset_id, len(rows)),
            )
            if not record:
                return
            bodies = [orjson.dumps(row).decode() for row in rows]
            self._db.executemany(
                "INSERT INTO deliveries VALUES (?, ?, ?)",
                [(dataset_id, first_position + i, body) for i, body in enumerate(bodies)],
            )
            if key is not None:
                self._db.executemany(
                    "INSERT INTO content VALUES (?, ?, ?, ?) ON CONFLICT (dataset_id, key) "
                    "DO UPDATE SET body = excluded.body",
                    [(dataset_id, row[key], first_position + i, body)
                     for i, (row, body) in enumerate(zip(rows, bodies, strict=True))],
                )

    def record_load(
        self, dataset_id: str, key: str | None, rows: Sequence[dict[str, Any]], received_at: int,
        record: bool,
    ) -> None:
        """A file an ingest read replaces the dataset's rows: upserted rows (user, item) at
        negative positions, before any later upload's; interaction rows in ``loaded``."""
        with self._lock, self._transaction():
            self._db.execute("INSERT OR REPLACE INTO loads VALUES (?, ?, ?)",
                             (dataset_id, len(rows), received_at))
            for table in ("content", "loaded"):
                self._db.execute(f"DELETE FROM {table} WHERE dataset_id = ?", (dataset_id,))
            if not record:
                return
            start = -len(rows)
            if key is None:
                self._db.executemany("INSERT INTO loaded VALUES (?, ?, ?)", [
                    (dataset_id, i, orjson.dumps(row).decode()) for i, row in enumerate(rows)])
            else:
                self._db.executemany("INSERT INTO content VALUES (?, ?, ?, ?)", [
                    (dataset_id, row[key], start + i, orjson.dumps(row).decode())
                    for i, row in enumerate(rows)])

    def reset_data(self) -> None:
        """Forget every received and loaded row and count."""
        with self._lock, self._transaction():
            for table in _DATA_TABLES:
                self._db.execute(f"DELETE FROM {table}")

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()

    def _transaction(self) -> sqlite3.Connection:
        # isolation_level=None is autocommit; the connection as a context manager commits or
        # rolls back, so open the transaction explicitly.
        self._db.execute("BEGIN")
        return self._db
