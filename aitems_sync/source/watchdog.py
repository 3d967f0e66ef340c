"""Notice a source that stops answering: end a query that waits too long for its next rows.

A source's queries (the column probe, the NULL-cursor count, the extraction's statement and each
fetch of rows) wait on the database. A server that froze (SIGSTOP, a VM paused, a lock held
forever) or a network that silently drops packets leaves that wait without end, while the
run's lease renewer keeps the datasets locked: the run hangs, silently. A source's
``read_timeout`` bounds every such wait.

Why a watchdog thread rather than each driver's own timeout: one rule for every driver, and it
catches what socket-level timeouts miss. A frozen server's kernel still acknowledges TCP, so
libpq's keepalives and ``tcp_user_timeout`` never fire; PyMySQL's ``read_timeout`` would, but
psycopg has no read timeout of its own, and a query cancel request (``connection.cancel()``)
needs the frozen server's cooperation. The watchdog ends the wait from our side: it shuts down
the connection's socket (the reading thread's ``recv`` returns at once and the driver reports a
lost connection) or, for SQLite, calls ``interrupt()``. The reading thread then raises a
:class:`SourceError` naming the source and the timeout.

Only time spent waiting on the database counts: a reader paused by its upload window (slow
uploads) waits on AiTEMS, not on the source, and no timer runs meanwhile. Each wait arms the
watch with one attribute write and disarms it with another; a single thread per source, asleep
while nothing is armed, checks the armed watches a few times per timeout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

import sqlalchemy as sa

log = logging.getLogger(__name__)

#: The longest pause between two looks at the armed watches (seconds); shorter timeouts are
#: looked at four times per timeout, so a wait is ended at most a quarter late.
LONGEST_LOOK = 1.0


class Watch:
    """The waits of one connection: arm it around each call that waits on the database
    (``with watch:``), and ``release`` it before the connection closes."""

    def __init__(self, dog: Watchdog, cancel: Callable[[], None],
                 closer: Callable[[], None]) -> None:
        self._dog = dog
        self._cancel = cancel
        self._closer = closer
        self.since: float | None = None  # when the current wait began (monotonic), or None
        self.warned = False
        self.fired = False  # the watchdog ended a wait: the connection is unusable

    def __enter__(self) -> Watch:
        self.warned = False
        self.since = time.monotonic()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.since = None

    def release(self) -> None:
        """Stop watching this connection (safe to call twice)."""
        self.since = None
        self._dog.forget(self)
        self._closer()

    def fire(self) -> None:
        """End the current wait (from the watchdog's thread)."""
        self.fired = True
        try:
            self._cancel()
        except (OSError, ValueError, AttributeError):  # already closed: the wait is over anyway
            log.debug("ending a source wait failed", exc_info=True)


class Watchdog:
    """Ends any wait of a source's connections longer than ``seconds``."""

    def __init__(self, source: str, seconds: float) -> None:
        self.source = source
        self.seconds = seconds
        self._look = min(LONGEST_LOOK, seconds / 4)
        self._watches: set[Watch] = set()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def watch(self, dbapi_connection: Any) -> Watch:
        """A watch over one DBAPI connection (sqlite3, psycopg, psycopg2, PyMySQL, or any
        whose socket is found); a connection it cannot end is watched for the warning only."""
        cancel, closer = _canceller(dbapi_connection)
        watch = Watch(self, cancel, closer)
        self._add(watch)
        return watch

    def _add(self, watch: Watch) -> None:
        with self._cond:
            self._watches.add(watch)
            if self._thread is None:
                self._closed = False
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                 name=f"watchdog-{self.source}")
                self._thread.start()
            self._cond.notify()

    def watch_idle(self, idle: Callable[[], Iterable[Any]]) -> Watch:
        """A watch over taking a connection from the pool, which first pings an idle pooled
        one: when the wait is too long, every connection ``idle()`` returns is ended (the
        pool then drops the one it pinged and connects anew, bounded by the connect
        timeout)."""
        def cancel() -> None:
            for connection in list(idle()):
                end, let_go = _canceller(connection)
                try:
                    end()
                finally:
                    let_go()

        watch = Watch(self, cancel, _nothing)
        self._add(watch)
        return watch

    def forget(self, watch: Watch) -> None:
        with self._cond:
            self._watches.discard(watch)

    def close(self) -> None:
        """Stop the thread (the source is closed)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._watches and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                self._cond.wait(self._look)
                watches = list(self._watches)
            now = time.monotonic()
            for watch in watches:
                self._look_at(watch, now)

    def _look_at(self, watch: Watch, now: float) -> None:
        since = watch.since
        if since is None or watch.fired:
            return
        waited = now - since
        if waited >= self.seconds:
            log.error("source %s: no answer for %.0f s (read_timeout): ending the query",
                      self.source, waited, extra={"event": "read_timeout", "source": self.source})
            watch.fire()
        elif waited >= self.seconds / 2 and not watch.warned:
            watch.warned = True
            log.warning("source %s: waiting %.0f s for rows; the dataset fails once it has "
                        "waited %.0f s (sources.%s.read_timeout)", self.source, waited,
                        self.seconds, self.source,
                        extra={"event": "slow_source", "source": self.source})


class IdleConnections:
    """The DBAPI connections of an engine's pool that are checked in: the ones it may ping
    before handing one out (see ``Watchdog.watch_idle``)."""

    def __init__(self) -> None:
        self._held: dict[int, Any] = {}
        self._lock = threading.Lock()

    def follow(self, engine: sa.Engine) -> None:
        sa.event.listen(engine, "checkin", self._checked_in)
        for event in ("checkout", "close", "close_detached", "detach", "invalidate"):
            sa.event.listen(engine, event, self._gone)

    def connections(self) -> list[Any]:
        with self._lock:
            return list(self._held.values())

    def _checked_in(self, dbapi_connection: Any, _record: Any) -> None:
        if dbapi_connection is not None:
            with self._lock:
                self._held[id(dbapi_connection)] = dbapi_connection

    def _gone(self, dbapi_connection: Any, *_args: Any) -> None:
        with self._lock:
            self._held.pop(id(dbapi_connection), None)


def _canceller(dbapi_connection: Any) -> tuple[Callable[[], None], Callable[[], None]]:
    """How to end a wait on the connection, and how to let go of what that needs.

    sqlite3: ``interrupt()``, which is safe from another thread. Over a network: a shutdown of
    the connection's socket, through a duplicate of its descriptor, held until the watch is
    released: the descriptor can then never be closed and reused for another file while the
    watchdog may still act on it.
    """
    interrupt = getattr(dbapi_connection, "interrupt", None)
    if callable(interrupt):
        return interrupt, _nothing
    fd = _socket_fd(dbapi_connection)
    if fd is None:
        return _nothing, _nothing
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return _nothing, _nothing

    def cancel() -> None:
        sock.shutdown(socket.SHUT_RDWR)

    def close() -> None:
        with contextlib.suppress(OSError):
            sock.close()

    return cancel, close


def _socket_fd(dbapi_connection: Any) -> int | None:
    """The descriptor of the connection's socket: psycopg and psycopg2 ``fileno()``, PyMySQL
    ``_sock``."""
    sock = getattr(dbapi_connection, "_sock", None)  # PyMySQL
    if sock is not None:
        with contextlib.suppress(OSError, ValueError):
            return int(sock.fileno())
        return None
    fileno = getattr(dbapi_connection, "fileno", None)
    if callable(fileno):
        with contextlib.suppress(Exception):  # a closed connection raises the driver's error
            return int(fileno())
    return None


def _nothing() -> None:
    return None
