"""The end-to-end demo behind `make demo`: sample shop -> aitems-sync -> local AiTEMS emulator.

1. writes the sample SQLite shop (examples/data/shop.db) and forgets the demo's state;
2. starts the emulator on a free loopback port, seeded with the demo service and datasets;
3. runs `aitems-sync run` (everything is new), changes some rows, runs it again (only the
   delta goes), and shows what the emulator received;
4. stops the emulator. No credentials, no network beyond 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# AITEMS_DEMO_DIR moves the sample database and the state store elsewhere (the tests use it).
WORKDIR = Path(os.environ["AITEMS_DEMO_DIR"]) if os.environ.get("AITEMS_DEMO_DIR") else None
SHOP = WORKDIR / "shop.db" if WORKDIR else HERE / "data" / "shop.db"
STATE = WORKDIR / "demo.db" if WORKDIR else ROOT / "state" / "demo.db"
SPEC = HERE / "sync.yaml"
SEED = HERE / "emulator-seed.yaml"
DATASETS = {"users": "dsusers0001", "items": "dsitems0001", "events": "dsevent0001"}

sys.path.insert(0, str(HERE))
import make_sample_db  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit("the emulator exited early; see its output above")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"the emulator did not answer at {url}")


def cli(*args: str, env: dict[str, str]) -> int:
    command = [sys.executable, "-m", "aitems_sync", "--config", str(SPEC), *args]
    print("$ aitems-sync " + " ".join(["--config", str(SPEC.relative_to(ROOT)), *args]),
          flush=True)
    return subprocess.run(command, env=env).returncode


def change_some_rows() -> None:
    """25 customers change age, 10 are touched with nothing changed, 5 are new; 10 products
    change price; 500 new events arrive."""
    db = sqlite3.connect(SHOP)
    later = "2026-06-01 12:00:00"
    db.execute("UPDATE customers SET age = coalesce(age, 30) + 1, updated_at = ? "
               "WHERE id IN (SELECT id FROM customers ORDER BY id LIMIT 25)", (later,))
    db.execute("UPDATE customers SET updated_at = ? "
               "WHERE id IN (SELECT id FROM customers ORDER BY id DESC LIMIT 10)", (later,))
    db.executemany("INSERT INTO customers VALUES (?, 33, 'F', ?)",
                   [(f"new{i}", later) for i in range(5)])
    db.execute("UPDATE products SET price = price + 1, updated_at = '2027-06-01 12:00:00' "
               "WHERE id IN (SELECT id FROM products ORDER BY id LIMIT 10)")
    top = db.execute("SELECT max(id) FROM events").fetchone()[0]
    db.executemany("INSERT INTO events VALUES (?, 'u000001', 'i000001', 'view', ?)",
                   [(top + i + 1, f"2026-06-01 12:{i // 60:02d}:{i % 60:02d}")
                    for i in range(500)])
    db.commit()
    db.close()
    print("\nchanged: 25 customers' ages, touched 10 customers without a change, added 5 "
          "customers,\n         repriced 10 products, added 500 events\n", flush=True)


def show_received(admin: str) -> None:
    with urllib.request.urlopen(f"{admin}/datasets", timeout=5) as answer:
        counts = json.load(answer)
    print("\nthe emulator received:")
    for name, dataset_id in DATASETS.items():
        c = counts.get(dataset_id, {})
        print(f"  {name:7} {c.get('uploads', 0):4} uploads  {c.get('rowsReceived', 0):6} rows "
              f"received  {c.get('rows', 0):6} rows held")


def main() -> int:
    make_sample_db.create(SHOP, users=3000, items=2000, events=40000, seed=7)
    for leftover in STATE.parent.glob(STATE.name + "*"):
        leftover.unlink()
    port = free_port()
    env = {**os.environ, "AITEMS_ENDPOINT": f"http://127.0.0.1:{port}/api/v1",
           "SHOP_DATABASE_URL": f"sqlite:///{SHOP}", "AITEMS_SYNC_STATE": f"sqlite:///{STATE}"}
    emulator = subprocess.Popen([sys.executable, "-m", "aitems_sync", "emulator",
                                 "--port", str(port), "--seed", str(SEED)])
    try:
        admin = f"http://127.0.0.1:{port}/_emulator"
        wait_until_up(f"{admin}/datasets", emulator)
        print("\n== first run: everything is new ==", flush=True)
        first = cli("run", env=env)
        change_some_rows()
        print("== second run: only the delta goes ==", flush=True)
        second = cli("run", env=env)
        show_received(admin)
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
    return first or second


if __name__ == "__main__":
    sys.exit(main())
