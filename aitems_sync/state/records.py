"""The values the state store takes and returns: ledger entries, quarantine, batches, runs, leases.

Plain frozen dataclasses, and the pure conversions between them and table rows (the JSON
columns go through :mod:`aitems_sync.state.values`, so raw values keep their exact types).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from typing import Any, NamedTuple

from aitems_sync.errors import StateError
from aitems_sync.state.marks import Mark, mark_from_json, mark_to_json
from aitems_sync.state.values import decode_mapping, dumps, encode_mapping, encode_value, loads
from aitems_sync.undecodable import Undecodable


class LedgerEntry(NamedTuple):
    """A key's hash and the hash of its last acknowledged payload (both signed 64-bit).

    ``position`` is the row's numeric cursor position (epoch seconds for datetimes), used to
    prune interaction ledgers down to the lookback window. A named tuple rather than a frozen
    dataclass: one is made per row on the reading thread, in a third of the time.
    """

    key_hash: int
    payload_hash: int
    position: float | None = None


#: A LedgerEntry's fields as C getters, to ``map`` over a batch's entries without a Python step
#: per entry.
KEY_HASH = itemgetter(0)
PAYLOAD_HASH = itemgetter(1)
POSITION = itemgetter(2)


@dataclass(frozen=True)
class LateBatch:
    """A batch that may have reached AiTEMS after its run lost the lease (see
    ``tables.late_batches``): its first row's mark and its rows' key hashes."""

    id: int
    run_id: str
    first: Mark | None
    key_hashes: tuple[int, ...]


@dataclass(frozen=True)
class Boundary:
    """The rows a batch handled (sent, skipped or quarantined) at its end mark's cursor value:
    identity hash -> content hash. ``fresh``: that cursor value is new with this batch, so they
    replace the boundary recorded with the mark before instead of adding to it."""

    entries: Mapping[int, int]
    fresh: bool


@dataclass(frozen=True)
class Handover:
    """A first load AiTEMS was asked to read and the state store has not taken yet (see
    ``tables.handovers``): the AiTEMS dataset, the file, and the snapshot to take."""

    run_id: str
    aitems_dataset_id: str
    object_key: str
    mark: Mark | None  # None: the file held no row
    boundary: Boundary | None
    identity: tuple[str, ...]
    created_at: datetime


def handover_snapshot(mark: Mark | None, boundary: Boundary | None,
                      identity: Sequence[str]) -> str:
    """The JSON text of a hand-over's snapshot."""
    bounds = None if boundary is None else {
        "entries": sorted(boundary.entries.items()), "fresh": boundary.fresh}
    return dumps({"mark": mark_to_json(mark), "boundary": bounds, "identity": list(identity)})


def handover_record(row: Any) -> Handover:
    """A ``handovers`` row as a Handover."""
    snapshot = loads(row.snapshot)
    mark = mark_from_json(snapshot["mark"])
    bounds = snapshot["boundary"]
    boundary = None if bounds is None else Boundary(
        {int(k): int(p) for k, p in bounds["entries"]}, bool(bounds["fresh"]))
    return Handover(row.run_id, row.aitems_dataset_id, row.object_key, mark, boundary,
                    tuple(snapshot["identity"]), row.created_at)


@dataclass(frozen=True)
class BatchCommit:
    """One acknowledged batch's share of a commit: its journal row, ledger entries, new mark
    (None: the mark stays), the rows it quarantined, and the boundary its mark records (None:
    the mark records none, and an interaction dataset reads strictly after it)."""

    batch_id: int | None
    ledger: Sequence[LedgerEntry] = ()
    mark: Mark | None = None
    quarantine: Sequence[QuarantineEntry] = ()
    boundary: Boundary | None = None
    # What else the commit tells of its keys' newest versions, for the quarantine's open
    # entries of those keys (see ``tables.quarantine``): rows delivered whose entries the
    # ledger does not keep (an interaction dataset whose mark alone covers them), and key
    # hashes whose newest version AiTEMS holds already (read unchanged).
    unlogged: Sequence[LedgerEntry] = ()
    current: Sequence[int] = ()


