"""Operator commands that inspect and repair state: marks, quarantine, history, schema pull.

Plain functions over a StateStore (or an AiTEMS client), returning data; the CLI renders it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from aitems_sync.errors import UsageError
from aitems_sync.spec.model import DatasetSpec, Spec
from aitems_sync.state.records import BatchRecord, LeaseHolder, QuarantineRecord, RunRecord
from aitems_sync.state.values import Mark, encode_value

if TYPE_CHECKING:  # SQLAlchemy and requests load only for the commands that use them
    from aitems_sync.aitems.client import AitemsClient
    from aitems_sync.state.store import StateStore

#: Cursor types ``state set`` can parse a value into.
CURSOR_TYPES = ("auto", "str", "int", "decimal", "date", "datetime")


@dataclass(frozen=True)
class DatasetState:
    """What the state store knows of one dataset."""

    dataset: str
    mark: Mark | None
    ledger_size: int
    quarantined: int
    unfinished: list[BatchRecord]
    lease: LeaseHolder | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "mark": None if self.mark is None else {
                "cursor": encode_value(self.mark.cursor),
                "key": [encode_value(k) for k in self.mark.key],
            },
            "ledger_size": self.ledger_size,
            "quarantined": self.quarantined,
            "unfinished_batches": [b.batch_id for b in self.unfinished],
            "lease": None if self.lease is None else {
                "owner": self.lease.owner, "host": self.lease.host, "pid": self.lease.pid,
                "expires_at": self.lease.expires_at.isoformat(),
            },
        }


def state_show(spec: Spec, store: StateStore) -> list[DatasetState]:
    """The mark, ledger size, quarantine count, unfinished batches and lease of each dataset."""
    return [
        DatasetState(
            dataset=name,
            mark=store.get_mark(name),
            ledger_size=store.ledger_size(name),
            quarantined=store.quarantine_count(name),
            unfinished=store.unfinished_batches(name),
            lease=store.lease_holder(name),
        )
        for name in spec.datasets
    ]


def dataset_named(spec: Spec, name: str) -> DatasetSpec:
    """The dataset called ``name``; a usage error naming the known ones otherwise."""
    if name not in spec.datasets:
        known = ", ".join(spec.datasets) or "(none)"
        raise UsageError(f"unknown dataset {name}: the spec defines {known}")
    return spec.datasets[name]


def state_reset(spec: Spec, store: StateStore, name: str) -> None:
    """Forget a dataset's mark, ledger and journal: the next run sends every row again."""
    dataset_named(spec, name)
    store.reset(name)


def state_set(spec: Spec, store: StateStore, name: str, cursor: str, kind: str = "auto") -> Mark:
    """Move a dataset's mark so the next run reads rows with a cursor at or after ``cursor``.

    The key part of the mark is set below every key (NULLs, which sort first), so rows whose
    cursor equals the value are read again too; the ledger skips those already delivered.
    ``kind`` picks the cursor's type; ``auto`` keeps the type of the current mark.
    """
    dataset = dataset_named(spec, name)
    current = store.get_mark(name)
    value = parse_cursor(cursor, kind, current.cursor if current else None)
    mark = Mark(cursor=value, key=tuple(None for _ in dataset.key_fields))
    store.set_mark(name, mark)
    return mark


def parse_cursor(text: str, kind: str, like: Any = None) -> Any:
    """Parse a cursor value given on the command line, as ``kind`` or like ``like``."""
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
        raise UsageError(f"--cursor {text!r} is not a valid {kind}") from None
    return text


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


def quarantine_list(store: StateStore, dataset: str | None = None,
                    limit: int | None = None) -> list[QuarantineRecord]:
    """Quarantined rows, oldest first."""
    return store.quarantined(dataset, limit=limit)


def quarantine_show(store: StateStore, entry_id: int) -> QuarantineRecord:
    """One quarantined row; a usage error if there is none with that id."""
    for record in store.quarantined(ids=[entry_id]):
        return record
    raise UsageError(f"no quarantined row has id {entry_id} (see aitems-sync quarantine list)")


def quarantine_drop(store: StateStore, ids: list[int]) -> int:
    """Delete quarantined rows for good; returns how many were deleted."""
    return store.drop_quarantine(ids)


def quarantine_record_dict(record: QuarantineRecord) -> dict[str, Any]:
    """A quarantined row as JSON-friendly data (values keep their type tags where needed)."""
    return {
        "id": record.id,
        "dataset": record.dataset,
        "run_id": record.run_id,
        "origin": record.origin,
        "created_at": record.created_at.isoformat(),
        "key": _plain(record.key),
        "raw": _plain(record.raw),
        "errors": record.errors,
    }


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in values.items():
        if value is None or isinstance(value, str | int | float | bool):
            out[name] = value
        else:
            out[name] = str(value)
    return out


def history(store: StateStore, limit: int = 20) -> list[RunRecord]:
    """Past runs, newest first."""
    return store.runs(limit)


def run_record_dict(record: RunRecord) -> dict[str, Any]:
    """A run as JSON-friendly data with its per-dataset counts."""
    seconds = None
    if record.finished_at is not None:
        seconds = round((record.finished_at - record.started_at).total_seconds(), 3)
    datasets = record.summary.get("datasets", []) if record.summary else []
    return {
        "run_id": record.run_id,
        "status": record.status,
        "started_at": record.started_at.isoformat(),
        "seconds": seconds,
        "host": record.host,
        "pid": record.pid,
        "datasets": [
            {k: d.get(k) for k in ("dataset", "status", "read", "sent", "unchanged", "invalid",
                                   "batches")} | {"ambiguous": len(d.get("ambiguous", []))}
            for d in datasets
        ],
    }


def schema_pull(spec: Spec, client: AitemsClient, name: str) -> str:
    """The AiTEMS schema of a dataset as the spec's ``fields:`` YAML."""
    dataset = dataset_named(spec, name)
    remote = client.get_dataset(dataset.dataset_id)
    schema = client.get_schema(str(remote["schemaName"]))
    fields = []
    for field in schema.get("fields", []):
        types = field.get("type", [])
        entry: dict[str, Any] = {"name": field["name"],
                                 "type": types[0] if len(types) == 1 else list(types)}
        if field.get("categorical"):
            entry["categorical"] = True
        fields.append(entry)
    import yaml

    header = (f"# schema {schema.get('name')} of AiTEMS dataset {dataset.dataset_id} "
              f"({schema.get('datasetType')})\n")
    return header + yaml.safe_dump({"fields": fields}, sort_keys=False,
                                   default_flow_style=None)
