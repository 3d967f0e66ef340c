"""The emulator's HTTP handler: routing, signature checks, fault injection and the answers.

One `EmulatorHandler` per connection (HTTP/1.1 keep-alive, TCP_NODELAY). It reads the whole body,
finds the route, verifies signature v2 for ``/api/v1`` paths, and calls the model; a `Rejection`
becomes its error answer. The server state it works on is the `EmulatorServer` in ``server.py``
(``self.server.app``); see that module's docstring for the API, faults and admin endpoints.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import socketserver
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote

import orjson

from aitems_sync.aitems.signing import verify
from aitems_sync.emulator.faults import Faults, FaultState
from aitems_sync.emulator.lifecycle import Lifecycle
from aitems_sync.emulator.model import Model
from aitems_sync.emulator.rows import Rejection, error_body, parse_upload

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
ADMIN_PREFIX = "/_emulator"

@dataclass(frozen=True)
class Call:
    """One API call as the routes see it: path arguments, query, parsed body, caller's key."""

    args: tuple[str, ...]
    query: dict[str, str]
    body: Any
    access_key: str


Action = Callable[["App", Call], Any]
_ROUTES: list[tuple[str, re.Pattern[str], Action | None]] = [
    ("GET", re.compile(r"/schemas"), lambda a, c: a.model.list_schemas(c.query)),
    ("POST", re.compile(r"/schemas"), lambda a, c: a.model.create_schema(c.body)),
    ("GET", re.compile(r"/schemas/default"), lambda a, c: a.model.default_schema(c.query)),
    ("GET", re.compile(r"/schemas/([^/]+)"), lambda a, c: a.model.get_schema(c.args[0])),
    ("GET", re.compile(r"/datasets"), lambda a, c: a.model.list_datasets(c.query)),
    ("POST", re.compile(r"/datasets"),
     lambda a, c: a.lifecycle.create_dataset(c.body, c.access_key)),
    ("GET", re.compile(r"/datasets/([^/]+)"), lambda a, c: a.model.get_dataset(c.args[0])),
    ("POST", re.compile(r"/datasets/([^/]+)"),
     lambda a, c: a.lifecycle.modify_dataset(c.args[0], c.body, c.access_key)),
    ("GET", re.compile(r"/services"), lambda a, c: a.model.list_services(c.query)),
    ("POST", re.compile(r"/services"), lambda a, c: a.model.create_service(c.body)),
    ("GET", re.compile(r"/services/([^/]+)"), lambda a, c: a.model.get_service(c.args[0])),
    ("POST", re.compile(r"/services/([^/]+)/datasets"),
     lambda a, c: a.model.attach_datasets(c.args[0], c.body)),
    ("PUT", re.compile(r"/services/([^/]+)/interval"),
     lambda a, c: a.model.set_interval(c.args[0], c.body)),
    ("PUT", re.compile(r"/services/([^/]+)/schedule"),
     lambda a, c: a.lifecycle.set_schedule(c.args[0], c.query.get("action"))),
    ("GET", re.compile(r"/services/([^/]+)/trains"),
     lambda a, c: a.model.list_trains(c.args[0], c.query)),
    # The upload call: no action, because faults and dropped answers need the connection.
    ("POST", re.compile(r"/services/([^/]+)/datasets/([^/]+)"), None),
]


def match_route(method: str, path: str) -> tuple[Action | None, tuple[str, ...]] | None:
    """The action and path arguments of an API path (without ``/api/v1``), or None."""
    for route_method, pattern, action in _ROUTES:
        found = pattern.fullmatch(path)
        if found and route_method == method:
            return action, tuple(unquote(arg) for arg in found.groups())
    return None


def _retry_after(seconds: float) -> str:
    # Whole seconds as an integer (the HTTP form); fractions kept so tests can wait briefly.
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


class App(Protocol):
    """What the handler answers from: an emulator's model, keys, faults and clock."""

    model: Model
    lifecycle: Lifecycle
    keys: dict[str, str]
    faults: FaultState

    def clock(self) -> float: ...

    def update_faults(self, patch: Any) -> Faults: ...


