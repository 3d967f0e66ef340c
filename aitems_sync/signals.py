"""SIGTERM and SIGINT during a run: stop reading, finish what is on the wire, commit, exit.

The first signal sets an event the engine checks between chunks; a second one exits at once
(still safe: the journal marks the batches that were on the wire as ambiguous for the next run).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType

from aitems_sync.errors import EXIT_SIGINT, EXIT_SIGTERM

log = logging.getLogger(__name__)

_EXIT_CODES = {signal.SIGTERM: EXIT_SIGTERM, signal.SIGINT: EXIT_SIGINT}


@dataclass
class StopRequest:
    """Set by the first signal; ``exit_code`` is 143 for SIGTERM and 130 for SIGINT."""

    event: threading.Event = field(default_factory=threading.Event)
    exit_code: int | None = None


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Install the handlers for the body of a run; restore the previous ones after."""
    request = StopRequest()

    def handle(signum: int, _frame: FrameType | None) -> None:
        code = _EXIT_CODES[signal.Signals(signum)]
        if request.event.is_set():
            log.error("second signal: exiting now; the next run re-sends what was on the wire")
            os._exit(code)
        request.exit_code = code
        request.event.set()
        log.warning("%s: finishing the uploads on the wire, committing, then exiting",
                    signal.Signals(signum).name, extra={"event": "stopping"})

    previous = {s: signal.signal(s, handle) for s in _EXIT_CODES}
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
