"""Rows per second of Shaper.shape (coercion + validation) on one core.

    .venv/bin/python benchmarks/bench_shape.py [--rows 200000]

Cases: a 4-field interaction row and an 8-field item row, each with values already of their
field types and with the values drivers typically return (datetime, Decimal, SQLite 0/1
booleans), and the item row with a user json_schema (fastjsonschema path).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from aitems_sync.rows.shape import Shaper
from aitems_sync.spec.model import DatasetSpec, Field

INTERACTION = DatasetSpec(
    name="events",
    type="interaction",
    dataset_id="d",
    source="s",
    query="select 1",
    cursor="TIMESTAMP",
    fields=(
        Field("USER_ID", ("string",)),
        Field("ITEM_ID", ("string",)),
        Field("TIMESTAMP", ("long",)),
        Field("EVENT_TYPE", ("string", "null")),
    ),
    key=(),
)

ITEM_FIELDS = (
    Field("ITEM_ID", ("string",)),
    Field("CATEGORY", ("string", "null")),
    Field("CREATION_TIMESTAMP", ("long",)),
    Field("PRICE", ("double", "null")),
    Field("TITLE", ("string",)),
    Field("IN_STOCK", ("boolean",)),
    Field("RATING", ("float", "null")),
    Field("STOCK", ("int", "null")),
)
ITEM = DatasetSpec(
    name="items",
    type="item",
    dataset_id="d",
    source="s",
    query="select 1",
    cursor="CREATION_TIMESTAMP",
    fields=ITEM_FIELDS,
    key=("ITEM_ID",),
)
ITEM_WITH_SCHEMA = DatasetSpec(
    **{**ITEM.__dict__, "json_schema": {"properties": {"PRICE": {"minimum": 0}}}}
)


def rows_per_second(shaper: Shaper, rows: Sequence[Sequence[Any]]) -> float:
    """Best of three passes over ``rows``; asserts every row is accepted."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        shape = shaper.shape
        accepted = sum(1 for row in rows if shape(row) is not None)
        best = min(best, time.perf_counter() - start)
        assert accepted == len(rows), "the benchmark rows must all be valid"
    return len(rows) / best


def main() -> None:
    """Print rows/s for each case."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    count = parser.parse_args().rows
    seoul = ZoneInfo("Asia/Seoul")
    when = datetime(2024, 5, 1, 12, 30)
    columns4 = [d.name for d in INTERACTION.fields]
    columns8 = [f.name for f in ITEM_FIELDS]
    cases: list[tuple[str, Shaper, list[tuple[Any, ...]]]] = [
        (
            "interaction, 4 fields, native types",
            Shaper(INTERACTION, columns4, UTC),
            [(f"u{i}", f"i{i % 977}", 1_714_000_000 + i, "click") for i in range(count)],
        ),
        (
            "interaction, 4 fields, naive datetime in UTC",
            Shaper(INTERACTION, columns4, UTC),
            [(f"u{i}", f"i{i % 977}", when, "click") for i in range(count)],
        ),
        (
            "interaction, 4 fields, aware datetime (timestamptz)",
            Shaper(INTERACTION, columns4, UTC),
            [(f"u{i}", f"i{i % 977}", when.replace(tzinfo=seoul), "click") for i in range(count)],
        ),
        (
            "interaction, 4 fields, naive datetime in Asia/Seoul",
            Shaper(INTERACTION, columns4, seoul),
            [(f"u{i}", f"i{i % 977}", when, None) for i in range(count)],
        ),
    ]
    native8 = [
        (f"i{i}", "books", 1_714_000_000 + i, 12.5, "A title", True, 4.5, i % 100)
        for i in range(count)
    ]
    driver8 = [
        (f"i{i}", "books", when, Decimal("12.50"), "A title", 1, 4.5, None) for i in range(count)
    ]
    cases += [
        ("item, 8 fields, native types", Shaper(ITEM, columns8, UTC), native8),
        ("item, 8 fields, datetime/Decimal/0-1", Shaper(ITEM, columns8, UTC), driver8),
        ("item, 8 fields, native, json_schema", Shaper(ITEM_WITH_SCHEMA, columns8, UTC), native8),
    ]
    for label, shaper, rows in cases:
        print(f"{label:55s} {rows_per_second(shaper, rows):>12,.0f} rows/s")


if __name__ == "__main__":
    main()
