"""The AiTEMS client: error mapping and backoff (pure), then real HTTP against the emulator."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from typing import Any

import orjson
import pytest
import requests
from requests.adapters import HTTPAdapter

from aitems_sync.aitems import signing
from aitems_sync.aitems.client import AitemsClient, UploadResult, backoff_wait
from aitems_sync.aitems.errormap import (
    clock_offset,
    error_for_response,
    format_duration,
    parse_gateway_body,
    parse_retry_after,
)
from aitems_sync.emulator.server import EmulatorServer, Faults, load_seed
from aitems_sync.errors import (
    ApiError,
    AuthError,
    BadRequestError,
    FatalApiError,
    NotFoundError,
    PayloadTooLargeError,
    RetriableApiError,
    RetriesExhaustedError,
)
from aitems_sync.spec.model import AitemsConfig, BatchPolicy, RetryPolicy
from tests.conftest import DEMO_ACCESS_KEY, DEMO_SECRET_KEY, DEMO_SEED

SERVICE = "svcdemo0001"
USERS = "dsusers0001"
NOW = 1_700_000_000.0
USER_ROWS: list[dict[str, Any]] = [
    {"USER_ID": "u1", "AGE": 20, "GENDER": "F"},
    {"USER_ID": "u2", "AGE": None, "GENDER": None},
]


# -- pure: backoff, Retry-After, clock, error mapping -----------------------------------------


@pytest.mark.parametrize(
    ("attempt", "retry_after", "draw", "expected"),
    [
        (1, None, 0.5, 0.25),  # 0.5 * min(60, 0.5)
        (3, None, 1.0, 2.0),  # min(60, 0.5 * 4)
        (10, None, 1.0, 60.0),  # capped at max_backoff
        (10, None, 0.0, 0.0),  # full jitter reaches zero
        (1, 2.0, 0.5, 2.0),  # Retry-After wins over a shorter jitter
        (10, 120.0, 1.0, 120.0),  # Retry-After is honoured above max_backoff
        (10, 1.0, 1.0, 60.0),  # a longer backoff wins over a short Retry-After
    ],
)
def test_backoff_wait_is_full_jitter_honouring_retry_after(
    attempt: int, retry_after: float | None, draw: float, expected: float
) -> None:
    policy = RetryPolicy(attempts=8, backoff=0.5, max_backoff=60.0)
    assert backoff_wait(policy, attempt, retry_after, draw) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("2", 2.0),
        (" 120 ", 120.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        (formatdate(NOW + 30, usegmt=True), 30.0),
        (formatdate(NOW - 30, usegmt=True), 0.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
    ],
)
def test_parse_retry_after_reads_seconds_or_http_date(
    header: str | None, expected: float | None
) -> None:
    assert parse_retry_after(header, NOW) == expected


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(432, "7 min 12 s"), (-432, "7 min 12 s"), (5, "5 s"), (3780, "1 h 3 min 0 s")],
)
def test_format_duration_reads_like_a_person_wrote_it(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_clock_offset_is_positive_when_the_local_clock_is_ahead() -> None:
    assert clock_offset(formatdate(NOW - 432, usegmt=True), NOW) == pytest.approx(432)
    assert clock_offset("not a date", NOW) is None


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (b'{"error": {"errorCode": "200", "message": "Authentication Failed"}}', "200", "Auth"),
        (b'{"errorCode": 900, "message": "Unexpected Error"}', "900", "Unexpected Error"),
        (b"<html>Bad Gateway</html>", None, "<html>Bad Gateway</html>"),
        (b"", None, ""),
    ],
)
def test_parse_gateway_body_reads_code_and_message(
    body: bytes, code: str | None, message: str
) -> None:
    got_code, got_message = parse_gateway_body(body)
    assert got_code == code
    assert got_message.startswith(message)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, BadRequestError),
        (401, AuthError),
        (403, AuthError),
        (404, NotFoundError),
        (409, FatalApiError),
        (413, PayloadTooLargeError),
        (429, RetriableApiError),
        (500, RetriableApiError),
        (502, RetriableApiError),
        (503, RetriableApiError),
        (504, RetriableApiError),
        (507, RetriableApiError),
        (302, FatalApiError),
    ],
)
def test_error_for_response_maps_status_to_error_class(status: int, kind: type[ApiError]) -> None:
    body = b'{"error": {"errorCode": "123", "message": "Something"}}'
    error = error_for_response(
        "POST", "/api/v1/services/s", status, body, retry_after=None, date=None, now=NOW
    )
    assert type(error) is kind
    assert (error.method, error.path, error.status, error.error_code) == (
        "POST",
        "/api/v1/services/s",
        status,
        "123",
    )
    assert f"POST /api/v1/services/s answered {status}" in error.message


def test_error_for_response_keeps_a_raw_body_excerpt_of_at_most_500_chars() -> None:
    body = ("x" * 2000).encode()
    error = error_for_response("GET", "/p", 500, body, retry_after=None, date=None, now=NOW)
    assert len(error.body) <= 500
    assert error.body.startswith("xxx")
    assert error.error_code is None


def test_error_for_response_reads_retry_after_relative_to_the_clock() -> None:
    date = formatdate(NOW + 42, usegmt=True)
    error = error_for_response("GET", "/p", 503, b"", retry_after=date, date=None, now=NOW)
    assert isinstance(error, RetriableApiError)
    assert error.retry_after == pytest.approx(42)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (403, b'{"error": {"errorCode": "230", "message": "Forbidden"}}', "lacks permission"),
        (401, b'{"error": {"errorCode": "210", "message": "Permission Denied"}}', "permission"),
        (401, b'{"error": {"errorCode": "200", "message": "Auth Failed"}}', "secret key"),
    ],
)
def test_auth_error_names_the_likely_cause(status: int, body: bytes, expected: str) -> None:
    error = error_for_response("GET", "/p", status, body, retry_after=None, date=None, now=NOW)
    assert isinstance(error, AuthError)
    assert expected in error.message


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (432, "local clock is 7 min 12 s ahead of the server's Date header; fix NTP"),
        (-600, "local clock is 10 min 0 s behind the server's Date header; fix NTP"),
        (3, "3 s off the server's Date header, under 5 minutes: not clock skew"),
    ],
)
def test_auth_error_measures_clock_skew_from_the_date_header(
    new_client: Callable[..., AitemsClient], offset: int, expected: str
) -> None:
    date = formatdate(NOW - offset, usegmt=True)
    error = error_for_response("GET", "/p", 401, b"", retry_after=None, date=date, now=NOW)
    assert expected in error.message


# -- loopback against the emulator ------------------------------------------------------------


class FakeTime:
    """Wall time plus an offset that a fake sleep advances; records every wait."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset
        self.waits: list[float] = []

    def clock(self) -> float:
        return time.time() + self.offset

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.offset += seconds


