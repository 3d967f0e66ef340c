"""A loopback TCP proxy that stops forwarding: a network partition as a database client sees it.

It forwards both ways until ``limit`` bytes came from the server (or ``stall()`` is called),
then forwards nothing more and reads nothing more, keeping every connection open: the client
waits for an answer that never comes, with no error, no reset and no FIN.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class StallProxy:
    """Forwards 127.0.0.1:``port`` to ``target`` until ``limit`` server bytes, then stalls."""

    def __init__(self, target: tuple[str, int], limit: int | None = None) -> None:
        self.target = target
        self.remaining = limit
        self.stalled_at: float | None = None  # time.monotonic() when it stopped forwarding
        self._stalled = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self) -> None:
        with self._lock:
            if not self._stalled.is_set():
                self.stalled_at = time.monotonic()
                self._stalled.set()

    def close(self) -> None:
        self._closed.set()
        self._stalled.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> StallProxy:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, counted: bool) -> None:
        while not self._stalled.is_set():
            size = 65536
            if counted and self.remaining is not None:
                with self._lock:
                    size = min(size, self.remaining)
                if size == 0:
                    self.stall()
                    break
            try:
                data = source.recv(size)
                if self._stalled.is_set():
                    break  # read during the stall: dropped, as a partition drops it
                if not data:
                    sink.shutdown(socket.SHUT_WR)
                    return
                sink.sendall(data)
            except OSError:
                return
            if counted and self.remaining is not None:
                with self._lock:
                    self.remaining -= len(data)
        self._closed.wait()  # hold the connection open, reading nothing
