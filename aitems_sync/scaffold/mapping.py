"""Column types to AiTEMS field types, as ``init`` maps them (the table in docs/spec.md,
"Starting a spec"). Pure: a column and the dialect in, a field type and the reason out.

The mapping follows the coercion table (docs/coercion.md): each column's values, as its driver
returns them, coerce to the field type chosen, so a starter spec sends its rows as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from aitems_sync.scaffold.catalog import Column
from aitems_sync.spec.model import FieldType

#: Text columns named like this hold times on SQLite, which has no datetime type and keeps
#: them as ISO 8601 text (coercion reads such text as epoch seconds for a long field).
TIME_NAME = re.compile(
    r"(^|_)(at|on|time|timestamp|ts|date|datetime)$|^(created|updated|modified|changed)$",
    re.IGNORECASE)
#: Names that say a column changes whenever its row does.
CHANGE_NAME = re.compile(r"updated|modified|changed|last_update|edited|version|revision",
                         re.IGNORECASE)
#: Names of a row's creation time (an item's CREATION_TIMESTAMP).
CREATION_NAME = re.compile(r"created|creation|inserted|registered|signup|added|published",
                           re.IGNORECASE)
#: Names of an integer that grows with each new row.
SEQUENCE_NAME = re.compile(r"(^|_)(seq|sequence|serial|offset|position)$", re.IGNORECASE)
#: Words of a column name that make a text field a likely category.
CATEGORY_WORDS = frozenset({
    "gender", "sex", "category", "type", "kind", "status", "state", "country", "region",
    "city", "brand", "color", "colour", "size", "genre", "language", "lang", "locale",
    "segment", "tier", "level", "grade", "class", "group", "channel", "device", "platform",
    "os", "source", "currency", "plan", "role",
})
#: Words of a column name that suggest personal or secret data: such columns are left out.
PRIVATE_WORDS = frozenset({
    "password", "passwd", "pwd", "secret", "token", "salt", "hash", "email", "mail", "phone",
    "mobile", "tel", "ssn",
})
#: The longest declared text that is suggested as categorical without a telling name.
SHORT_TEXT = 32


@dataclass(frozen=True)
class Mapped:
    """How one column becomes a field: ``type`` is None when no AiTEMS type fits (the column is
    left out), ``why`` says what was read and decided, for the spec's comment."""

    type: FieldType | None
    why: str
    categorical: bool = False
    #: A categorical suggestion a person should confirm (text of unknown meaning).
    ask_categorical: bool = False

    def types(self, nullable: bool) -> tuple[FieldType, ...]:
        """The field's union: the type, and ``null`` when the column may be NULL."""
        assert self.type is not None
        return (self.type, "null") if nullable else (self.type,)


def words(name: str) -> list[str]:
    """A name's words in order, lower case: ``eventType`` and ``event_type`` both give
    event, type."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


def is_temporal(column: Column, dialect: str) -> bool:
    """A date or a timestamp, or on SQLite text named like one."""
    if isinstance(column.type, sa.DateTime | sa.Date):
        return True
    return dialect == "sqlite" and is_text(column) and bool(TIME_NAME.search(column.name))


def is_naive(column: Column, dialect: str) -> bool:
    """A time without a zone: read in the source's ``timezone``."""
    if isinstance(column.type, sa.DateTime):
        return not column.type.timezone
    return is_temporal(column, dialect)


def is_integer(column: Column) -> bool:
    return isinstance(column.type, sa.Integer)


def is_text(column: Column) -> bool:
    return isinstance(column.type, sa.String)


def is_private(column: Column) -> bool:
    return not PRIVATE_WORDS.isdisjoint(words(column.name))


def map_column(column: Column, dialect: str) -> Mapped:
    """The field type for a column's values (see the module docstring)."""
    kind = column.type
    text = column.type_text
    if is_temporal(column, dialect):
        if isinstance(kind, sa.String):
            return Mapped("long", f"{text} named like a time: ISO 8601 text read as epoch "
                          "seconds (convert another layout in the query)")
        return Mapped("long", f"{text} as epoch seconds")
    if isinstance(kind, sa.Boolean):
        return Mapped("boolean", text)
    if isinstance(kind, sa.Integer):
        return Mapped(_integer(kind, dialect), text)
    if isinstance(kind, sa.Float):  # not a Numeric from SQLAlchemy 2.1 on
        return Mapped("double", text)
    if isinstance(kind, sa.Numeric):
        return Mapped(_numeric(kind), text)
    if isinstance(kind, sa.Uuid):
        return Mapped("string", f"{text} as text")
    if isinstance(kind, sa.Enum):
        return Mapped("string", f"enum {text}, so categorical",
                      categorical=True)
    if isinstance(kind, sa.String):
        return _text(column)
    if isinstance(kind, sa.Time):
        return Mapped("string", f"{text} as text (HH:MM:SS)")
    return Mapped(None, f"{text} has no AiTEMS type; to send it, convert it in the query "
                  "and add a field")


def _integer(kind: sa.Integer, dialect: str) -> FieldType:
    # SQLite stores every integer in 64 bits; MySQL's unsigned INT passes 2**31.
    if (dialect == "sqlite" or isinstance(kind, sa.BigInteger)
            or getattr(kind, "unsigned", False)):
        return "long"
    return "int"


def _numeric(kind: sa.Numeric[Any]) -> FieldType:
    if kind.scale is None or kind.scale > 0:
        return "double"
    precision = kind.precision or 99
    return "int" if precision <= 9 else "long" if precision <= 18 else "double"


def _text(column: Column) -> Mapped:
    length = getattr(column.type, "length", None)
    if not CATEGORY_WORDS.isdisjoint(words(column.name)):
        return Mapped("string", f"{column.type_text}, named like a category, so "
                      "categorical", categorical=True, ask_categorical=True)
    if length is not None and length <= SHORT_TEXT:
        return Mapped("string", f"{column.type_text}: short text, so categorical",
                      categorical=True, ask_categorical=True)
    return Mapped("string", column.type_text)
