"""`quarantine retry`: read the open quarantine entries' rows again, shape them with the current
spec, and send those that pass.

A row the run rejected (``origin: local``) is read again from the source by its key, with the
dataset's query wrapped and the key values bound: what the source holds now decides, whether it
was fixed there or the spec was. A key the source no longer has leaves its entries as they were
(a deleted row is not brought back to life from the stored copy). The stored copy is what is
retried where there is nothing to read again by: a row AiTEMS refused (``origin: server``, its
stored values are what was sent) and an interaction without a key of its own (the event is its
values).

A row is sent only if it is the newest version of its key: the newest entry of a key wins, the
older ones are closed ``superseded``; a stored copy is superseded when the ledger holds another
version of its key than when it was rejected (a later one was delivered since); a row whose
payload the ledger holds already is not sent again. The entries closed without sending (a key's
older ones, and those found superseded or delivered) are closed first, in one fenced
transaction; then the rows are journalled and committed like a run's batches, their ledger
entries and their entries closed ``resolved`` in one fenced transaction; the mark does not move.
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
from aitems_sync.source.extract import KeyedRows, Source
from aitems_sync.spec.model import DatasetSpec, Spec
from aitems_sync.state.store import BatchCommit, LedgerEntry, QuarantineRecord, StateStore
from aitems_sync.sync.leases import FencedUploader, Leases

log = logging.getLogger(__name__)


@dataclass
class RetryReport:
    """What a retry did with one dataset's open quarantine entries."""

    dataset: str
    checked: int = 0
    still_invalid: int = 0
    already_delivered: int = 0  # closed: the ledger holds exactly this payload
    superseded: int = 0  # closed: a later version of the key was delivered since
    sent: int = 0
    refused: int = 0  # AiTEMS refused them again: they stay quarantined
    batches: int = 0
    from_source: int = 0  # entries whose row was read again from the source by key
    not_at_source: int = 0  # ... and that the source no longer has: left as they were

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-friendly data."""
        return dict(self.__dict__)


@dataclass
class _Candidate:
    """A key's row to send: the entry it resolves (the key's newest), its bytes and ledger
    entry, the key's older entries it supersedes, and whether it was read from the source."""

    record: QuarantineRecord
    encoded: bytes
    entry: LedgerEntry
    older: list[int] = field(default_factory=list)
    fresh: bool = False

    @property
    def ids(self) -> list[int]:
        return [self.record.id, *self.older]


@dataclass
class _Plan:
    send: list[_Candidate] = field(default_factory=list)
    drop: list[int] = field(default_factory=list)  # closed superseded, not sent


def retry_quarantine(
    spec: Spec, dataset: DatasetSpec, *, state: StateStore, uploader: Uploader,
    source: Source, run_id: str, lease_ttl: float = 60.0,
) -> RetryReport:
    """Retry one dataset's open quarantine entries, holding its lease meanwhile."""
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
        plan = _decide(dataset, records, state, source, report)
        if plan.drop:
            state.commit_batch(dataset.name, run_id=run_id, batch_id=None, ledger=[],
                               mark=None, superseded=plan.drop, fenced=True)
        target = Target(spec.aitems.service_id, dataset.dataset_id, dataset.type)
        size = spec.aitems.batch.max_rows
        for start in range(0, len(plan.send), size):
            leases.check(dataset.name)
            _send(plan.send[start:start + size], dataset, target, state, fenced, run_id,
                  report)
    finally:
        leases.release()
    return report


def rereadable(dataset: DatasetSpec, record: QuarantineRecord) -> bool:
    """Whether an entry's row is read again from the source by key: a row the run rejected
    (its key holds the values the source returned) of a dataset whose rows have a key of their
    own (users, items, interactions with a ``key``) that the entry records."""
    keyed = dataset.type != "interaction" or bool(dataset.key)
    if record.origin != "local" or not keyed:
        return False
    try:
        hash(tuple(record.key[name] for name in dataset.key_fields))
    except (KeyError, TypeError):  # recorded under another key, or a value no key can be
        return False
    return True