class RecordingAdapter(HTTPAdapter):
    """The transport seam: remembers every signature put on the wire."""

    def __init__(self) -> None:
        super().__init__(max_retries=0)
        self.signatures: list[str] = []

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        self.signatures.append(request.headers[signing.HEADER_SIGNATURE])
        return super().send(request, *args, **kwargs)


def make_client(
    endpoint: str,
    fake: FakeTime,
    *,
    secret: str = DEMO_SECRET_KEY,
    attempts: int = 4,
    max_elapsed: float = 600.0,
    draw: float = 0.5,
    read_timeout: float = 5.0,
    **kwargs: Any,
) -> AitemsClient:
    return AitemsClient(
        endpoint=endpoint,
        access_key=DEMO_ACCESS_KEY,
        secret_key=secret,
        connect_timeout=2.0,
        read_timeout=read_timeout,
        retry=RetryPolicy(
            attempts=attempts, backoff=0.5, max_backoff=60.0, max_elapsed=max_elapsed
        ),
        sleep=fake.sleep,
        clock=fake.clock,
        random=lambda: draw,
        **kwargs,
    )


@pytest.fixture
def new_client() -> Iterator[Callable[..., AitemsClient]]:
    """``make_client`` whose clients are closed after the test."""
    made: list[AitemsClient] = []

    def build(endpoint: str, fake: FakeTime, **kwargs: Any) -> AitemsClient:
        made.append(make_client(endpoint, fake, **kwargs))
        return made[-1]

    yield build
    for client in made:
        client.close()


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.fixture
def client(emulator: EmulatorServer, fake: FakeTime) -> Iterator[AitemsClient]:
    client = make_client(emulator.base_url, fake)
    yield client
    client.close()


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_upload_delivers_the_rows(
    client: AitemsClient, emulator: EmulatorServer, fake: FakeTime
) -> None:
    result = client.upload(SERVICE, USERS, "user", USER_ROWS)
    assert result == UploadResult(attempts=1, ambiguous=False)
    received = emulator.received(USERS)
    assert received.uploads == 1
    assert received.rows == USER_ROWS
    assert fake.waits == []


