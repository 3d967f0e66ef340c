"""What each emulated dataset holds and received, and the journal that persists it.

A dataset's rows come from two places: the file its last successful ingest read (``load``) and
the uploads since (``add``). User and item rows are upserted by ``USER_ID`` / ``ITEM_ID`` (an
existing key keeps its first position); interaction rows are the file's followed by every row
uploaded after it. ``deliveries`` is every accepted upload row as sent, whatever the file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Protocol

Document = dict[str, Any]


@dataclass(frozen=True)
class Received:
    """What one dataset received: counts, current content, and every accepted row as sent."""

    dataset_id: str
    uploads: int
    rows_received: int
    rows: list[dict[str, Any]]
    deliveries: list[dict[str, Any]]
    rows_loaded: int = 0  # rows of the file the last successful ingest read


@dataclass
class Snapshot:
    """Everything a journal holds, for `Model.restore` (objects in creation order per kind)."""

    objects: list[tuple[str, Document]] = field(default_factory=list)
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    rows: dict[str, list[Document]] = field(default_factory=dict)
    deliveries: dict[str, list[Document]] = field(default_factory=dict)
    #: per dataset: (rows the last file held, rows received when it was loaded)
    loads: dict[str, tuple[int, int]] = field(default_factory=dict)
    loaded: dict[str, list[Document]] = field(default_factory=dict)  # interaction file rows


class Journal(Protocol):
    """Where the model writes its changes through to, if persistence is on."""

    def save_object(self, kind: str, object_id: str, document: Mapping[str, Any]) -> None: ...

    def record_upload(
        self, dataset_id: str, key: str | None, rows: Sequence[Document], first_position: int,
        record: bool,
    ) -> None: ...

    def record_load(
        self, dataset_id: str, key: str | None, rows: Sequence[Document], received_at: int,
        record: bool,
    ) -> None: ...

    def reset_data(self) -> None: ...


@dataclass
class Content:
    """One dataset's rows and counts (``record=False``: counts and the set of keys only)."""

    uploads: int = 0
    rows_received: int = 0
    by_key: dict[Any, Document] = field(default_factory=dict)
    deliveries: list[Document] = field(default_factory=list)
    keys: set[Any] = field(default_factory=set)  # record=False: only the upserted keys
    loaded: list[Document] = field(default_factory=list)  # interaction rows of the file
    rows_loaded: int = 0
    received_at_load: int = 0  # interaction content: the file, then deliveries from here

    def add(self, rows: list[Document], key: str | None, record: bool) -> None:
        """One accepted upload."""
        self.uploads += 1
        self.rows_received += len(rows)
        if record:
            self.deliveries.extend(rows)
            if key is not None:
                by_key = self.by_key
                for row in rows:
                    by_key[row[key]] = row  # an existing key keeps its first position
        elif key is not None:
            self.keys.update(map(itemgetter(key), rows))

    def load(self, rows: list[Document], key: str | None, record: bool) -> None:
        """A file read by an ingest: its rows replace the dataset's rows (not its counts)."""
        self.rows_loaded = len(rows)
        self.received_at_load = self.rows_received
        if key is None:
            self.loaded = list(rows) if record else []
        elif record:
            self.by_key = {row[key]: row for row in rows}
        else:
            self.keys = set(map(itemgetter(key), rows))

    def current_rows(self, key: str | None) -> list[Document]:
        """The rows the dataset holds now."""
        if key is not None:
            return list(self.by_key.values())
        return [*self.loaded, *self.deliveries[self.received_at_load:]]

    def row_count(self, key: str | None) -> int:
        """How many rows the dataset holds now."""
        if key is None:
            return self.rows_loaded + self.rows_received - self.received_at_load
        return len(self.by_key) if self.by_key else len(self.keys)
