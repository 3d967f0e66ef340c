"""The coercion table: how a database value becomes a value of an AiTEMS field type.

One converter per field type. A converter returns the converted value, ``NO_RULE`` when the
table has no rule for the value's kind, or a ``Failed`` saying why a rule could not apply. It never
raises. Which converted value is kept, for unions, is decided in ``shape.py``. The table, with the
reasons for each choice, is docs/coercion.md.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any, Final
from zoneinfo import ZoneInfo

from aitems_sync.spec.model import FieldType


class _NoRule:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_RULE"


NO_RULE: Final = _NoRule()


class Failed:
    """A coercion rule matched the value's kind but could not convert this value."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


Converter = Callable[[Any], Any]

_SECOND = timedelta(seconds=1)
_UTC_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_MIDNIGHT = time()
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_TRUE = frozenset({"true", "t", "1"})
_FALSE = frozenset({"false", "f", "0"})
_EXACT_FLOAT_INT = 2**53  # below this every integral float prints as its exact integer


def epoch_seconds(tz: tzinfo) -> Callable[[datetime], int]:
    """Epoch seconds (floored) of a datetime; naive datetimes are read in ``tz``.

    Naive local times that a DST change makes ambiguous or skipped follow Python's rule for
    ``fold=0`` (the offset before the change).
    """
    # ZoneInfo and fixed offsets read a naive datetime's wall time directly, which saves the
    # costly replace(tzinfo=...) per row; other tzinfo classes may expect their own datetimes.
    wall_clock = isinstance(tz, (ZoneInfo, timezone))

    def epoch(value: datetime) -> int:
        if value.tzinfo is not None:
            return (value - _UTC_EPOCH) // _SECOND
        if wall_clock:
            offset = tz.utcoffset(value)
            assert offset is not None  # both classes always know their offset
            return (value - _NAIVE_EPOCH - offset) // _SECOND
        return (value.replace(tzinfo=tz) - _UTC_EPOCH) // _SECOND

    return epoch


def _float_to_string(value: float) -> Any:
    if not math.isfinite(value):
        return Failed("not a finite number")
    if value.is_integer() and abs(value) < _EXACT_FLOAT_INT:
        return str(int(value))
    return repr(value)


def _decimal_to_string(value: Decimal) -> Any:
    if not value.is_finite():
        return Failed("not a finite number")
    return format(value, "f") if abs(value.adjusted()) <= 50 else str(value)


def _bytes_to_string(value: bytes | bytearray | memoryview) -> Any:
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        return Failed("not valid UTF-8")


def _isoformat(value: datetime | date | time) -> str:
    return value.isoformat()


def _no_boolean_text(value: bool) -> Failed:
    return Failed("a boolean is not turned into text (true, True, t and 1 are all in use)")


def _no_boolean_number(value: bool) -> Failed:
    return Failed("a boolean is not turned into a number")


def _dispatch(rules: Sequence[tuple[type | tuple[type, ...], Converter]]) -> Converter:
    """A converter applying the first rule whose type(s) the value is an instance of.

    The exact types of the rules are looked up in a dict first: most values take one lookup.
    It never raises: a rule that fails unexpectedly gives ``Failed``.
    """
    exact: dict[type, Converter] = {}
    for kinds, rule in rules:
        for kind in kinds if isinstance(kinds, tuple) else (kinds,):
            exact.setdefault(kind, rule)
    lookup = exact.get

    def convert(value: Any) -> Any:
        try:
            rule = lookup(type(value))
            if rule is not None:
                return rule(value)
            for kinds, rule in rules:  # subclasses: an IntEnum, a pendulum DateTime...
                if isinstance(value, kinds):
                    return rule(value)
        except Exception as exc:  # an odd subclass or tzinfo must not stop the run: reject the row
            return Failed(f"{type(exc).__name__} while converting it")
        return NO_RULE

    return convert


to_string = _dispatch(
    [
        (str, str.__str__),  # a str subclass (a StrEnum, say) as its plain text
        (bool, _no_boolean_text),
        (int, lambda value: _guard(str, value, "too many digits")),
        (float, _float_to_string),
        (Decimal, _decimal_to_string),
        (uuid.UUID, str),
        ((datetime, date, time), _isoformat),
        ((bytes, bytearray, memoryview), _bytes_to_string),
    ]
)
"""string: see docs/coercion.md."""


def integer_converter(tz: tzinfo) -> Converter:
    """int and long: see docs/coercion.md. The range is checked by validation, not here."""
    epoch = epoch_seconds(tz)

    def from_float(value: float) -> Any:
        return int(value) if value.is_integer() else Failed(_not_whole(value))

    def from_decimal(value: Decimal) -> Any:
        if not value.is_finite() or value != value.to_integral_value():
            return Failed(_not_whole(value))
        return int(value) if value.adjusted() <= 30 else Failed("out of range")

    def from_date(value: date) -> int:
        return epoch(datetime.combine(value, _MIDNIGHT))

    def from_text(text: str) -> Any:
        if _INTEGER.fullmatch(text):
            return _guard(int, text, "too many digits")
        try:
            return epoch(datetime.fromisoformat(text))
        except ValueError:
            return Failed("not an integer nor an ISO 8601 date or date-time")

    return _dispatch(
        [
            (bool, _no_boolean_number),
            (int, int),
            (float, from_float),
            (Decimal, from_decimal),
            (datetime, epoch),
            (date, from_date),
            (str, from_text),
        ]
    )


def _text_to_number(text: str) -> Any:
    return float(text) if _DECIMAL.fullmatch(text) else Failed("not a decimal number")


to_number = _dispatch(
    [
        (bool, _no_boolean_number),
        ((int, float, Decimal), lambda value: _guard(float, value, "out of the range of a double")),
        (str, _text_to_number),
    ]
)
"""float and double: see docs/coercion.md. NaN and infinities convert, then fail validation."""


def _int_to_boolean(value: int) -> Any:
    return bool(value) if value in (0, 1) else Failed("only 0 and 1 are read as booleans")


def _text_to_boolean(text: str) -> Any:
    folded = text.lower()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    return Failed("only true/false, t/f and 1/0 are read as booleans")


to_boolean = _dispatch([(bool, bool), (int, _int_to_boolean), (str, _text_to_boolean)])
"""boolean: see docs/coercion.md."""


def to_null(value: Any) -> Any:
    """null: only None, which never reaches a converter."""
    return NO_RULE


def converters(tz: tzinfo) -> Mapping[FieldType, Converter]:
    """The converter of each field type, with naive datetimes read in ``tz``."""
    to_integer = integer_converter(tz)
    return {
        "string": to_string,
        "int": to_integer,
        "long": to_integer,
        "float": to_number,
        "double": to_number,
        "boolean": to_boolean,
        "null": to_null,
    }


def _not_whole(value: float | Decimal) -> str:
    finite = value.is_finite() if isinstance(value, Decimal) else math.isfinite(value)
    return "not a whole number" if finite else "not a finite number"


def _guard(convert: Callable[[Any], Any], value: Any, reason: str) -> Any:
    try:
        return convert(value)
    except (ValueError, OverflowError, ArithmeticError):
        return Failed(reason)
