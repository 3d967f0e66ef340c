"""Create the bundled SQLite sample shop: customers, products and events with cursor indexes.

    python examples/make_sample_db.py [PATH] [--users N] [--items N] [--events N] [--seed S]

Deterministic for a given seed. Timestamps are SQLite TEXT in 'YYYY-MM-DD HH:MM:SS' (local time
of the source, which examples/sync.yaml declares as Asia/Seoul).
"""

from __future__ import annotations

import argparse
import random
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

DEFAULT_PATH = Path(__file__).resolve().parent / "data" / "shop.db"
START = datetime(2026, 1, 1, 9, 0, 0)
CATEGORIES = ["books", "music", "garden", "kitchen", "toys", "sports", "beauty", "games"]
EVENTS = ["view", "view", "view", "click", "cart", "purchase"]

SCHEMA = """
CREATE TABLE customers (
    id TEXT PRIMARY KEY, age INTEGER, gender TEXT, updated_at TEXT NOT NULL);
CREATE INDEX customers_updated_at ON customers (updated_at, id);
CREATE TABLE products (
    id TEXT PRIMARY KEY, category TEXT, price REAL, created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL);
CREATE INDEX products_updated_at ON products (updated_at, id);
CREATE TABLE events (
    id INTEGER PRIMARY KEY, user_id TEXT NOT NULL, item_id TEXT NOT NULL,
    event_type TEXT NOT NULL, occurred_at TEXT NOT NULL);
"""


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def create(path: Path, users: int, items: int, events: int, seed: int) -> None:
    """Write a fresh sample database to ``path`` (replacing any old one)."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    db.executemany("INSERT INTO customers VALUES (?, ?, ?, ?)", (
        (f"u{i:06d}", rng.choice([None, *range(16, 80)]), rng.choice([None, "F", "M"]),
         stamp(START + timedelta(seconds=rng.randrange(86400 * 30))))
        for i in range(users)))
    db.executemany("INSERT INTO products VALUES (?, ?, ?, ?, ?)", (
        (f"i{i:06d}", rng.choice([None, *CATEGORIES]), round(rng.uniform(1, 300), 2),
         stamp(created := START - timedelta(days=rng.randrange(1, 365))),
         stamp(created + timedelta(days=rng.randrange(0, 400))))
        for i in range(items)))
    db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)", (
        (i + 1, f"u{rng.randrange(users):06d}", f"i{rng.randrange(items):06d}",
         rng.choice(EVENTS), stamp(START + timedelta(seconds=i * 20 + rng.randrange(20))))
        for i in range(events)))
    db.commit()
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--events", type=int, default=40000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    create(args.path, args.users, args.items, args.events, args.seed)
    print(f"wrote {args.path}: {args.users} customers, {args.items} products, "
          f"{args.events} events")


if __name__ == "__main__":
    main()
