"""`quarantine retry`: re-shape quarantined rows with the current spec and send those that pass.

A row is sent only if it is still the newest version of its key: its quarantine record notes
what the ledger held for the key when it was rejected, and if the ledger holds something else
now, a later version was delivered since and the old one is dropped as superseded. Rows are
journalled and committed like a run's batches (ledger entries and the removal of their
quarantine records in one transaction); the mark does not move.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

from aitems_sync.aitems.delivery import Target, Uploader, deliver
from aitems_sync.errors import HandoverPendingError
from aitems_sync.rows.encode import encode_row, identity_hash
from aitems_sync.rows.shape import Shaper
from aitems_sync.spec.model import DatasetSpec, Spec
from aitems_sync.state.store import BatchCommit, LedgerEntry, QuarantineRecord, StateStore
from aitems_sync.sync.leases import FencedUploader, Leases

log = logging.getLogger(__name__)


@dataclass
class RetryReport:
    """What a retry did with one dataset's quarantined rows."""

    dataset: str
    checked: int = 0
    still_invalid: int = 0
    already_delivered: int = 0  # dropped: the ledger holds exactly this payload
    superseded: int = 0  # dropped: a later version of the key was delivered since
    sent: int = 0
    refused: int = 0  # AiTEMS refused them again: they stay quarantined
    batches: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-friendly data."""
        return dict(self.__dict__)


@dataclass
class _Candidate:
    record: QuarantineRecord
    encoded: bytes
    entry: LedgerEntry


@dataclass
class _Plan:
    send: list[_Candidate] = field(default_factory=list)
    drop: list[int] = field(default_factory=list)


def retry_quarantine(
    spec: Spec, dataset: DatasetSpec, *, state: StateStore, uploader: Uploader,
    timezone: tzinfo, run_id: str, lease_ttl: float = 60.0,
) -> RetryReport:
    """Retry one dataset's quarantined rows, holding its lease meanwhile."""
    report = RetryReport(dataset.name)
    leases = Leases(state, [dataset.name], run_id, lease_ttl)
    leases.acquire(stop=threading.Event())
    fenced = FencedUploader(uploader, lambda: leases.check(dataset.name))
    try:
        pending = state.handover(dataset.name)
        if pending is not None:  # AiTEMS may hold the rows a retry would send
            raise HandoverPendingError(
                f"dataset {dataset.name}: bootstrap {pending.run_id} has not finished its "
                f"hand-over; run `aitems-sync bootstrap {dataset.name}` first")
        records = state.quarantined(dataset.name)
        report.checked = len(records)
        plan = _decide(dataset, records, state, timezone, report)
        if plan.drop:
            state.commit_batch(dataset.name, run_id=run_id, batch_id=None, ledger=[],
                               mark=None, resolved=plan.drop, fenced=True)
        target = Target(spec.aitems.service_id, dataset.dataset_id, dataset.type)
        size = spec.aitems.batch.max_rows
        for start in range(0, len(plan.send), size):
            leases.check(dataset.name)
            _send(plan.send[start:start + size], dataset, target, state, fenced, run_id,
                  report)
    finally:
        leases.release()
    return report


def _decide(dataset: DatasetSpec, records: Sequence[QuarantineRecord], state: StateStore,
            timezone: tzinfo, report: RetryReport) -> _Plan:
    """Which records to send and which to drop; the rest stay (still invalid)."""
    plan = _Plan()
    shapers: dict[tuple[str, ...], Shaper] = {}
    candidates: dict[int, _Candidate] = {}  # by key hash: the newest record of a key wins
    row_hash = state.row_hash_of(dataset.name)
    for record in records:  # oldest first
        columns = tuple(record.raw)
        if columns not in shapers:
            shapers[columns] = Shaper(dataset, columns, timezone)
        candidate = _reshape(dataset, shapers[columns], record, row_hash)
        if candidate is None:
            report.still_invalid += 1
            continue
        older = candidates.get(candidate.entry.key_hash)
        if older is not None:
            plan.drop.append(older.record.id)
            report.superseded += 1
        candidates[candidate.entry.key_hash] = candidate
    ledger = _lookup(state, dataset.name, list(candidates))
    for key_hash, candidate in candidates.items():
        held = ledger.get(key_hash)
        if held == candidate.entry.payload_hash:
            plan.drop.append(candidate.record.id)
            report.already_delivered += 1
        elif dataset.type != "interaction" and held != candidate.record.ledger_hash:
            plan.drop.append(candidate.record.id)
            report.superseded += 1
        else:
            plan.send.append(candidate)
    return plan


def _reshape(dataset: DatasetSpec, shaper: Shaper, record: QuarantineRecord, row_hash: str
             ) -> _Candidate | None:
    values = shaper.shape(tuple(record.raw.values()))
    if values is None:
        return None
    positions = None if dataset.type == "interaction" else [
        shaper.field_names.index(k) for k in dataset.key_fields]
    encoded, key_hash, payload = encode_row(shaper.field_names, values, positions, row_hash)
    if dataset.type == "interaction" and dataset.key:
        key_hash = identity_hash([record.raw.get(k) for k in dataset.key], row_hash)
    return _Candidate(record, encoded, LedgerEntry(key_hash, payload))


def _lookup(state: StateStore, dataset: str, hashes: list[int]) -> dict[int, int]:
    found: dict[int, int] = {}
    for start in range(0, len(hashes), 1000):
        found.update(state.ledger_lookup(dataset, hashes[start:start + 1000]))
    return found


def _send(chunk: Sequence[_Candidate], dataset: DatasetSpec, target: Target, state: StateStore,
          uploader: Uploader, run_id: str, report: RetryReport) -> None:
    rows = [c.encoded for c in chunk]
    batch_id = state.journal_sending(dataset.name, run_id, rows=len(rows), first=None, last=None,
                                     fenced=True)
    delivery = deliver(uploader, target, rows)
    delivered = [chunk[i] for i in delivery.delivered]
    error = delivery.error
    # A failed batch is `failed` when its answer proves the rest was not stored; otherwise it
    # stays `sending`, and the next run reports it ambiguous.
    failed = [] if error is None or getattr(error, "ambiguous", False) else [batch_id]
    state.commit_batches(
        dataset.name, run_id=run_id, fenced=True, failed=failed,
        commits=[BatchCommit(batch_id if error is None else None, [c.entry for c in delivered])],
        resolved=[c.record.id for c in delivered])
    report.batches += 1
    report.sent += len(delivered)
    report.refused += len(delivery.rejected)
    if delivery.error is not None:
        raise delivery.error
    for index, answer in delivery.rejected:
        log.warning("quarantined row %s of %s refused again: %s", chunk[index].record.id,
                    dataset.name, answer, extra={"event": "retry_refused",
                                                 "dataset": dataset.name})
