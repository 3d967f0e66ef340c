"""The local AiTEMS emulator: an HTTP server on loopback for development, demos, tests, benchmarks.

It serves the AiTEMS API under ``/api/v1`` (see ``model.py`` for the objects and ``rows.py``
for the upload rules). Every ``/api/v1`` request must carry a valid signature
v2 from a configured key pair, within 5 minutes of the server clock; otherwise 401 with the gateway
body ``{"error": {"errorCode": "200", "message": "Authentication Failed", "details": ...}}``.
Unknown paths answer 404 (errorCode "300").

Calls: ``POST/GET /schemas``, ``GET /schemas/default?datasetType=``, ``GET /schemas/{name}``,
``POST/GET /datasets``, ``GET /datasets/{id}``, ``POST /datasets/{id}`` (modify),
``POST/GET /services``, ``GET /services/{id}``, ``POST /services/{id}/datasets`` (attach
``{datasetIds}``, refused while the schedule runs), ``PUT /services/{id}/interval``,
``PUT /services/{id}/schedule?action=``, ``GET /services/{id}/trains``, and the upload
``POST /services/{serviceId}/datasets/{datasetId}`` with ``{"type", "value": [rows]}``, answered
``200 true``. Any problem rejects the whole upload with 400 and a ``problems`` list; an unknown
service or dataset is 404.

With an `ObjectStorage`, dataset create and modify read the dataset's CSV file from it and move
the dataset ``waiting`` -> ``processing`` -> ``enable`` or ``failed`` (with ``statusReason``);
interval services run their schedules on the `Timing` clock (``lifecycle.py``).

Faults (`Faults`, changeable at run time) apply to uploads only, in this order: latency (plus
jitter); 413 if the body is over ``max_body_bytes``; a queued status from ``statuses`` or one drawn
at ``status_rate`` from ``status_choices`` (429 and 503 carry ``Retry-After``; nothing is stored);
then validation; then the rows are stored; then, for ``drop_after_store`` / ``drop_rate``, the
connection is closed without any answer although the rows were stored.

Inspection, unsigned, under ``/_emulator`` (never an AiTEMS path):

- ``GET /_emulator/datasets``: ``{datasetId: {"uploads", "rowsReceived", "rows"}}`` (rows: count).
- ``GET /_emulator/datasets/{id}``: ``{"datasetId", "uploads", "rowsReceived", "rows": [...],
  "deliveries": [...]}``; rows is the current content, deliveries every accepted row as sent.
- ``GET /_emulator/faults``; ``PUT /_emulator/faults`` with some `Faults` fields (the rest keep
  their value) answers the faults now in force.
- ``POST /_emulator/reset-data``: forget received rows and counts.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aitems_sync.emulator.content import Received
from aitems_sync.emulator.faults import Faults, FaultState, patch_faults
from aitems_sync.emulator.handler import EmulatorHTTPServer
from aitems_sync.emulator.lifecycle import Lifecycle, Timing
from aitems_sync.emulator.model import Model
from aitems_sync.emulator.objectstorage import ObjectStorage, require_boto3
from aitems_sync.emulator.rows import Rejection
from aitems_sync.emulator.seed import apply_seed, load_seed
from aitems_sync.emulator.store import SqliteJournal
from aitems_sync.errors import UsageError

__all__ = ["EmulatorServer", "Faults", "ObjectStorage", "Received", "Timing", "load_seed"]

log = logging.getLogger(__name__)


class EmulatorServer:
    """The emulator: binds its socket at construction (so ``port`` is known), serves on start."""

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, seed: Mapping[str, Any] | None = None,
        keys: Mapping[str, str] | None = None, state_path: Path | None = None,
        faults: Faults | None = None, record: bool = True, clock: Callable[[], float] = time.time,
        object_storage: ObjectStorage | None = None, timing: Timing = Timing(),
    ) -> None:
        if object_storage is not None:
            require_boto3()
        self.clock = clock
        self._journal = SqliteJournal(Path(state_path)) if state_path is not None else None
        self.model = Model(clock=clock, record=record, journal=self._journal)
        self.faults = FaultState(faults or Faults())
        self.keys: dict[str, str] = {}
        self.lifecycle = Lifecycle(self.model, self.keys, object_storage, timing)
        try:
            if self._journal is not None:
                self.model.restore(self._journal.load())
            self.keys.update(apply_seed(self.model, seed or {}))
            self.keys.update(keys or {})
            self._httpd = self._bind(host, port)
            self.lifecycle.resume()
        except BaseException:
            self.lifecycle.stop()
            if self._journal is not None:
                self._journal.close()
            raise
        self.port: int = self._httpd.server_address[1]
        # A wildcard bind is reachable on loopback; that is the address to hand to clients.
        reach = "127.0.0.1" if host in ("", "0.0.0.0") else host
        self.base_url = f"http://{reach}:{self.port}/api/v1"
        self.admin_url = f"http://{reach}:{self.port}/_emulator"
        self._thread: threading.Thread | None = None

    def _bind(self, host: str, port: int) -> EmulatorHTTPServer:
        try:
            return EmulatorHTTPServer((host, port), self)
        except OSError as error:
            raise UsageError(f"the emulator cannot listen on {host}:{port}: {error}; "
                             "choose another --port or stop what uses it") from error

    def start(self) -> None:
        """Serve in a daemon thread; returns at once."""
        # A short poll interval makes stop() quick (shutdown waits for the loop to notice).
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,),
                                        name="aitems-emulator", daemon=True)
        self._thread.start()
        log.debug("emulator serving on %s", self.base_url)

    def stop(self) -> None:
        """Stop serving, close kept-alive connections and the socket, and the state file."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._close()

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (Ctrl-C returns cleanly)."""
        try:
            self._httpd.serve_forever()
        except KeyboardInterrupt:
            log.info("emulator stopped")
        finally:
            self._close()

    def set_faults(self, faults: Faults) -> None:
        """Put other faults in force for the next uploads."""
        self.faults.replace(faults)

    def update_faults(self, patch: Any) -> Faults:
        """Replace some fault fields (a JSON object from ``PUT /_emulator/faults``)."""
        faults = patch_faults(self.faults.faults, patch)
        self.set_faults(faults)
        return faults

    def received(self, dataset_id: str) -> Received:
        """What a dataset received so far: counts, current rows and every delivery."""
        try:
            return self.model.received(dataset_id)
        except Rejection as rejection:
            raise UsageError(f"the emulator has no dataset {dataset_id}; "
                             "use one from its seed or create it first") from rejection

    def _close(self) -> None:
        self.lifecycle.stop()
        for connection in list(self._httpd.open_connections):
            # Unblock handler threads waiting on a kept-alive connection.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        if self._journal is not None:
            self.model.close()  # a background thread that outlived stop() writes no more
            self._journal.close()
            self._journal = None
