"""What ``init`` knows of a database: its tables, columns, keys and indexes, read with
SQLAlchemy's inspector. The dataclasses are the hand-off to the pure decisions; only
:func:`inspect_catalog` does I/O."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine.reflection import ObjectKind
from sqlalchemy.sql.compiler import IdentifierPreparer

from aitems_sync.errors import SourceError


@dataclass(frozen=True)
class Column:
    """One column: its SQLAlchemy type, whether it may be NULL, and its type as the database
    names it (``VARCHAR(20)``), for the comments of the spec."""

    name: str
    type: sa.types.TypeEngine[Any]
    nullable: bool
    type_text: str


@dataclass(frozen=True)
class ForeignKey:
    columns: tuple[str, ...]
    table: str  # the referred table
    referred: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    """One table (or view) with what the decisions read of it."""

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()
    #: Each index by name with its columns in order (unique constraints included).
    indexes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    foreign_keys: tuple[ForeignKey, ...] = ()
    #: Column sets that are unique (the primary key, unique constraints and unique indexes).
    unique: tuple[tuple[str, ...], ...] = ()
    view: bool = False

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def leading_index(self, name: str) -> str | None:
        """The name of an index (or ``primary key``) whose first column is ``name``: a range
        on that column can then be read through it."""
        if self.primary_key[:1] == (name,):
            return "the primary key"
        return next((f"index {index}" for index, columns in self.indexes
                     if columns[:1] == (name,)), None)


@dataclass(frozen=True)
class Catalog:
    """The tables of one schema of a database; ``dialect`` is SQLAlchemy's name for it, and
    ``preparer`` quotes its identifiers."""

    dialect: str
    schema: str | None
    preparer: IdentifierPreparer
    tables: Mapping[str, Table] = field(default_factory=dict)

    def from_clause(self, table: str) -> str:
        """The table as a query names it, quoted where the database needs it."""
        name = self.preparer.quote(table)
        return f"{self.preparer.quote_schema(self.schema)}.{name}" if self.schema else name

    def alias(self, name: str) -> str:
        """A result column name as written after AS: bare when it is an upper-case word the
        database does not reserve (it then matches its field ignoring case), else quoted."""
        if re.fullmatch(r"[A-Z][A-Z0-9_]*", name) and (
                name.lower() not in self.preparer.reserved_words):
            return name
        return self.preparer.quote_identifier(name)


def inspect_catalog(engine: sa.Engine, schema: str | None = None) -> Catalog:
    """Read every table and view of ``schema`` (the default schema when None).

    Raises SourceError when the database cannot be read (the message names no credential).
    """
    try:
        inspector = sa.inspect(engine)
        views = set(inspector.get_view_names(schema=schema))
        kind = ObjectKind.ANY
        columns = inspector.get_multi_columns(schema=schema, kind=kind)
        keys = inspector.get_multi_pk_constraint(schema=schema, kind=kind)
        indexes = inspector.get_multi_indexes(schema=schema, kind=kind)
        uniques = inspector.get_multi_unique_constraints(schema=schema, kind=kind)
        foreign = inspector.get_multi_foreign_keys(schema=schema, kind=kind)
    except sa.exc.SQLAlchemyError as error:
        where = f"schema {schema!r}" if schema else "the default schema"
        raise SourceError(f"cannot read the tables of {where}: "
                          f"{_first_line(error)}") from error
    dialect = engine.dialect
    tables = {}
    for (_schema, name), found in sorted(columns.items(), key=lambda item: item[0][1]):
        tables[name] = _table(name, found, keys.get((_schema, name)) or {},
                              indexes.get((_schema, name)) or [],
                              uniques.get((_schema, name)) or [],
                              foreign.get((_schema, name)) or [], name in views, dialect)
    return Catalog(dialect=dialect.name, schema=schema, preparer=dialect.identifier_preparer,
                   tables=tables)


def _table(name: str, columns: list[Any], key: Mapping[str, Any], indexes: list[Any],
           uniques: list[Any], foreign: list[Any], view: bool, dialect: sa.Dialect) -> Table:
    primary = tuple(key.get("constrained_columns") or ())
    named = [(str(i.get("name")), tuple(c for c in i["column_names"] if c is not None))
             for i in indexes]
    named += [(str(u.get("name")), tuple(u["column_names"])) for u in uniques]
    unique = [tuple(u["column_names"]) for u in uniques]
    unique += [tuple(c for c in i["column_names"] if c is not None) for i in indexes
               if i.get("unique")]
    return Table(
        name=name,
        columns=tuple(Column(c["name"], c["type"],
                             # A primary key is never NULL, though SQLite reports it nullable.
                             bool(c["nullable"]) and c["name"] not in primary,
                             type_text(c["type"], dialect)) for c in columns),
        primary_key=primary,
        indexes=tuple(named),
        foreign_keys=tuple(ForeignKey(tuple(f["constrained_columns"]), f["referred_table"],
                                      tuple(f["referred_columns"])) for f in foreign),
        unique=tuple(([primary] if primary else []) + unique),
        view=view,
    )


def type_text(type_: sa.types.TypeEngine[Any], dialect: sa.Dialect) -> str:
    """The column type as the database writes it (``VARCHAR(20)``, ``TIMESTAMP WITH TIME
    ZONE``), or ``no declared type``."""
    if isinstance(type_, sa.types.NullType):
        return "no declared type"
    try:
        return str(type_.compile(dialect=dialect))
    except sa.exc.SQLAlchemyError:
        return type(type_).__name__


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