def test_upload_encoded_sends_the_rows_as_encoded(
    client: AitemsClient, emulator: EmulatorServer
) -> None:
    encoded = [orjson.dumps(row) for row in USER_ROWS]
    assert client.upload_encoded(SERVICE, USERS, "user", encoded).attempts == 1
    assert emulator.received(USERS).rows == USER_ROWS


def test_concurrent_uploads_from_threads_share_one_client(
    client: AitemsClient, emulator: EmulatorServer
) -> None:
    results: list[UploadResult] = []

    def send(n: int) -> None:
        rows = [orjson.dumps({"USER_ID": f"t{n}-{i}", "AGE": i, "GENDER": None}) for i in range(50)]
        results.append(client.upload_encoded(SERVICE, USERS, "user", rows))

    threads = [threading.Thread(target=send, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [UploadResult(1, False)] * 8
    assert emulator.received(USERS).rows_received == 400


def test_429_with_retry_after_waits_that_long_then_succeeds(
    client: AitemsClient,
    emulator: EmulatorServer,
    fake: FakeTime,
    caplog: pytest.LogCaptureFixture,
) -> None:
    emulator.set_faults(Faults(statuses=[429], retry_after=2))
    with caplog.at_level(logging.INFO, logger="aitems_sync.aitems.client"):
        result = client.upload(SERVICE, USERS, "user", USER_ROWS)
    assert result == UploadResult(attempts=2, ambiguous=False)
    assert fake.waits == [2.0]
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "retry"]
    assert record.levelno == logging.INFO
    assert (getattr(record, "status", None), getattr(record, "wait", None)) == (429, 2.0)
    assert "attempt 1 of 4" in record.getMessage()
    assert f"POST /api/v1/services/{SERVICE}/datasets/{USERS}" in record.getMessage()


@pytest.mark.parametrize(
    ("statuses", "attempts", "ambiguous"),
    [
        ([503, 503], 3, False),
        ([500], 2, False),
        ([429, 500, 503], 4, False),
        ([504], 2, True),
        ([503, 504], 3, True),
        ([502], 2, True),
    ],
)
def test_retriable_statuses_are_retried_and_504_is_ambiguous(
    client: AitemsClient,
    emulator: EmulatorServer,
    fake: FakeTime,
    statuses: list[int],
    attempts: int,
    ambiguous: bool,
) -> None:
    emulator.set_faults(Faults(statuses=statuses, retry_after=None))
    result = client.upload(SERVICE, USERS, "user", USER_ROWS)
    assert result == UploadResult(attempts=attempts, ambiguous=ambiguous)
    # Backoff with draw 0.5: 0.25, 0.5, 1.0 ...
    assert fake.waits == [0.5 * 0.5 * 2**i for i in range(attempts - 1)]
    assert emulator.received(USERS).rows == USER_ROWS


def test_retries_give_up_after_the_configured_attempts(
    new_client: Callable[..., AitemsClient], emulator: EmulatorServer, fake: FakeTime
) -> None:
    emulator.set_faults(Faults(statuses=[503] * 5))
    client = new_client(emulator.base_url, fake, attempts=3)
    with pytest.raises(RetriesExhaustedError) as caught:
        client.upload(SERVICE, USERS, "user", USER_ROWS)
    error = caught.value
    assert "failed 3 times" in error.message
    assert "answered 503" in error.message
    assert "retry.attempts is 3" in error.message
    assert "AiTEMS status" in error.message
    assert (error.status, error.error_code) == (503, "500")
    assert error.ambiguous is False  # type: ignore[attr-defined]
    assert len(fake.waits) == 2
    assert emulator.received(USERS).uploads == 0


def test_retries_give_up_before_the_next_wait_passes_max_elapsed(
    new_client: Callable[..., AitemsClient], emulator: EmulatorServer, fake: FakeTime
) -> None:
    emulator.set_faults(Faults(statuses=[503] * 10, retry_after=None))
    # draw 1.0, backoff 0.5: waits 0.5, 1, 2, 4 ... the 4 s wait would pass 5 s.
    client = new_client(emulator.base_url, fake, attempts=10, max_elapsed=5.0, draw=1.0)
    with pytest.raises(RetriesExhaustedError, match=r"would pass retry\.max_elapsed of 5 s"):
        client.upload(SERVICE, USERS, "user", USER_ROWS)
    assert fake.waits == [0.5, 1.0, 2.0]


def test_retry_after_beyond_max_elapsed_gives_up_at_once(
    new_client: Callable[..., AitemsClient], emulator: EmulatorServer, fake: FakeTime
) -> None:
    emulator.set_faults(Faults(statuses=[429], retry_after=3600))
    client = new_client(emulator.base_url, fake, max_elapsed=600.0)
    with pytest.raises(RetriesExhaustedError, match="failed 1 time over"):
        client.upload(SERVICE, USERS, "user", USER_ROWS)
    assert fake.waits == []


def test_exhausted_retries_after_a_504_are_ambiguous(
    new_client: Callable[..., AitemsClient], emulator: EmulatorServer, fake: FakeTime
) -> None:
    emulator.set_faults(Faults(statuses=[504, 503]))
    client = new_client(emulator.base_url, fake, attempts=2)
    with pytest.raises(RetriesExhaustedError, match="may be delivered twice") as caught:
        client.upload(SERVICE, USERS, "user", USER_ROWS)
    assert caught.value.ambiguous is True


@pytest.mark.parametrize(("first", "ambiguous"), [(504, True), (503, False)])
def test_a_final_error_after_an_attempt_that_may_have_landed_is_ambiguous(
    client: AitemsClient, emulator: EmulatorServer, first: int, ambiguous: bool
) -> None:
    """A 504 then a 400: the first attempt may have been stored, so the batch's failure is
    ambiguous; after a 503 (nothing stored) it is not."""
    emulator.set_faults(Faults(statuses=[first, 400]))
    with pytest.raises(BadRequestError) as caught:
        client.upload(SERVICE, USERS, "user", USER_ROWS)
    assert caught.value.ambiguous is ambiguous


def test_drop_after_store_makes_the_successful_retry_ambiguous(
    client: AitemsClient, emulator: EmulatorServer
) -> None:
    emulator.set_faults(Faults(drop_after_store=1))
    result = client.upload(SERVICE, USERS, "user", USER_ROWS)
    assert result == UploadResult(attempts=2, ambiguous=True)
    assert emulator.received(USERS).uploads == 2  # the dropped one was stored too


def test_read_timeout_is_retried_and_ambiguous(
    new_client: Callable[..., AitemsClient], emulator: EmulatorServer, fake: FakeTime
) -> None:
    emulator.set_faults(Faults(latency=0.6))
    client = new_client(emulator.base_url, fake, attempts=2, read_timeout=0.15)
    with pytest.raises(RetriesExhaustedError, match="no answer within the read timeout") as caught:
        client.upload(SERVICE, USERS, "user", USER_ROWS)
    assert caught.value.status is None
    assert caught.value.ambiguous is True


def test_an_endpoint_that_never_answered_fails_fast_with_one_message(
    new_client: Callable[..., AitemsClient], fake: FakeTime
) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}/api/v1"
    client = new_client(endpoint, fake, attempts=8)
    with pytest.raises(FatalApiError) as caught:
        client.upload(SERVICE, USERS, "user", USER_ROWS)
    error = caught.value
    assert error.message.startswith(f"AiTEMS cannot be reached at {endpoint}")
    assert "the request was not sent" in error.message and "3 tries" in error.message
    assert error.ambiguous is False
    assert len(fake.waits) == 2 and all(wait <= 0.5 for wait in fake.waits)  # not 8 tries


