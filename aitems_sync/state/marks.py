"""The high-water mark of a dataset, how the state store keeps it, and cursor values typed in
by an operator (``state set``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from aitems_sync.errors import UsageError
from aitems_sync.state.values import decode_value, dumps, encode_value, loads

CursorValue = datetime | date | int | float | Decimal | str

#: Cursor types ``state set`` can parse a value into.
CURSOR_TYPES = ("auto", "str", "int", "decimal", "date", "datetime")


@dataclass(frozen=True)
class Mark:
    """The high-water mark of a dataset: the cursor value and key of the last acknowledged row."""

    cursor: CursorValue
    key: tuple[Any, ...]


def encode_mark(mark: Mark) -> tuple[str, str]:
    """The JSON texts stored for a mark: its encoded cursor and its encoded key values."""
    return dumps(encode_value(mark.cursor)), dumps([encode_value(v) for v in mark.key])


def decode_mark(cursor_text: str, key_text: str) -> Mark:
    """The mark stored by :func:`encode_mark`."""
    cursor = decode_value(loads(cursor_text))
    key = tuple(decode_value(item) for item in loads(key_text))
    return Mark(cursor=cursor, key=key)


def mark_to_json(mark: Mark | None) -> str | None:
    """One JSON text for a whole mark (the batch journal's first and last rows)."""
    if mark is None:
        return None
    return dumps([encode_value(mark.cursor), [encode_value(v) for v in mark.key]])


def mark_from_json(text: str | None) -> Mark | None:
    """The mark stored by :func:`mark_to_json`."""
    if text is None:
        return None
    cursor, key = loads(text)
    return Mark(cursor=decode_value(cursor), key=tuple(decode_value(item) for item in key))


def parse_cursor(text: str, kind: str, like: Any = None, option: str = "--cursor") -> Any:
    """Parse a cursor value given on the command line (``option``), as ``kind`` or like
    ``like``."""
    if kind == "auto":
        kind = _kind_of(like) if like is not None else ("int" if _is_int(text) else "str")
    try:
        if kind == "int":
            return int(text)
        if kind == "decimal":
            return Decimal(text)
        if kind == "date":
            return date.fromisoformat(text)
        if kind == "datetime":
            return datetime.fromisoformat(text)
    except (ValueError, InvalidOperation):
        raise UsageError(f"{option} {text!r} is not a valid {kind}") from None
    return text


#: The range of a 64-bit signed integer column: a mark past it matches no cursor value.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def check_cursor(value: Any, text: str, like: Any = None, option: str = "--cursor") -> None:
    """Refuse a cursor value no cursor column can hold or compare (UsageError, with the fix):
    NaN and infinities, integers past 64 bits, and a value of another type than ``like`` (the
    current mark's cursor), which would read nothing, or fail, on every later run."""
    if isinstance(value, Decimal) and not value.is_finite():
        raise UsageError(f"{option} {text!r} is not a finite number: a mark must be a value "
                         "the cursor column can hold")
    if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
        raise UsageError(f"{option} {text!r} is outside the range of a 64-bit integer column")
    if like is None:
        return
    if _kind_of(value) != _kind_of(like):
        raise UsageError(
            f"{option} {text!r} is a {_kind_of(value)}, but this dataset's cursor values are "
            f"{_kind_of(like)}s (its mark is {like!r}): a mark of another type would read no "
            f"row, or fail, on every run. Give a {_kind_of(like)} (or leave --type at auto)")
    if isinstance(like, datetime) and isinstance(value, datetime) and (
            (like.tzinfo is None) != (value.tzinfo is None)):
        zone = "with a UTC offset (like +09:00)" if like.tzinfo else "without a UTC offset"
        raise UsageError(f"{option} {text!r}: this dataset's cursor values are datetimes "
                         f"{zone}; write the value the same way")


def _kind_of(value: Any) -> str:
    if isinstance(value, datetime):
        return "datetime"
    if isinstance(value, date):
        return "date"
    if isinstance(value, bool):
        return "str"
    if isinstance(value, int):
        return "int"
    if isinstance(value, Decimal | float):
        return "decimal"
    return "str"


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()
