"""A run's leases on its datasets: taken (or waited for) at the start, renewed, given back.

A lease is a row in the state store (owner, host, pid, process token, expiry), taken with
conditional writes so two processes never both win. While the run lives, a thread renews every
lease at a third of its time to live; a run killed with -9 stops renewing, and its datasets are
free again once the lease expires, or at once for a run on the same host that can tell the
holder is gone (``sync.liveness``): that takeover is the same conditional write, on the holder's
run id instead of its expiry. If a renewal finds the lease taken over (this process stalled
past the expiry), the run is told to stop and must not commit again: another run owns the
dataset now.

Two fences keep a run that stalled (a GC pause, SIGSTOP, a frozen VM) from acting on a lease it
lost while it slept, before its renewal thread could notice:

- every commit checks, in its own transaction, that the run still owns the lease
  (``StateStore.commit_batches(fenced=True)``);
- no request leaves once the last successful renewal is older than the lease's time to live
  less a margin (``check``, called by ``FencedUploader`` before each request): another run can
  take the lease over only after it expires, so a stalled run has on the wire only what was
  there when it stalled, and those batches stay journalled ``sending`` for the run that takes
  over to report as ambiguous.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from aitems_sync.aitems.delivery import Uploader, UploadOutcome
from aitems_sync.errors import AitemsSyncError, LeaseLostError, LockHeldError
from aitems_sync.state.store import LeaseHolder, StateStore
from aitems_sync.sync import liveness

log = logging.getLogger(__name__)

#: Polling while waiting for a lease (--wait): first pause, growth, longest pause (seconds).
FIRST_POLL, POLL_GROWTH, LONGEST_POLL = 0.1, 1.5, 5.0
#: The share of the time to live after which a lease not renewed since is no longer trusted for
#: sending: renewals come every third of it, and the rest is the margin a request needs to
#: leave before another run could take the lease over.
TRUSTED_SHARE = 0.75


class Leases:
    """The leases of one run on its datasets."""

    def __init__(
        self, state: StateStore, datasets: Sequence[str], owner: str, ttl: float,
        *, process: liveness.Process | None = None,
    ) -> None:
        """``process``: this process as its leases record it (by default read from the host)."""
        self._state = state
        self._process = process or liveness.this_process()
        self._datasets = list(datasets)
        self._owner = owner
        self._ttl = ttl
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._held: list[str] = []
        self._lost: set[str] = set()
        #: When each lease was last taken or renewed (time.monotonic(), read before the write).
        self._renewed: dict[str, float] = {}
        #: Set when any lease was lost; the engine stops every dataset on it.
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="lease-renewer", daemon=True)

    def acquire(self, *, wait: float | None = None, stop: threading.Event | None = None) -> bool:
        """Take every lease, or raise LockHeldError (exit 75) naming the holder.

        With ``wait`` (seconds, ``math.inf`` for no limit), a held lease is polled with growing
        pauses until it is free or the time is up. Returns False if ``stop`` was set while
        waiting (a signal): then nothing is held.
        """
        deadline = None if wait is None else time.monotonic() + wait
        pause, announced = FIRST_POLL, None
        while (refused := self._take_all()) is not None:
            name, error = refused
            if deadline is None:
                raise error
            left = deadline - time.monotonic()
            if left <= 0:
                raise LockHeldError(f"{error} (gave up after waiting {wait:g} s)") from None
            holder = self._state.lease_holder(name)
            announced = _announce(holder, announced)
            nap = min(pause * random.uniform(0.5, 1.0), left, _until_expiry(holder))
            if stop is not None and stop.wait(nap):
                return False
            if stop is None:
                time.sleep(nap)
            pause = min(pause * POLL_GROWTH, LONGEST_POLL)
        self._thread.start()
        return True

    def _take_all(self) -> tuple[str, LockHeldError] | None:
        """Take every lease; if one is held, give back the others and return who refused."""
        for name in self._datasets:
            started = time.monotonic()
            try:
                self._take(name)
            except LockHeldError as error:
                self._give_back()  # all or nothing: never sit on some while waiting for others
                return name, error
            with self._lock:
                self._held.append(name)
                self._renewed[name] = started
        return None

    def _take(self, name: str) -> None:
        """Take one lease: a free or expired one, or one whose holder ran on this host and is
        gone; LockHeldError otherwise."""
        me = self._process
        take = functools.partial(self._state.acquire_lease, name, owner=self._owner,
                                 host=me.host, pid=me.pid, process=me.token, ttl=self._ttl)
        try:
            take()
        except LockHeldError:
            holder = self._state.lease_holder(name)
            if holder is None:
                raise
            why = liveness.gone(liveness.Process(holder.host, holder.pid, holder.process), me,
                                liveness.look(holder.pid))
            if why is None:
                raise
            take(take_from=holder.owner)  # LockHeldError if it changed hands since
            log.warning("took over the lease on dataset %s from run %s (pid %d on this host) "
                        "before it expired: %s", name, holder.owner, holder.pid, why,
                        extra={"event": "lease_takeover", "dataset": name,
                               "run_id": holder.owner})

    def trusted(self, dataset: str) -> bool:
        """Whether no other run can have taken the dataset over yet (``check`` would pass)."""
        age = time.monotonic() - self._renewed.get(dataset, -math.inf)
        return dataset not in self._lost and age < self._ttl * TRUSTED_SHARE

    def overtaken(self, dataset: str) -> bool:
        """Whether a request answered now may have landed after another run took the dataset
        over: the lease is no longer trusted, and the state store shows another owner (or none,
        or cannot say). A lease that lapsed with nobody taking it over is still this run's:
        nobody else can have sent anything newer."""
        if self.trusted(dataset):
            return False
        try:
            holder = self._state.lease_holder(dataset)
        except AitemsSyncError:
            return True
        return holder is None or holder.owner != self._owner

    def check(self, dataset: str) -> None:
        """Raise LeaseLostError if this run lost the dataset's lease, or has not renewed it for
        so long that another run may take it over any moment: it must not send or commit then."""
        if dataset in self._lost:
            raise LeaseLostError(
                f"this run lost the lease on dataset {dataset!r} to another run (it could not "
                "renew it in time); it stopped without committing more, and the run holding the "
                "lease now delivers the rest"
            )
        age = time.monotonic() - self._renewed.get(dataset, -math.inf)
        if age >= self._ttl * TRUSTED_SHARE:
            raise LeaseLostError(
                f"this run has not renewed its lease on dataset {dataset!r} for {age:.1f} s "
                f"(the lease lasts {self._ttl:g} s: the process stalled, or the state store did "
                "not answer), so another run may own the dataset now; it stopped sending and "
                "committing, and the next run reads again what this one did not commit"
            )

    def _renew(self) -> None:
        while not self._done.wait(self._ttl / 3):
            with self._lock:
                held = list(self._held)
            for name in held:
                started = time.monotonic()
                try:
                    still_ours = self._state.renew_lease(name, owner=self._owner, ttl=self._ttl)
                except AitemsSyncError as error:
                    log.warning("could not renew the lease on %s: %s", name, error)
                    continue
                if not still_ours:
                    log.error("lost the lease on %s to another run: stopping", name,
                              extra={"event": "lease_lost", "dataset": name})
                    self._lost.add(name)
                    self.lost.set()
                    continue
                with self._lock:
                    self._renewed[name] = started

    def release(self) -> bool:
        """Stop renewing and give every lease back; False when the state store refused some
        (logged), which a later call tries again (else they expire anyway)."""
        self._done.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        return self._give_back()

    def _give_back(self) -> bool:
        with self._lock:
            held, self._held = self._held, []
        kept = []
        for name in held:
            try:
                self._state.release_lease(name, owner=self._owner)
            except AitemsSyncError as error:
                log.warning("could not release the lease on %s: %s", name, error)
                kept.append(name)
        with self._lock:
            self._held.extend(kept)
        return not kept


class FencedUploader:
    """An uploader that sends a request only while ``check`` passes (the lease is trusted)."""

    def __init__(self, uploader: Uploader, check: Callable[[], None]) -> None:
        self._uploader = uploader
        self._check = check

    def upload_encoded(self, service_id: str, dataset_id: str, dataset_type: str,
                       rows: Sequence[bytes]) -> UploadOutcome:
        self._check()
        return self._uploader.upload_encoded(service_id, dataset_id, dataset_type, rows)


def _announce(holder: LeaseHolder | None, announced: tuple[str, str] | None
              ) -> tuple[str, str] | None:
    """Log at INFO who holds the lease we wait for, once per holder."""
    if holder is None:
        return announced
    who = (holder.dataset, holder.owner)
    if who != announced:
        log.info("waiting for the lease on dataset %s: run %s on host %s (pid %d) holds it "
                 "until %s UTC", holder.dataset, holder.owner, holder.host, holder.pid,
                 f"{holder.expires_at:%Y-%m-%d %H:%M:%S}",
                 extra={"event": "lease_wait", "dataset": holder.dataset})
    return who


def _until_expiry(holder: LeaseHolder | None) -> float:
    """Seconds until the holder's lease expires (a little after), so a dead holder's lease is
    taken over as soon as it lapses."""
    if holder is None:
        return 0.05
    expires = holder.expires_at
    if expires.tzinfo is None:  # stored as naive UTC by some databases
        expires = expires.replace(tzinfo=UTC)
    return max((expires - datetime.now(UTC)).total_seconds() + 0.05, 0.05)
