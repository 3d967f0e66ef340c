"""One signed read with the standard library: the check a run makes before it reads a row.

A run with nothing to send makes no other request, and importing requests (urllib3, idna,
charset_normalizer, ...) would be most of its start-up (tests/test_startup.py); ``http.client``
costs a fraction of that. The read is ``GET /services/{serviceId}``: it proves the endpoint, the
keys (a 401 or 403 maps to the same AuthError as everywhere) and the service. Failures are
retried as the client retries them (:func:`aitems_sync.aitems.client.backoff_wait`), except an
endpoint that has never answered and refuses the connection: a few quick tries, then one clear
failure. With a proxy configured in the environment (``HTTPS_PROXY`` and the like), which
``http.client`` does not follow, or user info in the endpoint URL, the read goes through the
requests client instead.
"""

from __future__ import annotations

import http.client
import os
import random
import socket
import ssl
import time
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from aitems_sync.aitems import signing
from aitems_sync.aitems.client import (
    UNREACHED_ATTEMPTS,
    UNREACHED_WAIT,
    USER_AGENT,
    AitemsClient,
    backoff_wait,
)
from aitems_sync.aitems.errormap import error_for_response
from aitems_sync.errors import FatalApiError, RetriableApiError, RetriesExhaustedError
from aitems_sync.spec.model import AitemsConfig

_PROXY_VARIABLES = ("https_proxy", "http_proxy", "all_proxy")


def read_service(config: AitemsConfig, client: AitemsClient | None = None) -> dict[str, Any]:
    """The service object, read once with the spec's keys (ApiError as the client raises)."""
    parts = urlsplit(config.endpoint)
    proxied = any(os.environ.get(v) or os.environ.get(v.upper()) for v in _PROXY_VARIABLES)
    if client is not None and (proxied or parts.username is not None):
        return client.get_service(config.service_id)
    path = f"{parts.path.rstrip('/')}/services/{quote(config.service_id, safe='')}"
    shown = path
    attempt, reached = 0, False
    while True:
        attempt += 1
        try:
            status, headers, body = _get(config, parts.scheme, parts.netloc, path)
        except OSError as error:
            if not reached and attempt >= UNREACHED_ATTEMPTS:
                raise FatalApiError(
                    f"AiTEMS cannot be reached at {config.endpoint}: GET {shown} could not "
                    f"connect ({type(error).__name__}: {error}); {attempt} tries. Check "
                    "aitems.endpoint, DNS and the network path (proxy, firewall)",
                    method="GET", path=shown) from None
            failure: Exception = error
        else:
            reached = True
            if 200 <= status < 300:
                answer = orjson.loads(body) if body.strip() else {}
                return answer if isinstance(answer, dict) else {}
            mapped = error_for_response("GET", shown, status, body,
                                        retry_after=headers.get("retry-after"),
                                        date=headers.get("date"), now=time.time())
            if not isinstance(mapped, RetriableApiError):
                raise mapped
            failure = mapped
        if reached and attempt >= max(1, config.retry.attempts):
            raise RetriesExhaustedError(f"GET {shown} failed {attempt} times; last: {failure}",
                                        method="GET", path=shown)
        retry_after = getattr(failure, "retry_after", None)
        wait = backoff_wait(config.retry, attempt, retry_after, random.random())
        time.sleep(wait if reached else min(wait, UNREACHED_WAIT))


def _get(config: AitemsConfig, scheme: str, netloc: str, path: str
         ) -> tuple[int, dict[str, str], bytes]:
    timestamp_ms = int(time.time() * 1000)
    headers = signing.signed_headers("GET", path, timestamp_ms, config.access_key,
                                     config.secret_key)
    headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
    connection: http.client.HTTPConnection
    if scheme == "https":
        connection = http.client.HTTPSConnection(netloc, timeout=config.connect_timeout,
                                                 context=_tls())
    else:
        connection = http.client.HTTPConnection(netloc, timeout=config.connect_timeout)
    try:
        connection.connect()
        if connection.sock is not None:
            connection.sock.settimeout(config.timeout)
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, \
            response.read()
    finally:
        connection.close()


def _tls() -> ssl.SSLContext:
    """Certificates as requests finds them: REQUESTS_CA_BUNDLE, SSL_CERT_FILE, else certifi's."""
    cafile = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE")
    if not cafile:
        try:
            import certifi

            cafile = certifi.where()
        except ImportError:
            cafile = None
    return ssl.create_default_context(cafile=cafile)
