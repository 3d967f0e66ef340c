"""The upload window of one dataset: batches on the wire, committed strictly in batch order.

The caller (the thread reading and shaping rows) only cuts batches and hands them over. A
committer thread owns every state write of the dataset while it streams, in a loop of single
transactions: each one commits the batches acknowledged since the last one (journal status,
ledger entries, quarantined rows and the mark after the last of them) and journals the next
batches as ``sending``, as long as no more than ``in_flight`` stand between journalled and
committed; those then go to a pool of ``in_flight`` upload threads. So:

- a batch is journalled, and durably, before its request leaves;
- a batch holding a key that a batch on the wire holds waits for that one's answer: AiTEMS may
  apply requests in any order, and a key's newer version must land after its older one;
- the mark never passes a batch AiTEMS has not acknowledged: only the acknowledged prefix of the
  cut batches commits, in order, all of a batch or none of it;
- commits group by themselves: whatever was acknowledged while the last transaction was being
  written goes into the next. Nothing waits on a timer, so a batch stays acknowledged but
  uncommitted only as long as one transaction takes (the window in which a crash leaves it
  ``sending``, to be reported ambiguous and sent again by the next run), while a backfill pays
  one fsync per group instead of two per batch, off the reading thread.

Committed ledger entries go to the ledger's log (see :mod:`aitems_sync.state.tables`). Once
``merge_every`` entries wait there, the committer merges the log into the ledger in a
transaction of its own and tells the reader (``on_covered``), which holds the unmerged entries
in memory until then.

When a batch fails, the uploads already on the wire finish, and what they delivered goes into
the ledger but not the mark: a re-run reads those rows again (the mark is behind them) and the
ledger keeps them off the wire. The failure is raised to the caller at its next ``emit`` or at
``drain``.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import orjson

from aitems_sync.aitems.delivery import Delivery, Target, Uploader, deliver
from aitems_sync.errors import AitemsSyncError, LeaseLostError
from aitems_sync.spec.model import DatasetSpec
from aitems_sync.state.records import KEY_HASH, LedgerEntry
from aitems_sync.state.store import (
    MERGE_EVERY,
    BatchCommit,
    Mark,
    QuarantineEntry,
    Sending,
    StateStore,
)
from aitems_sync.sync import signals
from aitems_sync.sync.batches import Batch
from aitems_sync.sync.report import AmbiguousBatch, DatasetReport

log = logging.getLogger(__name__)


LOST_ANSWER = "an answer was lost and the upload was retried"
FAILED_MAYBE_LANDED = ("the upload failed after an attempt that may have landed; the next run "
                       "sends it again")


@dataclass
class _Slot:
    """A cut batch until it commits: journalled once ``batch_id`` is set, uploading while
    ``future`` is not done (a batch without rows has neither: it only moves the mark)."""

    batch: Batch
    batch_id: int | None = None
    future: Future[Delivery] | None = None
    _keys: frozenset[int] | None = None

    @property
    def keys(self) -> frozenset[int]:
        """The key hashes of the batch's rows (made on first use, by the committer)."""
        if self._keys is None:
            self._keys = frozenset(map(KEY_HASH, self.batch.ledger))
        return self._keys

    @property
    def on_the_wire(self) -> bool:
        return self.future is not None and not self.future.done()

    @property
    def settled(self) -> bool:
        """Whether the batch's fate is known: nothing to send, or its upload has finished."""
        if self.batch.empty:
            return True
        return self.future is not None and self.future.done()


