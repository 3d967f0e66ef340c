"""The AiTEMS HTTP client: signed requests, bounded retries with jitter, and error mapping.

Every request is signed with signature v2 over the exact path and query that go on the wire, has
an explicit (connect, read) timeout, and is retried only when the failure is retriable::

    requests exception / HTTP status          raised as                     retried  ambiguous
    connect error, connect timeout, refused   RetriableApiError             yes      no
    read timeout, connection closed/reset     RetriableApiError             yes      yes
    429, 500, 503 (and other 5xx)             RetriableApiError             yes      no
    502, 504                                  RetriableApiError             yes      yes
    400                                       BadRequestError               no
    401, 403                                  AuthError                     no
    404                                       NotFoundError                 no
    413                                       PayloadTooLargeError          no
    other 4xx, 1xx, 3xx                       FatalApiError                 no
    retries used up                           RetriesExhaustedError         -

"Ambiguous" means the server may have stored the request although no success came back, so a
batch that later succeeds (or is sent again by a later run) may be delivered twice.

requests is imported when the client makes its first request, not when it is built: every run
builds a client, a run with nothing to send makes no request, and importing requests (urllib3,
charset_normalizer, idna, http.cookiejar, ...) is a noticeable part of start-up.
"""

from __future__ import annotations

import logging
import random as _random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

import orjson

from aitems_sync.aitems import signing
from aitems_sync.aitems.errormap import (
    describe_exception,
    error_for_response,
    excerpt,
    may_have_landed,
    request_was_sent,
)
from aitems_sync.errors import (
    ApiError,
    FatalApiError,
    RetriableApiError,
    RetriesExhaustedError,
)
from aitems_sync.spec.model import AitemsConfig, RetryPolicy

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

USER_AGENT = "aitems-sync/0.1"
#: Page size for list calls (the API's default and maximum page).
PAGE_LIMIT = 1000
#: Tries, and the longest wait between them, for an endpoint that has never answered and
#: refuses the connection or does not resolve (``AitemsClient._call``).
UNREACHED_ATTEMPTS = 3
UNREACHED_WAIT = 0.5
DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True)
class UploadResult:
    """How an upload went: the HTTP attempts it took and whether a failed one may have landed."""

    attempts: int  # 1 = the first try succeeded
    ambiguous: bool  # an earlier failed attempt may have been stored: possibly delivered twice


