"""Values the driver cannot decode become :class:`Undecodable`, per driver, at no cost to the
values it can.

PostgreSQL (psycopg 3): ``date``, ``timestamp`` and ``timestamptz`` values outside Python's
range (``infinity``, ``-infinity``, BC dates, years after 9999) make psycopg's loaders raise,
and the error ended the whole fetch: the rows before it in the chunk were never seen and every
run failed at the same place. Each connection gets loaders for those types that call psycopg's
own loader (its C one where installed) and keep the text of a value it refuses. The choice over
SQL casts: the user's query stays as written, and the raw text is kept for the quarantine.

SQLite: TEXT that is not valid UTF-8 makes the sqlite3 module raise while it builds the row. A
text factory that tolerates it would run a Python call for every text value of every row, a
cost a large backfill would pay for values that are almost always valid; so the rows are
fetched with the default (C) decoding, and only the row that failed is fetched again with
:func:`tolerant_text` (:func:`fetch_part`). The sqlite3 cursor builds a row before stepping
past it, so that row is the next one fetched.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable
from typing import Any

from aitems_sync.undecodable import Undecodable

#: The start of sqlite3's message when a TEXT value is not valid UTF-8.
_SQLITE_DECODE_ERROR = "Could not decode to UTF-8"
#: psycopg's types whose loaders refuse values Python's datetime cannot hold.
_PG_TEMPORAL_TYPES = ("date", "timestamp", "timestamptz")


def tolerant_text(data: bytes) -> str | Undecodable:
    """A sqlite3 text factory: the text, or an Undecodable holding it with bytes escaped."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Undecodable(raw=data.decode("utf-8", "backslashreplace"),
                           reason=f"not valid UTF-8 (byte {exc.start} of {len(data)})")


def fetch_part(cursor: Any, size: int) -> list[Any]:
    """Up to ``size`` rows from a sqlite3 cursor, TEXT that is not UTF-8 as Undecodable.

    ``list.extend`` keeps the rows fetched before an error (``fetchmany`` drops them), and the
    row that failed is fetched again with the tolerant text factory, then the default returns.
    """
    part: list[Any] = []
    while len(part) < size:
        try:
            part.extend(itertools.islice(cursor, size - len(part)))
            return part
        except sqlite3.OperationalError as exc:
            if not str(exc).startswith(_SQLITE_DECODE_ERROR):
                raise
        connection = cursor.connection
        factory = connection.text_factory
        connection.text_factory = tolerant_text
        try:
            part.extend(itertools.islice(cursor, 1))
        finally:
            connection.text_factory = factory
    return part


def tolerate_pg_values(dbapi_connection: Any, _record: Any = None) -> None:
    """On a new psycopg connection (a SQLAlchemy ``connect`` listener): loaders for dates and
    timestamps that keep a value psycopg cannot load as an Undecodable, in text and binary."""
    adapters = dbapi_connection.adapters
    for name in _PG_TEMPORAL_TYPES:
        oid = adapters.types[name].oid
        for format_ in (0, 1):
            base = adapters.get_loader(oid, format_)
            if base is not None and not getattr(base, "tolerant", False):
                adapters.register_loader(name, _tolerant_loader(base))


def _tolerant_loader(base: type[Any]) -> type[Any]:
    """A loader class that loads with ``base`` and keeps what ``base`` refuses."""
    from psycopg import DataError  # here: psycopg is a PostgreSQL source's driver, not ours
    from psycopg.adapt import Loader

    binary = base.format == 1  # psycopg's Format.BINARY: the raw value is shown in hex
    class Tolerant(Loader):
        tolerant = True
        format = base.format

        def __init__(self, oid: int, context: Any = None) -> None:
            super().__init__(oid, context)
            self._load: Callable[[Any], Any] = base(oid, context).load

        def load(self, data: Any) -> Any:
            try:
                return self._load(data)
            except DataError as exc:
                raw = bytes(data)
                text = raw.hex() if binary else raw.decode("utf-8", "backslashreplace")
                return Undecodable(raw=text, reason=str(exc).split(": '")[0])

    Tolerant.__name__ = Tolerant.__qualname__ = f"Tolerant{base.__name__}"
    return Tolerant
