"""A small shop database for end-to-end tests, on SQLite, PostgreSQL or MariaDB, and specs for it.

Tables are created with SQLAlchemy Core so the same test runs on each; timestamps are naive
(`timestamp without time zone` on PostgreSQL, `DATETIME(6)` on MariaDB, text on SQLite).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

T0 = datetime(2026, 3, 1, 12, 0, 0)
# MySQL's plain DATETIME drops the microseconds.
TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

metadata = sa.MetaData()
customers = sa.Table(
    "customers", metadata,
    sa.Column("id", sa.String(20), primary_key=True),
    sa.Column("age", sa.Integer),
    sa.Column("gender", sa.String(1)),
    sa.Column("updated_at", TIMESTAMP, nullable=False, index=True),
)
events = sa.Table(
    "events", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.String(20), nullable=False),
    sa.Column("item_id", sa.String(20), nullable=False),
    sa.Column("event_type", sa.String(10), nullable=False),
    sa.Column("occurred_at", TIMESTAMP, nullable=False, index=True),
)


class Shop:
    """The source database of a test, with helpers to change it between runs."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = sa.create_engine(url)
        metadata.create_all(self.engine)

    def add_customers(self, rows: Sequence[tuple[str, Any, Any, datetime]]) -> None:
        with self.engine.begin() as conn:
            conn.execute(customers.insert(), [
                {"id": i, "age": a, "gender": g, "updated_at": u} for i, a, g, u in rows])

    def update_customer(self, id_: str, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(customers.update().where(customers.c.id == id_).values(**values))

    def delete_customer(self, id_: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(customers.delete().where(customers.c.id == id_))

    def update_event(self, id_: int, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(events.update().where(events.c.id == id_).values(**values))

    def add_events(self, rows: Sequence[tuple[int, str, str, str, datetime]]) -> None:
        with self.engine.begin() as conn:
            conn.execute(events.insert(), [
                {"id": i, "user_id": u, "item_id": it, "event_type": e, "occurred_at": t}
                for i, u, it, e, t in rows])

    def close(self) -> None:
        self.engine.dispose()


def customer_rows(count: int, start: int = 0, at: datetime = T0) -> list[tuple[str, Any, Any,
                                                                               datetime]]:
    """``count`` customers with distinct, increasing updated_at values."""
    return [(f"u{i:05d}", 20 + i % 50, "FM"[i % 2], at + timedelta(seconds=i))
            for i in range(start, start + count)]


#: The events dataset of every test spec (a format string, like the rest of the spec).
EVENTS_DATASET = """\
  events:
    type: interaction
    dataset_id: dsevent0001
    source: shop
    query: >-
      SELECT id AS event_id, user_id AS USER_ID, item_id AS ITEM_ID,
      occurred_at AS TIMESTAMP, event_type AS EVENT_TYPE FROM events
    cursor: event_id
    lookback: {events_lookback}
    {events_key}
    fields:
      - {{name: USER_ID, type: string}}
      - {{name: ITEM_ID, type: string}}
      - {{name: TIMESTAMP, type: long}}
      - {{name: EVENT_TYPE, type: string}}
"""

SPEC = """\
version: 1
aitems:
  endpoint: {endpoint}
  service_id: svcdemo0001
  access_key: {access_key}
  secret_key: {secret_key}
  batch: {{max_rows: {max_rows}, in_flight: {in_flight}}}
  retry: {{attempts: 3, backoff: 0.01s, max_backoff: 0.05s}}
state: "{state_url}"
sources:
  shop: {{url: "{source_url}", timezone: Asia/Seoul}}
datasets:
  users:
    type: user
    dataset_id: dsusers0001
    source: shop
    query: SELECT id AS USER_ID, {age} AS AGE, gender AS GENDER, updated_at FROM customers
    cursor: updated_at
    lookback: {lookback}
    on_invalid: {on_invalid}
    max_invalid: "{max_invalid}"
    fields:
      - {{name: USER_ID, type: string}}
      - {{name: AGE, type: [int, "null"]}}
      - {{name: GENDER, type: [string, "null"], categorical: true}}
{extra}
""" + EVENTS_DATASET


def write_spec(path: Path, *, endpoint: str, source_url: str, state_url: str,
               max_rows: int = 1000, in_flight: int = 4, lookback: str = "0s",
               on_invalid: str = "quarantine", max_invalid: str = "50%",
               extra: str = "", age: str = "age", events_lookback: str = "0s",
               events_key: str = "", access_key: str = "demo-access-key",
               secret_key: str = "demo-secret-key") -> Path:
    """Write a spec for the shop to ``path`` and return it; ``age`` is the SQL of the users'
    AGE column, ``access_key`` and ``secret_key`` the aitems key pair (the demo's)."""
    path.write_text(SPEC.format(
        endpoint=endpoint, source_url=source_url, state_url=state_url, max_rows=max_rows,
        in_flight=in_flight, lookback=lookback, on_invalid=on_invalid,
        max_invalid=max_invalid, extra=extra, age=age, events_lookback=events_lookback,
        events_key=events_key, access_key=access_key, secret_key=secret_key))
    return path