def _decide(dataset: DatasetSpec, records: Sequence[QuarantineRecord], state: StateStore,
            source: Source, report: RetryReport) -> _Plan:
    """Which rows to send and which entries to close; the rest stay open."""
    row_hash = state.row_hash_of(dataset.name)
    again = [r for r in records if rereadable(dataset, r)]
    candidates = _from_source(dataset, again, source, row_hash, report)
    plan = _Plan()
    stored = [r for r in records if not rereadable(dataset, r)]
    for candidate in _from_stored(dataset, stored, source.timezone, row_hash, report):
        newer = candidates.get(candidate.entry.key_hash)
        if newer is not None:  # the source's row is the key's newest version
            newer.older.extend(candidate.ids)
        else:
            candidates[candidate.entry.key_hash] = candidate
    ledger = _lookup(state, dataset.name, list(candidates))
    for key_hash, candidate in candidates.items():
        # A key's older entries are closed whatever becomes of its newest.
        plan.drop.extend(candidate.older)
        report.superseded += len(candidate.older)
        held = ledger.get(key_hash)
        if held == candidate.entry.payload_hash:
            plan.drop.append(candidate.record.id)
            report.already_delivered += 1
        elif (not candidate.fresh and dataset.type != "interaction"
              and held != candidate.record.ledger_hash):
            plan.drop.append(candidate.record.id)
            report.superseded += 1
        else:
            plan.send.append(candidate)
    return plan


def _from_source(dataset: DatasetSpec, records: Sequence[QuarantineRecord], source: Source,
                 row_hash: str, report: RetryReport) -> dict[int, _Candidate]:
    """Read the entries' keys again from the source: key hash -> the valid row to send, for
    the newest entry of its key, the older ones superseded by it."""
    if not records:
        return {}
    groups: dict[tuple[Any, ...], list[QuarantineRecord]] = {}
    for record in records:  # oldest first
        groups.setdefault(tuple(record.key[k] for k in dataset.key_fields), []).append(record)
    read = source.rows_by_key(dataset.query, cursor=dataset.cursor, key=dataset.key_fields,
                              keys=list(groups))
    now = {tuple(row[i] for i in read.key_indices): row for row in read.rows}  # last wins
    shaper = Shaper(dataset, read.columns, source.timezone)
    candidates: dict[int, _Candidate] = {}
    for key, group in groups.items():
        report.from_source += len(group)
        row = now.get(key)
        if row is None:
            report.not_at_source += len(group)
            log.info("dataset %s: key %s of %d quarantined row(s) is no longer at the source; "
                     "left as it was (drop it with `aitems-sync quarantine drop`)",
                     dataset.name, _shown(key), len(group),
                     extra={"event": "retry_not_at_source", "dataset": dataset.name})
            continue
        candidate = _shaped(dataset, shaper, group[-1], row, read, row_hash)
        if candidate is None:
            report.still_invalid += len(group)
            continue
        candidate.older = [r.id for r in group[:-1]]
        candidates[candidate.entry.key_hash] = candidate
    return candidates


def _shaped(dataset: DatasetSpec, shaper: Shaper, record: QuarantineRecord,
            row: tuple[Any, ...], read: KeyedRows, row_hash: str) -> _Candidate | None:
    """The source's row for an entry, shaped; None while it is invalid."""
    values = shaper.shape(row)
    if values is None:
        return None
    is_interaction = dataset.type == "interaction"
    positions = None if is_interaction else [shaper.field_names.index(k)
                                             for k in dataset.key_fields]
    encoded, key_hash, payload = encode_row(shaper.field_names, values, positions, row_hash)
    if is_interaction:  # keyed by its key columns as read, as a run keys it
        key_hash = identity_hash(tuple(row[i] for i in read.key_indices), row_hash)
    return _Candidate(record, encoded, LedgerEntry(key_hash, payload), fresh=True)


def _from_stored(dataset: DatasetSpec, records: Sequence[QuarantineRecord], timezone: tzinfo,
                 row_hash: str, report: RetryReport) -> list[_Candidate]:
    """The entries retried from their stored copy, re-shaped: the valid ones, the newest of a
    key with its older ones to supersede."""
    shapers: dict[tuple[str, ...], Shaper] = {}
    candidates: dict[int, _Candidate] = {}  # by key hash: the newest record of a key wins
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
            candidate.older = older.ids
        candidates[candidate.entry.key_hash] = candidate
    return list(candidates.values())


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


def _shown(key: tuple[Any, ...]) -> str:
    return ", ".join(repr(v) for v in key)
