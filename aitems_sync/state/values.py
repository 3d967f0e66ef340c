"""The typed value codec: source values to tagged JSON-able lists and back, exactly.

The state store keeps cursor marks, mark keys and quarantined raw rows as JSON text. Plain JSON
would blur the types the engine depends on (a naive and an aware datetime, an ``int`` past 2**53,
a ``Decimal`` and a ``float``), so every value is stored as ``[tag, text]``:

    None                 ["null", null]
    bool                 ["bool", true]
    int                  ["int", "123"]                 text: no loss past 2**53
    float                ["float", "0.1"]               repr: shortest exact form; nan/inf too
    Decimal              ["decimal", "1.50"]            str keeps the exponent and trailing zeros
    str                  ["str", "..."]
    datetime (naive)     ["datetime", "2024-01-01T10:00:00.000001"]
    datetime (aware)     ["datetimetz", "2024-01-01T10:00:00+09:00"]   the offset, not a zone name
    date                 ["date", "2024-01-01"]
    time                 ["time", "10:00:00"] / with its offset if it has one
    timedelta            ["timedelta", [days, seconds, microseconds]]
    UUID                 ["uuid", "…"]
    bytes (and bytearray, memoryview)   ["bytes", base64]    decoded as bytes
    list / tuple         ["list", [...]] / ["tuple", [...]]  items encoded recursively
    dict (str keys)      ["dict", {key: encoded}]
    Undecodable          ["undecodable", [raw, reason]]   a value the source's driver refused

``decode_value(encode_value(v))`` equals ``v`` with the same type (for the built-in types above).
An aware datetime comes back with a fixed offset (``timezone(timedelta(hours=9))``) rather
than the ``ZoneInfo`` it may have had: the instant and the offset are kept, the zone name is not.
Offsets are kept to the second (Python 3.11 cannot parse sub-second offsets back), and ``fold``
(PEP 495) is not kept: database drivers never set it.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import orjson

from aitems_sync.undecodable import Undecodable


def encode_value(value: Any) -> list[Any]:
    """Encode one value as ``[tag, payload]``, JSON-able, keeping its exact type and value.

    Raises TypeError (naming the type) for a type outside the table in the module
    docstring, or a dict with a non-string key.
    """
    # Order matters: bool is an int, datetime is a date.
    if value is None:
        return ["null", None]
    if isinstance(value, bool):
        return ["bool", value]
    if isinstance(value, int):
        return ["int", int.__repr__(value)]
    if isinstance(value, float):
        return ["float", float.__repr__(value)]
    if isinstance(value, Decimal):
        return ["decimal", str(value)]
    if isinstance(value, str):
        return ["str", str(value)]
    if isinstance(value, datetime):
        aware = value.utcoffset() is not None
        return ["datetimetz" if aware else "datetime", value.isoformat()]
    if isinstance(value, date):
        return ["date", value.isoformat()]
    return _encode_other(value)


def _encode_other(value: Any) -> list[Any]:
    """The less common kinds, kept apart so the hot cases above stay a short chain."""
    if isinstance(value, time):
        return ["time", value.isoformat()]
    if isinstance(value, timedelta):
        return ["timedelta", [value.days, value.seconds, value.microseconds]]
    if isinstance(value, uuid.UUID):
        return ["uuid", str(value)]
    if isinstance(value, bytes | bytearray | memoryview):
        return ["bytes", base64.b64encode(bytes(value)).decode("ascii")]
    if isinstance(value, list | tuple):
        tag = "tuple" if isinstance(value, tuple) else "list"
        return [tag, [encode_value(item) for item in value]]
    if isinstance(value, Undecodable):
        return ["undecodable", [value.raw, value.reason]]
    if isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise TypeError(f"a dict key of type {type(bad[0]).__name__} (want str)")
        return ["dict", {k: encode_value(v) for k, v in value.items()}]
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    raise TypeError(f"values of type {kind} cannot be stored")


def _decode_timedelta(payload: Any) -> timedelta:
    days, seconds, micros = payload
    return timedelta(days=days, seconds=seconds, microseconds=micros)


_DECODERS: dict[str, Callable[[Any], Any]] = {
    "null": lambda _payload: None,
    "bool": bool,
    "int": int,
    "float": float,
    "decimal": Decimal,
    "str": str,
    "datetime": datetime.fromisoformat,
    "datetimetz": datetime.fromisoformat,
    "date": date.fromisoformat,
    "time": time.fromisoformat,
    "timedelta": _decode_timedelta,
    "uuid": uuid.UUID,
    "bytes": lambda payload: base64.b64decode(payload),
    "list": lambda payload: [decode_value(item) for item in payload],
    "tuple": lambda payload: tuple(decode_value(item) for item in payload),
    "dict": lambda payload: {k: decode_value(v) for k, v in payload.items()},
    "undecodable": lambda payload: Undecodable(*payload),
}


def decode_value(encoded: Sequence[Any]) -> Any:
    """Decode a ``[tag, payload]`` pair made by :func:`encode_value`.

    Raises ValueError for an unknown tag or a malformed pair (a damaged state store).
    """
    if len(encoded) != 2 or encoded[0] not in _DECODERS:
        raise ValueError(f"not an encoded value: {list(encoded)[:2]!r}")
    return _DECODERS[encoded[0]](encoded[1])


def dumps(value: Any) -> str:
    """JSON text of an already JSON-able value (orjson; non-str dict keys allowed)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=str).decode("utf-8")


def loads(text: str) -> Any:
    """Parse JSON text written by :func:`dumps`."""
    return orjson.loads(text)


def encode_mapping(values: Any) -> str:
    """JSON text of a name -> value mapping, each value encoded (raises TypeError)."""
    return dumps({str(name): encode_value(value) for name, value in values.items()})


def decode_mapping(text: str) -> dict[str, Any]:
    """The mapping stored by :func:`encode_mapping`."""
    return {name: decode_value(item) for name, item in loads(text).items()}