def test_an_endpoint_that_answered_once_keeps_the_configured_retries(
    new_client: Callable[..., AitemsClient], fake: FakeTime
) -> None:
    server = EmulatorServer(seed=load_seed(DEMO_SEED), port=0)
    server.start()
    client = new_client(server.base_url, fake, attempts=5)
    client.get_service(SERVICE)  # it answered: an outage from now on is worth retrying
    server.stop()
    with pytest.raises(RetriesExhaustedError) as caught:
        client.upload(SERVICE, USERS, "user", USER_ROWS)
    error = caught.value
    assert isinstance(error.__cause__, RetriableApiError)
    assert error.__cause__.status is None
    assert "could not connect" in error.message and "failed 5 times" in error.message
    assert error.ambiguous is False  # type: ignore[attr-defined]
    assert fake.waits == [0.25, 0.5, 1.0, 2.0]


def test_wrong_secret_is_an_auth_error_naming_the_causes(
    new_client: Callable[..., AitemsClient], emulator: EmulatorServer, fake: FakeTime
) -> None:
    client = new_client(emulator.base_url, fake, secret="not-the-secret")
    with pytest.raises(AuthError) as caught:
        client.upload(SERVICE, USERS, "user", USER_ROWS)
    error = caught.value
    assert error.status == 401
    assert "access key or secret key" in error.message
    assert "not clock skew" in error.message
    assert f"POST /api/v1/services/{SERVICE}/datasets/{USERS} answered 401" in error.message
    assert fake.waits == []
    assert emulator.received(USERS).uploads == 0