@dataclass(frozen=True)
class Sending:
    """A batch about to leave, as the journal records it: its row count and first and last
    rows' marks."""

    rows: int
    first: Mark | None
    last: Mark | None


@dataclass(frozen=True)
class QuarantineEntry:
    """A rejected row: its key, its raw source values and every error found.

    ``errors`` holds ``{"path": "$.AGE", "message": "..."}`` items; ``origin`` is ``"local"``
    (our validation) or ``"server"`` (AiTEMS answered 400, its answer in the errors).
    ``key_hash`` is the hash the dataset's ledger knows the row's key by (None: no key
    identifies it); ``status`` is ``superseded`` when a later version of the key went into
    the same batch, else ``open``.
    """

    dataset: str
    run_id: str
    key: Mapping[str, Any]
    raw: Mapping[str, Any]
    errors: Sequence[Mapping[str, str]]
    origin: str = "local"
    ledger_hash: int | None = None  # the ledger's payload hash for the key when rejected
    key_hash: int | None = None
    status: str = "open"


@dataclass(frozen=True)
class QuarantineRecord:
    """A quarantined row as stored, with its raw values decoded to their original types."""

    id: int
    dataset: str
    run_id: str
    key: dict[str, Any]
    raw: dict[str, Any]
    errors: list[dict[str, str]]
    origin: str
    created_at: datetime
    ledger_hash: int | None = None
    key_hash: int | None = None
    status: str = "open"
    resolved_at: datetime | None = None  # when it was superseded or resolved
    resolved_by: str | None = None  # the run (or retry) that did it

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly data (values that are not JSON scalars shown as text)."""
        return {
            "id": self.id,
            "dataset": self.dataset,
            "run_id": self.run_id,
            "origin": self.origin,
            "created_at": self.created_at.isoformat(),
            "status": self.status,
            "resolved_at": None if self.resolved_at is None else self.resolved_at.isoformat(),
            "resolved_by": self.resolved_by,
            "key": _plain(self.key),
            "raw": _plain(self.raw),
            "errors": self.errors,
        }


@dataclass(frozen=True)
class QuarantineListing:
    """A page of quarantine entries, oldest first, and how many there are in all: ``total``
    above ``len(records)`` means the page was cut at ``limit``."""

    records: list[QuarantineRecord]
    total: int
    limit: int | None

    @property
    def truncated(self) -> bool:
        return self.total > len(self.records)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly data: the entries, and whether and where the list was cut."""
        return {"rows": [r.to_dict() for r in self.records], "total": self.total,
                "shown": len(self.records), "truncated": self.truncated, "limit": self.limit}


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """Values as standard JSON takes them: a non-finite number as its name (``"NaN"``,
    ``"Infinity"``, ``"-Infinity"``), bytes as ``{"base64": ...}``, anything else that is not a
    JSON value as its text (decimals, datetimes, UUIDs), and a value the source's driver could
    not read as ``{"undecodable": raw text, "reason": ...}``."""
    return {name: _plain_value(value) for name, value in values.items()}


def _plain_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Undecodable):
        return {"undecodable": value.raw, "reason": value.reason}
    return str(value)


@dataclass(frozen=True)
class BatchRecord:
    """A batch in the journal: ``sending`` until acknowledged, then ``committed``.

    A batch still ``sending`` when a later run starts may have reached AiTEMS: that run marks it
    ``ambiguous`` and reports it.
    """

    dataset: str
    batch_id: int
    run_id: str
    status: str
    rows: int
    first: Mark | None
    last: Mark | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class RunRecord:
    """One run of the sync: when, where, its outcome and its summary counts."""

    run_id: str
    started_at: datetime
    finished_at: datetime | None
    status: str
    host: str
    pid: int
    datasets: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly data with the per-dataset counts of the run's summary."""
        seconds = None
        if self.finished_at is not None:
            seconds = round((self.finished_at - self.started_at).total_seconds(), 3)
        datasets = self.summary.get("datasets", []) if self.summary else []
        return {
            "run_id": self.run_id,
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "seconds": seconds,
            "host": self.host,
            "pid": self.pid,
            "datasets": [
                {k: d.get(k) for k in ("dataset", "status", "read", "sent", "unchanged",
                                       "invalid", "batches")}
                | {"ambiguous": len(d.get("ambiguous", []))}
                for d in datasets
            ],
        }


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds a dataset's lease and until when (UTC)."""

    dataset: str
    owner: str
    host: str
    pid: int
    acquired_at: datetime
    expires_at: datetime
    #: The holder's process token (``sync.liveness``), None where it recorded none.
    process: str | None = None


