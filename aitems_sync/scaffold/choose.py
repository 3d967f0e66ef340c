"""``init``'s choices, made purely from the catalog: which table feeds which dataset type, which
columns are the ids and the event time, and which column is the cursor, each with its reason
(docs/spec.md, "Starting a spec")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aitems_sync.scaffold.catalog import Catalog, Column, Table
from aitems_sync.scaffold.mapping import (
    CHANGE_NAME,
    CREATION_NAME,
    SEQUENCE_NAME,
    TIME_NAME,
    is_integer,
    is_temporal,
    words,
)
from aitems_sync.spec.model import DatasetType

DATASET_TYPES: tuple[DatasetType, ...] = ("user", "item", "interaction")
#: Table names (their last word, singular) that suggest each dataset type.
TABLE_WORDS: Mapping[DatasetType, frozenset[str]] = {
    "user": frozenset({"user", "customer", "member", "account", "client", "person", "people",
                       "shopper", "buyer", "subscriber", "profile"}),
    "item": frozenset({"item", "product", "article", "content", "sku", "listing", "good",
                       "catalog", "offer"}),
    "interaction": frozenset({"event", "interaction", "activity", "action", "click", "view",
                              "purchase", "rating", "review", "play", "history", "log",
                              "behavior", "behaviour"}),
}
#: Column names (besides a foreign key) that point at a user or an item.
REFERENCE_NAMES: Mapping[str, tuple[str, ...]] = {
    "user": ("user_id", "userid", "uid", "customer_id", "member_id", "account_id",
             "client_id"),
    "item": ("item_id", "itemid", "product_id", "sku", "article_id", "content_id"),
}
#: Names of an event's time, best first.
EVENT_TIME_WORDS = ("occurred", "happened", "event", "timestamp", "ts", "time", "created")


@dataclass(frozen=True)
class Choice:
    """A column (or table) chosen, or None, and why (or what to do about it)."""

    name: str | None
    why: str


@dataclass(frozen=True)
class CursorChoice:
    column: str | None
    why: str
    temporal: bool = False
    #: What a person should weigh or do (an index to add, updates an id cursor misses).
    advice: str = ""


def singular(word: str) -> str:
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def _last_word(name: str) -> str:
    found = words(name)
    return singular(found[-1]) if found else ""


# -- tables --------------------------------------------------------------------------------


def pick_tables(catalog: Catalog) -> tuple[dict[DatasetType, Choice], list[str]]:
    """Guess a table per dataset type from the names; an interaction table must also hold a
    user, an item and a time column (it may then be found by those alone). Returns the picks
    and, for each type left without one, a note saying why and which option to give."""
    picks: dict[DatasetType, Choice] = {}
    notes: list[str] = []
    for kind in DATASET_TYPES:
        scored = _candidates(catalog, kind, picks)
        best = max((score for score, _ in scored), default=0)
        top = [name for score, name in scored if score == best and score > 0]
        if len(top) == 1:
            picks[kind] = Choice(top[0], _pick_reason(kind, best))
        elif top:
            notes.append(f"{kind}: several tables fit ({', '.join(top)}): pass --{kind} TABLE")
        else:
            shallow = [name for score, name in scored if score < 0]
            notes.append(f"{kind}: {', '.join(shallow)} named like one, but without a user, "
                         f"an item and a time column: pass --{kind} TABLE to draft it anyway"
                         if shallow else f"{kind}: no table is named like one: pass --{kind} "
                         "TABLE to add it")
    return picks, notes


def _candidates(catalog: Catalog, kind: DatasetType,
                picks: Mapping[DatasetType, Choice]) -> list[tuple[int, str]]:
    """Each table's score for ``kind``: 3 its whole name fits, 2 its last word, 1 (events
    only) its columns alone; an event table named like one whose columns do not fit scores
    -1."""
    taken = {c.name for c in picks.values()}
    found = []
    for name, table in catalog.tables.items():
        if name in taken or table.view:
            continue
        score = 0
        if singular(name.lower()) in TABLE_WORDS[kind]:
            score = 3
        elif _last_word(name) in TABLE_WORDS[kind]:
            score = 2
        if kind == "interaction":
            fits = _refers_to_both(catalog, table, picks)
            score = (score or 1) if fits else -1 if score else 0
        found.append((score, name))
    return found


def _refers_to_both(catalog: Catalog, table: Table, picks: Mapping[DatasetType, Choice]) -> bool:
    targets = {k: catalog.tables.get(picks[k].name or "") if k in picks else None
               for k in ("user", "item")}
    return all(reference(table, targets[k], k).name for k in ("user", "item")) and bool(
        event_time(table, catalog.dialect).name)


def _pick_reason(kind: DatasetType, score: int) -> str:
    if score == 1:
        return "it refers to the user and the item tables and has a time column"
    return f"its name suggests {kind}s"


# -- ids and the event time ----------------------------------------------------------------


def entity_id(table: Table) -> Choice:
    """The column that identifies a user or an item: the primary key, else a unique NOT NULL
    column, else one named ``id``."""
    if len(table.primary_key) == 1:
        return Choice(table.primary_key[0], "the primary key")
    if len(table.primary_key) > 1:
        return Choice(table.primary_key[0], "the first column of a primary key of "
                      f"{len(table.primary_key)} columns: decide: build one id in the query "
                      "if the others are needed to tell rows apart")
    for columns in table.unique:
        if len(columns) == 1 and not table.column(columns[0]).nullable:
            return Choice(columns[0], "unique and NOT NULL (the table has no primary key)")
    for column in table.columns:
        if column.name.lower() in ("id", f"{singular(table.name.lower())}_id"):
            return Choice(column.name, "named like an id (the table has no primary key or "
                          "unique column): decide: check that it is unique")
    return Choice(None, "no primary key, unique column or id column")


def reference(table: Table, target: Table | None, kind: str) -> Choice:
    """The column of an event table that names a user (``kind`` user) or an item: a foreign
    key to the ``target`` table, else a column with a telling name."""
    if target is not None:
        for key in table.foreign_keys:
            if key.table == target.name and len(key.columns) == 1:
                return Choice(key.columns[0], f"a foreign key to {target.name}")
    names = [*REFERENCE_NAMES[kind]]
    if target is not None:
        names.insert(0, f"{singular(target.name.lower())}_id")
    for wanted in names:
        for column in table.columns:
            if column.name.lower() == wanted:
                return Choice(column.name, f"named like the {kind}'s id")
    return Choice(None, f"no foreign key to the {kind} table and no column named "
                  f"{' or '.join(names[:3])}")


def event_time(table: Table, dialect: str) -> Choice:
    """The column that says when an event happened: a time column, NOT NULL first, then by
    name (``occurred_at`` before ``created_at``)."""
    times = [c for c in table.columns if is_temporal(c, dialect)]
    if not times:
        epoch = next((c for c in table.columns if is_integer(c) and TIME_NAME.search(c.name)),
                     None)
        if epoch is not None:
            return Choice(epoch.name, "an integer named like a time; decide: it must hold "
                          "epoch seconds (divide milliseconds by 1000 in the query)")
        return Choice(None, "no date or timestamp column")

    def rank(column: Column) -> tuple[bool, int]:
        found = words(column.name)
        position = next((i for i, w in enumerate(EVENT_TIME_WORDS) if w in found),
                        len(EVENT_TIME_WORDS))
        return (column.nullable, position)

    best = min(times, key=rank)
    return Choice(best.name, "the event's time")


# -- the cursor ----------------------------------------------------------------------------


def choose_cursor(table: Table, kind: DatasetType, dialect: str,
                  exclude: Sequence[str] = ()) -> CursorChoice:
    """The column each run reads on from, among the times and the integers that count rows
    (a one-column primary key, or named like a sequence or a version).

    Users and items change: a column named for changes (``updated_at``) first, then NOT NULL
    (rows with a NULL cursor are never read), a time before an integer, a creation time before
    other times, and an indexed column before one without. Events are only appended: NOT NULL
    first, then indexed (the event table is the large one), then a time before an id.
    """
    candidates = [c for c in table.columns if c.name not in exclude
                  and (is_temporal(c, dialect) or _counts_rows(table, c))]
    if not candidates:
        return CursorChoice(None, "no date, timestamp or id column", advice=(
            "add a column that grows with each change (updated_at, set by the database, "
            "with an index) and name it in cursor"))

    def rank(column: Column) -> tuple[bool, ...]:
        temporal = is_temporal(column, dialect)
        indexed = table.leading_index(column.name) is not None
        if kind == "interaction":
            return (not column.nullable, indexed, temporal)
        return (bool(CHANGE_NAME.search(column.name)), not column.nullable, temporal,
                bool(CREATION_NAME.search(column.name)), indexed)

    best = max(candidates, key=rank)  # max keeps the first of equals: the table's order
    return _explain(table, kind, best, is_temporal(best, dialect))


def _counts_rows(table: Table, column: Column) -> bool:
    """An integer that grows as rows come or change: the one-column primary key, or a column
    named like a sequence or a version."""
    return is_integer(column) and (table.primary_key == (column.name,) or bool(
        SEQUENCE_NAME.search(column.name) or CHANGE_NAME.search(column.name)))


def _explain(table: Table, kind: DatasetType, column: Column, temporal: bool) -> CursorChoice:
    index = table.leading_index(column.name)
    changes = bool(CHANGE_NAME.search(column.name))
    reasons = [("a time" if temporal else "an integer") + (" named for changes" if changes
                                                             and kind != "interaction" else ""),
               "NOT NULL" if not column.nullable else "nullable"]
    if index:
        reasons.append(f"the first column of {index}")
    advice = []
    if column.nullable:
        advice.append(f"rows whose {column.name} is NULL are never read")
    if not index:
        advice.append(f"no index starts with it, so each run reads the whole table: add one "
                      f"(CREATE INDEX ON {table.name} ({column.name}))")
    if kind != "interaction" and not changes:
        advice.append("updates are missed unless it grows on every update: prefer a column "
                      "the database sets on each change (updated_at)")
    if kind == "interaction" and not temporal:
        advice.append("ids grow on insert, but concurrent inserts may commit out of order")
    return CursorChoice(column.name, ", ".join(reasons), temporal, "; ".join(advice))