def backoff_wait(
    policy: RetryPolicy, attempt: int, retry_after: float | None, draw: float
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): full jitter.

    ``draw`` is a random number in [0, 1). A server's ``Retry-After`` is honoured even above
    ``max_backoff``: the server knows when it will take requests again; ``max_elapsed`` still
    bounds the total.
    """
    ceiling = min(policy.max_backoff, policy.backoff * 2.0 ** (attempt - 1))
    wait = draw * ceiling
    return max(retry_after, wait) if retry_after is not None else wait


def _new_session(pool_size: int) -> requests.Session:
    import requests  # here: see the module docstring
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    # Retries are ours (with backoff and ambiguity tracking), so urllib3 makes none.
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _segment(value: str) -> str:
    """One path segment (an ID or a name), percent-encoded so it cannot change the path."""
    return quote(value, safe="")


def _dataset_body(
    dataset_type: str, name: str, schema_name: str, bucket: str, key: str, region: str,
    description: str,
) -> dict[str, Any]:
    return {"type": dataset_type, "name": name, "description": description,
            "schemaName": schema_name, "osInfo": {"region": region, "bucket": bucket, "key": key}}


def _expect_object(value: Any, method: str, path: str) -> dict[str, Any]:
    """The parsed answer as a JSON object, or a FatalApiError naming the call."""
    if not isinstance(value, dict):
        raise FatalApiError(
            f"{method} {path} answered with a {type(value).__name__}, not a JSON object; "
            "check that aitems.endpoint points at the AiTEMS API",
            method=method,
            path=path,
        )
    return value


class AitemsClient:
    """A thread-safe client for the AiTEMS API that signs, retries and maps errors.

    Concurrent uploads from several threads share one Session and its connection pool of
    ``pool_size``, created by the first request. A Session passed in is used as is (mount your
    own adapter on it) and is not closed by ``close``.
    """

    def __init__(
        self,
        *,
        endpoint: str,
        access_key: str,
        secret_key: str,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        pool_size: int = 8,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        random: Callable[[], float] = _random.random,
    ) -> None:
        endpoint = endpoint.rstrip("/")
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
            raise FatalApiError(
                f"aitems.endpoint {endpoint!r} is not an http(s) URL without a query; "
                "use e.g. https://aitems.apigw.ntruss.com/api/v1"
            )
        self.endpoint = endpoint
        self._base_path = parts.path  # e.g. "/api/v1": part of every signed URI
        self._access_key = access_key
        self._secret_key = secret_key
        self.timeout = (connect_timeout, read_timeout)
        self.retry = retry
        self._sleep = sleep
        self._clock = clock
        self._random = random
        self._pool_size = pool_size
        self._reached = False  # whether the endpoint has answered this client yet
        self._owns_session = session is None
        self._session_lock = threading.Lock()
        self._made: requests.Session | None = None
        self._send_settings: Mapping[str, Any] = {}
        if session is not None:
            self._use(session)

    def _use(self, session: requests.Session) -> requests.Session:
        # Proxies and CA bundle from the environment, resolved once for the one host we call.
        self._send_settings = session.merge_environment_settings(
            self.endpoint, {}, None, None, None
        )
        self._made = session  # last: another thread that sees the session sees its settings
        return session

    @property
    def _session(self) -> requests.Session:
        """The Session, created on first use (see the module docstring for why)."""
        session = self._made
        if session is None:
            with self._session_lock:  # upload threads may make the first request together
                session = self._made
                if session is None:
                    session = self._use(_new_session(self._pool_size))
        return session

    def __repr__(self) -> str:
        return f"AitemsClient(endpoint={self.endpoint!r}, access_key={self._access_key!r})"

    @classmethod
    def from_config(cls, config: AitemsConfig, **overrides: Any) -> AitemsClient:
        """A client for the spec's ``aitems:`` section; ``overrides`` replace any argument."""
        arguments: dict[str, Any] = {
            "endpoint": config.endpoint,
            "access_key": config.access_key,
            "secret_key": config.secret_key,
            "connect_timeout": config.connect_timeout,
            "read_timeout": config.timeout,
            "retry": config.retry,
            "pool_size": max(8, config.batch.in_flight * 2),
        }
        arguments.update(overrides)
        return cls(**arguments)

    def close(self) -> None:
        """Close the connection pool (only when this client created the Session)."""
        if self._owns_session and self._made is not None:
            self._made.close()

    def __enter__(self) -> AitemsClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- uploads -------------------------------------------------------------------------------

    def upload(
        self,
        service_id: str,
        dataset_id: str,
        dataset_type: str,
        rows: Sequence[Mapping[str, Any]],
    ) -> UploadResult:
        """Upload cycle training data: POST the rows (dicts in schema order) to the dataset."""
        # orjson encodes dicts only; other Mappings are copied (keys keep their order).
        value = [row if isinstance(row, dict) else dict(row) for row in rows]
        body = orjson.dumps({"type": dataset_type, "value": value})
        return self._upload_body(service_id, dataset_id, body)

    def upload_encoded(
        self, service_id: str, dataset_id: str, dataset_type: str, rows: Sequence[bytes]
    ) -> UploadResult:
        """Like ``upload`` for rows already encoded as JSON objects; no re-encoding."""
        body = b"".join(
            (b'{"type":', orjson.dumps(dataset_type), b',"value":[', b",".join(rows), b"]}")
        )
        return self._upload_body(service_id, dataset_id, body)

    def _upload_body(self, service_id: str, dataset_id: str, body: bytes) -> UploadResult:
        path = f"/services/{_segment(service_id)}/datasets/{_segment(dataset_id)}"
        _, attempts, ambiguous = self._call("POST", path, None, body)
        return UploadResult(attempts=attempts, ambiguous=ambiguous)

    # -- reads ---------------------------------------------------------------------------------

    def get_dataset(self, dataset_id: str) -> dict[str, Any]:
        """The dataset object (``datasetId``, ``type``, ``schemaName``, ...)."""
        path = f"/datasets/{_segment(dataset_id)}"
        return _expect_object(self.request("GET", path), "GET", self._base_path + path)

    def list_datasets(self) -> list[dict[str, Any]]:
        """Every dataset of the account, following ``offset``/``limit`` pages."""
        return self._list_all("/datasets", "datasets")

    def list_services(self) -> list[dict[str, Any]]:
        """Every service of the account, following ``offset``/``limit`` pages."""
        return self._list_all("/services", "services")

    def list_schemas(self, dataset_type: str) -> list[dict[str, Any]]:
        """Every schema of a dataset type, following ``offset``/``limit`` pages."""
        return self._list_all("/schemas", "schemas", {"datasetType": dataset_type})

    def _list_all(self, path: str, what: str,
                  params: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        offset = 0
        while True:
            query = {**(params or {}), "offset": str(offset), "limit": str(PAGE_LIMIT)}
            answer = self.request("GET", path, params=query)
            page = answer.get(what, []) if isinstance(answer, dict) else answer
            if not isinstance(page, list):
                raise FatalApiError(
                    f"GET {self._base_path}{path} answered without a list of {what}; "
                    "check that aitems.endpoint points at the AiTEMS API",
                    method="GET",
                    path=self._base_path + path,
                )
            found.extend(page)
            if len(page) < PAGE_LIMIT:
                return found
            offset += len(page)

    def get_schema(self, schema_name: str) -> dict[str, Any]:
        """The schema object (``datasetType``, ``name``, ``fields``, ...)."""
        path = f"/schemas/{_segment(schema_name)}"
        return _expect_object(self.request("GET", path), "GET", self._base_path + path)

    def get_service(self, service_id: str) -> dict[str, Any]:
        """The service object (``serviceId``, ``type``, ``datasets``, ...)."""
        path = f"/services/{_segment(service_id)}"
        return _expect_object(self.request("GET", path), "GET", self._base_path + path)

    # -- provisioning and the dataset lifecycle -------------------------------------------------

    def create_schema(
        self, name: str, dataset_type: str, fields: Sequence[Mapping[str, Any]],
        description: str = "",
    ) -> dict[str, Any]:
        """``POST /schemas``: a schema of ``fields`` (``{name, type: [...], categorical?}``)."""
        body = {"datasetType": dataset_type, "name": name, "fields": [dict(f) for f in fields],
                "description": description}
        return self._send_json("POST", "/schemas", body, creates=True)

    def create_dataset(
        self, *, dataset_type: str, name: str, schema_name: str, bucket: str, key: str,
        region: str = "KR", description: str = "",
    ) -> dict[str, Any]:
        """``POST /datasets``: a dataset read from the CSV (or CSV.gz) at ``bucket``/``key`` in
        Object Storage. It answers at once; poll `get_dataset` until its status settles."""
        body = _dataset_body(dataset_type, name, schema_name, bucket, key, region, description)
        return self._send_json("POST", "/datasets", body, creates=True)

    def modify_dataset(
        self, dataset_id: str, *, dataset_type: str, name: str, schema_name: str, bucket: str,
        key: str, region: str = "KR", description: str = "",
    ) -> dict[str, Any]:
        """``POST /datasets/{datasetId}``: the fields as for create; the file is read again."""
        body = _dataset_body(dataset_type, name, schema_name, bucket, key, region, description)
        return self._send_json("POST", f"/datasets/{_segment(dataset_id)}", body)

    def create_service(
        self, name: str, service_type: str = "batch", description: str = ""
    ) -> dict[str, Any]:
        """``POST /services``: a ``batch`` or ``interval`` service, without datasets yet."""
        body = {"name": name, "type": service_type, "description": description}
        return self._send_json("POST", "/services", body, creates=True)

    def attach_datasets(self, service_id: str, dataset_ids: Sequence[str]) -> dict[str, Any]:
        """``POST /services/{serviceId}/datasets``: one user, one item and one interaction
        dataset (refused while the service's schedule runs)."""
        path = f"/services/{_segment(service_id)}/datasets"
        return self._send_json("POST", path, {"datasetIds": list(dataset_ids)})

    def set_interval(self, service_id: str, term: str) -> dict[str, Any]:
        """``PUT /services/{serviceId}/interval``: ``hour1``, ``hour3``, ``hour6`` or ``hour12``
        (interval services only)."""
        path = f"/services/{_segment(service_id)}/interval"
        return self._send_json("PUT", path, {"term": term})

    def set_schedule(self, service_id: str, action: str) -> dict[str, Any]:
        """``PUT /services/{serviceId}/schedule?action=start|stop`` (interval services only)."""
        path = f"/services/{_segment(service_id)}/schedule"
        answer = self.request("PUT", path, params={"action": action})
        return _expect_object(answer, "PUT", self._base_path + path)

    def list_trains(
        self, service_id: str, *, recent: bool = False, offset: int = 0, limit: int = PAGE_LIMIT
    ) -> list[dict[str, Any]]:
        """``GET /services/{serviceId}/trains``: one page of trains (``recent``: the newest)."""
        path = f"/services/{_segment(service_id)}/trains"
        params = {"isRecent": "true" if recent else "false", "offset": str(offset),
                  "limit": str(limit)}
        answer = _expect_object(self.request("GET", path, params=params), "GET",
                                self._base_path + path)
        trains = answer.get("trains")
        if not isinstance(trains, list):
            raise FatalApiError(f"GET {self._base_path}{path} answered without a list of trains",
                                method="GET", path=self._base_path + path)
        return trains

    def _send_json(self, method: str, path: str, body: Mapping[str, Any], *,
                   creates: bool = False) -> dict[str, Any]:
        answer = self.request(method, path, body=orjson.dumps(body), creates=creates)
        return _expect_object(answer, method, self._base_path + path)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        creates: bool = False,
    ) -> Any:
        """One API call with retries; ``path`` is relative to the endpoint (``/services/x``).

        ``creates``: the call creates something AiTEMS names (a schema, dataset, service), so a
        failure after which it may exist is not retried (a retry would make a second one): it
        raises, saying so, and the caller finds what was made by name when run again.
        Returns the parsed JSON answer, or None for an empty body.
        """
        response, _, _ = self._call(method.upper(), path, params, body, creates=creates)
        if not response.content.strip():
            return None
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            shown = self._base_path + path
            raise FatalApiError(
                f"{method.upper()} {shown} answered {response.status_code} with a body that is "
                "not JSON; check that aitems.endpoint points at the AiTEMS API",
                method=method.upper(),
                path=shown,
                status=response.status_code,
                body=excerpt(response.content.decode("utf-8", "replace"), 500),
            ) from None

    # -- the retry loop ------------------------------------------------------------------------

    def _call(
        self, method: str, path: str, params: Mapping[str, str] | None, body: bytes | None,
        *, creates: bool = False,
    ) -> tuple[requests.Response, int, bool]:
        """Send until success or a non-retriable error: (response, attempts, ambiguous).

        An endpoint that has never answered this client and refuses the connection (or whose
        name does not resolve) gets UNREACHED_ATTEMPTS quick tries, not the configured retries:
        a wrong endpoint or a network without a path to AiTEMS fails in seconds, with one
        message. Once it has answered, every failure gets the configured retries."""
        url = self.endpoint + path + (f"?{urlencode(list(params.items()))}" if params else "")
        shown = self._base_path + path  # what messages and logs name: never the query or headers
        started = self._clock()
        limit = max(1, self.retry.attempts)
        ambiguous = False
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._attempt(method, url, shown, body)
                self._reached = True
                return response, attempt, ambiguous
            except RetriableApiError as err:
                landed = may_have_landed(err)
                ambiguous = ambiguous or landed
                if err.status is not None:
                    self._reached = True
                if creates and landed:
                    raise FatalApiError(
                        f"{err.message}. It may have been created all the same: run again, "
                        "and what was made is found by its name (it is not created twice)",
                        method=method, path=shown, status=err.status, ambiguous=True) from err
                unreached = not self._reached and not landed
                wait = backoff_wait(self.retry, attempt, err.retry_after, self._random())
                elapsed = self._clock() - started
                if unreached and attempt >= UNREACHED_ATTEMPTS:
                    raise self._unreachable(err, attempt, elapsed) from err
                if attempt >= limit or elapsed + wait > self.retry.max_elapsed:
                    raise self._exhausted(err, attempt, elapsed, wait, ambiguous) from err
                if unreached:
                    wait = min(wait, UNREACHED_WAIT)
                    log.debug("%s (attempt %d of %d); trying again in %.2f s", err.message,
                              attempt, UNREACHED_ATTEMPTS, wait)
                else:
                    self._log_retry(err, attempt, limit, wait)
                self._sleep(wait)
            except ApiError as err:  # final: a 4xx; an earlier attempt may still have landed
                err.ambiguous = err.ambiguous or ambiguous
                raise

    def _attempt(self, method: str, url: str, shown: str, body: bytes | None) -> requests.Response:
        """One signed HTTP attempt; raises the mapped ApiError for anything but a 2xx."""
        session = self._session
        import requests  # here: see the module docstring (imported by now: a dict lookup)

        prepared = requests.Request(method, url, data=body).prepare()
        # Sign exactly what goes on the request line: the prepared path and query.
        uri = prepared.path_url
        timestamp_ms = int(self._clock() * 1000)
        prepared.headers.update(
            signing.signed_headers(method, uri, timestamp_ms, self._access_key, self._secret_key)
        )
        prepared.headers["User-Agent"] = USER_AGENT
        prepared.headers["Accept"] = "application/json"
        if body is not None:  # every body this client sends is JSON
            prepared.headers["Content-Type"] = "application/json"
        began = time.monotonic()
        try:
            response = session.send(
                prepared, timeout=self.timeout, allow_redirects=False, **self._send_settings
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise self._connection_error(exc, method, shown) from exc
        except requests.RequestException as exc:
            raise FatalApiError(
                f"{method} {shown} could not be sent ({describe_exception(exc)}); "
                "check aitems.endpoint",
                method=method,
                path=shown,
            ) from exc
        log.debug(
            "%s %s answered %d in %.3f s",
            method,
            shown,
            response.status_code,
            time.monotonic() - began,
            extra={"event": "http", "status": response.status_code},
        )
        if 200 <= response.status_code < 300:
            return response
        raise error_for_response(
            method,
            shown,
            response.status_code,
            response.content,
            retry_after=response.headers.get("Retry-After"),
            date=response.headers.get("Date"),
            now=self._clock(),
            body_size=len(body) if body is not None else 0,
        )

    def _connection_error(
        self, exc: requests.RequestException, method: str, shown: str
    ) -> RetriableApiError:
        """The RetriableApiError for a request that got no HTTP answer."""
        import requests

        connect, read = self.timeout
        reason = describe_exception(exc)
        if isinstance(exc, requests.ReadTimeout):
            reason += f" of {read:g} s"
        elif isinstance(exc, requests.ConnectTimeout):
            reason += f" after {connect:g} s"
        if request_was_sent(exc):
            what = f"got no answer ({reason}); AiTEMS may have received the request"
        else:
            what = f"could not connect ({reason}); the request was not sent"
        return RetriableApiError(
            f"{method} {shown} {what}; check the network path to {self.endpoint} "
            "(proxy, firewall, DNS) if this persists",
            method=method,
            path=shown,
        )

    def _unreachable(self, err: RetriableApiError, attempts: int, elapsed: float
                     ) -> FatalApiError:
        """AiTEMS could not be reached at all (nothing ever answered): one clear failure."""
        last = err.message.removeprefix(f"{err.method} {err.path} ")
        return FatalApiError(
            f"AiTEMS cannot be reached at {self.endpoint}: {err.method} {err.path} {last} "
            f"({attempts} tries over {elapsed:.1f} s; nothing has answered). Check "
            "aitems.endpoint, DNS and the network path (proxy, firewall)",
            method=err.method, path=err.path)

    def _exhausted(
        self,
        err: RetriableApiError,
        attempts: int,
        elapsed: float,
        wait: float,
        ambiguous: bool,
    ) -> RetriesExhaustedError:
        """The error raised when retries run out, carrying the last failure's details."""
        if attempts >= max(1, self.retry.attempts):
            why = f"retry.attempts is {self.retry.attempts}"
        else:
            why = (
                f"the next wait of {wait:.1f} s would pass "
                f"retry.max_elapsed of {self.retry.max_elapsed:g} s"
            )
        landed = (
            " An earlier attempt may have been stored by AiTEMS, so this request may be "
            "delivered twice when it is sent again."
            if ambiguous
            else ""
        )
        last = err.message.removeprefix(f"{err.method} {err.path} ")
        message = (
            f"{err.method} {err.path} failed {attempts} time{'s' if attempts != 1 else ''} "
            f"over {elapsed:.1f} s ({why}). Last error: {last}. "
            "Check the AiTEMS status (NCP console, service notices) and run again, "
            "or raise aitems.retry.attempts / max_backoff to wait longer." + landed
        )
        exhausted = RetriesExhaustedError(
            message,
            method=err.method,
            path=err.path,
            status=err.status,
            error_code=err.error_code,
            body=err.body,
            ambiguous=ambiguous,
        )
        return exhausted

    def _log_retry(self, err: RetriableApiError, attempt: int, limit: int, wait: float) -> None:
        """One INFO line per retry: what failed, which attempt, how long we wait."""
        if err.status is not None:
            status: int | str = err.status
            what = f"answered {err.status}" + (
                f" (errorCode {err.error_code})" if err.error_code else ""
            )
        else:
            cause = err.__cause__
            status = type(cause).__name__ if cause is not None else type(err).__name__
            what = f"failed ({describe_exception(cause) if cause is not None else 'no answer'})"
        log.info(
            "%s %s %s (attempt %d of %d); retrying in %.2f s",
            err.method,
            err.path,
            what,
            attempt,
            limit,
            wait,
            extra={"event": "retry", "status": status, "wait": round(wait, 3)},
        )
