"""Move a cursor value back by the lookback window, keeping its type and its text layout.

Pure arithmetic used by the source adapter: the lookback predicate is ``cursor >= start``.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import TypeAlias

from aitems_sync.errors import SourceError

CursorValue: TypeAlias = datetime | date | int | float | Decimal | str

_TEXT_TIMESTAMP = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:(?P<sep>[Tt ])(?P<hm>\d{2}:\d{2})(?::(?P<s>\d{2})(?:\.(?P<frac>\d+))?)?)?"
    r"(?P<zone>\s*(?:[Zz]|[+-]\d{2}(?::?\d{2})?))?"
)
_DAY = timedelta(days=1)
_SECOND = timedelta(seconds=1)


def lookback_start(value: CursorValue, lookback: timedelta) -> CursorValue:
    """The cursor value ``lookback`` before ``value``, of the same type (and text layout).

    Rounding always widens the window (dates lose whole days, integers whole seconds), so a
    late row is never missed. Text must be an ISO 8601 date or timestamp, as SQLite stores them;
    it comes back in the same layout so that comparing text still orders correctly.
    """
    if isinstance(value, bool):
        raise _not_temporal(value)
    if isinstance(value, datetime):
        return _datetime_minus(value, lookback)
    if isinstance(value, date):
        return _date_minus(value, lookback)
    if isinstance(value, int):
        return value - _ceil_div(lookback, _SECOND)
    if isinstance(value, float):
        return value - lookback.total_seconds()
    if isinstance(value, Decimal):
        micros = (lookback.days * 86400 + lookback.seconds) * 1_000_000 + lookback.microseconds
        return value - Decimal(micros).scaleb(-6)
    if isinstance(value, str):
        return _text_minus(value, lookback)
    raise _not_temporal(value)


def _datetime_minus(value: datetime, lookback: timedelta) -> datetime:
    try:
        if value.tzinfo is None:
            return value - lookback
        # In UTC: wall-clock arithmetic in a zone with DST would be off by the shift.
        return (value.astimezone(UTC) - lookback).astimezone(value.tzinfo)
    except OverflowError:
        return datetime.min.replace(tzinfo=value.tzinfo)


def _date_minus(value: date, lookback: timedelta) -> date:
    try:
        return value - timedelta(days=_ceil_div(lookback, _DAY))
    except OverflowError:
        return date.min


def _ceil_div(span: timedelta, unit: timedelta) -> int:
    return -(-span // unit)


def _text_minus(value: str, lookback: timedelta) -> str:
    match = _TEXT_TIMESTAMP.fullmatch(value)
    if match is None:
        raise _not_temporal(value)
    try:
        day = date.fromisoformat(match["date"])
        if match["sep"] is None:
            return _date_minus(day, lookback).isoformat() + (match["zone"] or "")
        hour, minute = (int(part) for part in match["hm"].split(":"))
        frac = match["frac"] or ""
        clock = time(hour, minute, int(match["s"] or 0), int(frac[:6].ljust(6, "0")))
        moment = datetime.combine(day, clock)
    except ValueError as exc:
        raise _not_temporal(value) from exc
    # A fixed offset (or none) in the text: wall-clock arithmetic is exact.
    start = _datetime_minus(moment, lookback)
    return _format_like(start, match, frac)


def _format_like(start: datetime, match: re.Match[str], frac: str) -> str:
    """``start`` written in the layout of the matched text, rounded down to its precision."""
    text = f"{start.date().isoformat()}{match['sep']}{start.hour:02d}:{start.minute:02d}"
    if match["s"] is not None:
        text += f":{start.second:02d}"
        if frac:
            digits = f"{start.microsecond:06d}"
            # Truncating rounds down (earlier: a wider window); digits past micros are kept.
            text += "." + (digits[: len(frac)] if len(frac) <= 6 else digits + frac[6:])
    return text + (match["zone"] or "")


def _not_temporal(value: object) -> SourceError:
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return SourceError(
        f"lookback needs a temporal or numeric cursor, but the cursor value {shown} "
        f"({type(value).__name__}) is not a date, timestamp or number; remove `lookback` "
        "or use a timestamp, date or numeric cursor column"
    )
