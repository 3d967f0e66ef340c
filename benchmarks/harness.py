"""Shared benchmark plumbing: generate SQLite data, run the emulator, time `aitems-sync run`.

Every figure comes from real processes: the emulator runs in its own process on loopback, and
`aitems-sync run` is a child whose wall time and peak RSS (os.wait4's ru_maxrss) are reported.
"""

from __future__ import annotations

import os
import random
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / "data"
SEED = ROOT / "examples" / "emulator-seed.yaml"


@dataclass
class Measure:
    seconds: float
    peak_rss_mb: float
    exit_code: int
    output: str

    def rate(self, rows: int) -> float:
        return rows / self.seconds if self.seconds else float("inf")


def make_events(path: Path, rows: int, *, seed: int = 1) -> None:
    """An interaction table of ``rows`` events with an integer cursor (id), in batches."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    rng = random.Random(seed)
    db = sqlite3.connect(path)
    db.executescript("""
        PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
        CREATE TABLE events (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL,
            item_id TEXT NOT NULL, event_type TEXT NOT NULL, ts INTEGER NOT NULL);""")
    step = 100_000
    for start in range(0, rows, step):
        db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)", [
            (i + 1, f"u{rng.randrange(100_000)}", f"i{rng.randrange(20_000)}",
             ("view", "click", "buy")[i % 3], 1_760_000_000 + i)
            for i in range(start, min(rows, start + step))])
    db.commit()
    db.close()


def make_items(path: Path, rows: int, *, seed: int = 2) -> None:
    """A wide item table (8 fields) with a text updated_at cursor and its index."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    rng = random.Random(seed)
    db = sqlite3.connect(path)
    db.executescript("""
        PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
        CREATE TABLE items (id TEXT PRIMARY KEY, category TEXT, brand TEXT, title TEXT,
            price REAL, stock INTEGER, created_at INTEGER NOT NULL, updated_at TEXT NOT NULL);""")
    step = 100_000
    for start in range(0, rows, step):
        db.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [
            (f"i{i:08d}", f"c{i % 40}", f"brand{i % 300}", f"Item number {i}",
             round(rng.uniform(1, 500), 2), rng.randrange(1000), 1_700_000_000 + i,
             f"2026-01-{1 + i % 28:02d} {i % 24:02d}:{i % 60:02d}:{(i // 60) % 60:02d}")
            for i in range(start, min(rows, start + step))])
    db.execute("CREATE INDEX items_updated_at ON items (updated_at, id)")
    db.commit()
    db.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def emulator(*extra: str) -> Iterator[str]:
    """Start `aitems-sync emulator --no-record` in its own process; yield its API URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "aitems_sync", "emulator", "--port", str(port), "--seed",
         str(SEED), "--no-record", *extra], stderr=subprocess.DEVNULL)
    admin = f"http://127.0.0.1:{port}/_emulator/datasets"
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(admin, timeout=1).read()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("the emulator did not start") from None
            time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/api/v1"
    finally:
        process.terminate()
        process.wait(timeout=10)


def run_sync(spec: Path, *args: str, env: dict[str, str] | None = None) -> Measure:
    """Run `aitems-sync --config SPEC run ARGS` as a child; wall seconds and its peak RSS."""
    command = [str(Path(sys.executable).parent / "aitems-sync"), "--config", str(spec),
               "--log-level", "warning", "run", *args]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env={**os.environ, **(env or {})})
    assert process.stdout is not None
    output = process.stdout.read().decode()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return Measure(seconds, usage.ru_maxrss / 1024, process.returncode, output)


EVENTS_SPEC = """\
version: 1
aitems:
  endpoint: {endpoint}
  service_id: svcdemo0001
  access_key: demo-access-key
  secret_key: demo-secret-key
  batch: {{max_rows: 1000, in_flight: {in_flight}}}
state: sqlite:///{state}
sources:
  bench: {{url: "sqlite:///{source}"}}
datasets:
  events:
    type: interaction
    dataset_id: dsevent0001
    query: SELECT id, user_id AS USER_ID, item_id AS ITEM_ID, ts AS TIMESTAMP,
           event_type AS EVENT_TYPE FROM events
    cursor: id
    fields:
      - {{name: USER_ID, type: string}}
      - {{name: ITEM_ID, type: string}}
      - {{name: TIMESTAMP, type: long}}
      - {{name: EVENT_TYPE, type: string}}
"""


def events_spec(directory: Path, endpoint: str, source: Path, *, in_flight: int = 4) -> Path:
    """A spec syncing the events table to the emulator, with a fresh state store."""
    state = directory / "state.db"
    for leftover in directory.glob("state.db*"):
        leftover.unlink()
    spec = directory / "events.yaml"
    spec.write_text(EVENTS_SPEC.format(endpoint=endpoint, state=state, source=source,
                                       in_flight=in_flight))
    return spec