@dataclass(frozen=True)
class DatasetState:
    """What the state store knows of one dataset (``state show``)."""

    dataset: str
    mark: Mark | None
    ledger_size: int
    quarantined: int
    unfinished: list[BatchRecord]
    lease: LeaseHolder | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly data; the mark's values keep their type tags."""
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


def quarantine_row(entry: QuarantineEntry, dataset_id: int, now: datetime,
                   run_id: str | None = None) -> dict[str, Any]:
    """The ``quarantine`` table row for an entry (``run_id``: the run committing it, which
    closes an entry stored superseded); StateError if a value cannot be stored."""
    try:
        key = encode_mapping(entry.key)
        raw = encode_mapping(entry.raw)
    except TypeError as exc:
        raise StateError(
            f"cannot quarantine a row of dataset {entry.dataset!r}: {exc}; cast that column "
            "to a plain type (text, number, timestamp) in the dataset's query"
        ) from exc
    errors = [{str(k): str(v) for k, v in error.items()} for error in entry.errors]
    return {
        "dataset_id": dataset_id,
        "run_id": entry.run_id,
        "key": key,
        "raw": raw,
        "errors": dumps(errors),
        "origin": entry.origin,
        "created_at": now,
        "ledger_hash": entry.ledger_hash,
        "key_hash": entry.key_hash,
        "status": entry.status,
        "resolved_at": None if entry.status == "open" else now,
        "resolved_by": None if entry.status == "open" else (run_id or entry.run_id),
    }


def quarantine_record(row: Any) -> QuarantineRecord:
    """A ``quarantine`` row joined with its dataset's name, decoded."""
    return QuarantineRecord(
        id=row.id,
        dataset=row.name,
        run_id=row.run_id,
        key=decode_mapping(row.key),
        raw=decode_mapping(row.raw),
        errors=loads(row.errors),
        origin=row.origin,
        created_at=row.created_at,
        ledger_hash=row.ledger_hash,
        key_hash=row.key_hash,
        status=row.status,
        resolved_at=row.resolved_at,
        resolved_by=row.resolved_by,
    )


def batch_record(row: Any) -> BatchRecord:
    """A ``batches`` row joined with its dataset's name, decoded."""
    return BatchRecord(
        dataset=row.name,
        batch_id=row.batch_id,
        run_id=row.run_id,
        status=row.status,
        rows=row.rows,
        first=mark_from_json(row.first),
        last=mark_from_json(row.last),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def run_record(row: Any) -> RunRecord:
    """A ``runs`` row, decoded."""
    return RunRecord(
        run_id=row.run_id,
        started_at=row.started_at,
        finished_at=row.finished_at,
        status=row.status,
        host=row.host,
        pid=row.pid,
        datasets=loads(row.datasets),
        summary=loads(row.summary),
    )


def lease_holder(row: Any) -> LeaseHolder:
    """A ``leases`` row joined with its dataset's name."""
    return LeaseHolder(
        dataset=row.name,
        owner=row.owner,
        host=row.host,
        pid=row.pid,
        acquired_at=row.acquired_at,
        expires_at=row.expires_at,
        process=row.process,
    )


def lease_held_message(holder: LeaseHolder) -> str:
    """The operator's message when another run holds a dataset's lease."""
    return (
        f"dataset {holder.dataset!r} is locked by another run: {holder.owner} on host "
        f"{holder.host} (pid {holder.pid}) holds its lease until "
        f"{holder.expires_at:%Y-%m-%d %H:%M:%S} UTC; let that run finish or its lease expire, "
        "then run again"
    )
