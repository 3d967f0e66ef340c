"""One dataset of the starter spec, drafted purely from a table and the choices made for it:
its fields, the columns its query reads, its cursor, key and lookback, and the comments that
tell a person what to check (docs/spec.md, "Starting a spec")."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from aitems_sync.scaffold.catalog import Catalog, Column, Table
from aitems_sync.scaffold.choose import (
    Choice,
    CursorChoice,
    choose_cursor,
    entity_id,
    event_time,
    reference,
)
from aitems_sync.scaffold.mapping import (
    CREATION_NAME,
    Mapped,
    is_naive,
    is_private,
    is_temporal,
    map_column,
    words,
)
from aitems_sync.spec.model import REQUIRED_FIELDS, DatasetType, FieldType

#: The lookback written for a time cursor: a common bound of a write transaction's length.
LOOKBACK = "10m"
#: Column names (their words) that take AiTEMS's reserved field names, per dataset type.
RESERVED: Mapping[DatasetType, tuple[tuple[str, frozenset[str]], ...]] = {
    "user": (),
    "item": (("CATEGORY", frozenset({"category", "category_name"})),),
    "interaction": (("EVENT_TYPE", frozenset({"event_type", "type", "event", "action",
                                              "kind", "action_type", "event_name"})),
                    ("EVENT_VALUE", frozenset({"event_value", "value", "rating", "score"}))),
}


@dataclass(frozen=True)
class FieldDraft:
    """A field: its AiTEMS name, the column it reads (None: a person must name one), its
    type union and whether it is categorical, and a comment on how it was mapped."""

    name: str
    column: str | None
    types: tuple[FieldType, ...]
    categorical: bool = False
    comment: str = ""


@dataclass(frozen=True)
class DatasetDraft:
    name: str
    type: DatasetType
    table: str
    fields: tuple[FieldDraft, ...]
    #: Columns read but not uploaded (the cursor, the key), with their result names.
    extra: tuple[tuple[str, str], ...]
    cursor: CursorChoice
    #: The cursor's result column name (the field's name when the cursor is a field).
    cursor_name: str
    key: tuple[str, ...] = ()
    key_why: str = ""
    lookback: str | None = None
    #: Comments on the columns that are not fields: why each was left out.
    left_out: tuple[str, ...] = ()
    #: What a person must do before ``validate --connect`` passes.
    todo: tuple[str, ...] = ()
    #: Whether a time without zone is read (the source's timezone then matters).
    naive_times: bool = False


def field_name(column: str) -> str:
    """An AiTEMS field name for a column: upper case, ``_`` for anything but letters and
    digits, never starting with a digit."""
    name = re.sub(r"[^A-Z0-9_]", "_", column.upper()) or "FIELD"
    return f"F_{name}" if name[0].isdigit() else name


class _Fields:
    """The fields of one draft as they are added, with unique names."""

    def __init__(self) -> None:
        self.items: list[FieldDraft] = []

    def add(self, name: str, column: str | None, mapped: Mapped, nullable: bool,
            comment: str = "") -> FieldDraft:
        taken = {f.name for f in self.items}
        unique, n = name, 2
        while unique in taken:
            unique, n = f"{name}_{n}", n + 1
        draft = FieldDraft(unique, column, mapped.types(nullable), mapped.categorical,
                           comment or _comment(mapped, column))
        self.items.append(draft)
        return draft


def _comment(mapped: Mapped, column: str | None) -> str:
    source = f"{column}: " if column else ""
    text = f"{source}{mapped.why}"
    if mapped.ask_categorical:
        text += " (decide)"
    elif mapped.type == "string" and not mapped.categorical:
        text += "; decide: categorical if it takes few values"
    return text


def _required(fields: _Fields, kind: DatasetType, name: str, choice: Choice,
              table: Table, dialect: str) -> None:
    field_type = REQUIRED_FIELDS[kind][name]
    if choice.name is None:
        fields.add(name, None, Mapped(field_type, ""), False,
                   f"todo: no column found; add one to the query as {name}")
        return
    column = table.column(choice.name)
    why = f"{column.name}: {choice.why} ({column.type_text}"
    why += ", as epoch seconds)" if field_type == "long" and is_temporal(column, dialect) else ")"
    if column.nullable:
        why += "; nullable: rows where it is NULL go to the quarantine"
    fields.add(name, column.name, Mapped(field_type, ""), False, why)


def draft_dataset(catalog: Catalog, table: Table, kind: DatasetType, name: str,
                  targets: Mapping[str, Table | None]) -> DatasetDraft:
    """The draft of dataset ``name`` of type ``kind`` from ``table``; ``targets``: the user
    and item tables an event table refers to (or None)."""
    dialect = catalog.dialect
    fields = _Fields()
    todo: list[str] = []
    used: set[str] = set()
    if kind == "interaction":
        refs = {"USER_ID": reference(table, targets.get("user"), "user"),
                "ITEM_ID": reference(table, targets.get("item"), "item"),
                "TIMESTAMP": event_time(table, dialect)}
        cursor = choose_cursor(table, kind, dialect, exclude=[
            c.name for c in (refs["USER_ID"], refs["ITEM_ID"]) if c.name])
        key = table.primary_key
    else:
        refs = {"USER_ID" if kind == "user" else "ITEM_ID": entity_id(table)}
        cursor = choose_cursor(table, kind, dialect)
        key = ()
    for required, choice in refs.items():
        _required(fields, kind, required, choice, table, dialect)
        if choice.name is None:
            todo.append(f"{required}: {choice.why}; add the column to the query as {required}")
        else:
            used.add(choice.name)
    used.update(key)
    left_out = _other_fields(fields, table, kind, dialect, used, cursor)
    by_column = {f.column: f.name for f in fields.items if f.column}
    cursor_name, extra = _extra_columns(table, cursor, key, by_column)
    if cursor.column is None:
        todo.append(f"cursor: {cursor.why}; {cursor.advice}")
    read = [*by_column, *(column for column, _ in extra)]
    return DatasetDraft(
        name=name, type=kind, table=table.name, fields=tuple(fields.items), extra=extra,
        cursor=cursor, cursor_name=cursor_name,
        key=tuple(dict(extra).get(k, by_column.get(k, k)) for k in key),
        key_why=_key_why(kind, key),
        lookback=LOOKBACK if cursor.temporal else None,
        left_out=tuple(left_out), todo=tuple(todo),
        naive_times=any(is_naive(table.column(c), dialect) for c in read),
    )


def _other_fields(fields: _Fields, table: Table, kind: DatasetType, dialect: str,
                  used: set[str], cursor: CursorChoice) -> list[str]:
    """Add a field per remaining column (reserved names first taken by the columns that fit
    them); return the comments on the columns left out."""
    left_out = []
    reserved = dict(RESERVED[kind])
    creation_taken = False
    for column in table.columns:
        if column.name in used:
            continue
        if column.name == cursor.column and not (
                kind == "item" and not creation_taken and _is_creation(column, dialect)):
            continue  # the cursor is read, not sent: a touched row then costs no upload
        mapped = map_column(column, dialect)
        if is_private(column):
            left_out.append(f"{column.name}: left out, named like personal or secret data; "
                            "add it if AiTEMS should have it")
            continue
        if mapped.type is None:
            left_out.append(f"{column.name}: left out, {mapped.why}")
            continue
        name = field_name(column.name)
        if kind == "item" and not creation_taken and _is_creation(column, dialect):
            name, creation_taken = "CREATION_TIMESTAMP", True
        for reserved_name, names in list(reserved.items()):
            if "_".join(words(column.name)) in names:
                name = reserved_name
                del reserved[reserved_name]
                if reserved_name == "CATEGORY":
                    mapped = Mapped("string", mapped.why, categorical=True,
                                    ask_categorical=mapped.ask_categorical)
                break
        fields.add(name, column.name, mapped, column.nullable)
    return left_out


def _is_creation(column: Column, dialect: str) -> bool:
    return is_temporal(column, dialect) and bool(CREATION_NAME.search(column.name))


def _extra_columns(table: Table, cursor: CursorChoice, key: tuple[str, ...],
                   by_column: Mapping[str, str]) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The cursor's result name, and the columns read besides the fields: the cursor and the
    key when they are not fields, renamed when their name would clash with a field's (result
    columns match fields ignoring case)."""
    taken = {name.lower() for name in by_column.values()}
    extra: dict[str, str] = {}
    for column, role in [(cursor.column, "cursor"), *((k, "key") for k in key)]:
        if column is None or column in by_column or column in extra:
            continue
        result, n = column, 1
        while result.lower() in taken:
            result, n = f"{column}_{role}{n if n > 1 else ''}", n + 1
        taken.add(result.lower())
        extra[column] = result
    if cursor.column is None:
        return "CHANGE_ME", tuple(extra.items())
    return by_column.get(cursor.column) or extra[cursor.column], tuple(extra.items())


def _key_why(kind: DatasetType, key: tuple[str, ...]) -> str:
    if kind != "interaction":
        return ""
    if key:
        return "the primary key: each event is sent once, even two alike"
    return ("the whole row (the table has no primary key): two identical events are sent "
            "once; name an event id column here if it has one")
