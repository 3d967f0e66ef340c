"""SIGTERM and SIGINT during a run: stop reading, finish what is on the wire, commit, exit.

The first signal sets an event the engine checks before every row; the uploads on the wire then
have ``grace`` seconds to finish and commit. A second signal, or the end of the grace period,
exits at once: still safe, since the journal shows the batches that were on the wire and the next
run reports them as ambiguous and sends them again. Before it exits, the hooks registered with
:func:`on_abort` get :data:`ABORT_SECONDS` in all (the engine records the run as interrupted and
gives its leases back, the CLI prints the report).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import TypeVar

from aitems_sync.errors import EXIT_SIGINT, EXIT_SIGTERM

T = TypeVar("T")

log = logging.getLogger(__name__)

_EXIT_CODES = {signal.SIGTERM: EXIT_SIGTERM, signal.SIGINT: EXIT_SIGINT}
#: The longest a run's main thread sleeps in one wait. CPython runs signal handlers on the main
#: thread only, between bytecodes; a signal the kernel hands to another thread (as Linux does
#: when the main thread has one pending already: a second SIGTERM right after the first, on a
#: busy machine) interrupts no wait of the main thread, whose handler then ran only when the
#: wait ended (in a test, late by twice the uploads' latency). Waits are cut into slices.
HEED_SIGNALS_SECONDS = 0.05

#: Seconds the uploads on the wire get after the first signal; below Kubernetes' default
#: terminationGracePeriodSeconds (30), so the run exits with its own code before SIGKILL.
DEFAULT_GRACE = 25.0

#: Seconds the :func:`on_abort` hooks get, in all, when a run exits at once: enough for a few
#: writes to the state store and a report, short beside a pod's termination grace period.
ABORT_SECONDS = 3.0

#: What to do before exiting at once, newest first (each told the exit code).
_abort_hooks: list[Callable[[int], None]] = []


@dataclass
class StopRequest:
    """Set by the first signal; ``exit_code`` is 143 for SIGTERM and 130 for SIGINT."""

    event: threading.Event = field(default_factory=threading.Event)
    exit_code: int | None = None


@contextmanager
def stop_on_signals(grace: float = DEFAULT_GRACE) -> Iterator[StopRequest]:
    """Install the handlers for the body of a run; restore the previous ones after.

    Must be entered on the main thread (Python delivers signals there).
    """
    request = StopRequest()
    timers: list[threading.Timer] = []

    def handle(signum: int, _frame: FrameType | None) -> None:
        code = _EXIT_CODES[signal.Signals(signum)]
        if request.event.is_set():
            _exit_now(code, "second signal")
        request.exit_code = code
        request.event.set()
        log.warning("%s: finishing the uploads on the wire (up to %g s), committing, then "
                    "exiting", signal.Signals(signum).name, grace, extra={"event": "stopping"})
        timer = threading.Timer(grace, _exit_now, (code, f"grace period of {grace:g} s over"))
        timer.daemon = True
        timers.append(timer)
        timer.start()

    previous = {s: signal.signal(s, handle) for s in _EXIT_CODES}
    try:
        yield request
    finally:
        for timer in timers:
            timer.cancel()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def on_abort(hook: Callable[[int], None]) -> Iterator[None]:
    """Run ``hook(exit_code)`` if the process exits at once (a second signal, the grace period
    over) while in this block. Hooks run newest first, on a helper thread, within
    :data:`ABORT_SECONDS` in all; one that is still running then is abandoned."""
    _abort_hooks.insert(0, hook)
    try:
        yield
    finally:
        _abort_hooks.remove(hook)


def _exit_now(code: int, why: str) -> None:
    log.error("%s: exiting now; the next run reports the batches that were on the wire as "
              "ambiguous and sends them again", why, extra={"event": "abort"})
    hooks = threading.Thread(target=_run_hooks, args=(list(_abort_hooks), code), daemon=True,
                             name="abort-hooks")
    hooks.start()
    hooks.join(ABORT_SECONDS)
    logging.shutdown()
    os._exit(code)


def _run_hooks(hooks: list[Callable[[int], None]], code: int) -> None:
    for hook in hooks:
        try:
            hook(code)
        except Exception as error:  # exiting anyway: the next hook still runs
            log.error("while exiting at once: %s", error, extra={"event": "abort"})


def join(thread: threading.Thread) -> None:
    """``thread.join()``, waking every :data:`HEED_SIGNALS_SECONDS` to run signal handlers."""
    while thread.is_alive():
        thread.join(HEED_SIGNALS_SECONDS)


def result(future: Future[T]) -> T:
    """``future.result()``, waking every :data:`HEED_SIGNALS_SECONDS` to run signal handlers."""
    while not future.done():
        wait([future], HEED_SIGNALS_SECONDS)
    return future.result()
