"""The upload window of one dataset: batches on the wire, committed strictly in batch order.

Up to ``in_flight`` batches upload at once in a thread pool. Each is journalled ``sending``
before its request leaves; commits run on the caller's thread, in order, each one a single
transaction of the journal status, the ledger entries, the quarantined rows and the mark. So the
mark never passes a batch AiTEMS has not acknowledged. When a batch fails, the uploads already on
the wire finish, and what they delivered goes into the ledger but not the mark: a re-run reads
those rows again (the mark is behind them) and the ledger keeps them off the wire.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType

import orjson

from aitems_sync.delivery import Delivery, Target, Uploader, deliver
from aitems_sync.delta import Batch
from aitems_sync.errors import AitemsSyncError
from aitems_sync.report import AmbiguousBatch, DatasetReport
from aitems_sync.spec import DatasetSpec
from aitems_sync.state import LedgerEntry, Mark, QuarantineEntry, StateStore

log = logging.getLogger(__name__)

LOST_ANSWER = "an answer was lost and the upload was retried"
FAILED_MAYBE_LANDED = ("the upload failed after an attempt that may have landed; the next run "
                       "sends it again")


@dataclass
class _Slot:
    """A cut batch waiting for its commit turn (``future`` is None for a batch with no rows)."""

    batch: Batch
    batch_id: int | None
    future: Future[Delivery] | None


class Window:
    """In-flight uploads of one dataset and their in-order commits; use as a context manager.

    ``check_lease`` is called before every write and raises when the run lost the dataset's
    lease: from then on another run owns the dataset and this one must not commit.
    ``on_commit`` is told each batch whose commit made it part of the ledger. Without
    ``keep_ledger`` (an interaction dataset with no lookback: the mark alone excludes what was
    sent) in-order commits write no ledger entries; batches acknowledged after a failure still
    do, since the mark does not cover them and the re-run must not send them again.
    """

    def __init__(
        self, dataset: DatasetSpec, run_id: str, target: Target, in_flight: int,
        state: StateStore, uploader: Uploader, report: DatasetReport,
        check_lease: Callable[[], None], on_commit: Callable[[Batch], None],
        keep_ledger: bool = True,
    ) -> None:
        self.dataset = dataset
        self.run_id = run_id
        self.target = target
        self.in_flight = max(1, in_flight)
        self.state = state
        self.uploader = uploader
        self.report = report
        self.check_lease = check_lease
        self.on_commit = on_commit
        self.keep_ledger = keep_ledger
        self._slots: deque[_Slot] = deque()
        self._pool = ThreadPoolExecutor(self.in_flight,
                                        thread_name_prefix=f"upload-{dataset.name}")

    def __enter__(self) -> Window:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # Uploads still on the wire finish before the dataset is done with (their batches stay
        # journalled `sending` if nobody committed them: the next run reports them).
        self._pool.shutdown(wait=True)

    # -- sending --------------------------------------------------------------------------

    def emit(self, batch: Batch) -> None:
        """Journal and send a batch (or queue a batch without rows); commit what is ready."""
        future: Future[Delivery] | None = None
        batch_id: int | None = None
        if not batch.empty:
            self.check_lease()
            batch_id = self.state.journal_sending(
                self.dataset.name, self.run_id, rows=len(batch.rows), first=batch.first,
                last=batch.last,
            )
            future = self._pool.submit(deliver, self.uploader, self.target, batch.rows)
        self._slots.append(_Slot(batch, batch_id, future))
        self.drain(final=False)

    def drain(self, *, final: bool) -> None:
        """Commit finished batches in order. Unless ``final``, return as soon as the head is
        still uploading and there is room on the wire for another batch.

        A failed batch abandons the window (see ``_abandon``) and its error is raised.
        """
        while self._slots:
            head = self._slots[0]
            if head.future is not None and not head.future.done():
                # Batches cut but not committed are bounded too, not only those uploading: a
                # slow head must not let the window grow without limit ahead of the mark.
                busy = sum(1 for s in self._slots if s.future is not None)
                if not final and busy < self.in_flight:
                    return
            self._slots.popleft()
            try:
                delivery = head.future.result() if head.future is not None else None
                if delivery is not None and delivery.error is not None:
                    self._keep_delivered(head, delivery)
                    raise delivery.error
                self._commit(head, delivery)
            except BaseException:
                self._abandon()
                raise

    # -- committing -----------------------------------------------------------------------

    def _commit(self, slot: _Slot, delivery: Delivery | None) -> None:
        batch, report = slot.batch, self.report
        ledger: list[LedgerEntry] = []
        quarantine = list(batch.quarantine)
        if delivery is not None:
            if self.keep_ledger:
                ledger = [batch.ledger[i] for i in delivery.delivered]
            quarantine.extend(self._server_rejections(batch, delivery))
        self.check_lease()
        self.state.commit_batch(
            self.dataset.name, run_id=self.run_id, batch_id=slot.batch_id, ledger=ledger,
            mark=batch.end, quarantine=quarantine,
        )
        if delivery is not None:
            report.sent += len(delivery.delivered)
            report.invalid += len(delivery.rejected)
            report.batches += 1
            report.requests += delivery.requests
            if delivery.ambiguous:
                self._note_ambiguous(slot, LOST_ANSWER)
        self.on_commit(batch)

    def _keep_delivered(self, slot: _Slot, delivery: Delivery) -> None:
        """Record what a failed or abandoned batch delivered: ledger entries, never the mark.

        Every earlier batch committed, but this one did not, so the mark stays before it; the
        entries keep the acknowledged rows (split halves, or whole later batches) off the wire
        when the re-run reads them again. Nothing is written after the lease was lost.
        """
        error = delivery.error
        if error is not None and getattr(error, "ambiguous", False):
            self._note_ambiguous(slot, FAILED_MAYBE_LANDED)
        if not delivery.delivered:
            return
        ledger = [slot.batch.ledger[i] for i in delivery.delivered]
        self.check_lease()
        # The journal row stays `sending` when the batch failed: the next run reports it.
        self.state.commit_batch(self.dataset.name, run_id=self.run_id,
                                batch_id=slot.batch_id if error is None else None,
                                ledger=ledger, mark=None)
        self.report.sent += len(delivery.delivered)
        self.report.requests += delivery.requests
        if delivery.ambiguous:
            self._note_ambiguous(slot, LOST_ANSWER)

    def _abandon(self) -> None:
        """After a failure: let the uploads on the wire finish and keep what they delivered."""
        slots, self._slots = list(self._slots), deque()
        for slot in slots:
            if slot.future is None:
                continue
            try:
                delivery = slot.future.result()
                self._keep_delivered(slot, delivery)
            except AitemsSyncError as error:  # the first failure is the one reported
                log.warning("dataset %s: batch %s after the failed one was not recorded: %s",
                            self.dataset.name, slot.batch_id, error,
                            extra={"event": "batch_abandoned", "dataset": self.dataset.name})

    def _server_rejections(self, batch: Batch, delivery: Delivery) -> list[QuarantineEntry]:
        if not delivery.rejected:
            return []
        # What the ledger holds for the refused keys now, for `quarantine retry` to compare.
        hashes = [batch.ledger[index].key_hash for index, _ in delivery.rejected]
        ledger = self.state.ledger_lookup(self.dataset.name, hashes)
        entries = []
        for (index, answer), key_hash in zip(delivery.rejected, hashes, strict=True):
            sent = orjson.loads(batch.rows[index])
            key = {k: sent.get(k) for k in self.dataset.key_fields}
            entries.append(QuarantineEntry(
                dataset=self.dataset.name, run_id=self.run_id, key=key, raw=sent,
                errors=[{"path": "$", "message": answer}], origin="server",
                ledger_hash=None if self.dataset.type == "interaction" else ledger.get(key_hash),
            ))
        return entries

    def _note_ambiguous(self, slot: _Slot, reason: str) -> None:
        batch = slot.batch
        self.report.ambiguous.append(AmbiguousBatch(
            rows=len(batch.rows), first_cursor=show(batch.first), last_cursor=show(batch.last),
            reason=reason, batch_id=slot.batch_id,
        ))
        log.warning("dataset %s: batch %s (%d rows, cursor %s .. %s): %s; AiTEMS may hold these "
                    "rows twice", self.dataset.name, slot.batch_id, len(batch.rows),
                    show(batch.first), show(batch.last), reason,
                    extra={"event": "ambiguous_batch", "dataset": self.dataset.name})


def show(mark: Mark | None) -> str | None:
    """A mark's cursor value as the report shows it."""
    return None if mark is None else str(mark.cursor)


class DryWindow:
    """The window of a dry run (``plan``): counts the batches it would send, writes nothing.

    Nothing commits, so the caller keeps every cut batch's hashes as its near-future ledger:
    the counts equal what a run would send, at the cost of memory growing with the delta's keys.
    """

    def __init__(self, report: DatasetReport) -> None:
        self.report = report

    def __enter__(self) -> DryWindow:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def emit(self, batch: Batch) -> None:
        """Count a batch that a run would upload (one without rows would only move the mark)."""
        if not batch.empty:
            self.report.batches += 1
            self.report.sent += len(batch.rows)

    def drain(self, *, final: bool) -> None:
        """Nothing is in flight in a dry run."""