def test_clock_ten_minutes_ahead_is_named_in_the_auth_error(
    new_client: Callable[..., AitemsClient], emulator: EmulatorServer
) -> None:
    fake = FakeTime(offset=600.0)
    client = new_client(emulator.base_url, fake)
    with pytest.raises(AuthError, match=r"local clock is 10 min [01] s ahead of the server's Date"):
        client.get_service(SERVICE)
    assert fake.waits == []


def test_row_violating_the_schema_is_a_bad_request_not_retried(
    client: AitemsClient, emulator: EmulatorServer, fake: FakeTime
) -> None:
    rows = [{"USER_ID": "u1", "AGE": "twenty", "GENDER": None}]
    with pytest.raises(BadRequestError) as caught:
        client.upload(SERVICE, USERS, "user", rows)
    assert caught.value.status == 400
    assert "AGE" in caught.value.body  # the server's answer is kept for quarantine records
    assert fake.waits == []
    assert emulator.received(USERS).uploads == 0


def test_body_over_the_limit_raises_payload_too_large(
    client: AitemsClient, emulator: EmulatorServer, fake: FakeTime
) -> None:
    emulator.set_faults(Faults(max_body_bytes=100))
    rows = [{"USER_ID": f"user-{i}", "AGE": i, "GENDER": "F"} for i in range(20)]
    with pytest.raises(PayloadTooLargeError, match="answered 413") as caught:
        client.upload(SERVICE, USERS, "user", rows)
    assert caught.value.status == 413
    assert fake.waits == []
    assert emulator.received(USERS).uploads == 0


def test_reads_return_the_seeded_objects(client: AitemsClient) -> None:
    dataset = client.get_dataset(USERS)
    assert (dataset["datasetId"], dataset["type"], dataset["schemaName"]) == (
        USERS,
        "user",
        "demo_users",
    )
    schema = client.get_schema("demo_users")
    assert [f["name"] for f in schema["fields"]] == ["USER_ID", "AGE", "GENDER"]
    service = client.get_service(SERVICE)
    assert service["serviceId"] == SERVICE
    ids = {d["datasetId"] for d in client.list_datasets()}
    assert ids == {"dsusers0001", "dsitems0001", "dsevent0001"}


def test_request_signs_the_query_string_as_sent(client: AitemsClient) -> None:
    params = {"limit": "10", "datasetType": "user", "offset": "0"}  # deliberately unsorted
    answer = client.request("GET", "/schemas", params=params)
    assert [s["name"] for s in answer["schemas"]] == ["demo_users"]


@pytest.mark.parametrize(
    ("call", "path"),
    [
        (lambda c: c.get_dataset("nosuch00001"), "/api/v1/datasets/nosuch00001"),
        (lambda c: c.get_schema("nosuch_schema"), "/api/v1/schemas/nosuch_schema"),
        (lambda c: c.get_service("nosuch00001"), "/api/v1/services/nosuch00001"),
        (lambda c: c.get_dataset("no such/../x"), "/api/v1/datasets/no%20such%2F..%2Fx"),
    ],
)
def test_missing_object_is_not_found(client: AitemsClient, call: Any, path: str) -> None:
    with pytest.raises(NotFoundError, match=f"GET {path} answered 404") as caught:
        call(client)
    assert caught.value.path == path


