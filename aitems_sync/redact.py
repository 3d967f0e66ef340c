"""Credentials never leave the process: one masking function for every message, log line,
report and stored summary.

The spec's secrets are registered as it is loaded (:func:`register`): the AiTEMS access and
secret keys, every URL's password (in its user info, or in a query parameter named like a
password, secret or token), and the contents of ``${file:}`` references. :func:`redact` replaces
each of them, wherever it appears, with ``***``; the CLI passes everything it writes through it,
an error's message is redacted when it is made, and the state store redacts the run summaries it
keeps. :func:`url_for_display` hides a URL's secrets before it is shown at all.

Values shorter than :data:`MIN_SECRET` characters are not masked in free text (they would mask
ordinary words); URLs still hide them.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, quote_plus, urlencode, urlsplit

MASK = "***"
#: Shorter registered values are left alone in free text.
MIN_SECRET = 4
#: Query parameters whose values are secrets: ``password``, ``passwd``, ``sslpassword``, and any
#: name containing ``password``, ``secret`` or ``token``.
_SECRET_PARAM = re.compile(r"passw(or)?d|secret|token", re.IGNORECASE)

_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()
_pattern: re.Pattern[str] | None = None


def register(values: Iterable[str | None]) -> None:
    """Mask these values (and their URL-encoded forms) from now on."""
    global _secrets, _pattern
    found = {v for v in values if v and len(v) >= MIN_SECRET}
    forms = found | {quote(v, safe="") for v in found} | {quote_plus(v) for v in found}
    with _lock:
        if forms <= _secrets:
            return
        _secrets = _secrets | forms
        ordered = sorted(_secrets, key=len, reverse=True)  # a longer secret before its parts
        _pattern = re.compile("|".join(map(re.escape, ordered)))


def register_url(url: str | None) -> None:
    """Mask the secrets a URL holds: its password and its secret query parameters."""
    register(url_secrets(url))


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    pattern = _pattern
    return text if pattern is None else pattern.sub(MASK, text)


def url_secrets(url: str | None) -> list[str]:
    """The secrets in a URL: the password of its user info, and the values of its query
    parameters named like a password, secret or token."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return []
    found = [password] if password else []
    found += [value for name, value in parse_qsl(parts.query, keep_blank_values=True)
              if _SECRET_PARAM.search(name) and value]
    return found


def url_for_display(url: str) -> str:
    """The URL with its password and secret query parameters replaced by ``***`` (the rest as
    written: ``sqlite:////abs/path`` keeps its slashes)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "(a URL that cannot be shown)"
    shown = url
    if password is not None:
        user_info = parts.netloc.rpartition("@")[0]
        name = user_info.partition(":")[0]
        start = url.index(parts.netloc)
        shown = url[:start] + f"{name}:{MASK}@" + url[start + len(user_info) + 1:]
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if any(_SECRET_PARAM.search(name) for name, _ in pairs):
        query = urlencode([(name, MASK if _SECRET_PARAM.search(name) else value)
                           for name, value in pairs], safe="*/:")
        head, _, rest = shown.partition("?")
        fragment = rest.partition("#")[2]
        shown = f"{head}?{query}" + (f"#{fragment}" if fragment else "")
    return redact(shown)
