"""NCP API gateway signature v2: pure functions shared by the client and the emulator.

The string to sign is ``METHOD URI``, the timestamp in milliseconds and the access key, joined by
``\\n`` with no trailing newline. URI is the full path including ``/api/v1`` and the query string
exactly as sent. HMAC-SHA256 keyed with the secret key, then standard Base64 with padding.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

HEADER_TIMESTAMP = "x-ncp-apigw-timestamp"
HEADER_ACCESS_KEY = "x-ncp-iam-access-key"
HEADER_SIGNATURE = "x-ncp-apigw-signature-v2"

#: The gateway rejects a request whose timestamp is this far or farther from its clock.
MAX_CLOCK_SKEW_MS = 5 * 60 * 1000


def string_to_sign(method: str, uri: str, timestamp_ms: int, access_key: str) -> str:
    """The exact text that signature v2 covers (method upper-cased, URI with its query)."""
    return f"{method.upper()} {uri}\n{timestamp_ms}\n{access_key}"


def sign(method: str, uri: str, timestamp_ms: int, access_key: str, secret_key: str) -> str:
    """Signature v2 of one request, as the ``x-ncp-apigw-signature-v2`` header carries it."""
    message = string_to_sign(method, uri, timestamp_ms, access_key).encode("utf-8")
    digest = hmac.new(secret_key.encode("utf-8"), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def signed_headers(
    method: str, uri: str, timestamp_ms: int, access_key: str, secret_key: str
) -> dict[str, str]:
    """The four headers every AiTEMS request carries."""
    return {
        HEADER_TIMESTAMP: str(timestamp_ms),
        HEADER_ACCESS_KEY: access_key,
        HEADER_SIGNATURE: sign(method, uri, timestamp_ms, access_key, secret_key),
        "Content-Type": "application/json",
    }


def verify(
    method: str,
    uri: str,
    headers: dict[str, str],
    secret_for: dict[str, str],
    now_ms: int,
) -> str | None:
    """Check a request's signature and clock skew. Returns None if valid, else the reason.

    ``headers`` must have lower-case names; ``secret_for`` maps access keys to secret keys.
    """
    access_key = headers.get(HEADER_ACCESS_KEY)
    timestamp = headers.get(HEADER_TIMESTAMP)
    signature = headers.get(HEADER_SIGNATURE)
    if not access_key or not timestamp or not signature:
        return "missing authentication headers"
    secret = secret_for.get(access_key)
    if secret is None:
        return "unknown access key"
    try:
        timestamp_ms = int(timestamp)
    except ValueError:
        return "timestamp is not an integer"
    if abs(now_ms - timestamp_ms) >= MAX_CLOCK_SKEW_MS:
        return "timestamp is 5 minutes or more away from the server clock"
    expected = sign(method, uri, timestamp_ms, access_key, secret)
    if not hmac.compare_digest(expected, signature):
        return "signature does not match"
    return None