class Window:
    """In-flight uploads of one dataset and their in-order commits; use as a context manager.

    ``emit`` hands a cut batch to the committer thread and blocks while ``2 * in_flight + 2``
    batches are cut and not yet committed: reading runs ahead of the uploads by a bounded
    amount. ``drain`` waits until every batch is committed (or abandoned after a failure).

    ``check_lease`` is called before every write and raises when the run lost the dataset's
    lease: from then on another run owns the dataset and this one must not commit.

    Without ``keep_ledger`` (an interaction dataset with no lookback: the mark alone excludes
    what was sent) in-order commits write no ledger entries; batches acknowledged after a
    failure still do, since the mark does not cover them and the re-run must not send them
    again. ``on_covered(seq, merged)`` is told (from the committer thread) that every batch up
    to ``seq`` is covered: after each merge of the log (``merged``; the merge takes in the
    ``logged`` entries that were in the log when the window opened too), or, without
    ``keep_ledger``, after each commit (the mark covers those batches). With ``merge_first``
    the log is merged right after the first transaction (which journals the first batches, so
    their uploads are under way): the log earlier runs left is merged while the reader reads
    on, not at the end of the run that happens to reach ``merge_every``.
    """

    def __init__(
        self, dataset: DatasetSpec, run_id: str, target: Target, in_flight: int,
        state: StateStore, uploader: Uploader, report: DatasetReport,
        check_lease: Callable[[], None], on_covered: Callable[[int, bool], None],
        keep_ledger: bool = True, logged: int = 0, merge_every: int = MERGE_EVERY,
        merge_first: bool = False, overtaken: Callable[[], bool] | None = None,
    ) -> None:
        self.dataset = dataset
        self.run_id = run_id
        self.target = target
        self.in_flight = max(1, in_flight)
        self.state = state
        self.uploader = uploader
        self.report = report
        self.check_lease = check_lease
        self.overtaken = overtaken
        self.on_covered = on_covered
        self.keep_ledger = keep_ledger
        self.merge_every = merge_every
        self.limit = 2 * self.in_flight + 2
        self._wake = threading.Condition()
        # Guarded by _wake: handed over by the caller, and the count of batches not committed.
        self._cut: deque[Batch] = deque()
        self._open = 0
        self._closing = False
        self._failure: BaseException | None = None
        # The committer's own: every batch taken over and not yet committed, in batch order;
        # the entries in the ledger's log, and the last batch committed (0: none yet).
        self._slots: deque[_Slot] = deque()
        self._unmerged = logged
        self._committed_seq = 0
        self._merge_soon = merge_first
        self._pool = ThreadPoolExecutor(self.in_flight,
                                        thread_name_prefix=f"upload-{dataset.name}")
        self._committer = threading.Thread(target=self._commit_loop, daemon=True,
                                           name=f"commit-{dataset.name}")
        self._committer.start()

    def __enter__(self) -> Window:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # Batches cut before an error are sound: they commit (or are abandoned) first. Uploads
        # still on the wire finish before the dataset is done with; their batches stay
        # journalled `sending` if nobody committed them, and the next run reports them.
        self._close()
        self._pool.shutdown(wait=True)

    # -- the caller's side ------------------------------------------------------------------

    def emit(self, batch: Batch) -> None:
        """Hand a cut batch over to be journalled, sent and committed in order.

        Blocks while the window is full; raises the failure that stopped the window, if any.
        """
        with self._wake:
            while self._open >= self.limit and self._failure is None:
                self._wake.wait(signals.HEED_SIGNALS_SECONDS)
            if self._failure is not None:
                raise self._failure
            self._cut.append(batch)
            self._open += 1
            self._wake.notify_all()

    def drain(self) -> None:
        """Wait until every batch handed over has committed, or was abandoned after a failure;
        then raise the failure that stopped the window, if any."""
        self._close()
        with self._wake:
            if self._failure is not None:
                raise self._failure

    def _close(self) -> None:
        with self._wake:
            self._closing = True
            self._wake.notify_all()
        signals.join(self._committer)

    # -- the committer thread -----------------------------------------------------------------

    def _commit_loop(self) -> None:
        try:
            while self._next_cycle():
                pass
        except BaseException as error:  # raised to the caller; nothing is lost by catching
            self._abandon()
            with self._wake:
                self._failure = error
                self._open = 0
                self._wake.notify_all()

    def _next_cycle(self) -> bool:
        """Wait for work, then run one transaction; False once closed and nothing is left."""
        with self._wake:
            while not (self._cut or (self._slots and self._slots[0].settled)):
                if self._closing and not self._slots:
                    return False
                self._wake.wait()
            fresh = [_Slot(batch) for batch in self._cut]
            self._cut.clear()
        self._slots.extend(fresh)
        settled = self._settled_prefix()
        failed = settled[-1] if settled and _failed(settled[-1]) else None
        done = settled[:-1] if failed is not None else settled
        to_send = [] if failed is not None else self._room_on_the_wire(done)
        if done or to_send:
            self._write(done, to_send)
        if failed is not None:
            self._slots.popleft()
            self._fail(failed)
        return True

    def _settled_prefix(self) -> list[_Slot]:
        """The settled slots at the head, up to and including the first failed one."""
        prefix: list[_Slot] = []
        for slot in self._slots:
            if not slot.settled:
                break
            prefix.append(slot)
            if _failed(slot):
                break
        return prefix

    def _room_on_the_wire(self, committing: list[_Slot]) -> list[_Slot]:
        """The batches to journal and send now: the next ones in order, as long as no more
        than ``in_flight`` batches stand between journalled and committed, up to the first
        that holds a key a batch on the wire (or going with it) holds too.

        AiTEMS may apply requests in any order: a key's newer version sent beside its older
        one could land first and be overwritten, while the ledger records the newer one, so
        no run would send it again. Such a batch waits until the other is answered."""
        journalled = sum(1 for s in self._slots if s.future is not None)
        journalled -= sum(1 for s in committing if s.future is not None)
        waiting = [s for s in self._slots if s.future is None and not s.batch.empty]
        going = [s for s in self._slots if s.on_the_wire]
        room: list[_Slot] = []
        for slot in waiting[:max(0, self.in_flight - journalled)]:
            if any(not slot.keys.isdisjoint(other.keys) for other in going):
                break
            room.append(slot)
            going.append(slot)
        return room

    def _write(self, done: list[_Slot], to_send: list[_Slot]) -> None:
        """Commit ``done`` and journal ``to_send`` in one transaction, then send those."""
        commits = [self._commit_of(slot) for slot in done]
        self.check_lease()
        ids = self.state.commit_batches(
            self.dataset.name, run_id=self.run_id, commits=commits,
            sending=[Sending(len(s.batch.rows), s.batch.first, s.batch.last) for s in to_send],
            fenced=True,
        )
        for slot, batch_id in zip(to_send, ids, strict=True):
            slot.batch_id = batch_id
            slot.future = self._pool.submit(self._deliver, slot.batch)
            slot.future.add_done_callback(self._notify)
        for slot in done:
            self._slots.popleft()
            self._account(slot)
        if done:
            self._committed_seq = done[-1].batch.seq
            self._unmerged += sum(len(c.ledger) for c in commits)
            with self._wake:
                self._open -= len(done)
                self._wake.notify_all()
        if self._merge_soon or self._unmerged >= self.merge_every:
            self._merge_soon = False
            self._merge()
        elif done and not self.keep_ledger:
            self.on_covered(self._committed_seq, False)

    def _deliver(self, batch: Batch) -> Delivery:
        """Upload a batch (on an upload thread). With ``overtaken``: when, once the answer is
        in, another run may have taken the dataset over, the request may have left, or landed,
        after that run sent newer versions of its keys, and put the older ones back: the batch
        is recorded for the next run to send its keys' newest versions again."""
        delivery = deliver(self.uploader, self.target, batch.rows)
        unsent = isinstance(delivery.error, LeaseLostError) and not delivery.delivered
        if self.overtaken is not None and not unsent and self.overtaken():
            log.warning("dataset %s: a batch of %d rows (cursor %s ..) may have reached AiTEMS "
                        "after this run lost its lease; the next run sends the newest version "
                        "of its keys again", self.dataset.name, len(batch.rows), show(batch.first),
                        extra={"event": "late_batch", "dataset": self.dataset.name})
            try:
                self.state.note_late(self.dataset.name, self.run_id, first=batch.first,
                                     key_hashes=[entry.key_hash for entry in batch.ledger])
            except AitemsSyncError as error:
                log.error("dataset %s: could not record the late batch: %s", self.dataset.name,
                          error, extra={"event": "late_batch", "dataset": self.dataset.name})
        return delivery

    def _merge(self) -> None:
        """Merge the ledger's log, then tell the reader which batches the ledger now holds."""
        self.check_lease()
        self.state.merge_ledger(self.dataset.name)
        self._unmerged = 0
        self.on_covered(self._committed_seq, True)

    def _notify(self, _future: Future[Delivery]) -> None:
        with self._wake:
            self._wake.notify_all()

    def _commit_of(self, slot: _Slot) -> BatchCommit:
        batch = slot.batch
        quarantine = list(batch.quarantine)
        ledger: list[LedgerEntry] = []
        unlogged: Sequence[LedgerEntry] = ()
        if slot.future is not None:
            delivery = slot.future.result()
            if self.keep_ledger:
                ledger = [batch.ledger[i] for i in delivery.delivered]
            else:  # for the quarantine only; the whole batch as it is, in the usual case
                unlogged = batch.ledger if len(delivery.delivered) == len(batch.ledger) else [
                    batch.ledger[i] for i in delivery.delivered]
            quarantine.extend(self._server_rejections(batch, delivery))
        return BatchCommit(slot.batch_id, ledger, batch.end, quarantine, batch.boundary,
                           unlogged=unlogged, current=batch.current)

    def _account(self, slot: _Slot) -> None:
        """Count a committed batch in the report."""
        if slot.future is not None:
            delivery, report = slot.future.result(), self.report
            report.sent += len(delivery.delivered)
            report.invalid += len(delivery.rejected)
            report.batches += 1
            report.requests += delivery.requests
            if delivery.ambiguous:
                self._note_ambiguous(slot, LOST_ANSWER)

    def _fail(self, slot: _Slot) -> None:
        """Record what the failed batch delivered, then raise its error."""
        assert slot.future is not None
        delivery = slot.future.result()  # an upload thread's own bug raises here
        self._keep_delivered(slot, delivery)
        assert delivery.error is not None
        raise delivery.error

    def _keep_delivered(self, slot: _Slot, delivery: Delivery) -> None:
        """Record what a failed or abandoned batch delivered: ledger entries, never the mark.

        Every earlier batch committed, but this one did not, so the mark stays before it; the
        entries keep the acknowledged rows (split halves, or whole later batches) off the wire
        when the re-run reads them again. A failed batch is journalled ``failed`` when its
        answer proves the rest was not stored (connection refused, a 4xx); when it may have
        been, this run reports it ambiguous and it stays ``sending`` until the run's end is
        recorded. Nothing is written after the lease was lost.
        """
        error = delivery.error
        maybe_landed = error is not None and getattr(error, "ambiguous", False)
        if maybe_landed:
            self._note_ambiguous(slot, FAILED_MAYBE_LANDED)
        failed = [] if error is None or maybe_landed or slot.batch_id is None else [
            slot.batch_id]
        if not delivery.delivered and not failed:
            return
        ledger = [slot.batch.ledger[i] for i in delivery.delivered]
        self.check_lease()
        self.state.commit_batches(
            self.dataset.name, run_id=self.run_id, fenced=True, failed=failed,
            commits=[BatchCommit(slot.batch_id if error is None else None, ledger)])
        self.report.sent += len(delivery.delivered)
        self.report.requests += delivery.requests
        if delivery.ambiguous:
            self._note_ambiguous(slot, LOST_ANSWER)

    def _abandon(self) -> None:
        """After a failure: let the uploads on the wire finish and keep what they delivered.

        Batches not journalled yet were never sent; the next run reads their rows again.
        """
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
            key = self._key_of(sent, batch.keys[index])
            entries.append(QuarantineEntry(
                dataset=self.dataset.name, run_id=self.run_id, key=key, raw=sent,
                errors=[{"path": "$", "message": answer}], origin="server",
                ledger_hash=None if self.dataset.type == "interaction" else ledger.get(key_hash),
                key_hash=key_hash,
            ))
        return entries

    def _key_of(self, sent: dict[str, Any], key: Any) -> dict[str, Any]:
        """A sent row's key, by name: from the row, or the key values an interaction dataset
        with a key of its own kept (its columns need not be fields)."""
        names = self.dataset.key_fields
        if self.dataset.type != "interaction" or not self.dataset.key:
            return {name: sent.get(name) for name in names}
        return dict(zip(names, key if len(names) > 1 else [key], strict=True))

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


def _failed(slot: _Slot) -> bool:
    """Whether a settled slot's upload failed (or its upload thread raised)."""
    if slot.future is None:
        return False
    return slot.future.exception() is not None or slot.future.result().error is not None


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

    def drain(self) -> None:
        """Nothing is in flight in a dry run."""
