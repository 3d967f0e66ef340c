"""A progress display on a terminal: per dataset, rows read and sent, and the rate (tqdm).

Only the CLI creates one, and only when stderr is a terminal and logs are text: never in log
files, pipes, CI output or JSON logs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from aitems_sync.sync.report import DatasetReport


class TerminalProgress:
    """One bar per dataset, updated after every chunk (from the thread syncing it)."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._bars: dict[str, tqdm[Any]] = {}
        self._lock = threading.Lock()

    def __call__(self, report: DatasetReport) -> None:
        with self._lock:
            if report.dataset not in self._bars:
                self._bars[report.dataset] = tqdm(
                    desc=report.dataset, unit=" rows", file=self._stream,
                    position=len(self._bars), dynamic_ncols=True, mininterval=0.25)
            bar = self._bars[report.dataset]
            bar.set_postfix(sent=report.sent, unchanged=report.unchanged,
                            invalid=report.invalid, refresh=False)
            bar.update(report.read - bar.n)

    def close(self) -> None:
        with self._lock:
            for bar in self._bars.values():
                bar.close()


@contextmanager
def terminal_progress(stream: IO[str]) -> Iterator[TerminalProgress]:
    """A display for the length of a run, with log lines written above the bars."""
    display = TerminalProgress(stream)
    try:
        with logging_redirect_tqdm():
            yield display
    finally:
        display.close()
