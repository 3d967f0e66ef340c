"""Map AiTEMS failures (HTTP error answers, connection errors) onto the exception tree, purely.

No I/O here: the client passes in the status, body, headers and the local clock, and gets back
the ApiError to raise, with an operator message naming the call and what to do. Messages never
hold headers, signatures, secrets or the request body.

requests and urllib3 are imported by the functions that look at their exceptions, which exist
only once the client has made a request: a run that sends nothing never imports them (see
``aitems_sync.aitems.client``).
"""

from __future__ import annotations

import email.utils
import math
from datetime import datetime
from typing import TYPE_CHECKING

import orjson

from aitems_sync.aitems.signing import MAX_CLOCK_SKEW_MS
from aitems_sync.errors import (
    ApiError,
    AuthError,
    BadRequestError,
    FatalApiError,
    NotFoundError,
    PayloadTooLargeError,
    RetriableApiError,
)

if TYPE_CHECKING:
    import requests

#: Statuses worth sending again later.
RETRIABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Statuses whose request may have been stored by AiTEMS although an error came back.
AMBIGUOUS_STATUSES = frozenset({502, 504})
#: Gateway error codes meaning "valid key, no permission" (401/210, 403/230).
PERMISSION_CODES = frozenset({"210", "230"})
BODY_EXCERPT = 500