class RequestLog(HTTPAdapter):
    """The transport seam: remembers each request's method, target, JSON body and content type."""

    def __init__(self) -> None:
        super().__init__(max_retries=0)
        self.sent: list[tuple[str, str, Any, str | None]] = []

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        body = orjson.loads(request.body) if request.body else None
        self.sent.append((str(request.method), str(request.path_url), body,
                          request.headers.get("Content-Type")))
        return super().send(request, *args, **kwargs)


def test_provisioning_calls_send_the_documented_paths_and_bodies(
    emulator: EmulatorServer, fake: FakeTime
) -> None:
    log = RequestLog()
    session = requests.Session()
    session.mount("http://", log)
    client = make_client(emulator.base_url, fake, session=session)
    fields = [{"name": "ITEM_ID", "type": ["string"]}]
    schema = client.create_schema("more_items", "item", fields, "d")
    dataset = client.create_dataset(dataset_type="item", name="more-items",
                                    schema_name="more_items", bucket="bkt", key="items.csv.gz")
    modified = client.modify_dataset(dataset["datasetId"], dataset_type="item", name="renamed",
                                     schema_name="more_items", bucket="bkt", key="v2/",
                                     region="JP", description="v2")
    service = client.create_service("svc", "interval", "s")
    ids = [USERS, dataset["datasetId"], "dsevent0001"]
    attached = client.attach_datasets(service["serviceId"], ids)
    interval = client.set_interval(service["serviceId"], "hour6")
    started = client.set_schedule(service["serviceId"], "start")
    trains = client.list_trains(service["serviceId"], recent=True, limit=5)
    client.set_schedule(service["serviceId"], "stop")
    session.close()

    sid, did = service["serviceId"], dataset["datasetId"]
    os_info = {"region": "KR", "bucket": "bkt", "key": "items.csv.gz"}
    assert [(m, p, b) for m, p, b, _ in log.sent] == [
        ("POST", "/api/v1/schemas",
         {"datasetType": "item", "name": "more_items", "fields": fields, "description": "d"}),
        ("POST", "/api/v1/datasets",
         {"type": "item", "name": "more-items", "description": "", "schemaName": "more_items",
          "osInfo": os_info}),
        ("POST", f"/api/v1/datasets/{did}",
         {"type": "item", "name": "renamed", "description": "v2", "schemaName": "more_items",
          "osInfo": {"region": "JP", "bucket": "bkt", "key": "v2/"}}),
        ("POST", "/api/v1/services", {"name": "svc", "type": "interval", "description": "s"}),
        ("POST", f"/api/v1/services/{sid}/datasets", {"datasetIds": ids}),
        ("PUT", f"/api/v1/services/{sid}/interval", {"term": "hour6"}),
        ("PUT", f"/api/v1/services/{sid}/schedule?action=start", None),
        ("GET", f"/api/v1/services/{sid}/trains?isRecent=true&offset=0&limit=5", None),
        ("PUT", f"/api/v1/services/{sid}/schedule?action=stop", None),
    ]
    assert {t for _, _, b, t in log.sent if b is not None} == {"application/json"}
    assert schema["name"] == "more_items"
    assert (modified["name"], modified["osInfo"]["region"]) == ("renamed", "JP")
    assert [d["datasetId"] for d in attached["datasets"]] == ids
    assert (interval["term"], started["schedule"]) == ("hour6", "running")
    assert [t["serviceId"] for t in trains] == [sid]


def test_an_upload_says_its_body_is_json(emulator: EmulatorServer, fake: FakeTime) -> None:
    log = RequestLog()
    session = requests.Session()
    session.mount("http://", log)
    client = make_client(emulator.base_url, fake, session=session)
    client.upload(SERVICE, USERS, "user", USER_ROWS)
    session.close()
    assert [t for _, _, _, t in log.sent] == ["application/json"]