class EmulatorHTTPServer(ThreadingHTTPServer):
    """The threading HTTP server of one emulator, with its app and open connections."""

    daemon_threads = True  # a kept-alive client must not keep the process alive

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        self.open_connections: set[socket.socket] = set()
        super().__init__(address, EmulatorHandler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup of the host (slow where DNS is slow)."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-request (killed, or timed out) is a line in the log,
        not a traceback on stderr; anything else is logged with its traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            log.info("client %s went away: %s", client_address, error)
            return
        log.exception("error while serving %s", client_address)


class EmulatorHandler(BaseHTTPRequestHandler):
    """Answers the requests of one connection."""

    protocol_version = "HTTP/1.1"  # keep-alive; every answer carries Content-Length
    # Without TCP_NODELAY, Nagle plus delayed ACKs stall each kept-alive request about 40 ms.
    disable_nagle_algorithm = True
    server: EmulatorHTTPServer

    def setup(self) -> None:
        """Track the connection so `EmulatorServer.stop` can close it."""
        super().setup()
        self.server.open_connections.add(self.connection)

    def finish(self) -> None:
        """Forget the connection."""
        try:
            super().finish()
        finally:
            self.server.open_connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Request lines go to the debug log, not stderr."""
        log.debug("%s " + format, self.address_string(), *args)

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The ``Date`` header from the emulator's clock, so clients can diagnose skew."""
        return formatdate(self.server.app.clock() if timestamp is None else timestamp, usegmt=True)

    def do_GET(self) -> None:
        """Handle GET."""
        self._handle("GET")

    def do_POST(self) -> None:
        """Handle POST."""
        self._handle("POST")

    def do_PUT(self) -> None:
        """Handle PUT."""
        self._handle("PUT")

    def do_DELETE(self) -> None:
        """Handle DELETE."""
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        try:
            body = self._read_body()
            if body is None:
                return
            path, _, query = self.path.partition("?")
            if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
                self._admin(method, path[len(ADMIN_PREFIX):], body)
            else:
                self._api(method, path, query, body)
        except Rejection as rejection:
            self._send(rejection.status, rejection.body())
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception:
            log.exception("emulator failed on %s %s", method, self.path.partition("?")[0])
            self.close_connection = True
            self._send(500, error_body(500, "the emulator failed; see its log"))

    def _read_body(self) -> bytes | None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            message = "chunked bodies are not supported; send Content-Length"
            self._send(400, error_body(400, message))
            return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self._send(400, error_body(400, "Content-Length is not a non-negative integer"))
            return None
        return self.rfile.read(length) if length else b""

    def _api(self, method: str, path: str, query: str, body: bytes) -> None:
        route = match_route(method, path[len(API_PREFIX):]) if path.startswith(API_PREFIX) else None
        if route is None:
            raise Rejection(404, f"no such call: {method} {path}")
        app = self.server.app
        headers = {name.lower(): value for name, value in self.headers.items()}
        reason = verify(method, self.path, headers, app.keys, int(app.clock() * 1000))
        if reason is not None:
            raise Rejection(401, reason)
        action, args = route
        if action is None:
            self._upload(args[0], args[1], body)
            return
        try:
            document = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            raise Rejection(400, "the body is not valid JSON") from None
        arguments = {name: values[0] for name, values in parse_qs(query).items()}
        call = Call(args, arguments, document, headers["x-ncp-iam-access-key"])
        self._send(200, action(app, call))

    def _upload(self, service_id: str, dataset_id: str, body: bytes) -> None:
        app = self.server.app
        faults = app.faults
        delay = faults.delay()
        if delay > 0:
            time.sleep(delay)
        if faults.too_large(len(body)):
            raise Rejection(413, f"the body is {len(body)} bytes, over the emulator's limit of "
                            f"{faults.faults.max_body_bytes}")
        injected = faults.injected_status()
        if injected is not None:
            status, retry_after = injected
            extra = {"Retry-After": _retry_after(retry_after)} if retry_after is not None else {}
            self._send(status, error_body(status, "fault injected by the emulator"), extra)
            return
        target = app.model.upload_target(service_id, dataset_id)
        rows = parse_upload(target, body)
        app.model.store(target, rows)
        if faults.drop_now():
            # Stored but never answered: the client cannot know the upload landed.
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._send(200, True)

    def _admin(self, method: str, path: str, body: bytes) -> None:
        app = self.server.app
        if method == "GET" and path == "/datasets":
            self._send(200, app.model.summary())
        elif method == "GET" and path.startswith("/datasets/"):
            received = app.model.received(unquote(path[len("/datasets/"):]))
            self._send(200, {"datasetId": received.dataset_id, "uploads": received.uploads,
                             "rowsReceived": received.rows_received, "rows": received.rows,
                             "deliveries": received.deliveries,
                             "rowsLoaded": received.rows_loaded})
        elif method == "GET" and path == "/faults":
            self._send(200, app.faults.faults.to_json())
        elif method == "PUT" and path == "/faults":
            try:
                patch = orjson.loads(body)
            except orjson.JSONDecodeError:
                raise Rejection(400, "the body is not valid JSON") from None
            self._send(200, app.update_faults(patch).to_json())
        elif method == "POST" and path == "/reset-data":
            app.model.reset_data()
            self._send(200, True)
        else:
            raise Rejection(404, f"no such emulator call: {method} {ADMIN_PREFIX}{path}")

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = orjson.dumps(payload)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