def excerpt(text: str, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters (with an ellipsis when cut)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def parse_gateway_body(body: bytes) -> tuple[str | None, str]:
    """(errorCode, message) of a gateway/AiTEMS error body; (None, raw excerpt) if not JSON."""
    text = body.decode("utf-8", "replace")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, excerpt(text, 200)
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        error = data if isinstance(data, dict) else {}
    code = error.get("errorCode", error.get("code"))
    parts = [str(error[k]) for k in ("message", "details") if error.get(k) not in (None, "")]
    return (
        str(code) if code is not None else None,
        excerpt(": ".join(parts), 200) if parts else excerpt(text, 200),
    )


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        when = _parse_http_date(value)
        return None if when is None else max(0.0, when - now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _parse_http_date(value: str) -> float | None:
    """Epoch seconds of an HTTP-date, or None if it is not one."""
    try:
        parsed: datetime = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed.timestamp()


def clock_offset(date: str | None, now: float) -> float | None:
    """Seconds the local clock is ahead of the server's ``Date`` header (negative: behind)."""
    server = _parse_http_date(date) if date else None
    return None if server is None else now - server


def format_duration(seconds: float) -> str:
    """``7 min 12 s``, ``1 h 3 min 0 s``: a clock offset for people."""
    total = round(abs(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min {secs} s"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def clock_note(offset: float | None) -> str:
    """What the ``Date`` header says about clock skew, as a sentence for an AuthError."""
    if offset is None:
        return ""
    if abs(offset) * 1000 >= MAX_CLOCK_SKEW_MS:
        side = "ahead of" if offset > 0 else "behind"
        return (
            f" The local clock is {format_duration(offset)} {side} the server's Date header; "
            "fix NTP (the gateway rejects timestamps 5 minutes or more off)."
        )
    return (
        f" The local clock is {format_duration(offset)} off the server's Date header, "
        "under 5 minutes: not clock skew."
    )


def auth_error(
    method: str,
    path: str,
    status: int,
    code: str | None,
    detail: str,
    offset: float | None,
    body: str = "",
) -> AuthError:
    """The AuthError for a 401/403, naming the likely cause and the fix."""
    head = f"{method} {path} answered {status} ({detail})."
    if status == 403 or code in PERMISSION_CODES:
        cause = (
            " The access key was accepted but lacks permission for this service or dataset: "
            "grant the key's account the AiTEMS permissions (NCP Sub Account policies) or use "
            "a key that has them."
        )
    elif offset is not None and abs(offset) * 1000 >= MAX_CLOCK_SKEW_MS:
        cause = " Likely cause: clock skew."
    else:
        clock = " a local clock 5 minutes or more off," if offset is None else ""
        cause = (
            " Likely causes: a wrong access key or secret key (check aitems.access_key and "
            f"aitems.secret_key, e.g. NCP_ACCESS_KEY / NCP_SECRET_KEY),{clock} or a key "
            "without permission for this service or dataset."
        )
    return AuthError(
        head + cause + clock_note(offset),
        method=method,
        path=path,
        status=status,
        error_code=code,
        body=body,
    )


def _fatal_advice(status: int, body_size: int) -> tuple[type[ApiError], str]:
    """The error class for a non-retriable, non-auth status and what the operator should do."""
    if status == 400:
        return BadRequestError, (
            ": the request or its rows do not fit what AiTEMS expects; compare the dataset's "
            "schema (aitems-sync schema pull) with the spec's fields"
        )
    if status == 404:
        return NotFoundError, (
            ": check the service_id and dataset_id in the spec; the dataset must exist and be "
            "attached to the service"
        )
    if status == 413:
        return PayloadTooLargeError, (
            f": a body of {body_size} bytes is over the gateway's limit; lower "
            "aitems.batch.max_bytes or max_rows"
        )
    return FatalApiError, "; retrying will not help: check aitems.endpoint and the request"


def error_for_response(
    method: str,
    path: str,
    status: int,
    body: bytes,
    *,
    retry_after: str | None,
    date: str | None,
    now: float,
    body_size: int = 0,
) -> ApiError:
    """The ApiError for a non-2xx answer. ``now`` is the local clock, in epoch seconds."""
    code, message = parse_gateway_body(body)
    detail = f"errorCode {code}: {message}" if code else (message or "empty body")
    raw = excerpt(body.decode("utf-8", "replace"), BODY_EXCERPT)
    where = f"{method} {path} answered {status} ({detail})"
    if status in (401, 403):
        return auth_error(method, path, status, code, detail, clock_offset(date, now), raw)
    if status in RETRIABLE_STATUSES or status >= 500:
        return RetriableApiError(
            f"{where}; AiTEMS or its gateway is busy or failing, usually for a short while",
            retry_after=parse_retry_after(retry_after, now),
            method=method,
            path=path,
            status=status,
            error_code=code,
            body=raw,
        )
    cls, advice = _fatal_advice(status, body_size)
    return cls(where + advice, method=method, path=path, status=status, error_code=code, body=raw)


def request_was_sent(exc: requests.RequestException) -> bool:
    """Whether a failed request may have reached the server (False only for connect failures)."""
    import requests  # here: see the module docstring
    from urllib3.exceptions import ConnectTimeoutError, MaxRetryError

    if isinstance(exc, requests.ConnectTimeout):
        return False
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    # NewConnectionError and NameResolutionError subclass ConnectTimeoutError in urllib3 2.
    return not isinstance(reason, ConnectTimeoutError)


def may_have_landed(err: RetriableApiError) -> bool:
    """Whether the failed attempt behind ``err`` may have been stored by the server.

    The client raises connection errors ``from`` the requests exception, which tells whether
    the request left this machine.
    """
    if err.status is not None:
        return err.status in AMBIGUOUS_STATUSES
    import requests

    cause = err.__cause__
    return not isinstance(cause, requests.RequestException) or request_was_sent(cause)


def describe_exception(exc: BaseException) -> str:
    """A short, operator-readable reason for a failed connection, without the urllib3 noise."""
    import requests
    from urllib3.exceptions import MaxRetryError, ProtocolError

    if isinstance(exc, requests.ConnectTimeout):
        return "the connection timed out"
    if isinstance(exc, requests.ReadTimeout):
        return "no answer within the read timeout"
    reason: object = exc.args[0] if exc.args else exc
    if isinstance(reason, MaxRetryError) and reason.reason is not None:
        reason = reason.reason
    # ProtocolError('Connection aborted.', RemoteDisconnected(...)): the inner error says it.
    if isinstance(reason, ProtocolError) and isinstance(reason.args[-1], BaseException):
        reason = reason.args[-1]
    text = str(reason)
    # urllib3 prefixes "<HTTPConnection object at 0x...>: "; the rest is the useful part.
    if "object at 0x" in text and ">: " in text:
        text = text.split(">: ", 1)[1]
    return f"{type(reason).__name__}: {excerpt(text, 200)}"