def test_from_config_takes_endpoint_keys_timeouts_and_retry() -> None:
    config = AitemsConfig(
        service_id=SERVICE,
        access_key="ak",
        secret_key="sk",
        endpoint="http://127.0.0.1:1/api/v1/",
        timeout=12.0,
        connect_timeout=3.0,
        batch=BatchPolicy(in_flight=6),
        retry=RetryPolicy(attempts=2),
    )
    client = AitemsClient.from_config(config, read_timeout=7.0)
    assert client.endpoint == "http://127.0.0.1:1/api/v1"
    assert client.timeout == (3.0, 7.0)
    assert client.retry == RetryPolicy(attempts=2)
    adapter = client._session.get_adapter("http://127.0.0.1:1/")
    assert isinstance(adapter, HTTPAdapter)
    assert adapter._pool_maxsize == 12  # type: ignore[attr-defined]
    assert "sk" not in repr(client)


def test_endpoint_that_is_not_http_is_refused() -> None:
    with pytest.raises(FatalApiError, match=r"aitems\.endpoint"):
        AitemsClient(endpoint="aitems.apigw.ntruss.com/api/v1", access_key="a", secret_key="s")


def test_no_secret_or_signature_in_logs_or_messages(
    new_client: Callable[..., AitemsClient],
    emulator: EmulatorServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secrets = [DEMO_SECRET_KEY, "wrong-secret-for-the-leak-test"]
    adapter = RecordingAdapter()
    session = requests.Session()
    session.mount("http://", adapter)
    messages: list[str] = []

    def attempt(client: AitemsClient, call: Any) -> None:
        try:
            call(client)
        except ApiError as error:
            messages.extend([str(error), repr(error), error.body])
            if error.__cause__ is not None:
                messages.append(str(error.__cause__))

    marked = [{"USER_ID": "payload-marker-9f3", "AGE": 1, "GENDER": "payload-marker-9f3"}]
    upload = lambda c: c.upload(SERVICE, USERS, "user", marked)  # noqa: E731
    bad = [{"USER_ID": "payload-marker-9f3", "AGE": "payload-marker-9f3", "GENDER": None}]
    bad_row = lambda c: c.upload(SERVICE, USERS, "user", bad)  # noqa: E731
    with caplog.at_level(logging.DEBUG):
        good = new_client(emulator.base_url, FakeTime(), session=session, attempts=2)
        emulator.set_faults(Faults(statuses=[503, 503, 429, 504], retry_after=1))
        attempt(good, upload)
        attempt(good, upload)
        attempt(good, bad_row)
        attempt(good, lambda c: c.get_dataset("nosuch00001"))
        emulator.set_faults(Faults(max_body_bytes=10))
        attempt(good, upload)
        wrong = new_client(emulator.base_url, FakeTime(), session=session, secret=secrets[1])
        attempt(wrong, upload)
        skewed = new_client(emulator.base_url, FakeTime(offset=-900), session=session)
        attempt(skewed, upload)
        endpoint = f"http://127.0.0.1:{closed_port()}/api/v1"
        attempt(new_client(endpoint, FakeTime(), session=session, attempts=2), upload)
    session.close()
    logged = [r.getMessage() for r in caplog.records] + [str(r.__dict__) for r in caplog.records]
    everything = "\n".join(messages + logged)
    assert len(messages) >= 8 * 3
    assert len(adapter.signatures) >= 10
    assert any(getattr(r, "event", None) == "retry" for r in caplog.records)
    for secret in secrets:
        assert secret not in everything
    for signature in adapter.signatures:
        assert signature not in everything
    assert "payload-marker-9f3" not in everything  # no row payload either


def test_a_create_whose_answer_is_lost_is_not_sent_twice(
    new_client: Callable[..., AitemsClient], fake: FakeTime
) -> None:
    """A 504 may follow a create that landed: a retry would make a second schema of the name."""
    import http.server

    posts: list[str] = []

    class LostAnswers(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            posts.append(self.path)
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(504)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), LostAnswers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = new_client(f"http://127.0.0.1:{server.server_port}/api/v1", fake, attempts=5)
        with pytest.raises(FatalApiError) as caught:
            client.create_schema("shop_users", "user", [{"name": "USER_ID", "type": ["string"]}])
    finally:
        server.shutdown()
        server.server_close()

    assert posts == ["/api/v1/schemas"]  # once, not five times
    assert caught.value.ambiguous and "may have been created" in caught.value.message
