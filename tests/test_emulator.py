"""The local AiTEMS emulator, over real loopback HTTP: signatures, the API, upload rules, faults."""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from aitems_sync.aitems.signing import signed_headers
from aitems_sync.emulator.rows import all_fit, compile_checker, row_problems
from aitems_sync.emulator.server import EmulatorServer, Faults, load_seed
from aitems_sync.errors import UsageError
from tests.conftest import DEMO_ACCESS_KEY, DEMO_SECRET_KEY, DEMO_SEED

SERVICE = "svcdemo0001"
USERS, ITEMS, EVENTS = "dsusers0001", "dsitems0001", "dsevent0001"
LOOSE = "dsloose0001"  # a user dataset attached to no service


def call(
    server: EmulatorServer, method: str, path: str, body: Any = None, *,
    raw: bytes | None = None, secret: str = DEMO_SECRET_KEY, signed_path: str | None = None,
    timestamp_ms: int | None = None, session: requests.Session | None = None,
) -> requests.Response:
    """One signed request to the emulator's API (``path`` after ``/api/v1``)."""
    uri = "/api/v1" + path
    timestamp = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
    headers = signed_headers(method, signed_path or uri, timestamp, DEMO_ACCESS_KEY, secret)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    sender = session or requests
    return sender.request(method, f"http://127.0.0.1:{server.port}{uri}", data=data,
                          headers=headers, timeout=5)


def upload(server: EmulatorServer, dataset: str, kind: str, rows: list[dict[str, Any]],
           **kw: Any) -> requests.Response:
    """The upload call to the demo service."""
    return call(server, "POST", f"/services/{SERVICE}/datasets/{dataset}",
                {"type": kind, "value": rows}, **kw)


def user(user_id: str | None, age: Any = 30, gender: Any = None) -> dict[str, Any]:
    return {"USER_ID": user_id, "AGE": age, "GENDER": gender}


def event(user_id: str, item_id: str, ts: int = 1_700_000_000) -> dict[str, Any]:
    return {"USER_ID": user_id, "ITEM_ID": item_id, "TIMESTAMP": ts, "EVENT_TYPE": "view"}


@contextmanager
def running(**kw: Any) -> Iterator[EmulatorServer]:
    """An emulator seeded with the demo (unless ``seed`` is given), started and then stopped."""
    kw.setdefault("seed", load_seed(DEMO_SEED))
    server = EmulatorServer(**kw)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server() -> Iterator[EmulatorServer]:
    """The demo emulator plus a user dataset that no service uses."""
    seed = load_seed(DEMO_SEED)
    seed["datasets"].append({"datasetId": LOOSE, "type": "user", "name": "loose",
                             "schemaName": "demo_users",
                             "osInfo": {"region": "KR", "bucket": "b", "key": "k"}})
    with running(seed=seed) as emulator:
        yield emulator


def assert_gateway_error(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"]["errorCode"] == code
    return body


# -- authentication ------------------------------------------------------------------------------

SIX_MINUTES_MS = 6 * 60 * 1000


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"secret": "wrong-secret"}, "signature does not match"),
        ({"signed_path": "/api/v1/services"}, "signature does not match"),
        ({"timestamp_ms": int(time.time() * 1000) - SIX_MINUTES_MS}, "5 minutes or more"),
    ],
    ids=["wrong-secret", "other-path", "six-minutes-old"],
)
def test_bad_signature_is_401_with_gateway_body(
    emulator: EmulatorServer, change: dict[str, Any], reason: str
) -> None:
    response = call(emulator, "GET", f"/services/{SERVICE}", **change)
    body = assert_gateway_error(response, 401, "200")
    assert body["error"]["message"] == "Authentication Failed"
    assert reason in body["error"]["details"]


def test_missing_headers_and_unknown_key_are_401(emulator: EmulatorServer) -> None:
    url = f"{emulator.base_url}/services/{SERVICE}"
    assert_gateway_error(requests.get(url, timeout=5), 401, "200")
    headers = signed_headers("GET", f"/api/v1/services/{SERVICE}", int(time.time() * 1000),
                             "nobody", DEMO_SECRET_KEY)
    body = assert_gateway_error(requests.get(url, headers=headers, timeout=5), 401, "200")
    assert body["error"]["details"] == "unknown access key"


def test_query_string_is_signed_as_sent(emulator: EmulatorServer) -> None:
    assert call(emulator, "GET", "/schemas?limit=1&offset=0").status_code == 200
    response = call(emulator, "GET", "/schemas?limit=1&offset=0", signed_path="/api/v1/schemas")
    assert_gateway_error(response, 401, "200")


def test_server_clock_is_injected_and_shown_in_date_header() -> None:
    past = 1_600_000_000.0
    with running(clock=lambda: past) as server:
        response = call(server, "GET", f"/services/{SERVICE}", timestamp_ms=int(past * 1000))
        assert response.status_code == 200
        assert response.headers["Date"] == "Sun, 13 Sep 2020 12:26:40 GMT"
        assert_gateway_error(call(server, "GET", f"/services/{SERVICE}"), 401, "200")


def test_keys_argument_adds_a_key_pair() -> None:
    with running(keys={"other-ak": "other-sk"}) as server:
        uri = f"/api/v1/services/{SERVICE}"
        headers = signed_headers("GET", uri, int(time.time() * 1000), "other-ak", "other-sk")
        response = requests.get(f"http://127.0.0.1:{server.port}{uri}", headers=headers, timeout=5)
        assert response.status_code == 200
        assert call(server, "GET", f"/services/{SERVICE}").status_code == 200


@pytest.mark.parametrize("path", ["/api/v1/nothing", "/api/v2/schemas", "/", "/_emulator/nope"])
def test_unknown_path_is_404_gateway_body(emulator: EmulatorServer, path: str) -> None:
    response = requests.get(f"http://127.0.0.1:{emulator.port}{path}", timeout=5)
    assert_gateway_error(response, 404, "300")


# -- upload validation ---------------------------------------------------------------------------

SECRET_VALUE = "SECRET-VALUE-77"

REJECTED_UPLOADS = [
    ("wrong-type-field", USERS, {"type": "item", "value": [user("u1")]}, None, "type",
     "type must be 'user', the type of dataset dsusers0001, got 'item'"),
    ("not-attached", LOOSE, {"type": "user", "value": [user("u1")]}, None, None,
     f"dataset {LOOSE} is not attached to service {SERVICE}"),
    ("string-for-int", USERS, {"type": "user", "value": [user("u1", age=SECRET_VALUE)]}, 0, "AGE",
     "row 0: field AGE: expected int or null, got string"),
    ("bool-for-int", USERS, {"type": "user", "value": [user("u1"), user("u2", age=True)]}, 1,
     "AGE", "row 1: field AGE: expected int or null, got boolean"),
    ("float-for-int", USERS, {"type": "user", "value": [user("u1", age=1.5)]}, 0, "AGE",
     "row 0: field AGE: expected int or null, got number"),
    ("int-over-32-bits", USERS, {"type": "user", "value": [user("u1", age=2**31)]}, 0, "AGE",
     "row 0: field AGE: integer out of the signed 32-bit range of int or null"),
    ("long-over-64-bits", EVENTS, {"type": "interaction", "value": [event("u", "i", ts=2**63)]},
     0, "TIMESTAMP", "row 0: field TIMESTAMP: integer out of the signed 64-bit range of long"),
    ("int-for-string", USERS, {"type": "user", "value": [user("u1", gender=1)]}, 0,
     "GENDER", "row 0: field GENDER: expected string or null, got integer"),
    ("missing-field", USERS, {"type": "user", "value": [{"USER_ID": "u1", "AGE": 1}]}, 0,
     "GENDER", "row 0: missing field GENDER"),
    ("extra-field", USERS, {"type": "user", "value": [{**user("u1"), "EXTRA": SECRET_VALUE}]}, 0,
     "EXTRA", "row 0: unexpected field 'EXTRA' (not in schema demo_users)"),
    ("misordered", USERS, {"type": "user", "value": [{"AGE": 1, "USER_ID": "u", "GENDER": None}]},
     0, None, "row 0: fields out of schema order: expected USER_ID, AGE, GENDER; "
     "got AGE, USER_ID, GENDER"),
    ("required-null", USERS, {"type": "user", "value": [user(None)]}, 0, "USER_ID",
     "row 0: field USER_ID: expected string, got null"),
    ("duplicate-key", USERS, {"type": "user", "value": [user(SECRET_VALUE), user(SECRET_VALUE)]},
     1, "USER_ID", "row 1: USER_ID repeats the value of row 0; USER_ID must be unique"),
    ("duplicate-item-key", ITEMS, {"type": "item", "value": [
        {"ITEM_ID": "i", "CATEGORY": None, "PRICE": 1, "CREATION_TIMESTAMP": 1}] * 2},
     1, "ITEM_ID", "row 1: ITEM_ID repeats the value of row 0"),
    ("row-not-object", USERS, {"type": "user", "value": [[SECRET_VALUE]]}, 0, None,
     "row 0: expected an object, got array"),
    ("value-not-list", USERS, {"type": "user", "value": {"USER_ID": "u"}}, None, "value",
     "value must be an array of rows, got object"),
    ("body-not-object", USERS, [user("u1")], None, None,
     "the body must be a JSON object {type, value}, got array"),
]


@pytest.mark.parametrize(("dataset", "body", "row", "field", "message"),
                         [case[1:] for case in REJECTED_UPLOADS],
                         ids=[case[0] for case in REJECTED_UPLOADS])
def test_upload_problem_rejects_whole_request(
    server: EmulatorServer, dataset: str, body: Any, row: int | None, field: str | None,
    message: str,
) -> None:
    response = call(server, "POST", f"/services/{SERVICE}/datasets/{dataset}", body)
    answer = assert_gateway_error(response, 400, "100")
    assert answer["error"]["message"] == "Bad Request Exception"
    assert any(p["message"].startswith(message) and p["row"] == row and p["field"] == field
               for p in answer["problems"]), answer["problems"]
    assert SECRET_VALUE not in response.text
    assert server.received(dataset).uploads == 0
    assert server.received(dataset).deliveries == []


def test_body_that_is_not_json_is_400(emulator: EmulatorServer) -> None:
    response = call(emulator, "POST", f"/services/{SERVICE}/datasets/{USERS}", raw=b"{nope")
    answer = assert_gateway_error(response, 400, "100")
    assert answer["problems"][0]["message"] == "the body is not valid JSON"


def test_every_problem_is_listed_up_to_a_cap(emulator: EmulatorServer) -> None:
    rows = [user(f"u{i}", age="x" if i % 2 else 1) for i in range(400)]
    answer = upload(emulator, USERS, "user", rows).json()
    assert [p["row"] for p in answer["problems"]] == list(range(1, 200, 2))
    assert answer["error"]["details"].startswith("100+ problem(s) in the upload")


@pytest.mark.parametrize(("service", "dataset"), [("nosuchsvc00", USERS), (SERVICE, "nosuchds000")])
def test_upload_to_unknown_service_or_dataset_is_404(
    emulator: EmulatorServer, service: str, dataset: str
) -> None:
    response = call(emulator, "POST", f"/services/{service}/datasets/{dataset}",
                    {"type": "user", "value": [user("u1")]})
    assert_gateway_error(response, 404, "300")


def test_int_for_float_and_64_bit_long_are_accepted(emulator: EmulatorServer) -> None:
    item = {"ITEM_ID": "i1", "CATEGORY": None, "PRICE": 3, "CREATION_TIMESTAMP": 2**63 - 1}
    response = upload(emulator, ITEMS, "item", [item])
    assert (response.status_code, response.json()) == (200, True)
    assert emulator.received(ITEMS).rows == [item]


# -- what uploads store --------------------------------------------------------------------------


def test_user_rows_upsert_by_key_in_first_insertion_order(emulator: EmulatorServer) -> None:
    assert upload(emulator, USERS, "user", [user("u1", 1), user("u2", 2)]).status_code == 200
    assert upload(emulator, USERS, "user", [user("u3", 3), user("u1", 10)]).status_code == 200
    received = emulator.received(USERS)
    assert received.rows == [user("u1", 10), user("u2", 2), user("u3", 3)]
    assert received.deliveries == [user("u1", 1), user("u2", 2), user("u3", 3), user("u1", 10)]
    assert (received.uploads, received.rows_received) == (2, 4)


def test_interaction_rows_append_and_deliveries_count_duplicates(emulator: EmulatorServer) -> None:
    for _ in range(2):
        assert upload(emulator, EVENTS, "interaction", [event("u1", "i1")]).status_code == 200
    received = emulator.received(EVENTS)
    assert received.rows == [event("u1", "i1")] * 2
    assert len(received.deliveries) == 2


def test_inspection_endpoints_show_counts_and_rows(emulator: EmulatorServer) -> None:
    upload(emulator, USERS, "user", [user("u1"), user("u2")])
    upload(emulator, USERS, "user", [user("u1", 5)])
    summary = requests.get(f"{emulator.admin_url}/datasets", timeout=5).json()
    assert summary[USERS] == {"uploads": 2, "rowsReceived": 3, "rows": 2}
    assert summary[EVENTS] == {"uploads": 0, "rowsReceived": 0, "rows": 0}
    detail = requests.get(f"{emulator.admin_url}/datasets/{USERS}", timeout=5).json()
    assert detail == {"datasetId": USERS, "uploads": 2, "rowsReceived": 3,
                      "rows": [user("u1", 5), user("u2")],
                      "deliveries": [user("u1"), user("u2"), user("u1", 5)], "rowsLoaded": 0}


def test_reset_data_forgets_rows_but_keeps_objects(emulator: EmulatorServer) -> None:
    upload(emulator, USERS, "user", [user("u1")])
    assert requests.post(f"{emulator.admin_url}/reset-data", timeout=5).status_code == 200
    assert emulator.received(USERS).uploads == 0
    assert emulator.received(USERS).rows == []
    assert call(emulator, "GET", f"/datasets/{USERS}").status_code == 200


def test_without_recording_only_counts_are_kept() -> None:
    with running(record=False) as server:
        upload(server, USERS, "user", [user("u1"), user("u2")])
        upload(server, USERS, "user", [user("u1")])
        received = server.received(USERS)
        assert (received.uploads, received.rows_received, received.rows) == (2, 3, [])
        summary = requests.get(f"{server.admin_url}/datasets", timeout=5).json()
        assert summary[USERS]["rows"] == 2


def test_received_of_unknown_dataset_says_so(emulator: EmulatorServer) -> None:
    with pytest.raises(UsageError, match="no dataset nosuch"):
        emulator.received("nosuch")


# -- faults --------------------------------------------------------------------------------------


def test_drop_after_store_keeps_rows_and_closes_without_answer(emulator: EmulatorServer) -> None:
    emulator.set_faults(Faults(drop_after_store=1))
    with pytest.raises(requests.ConnectionError):
        upload(emulator, USERS, "user", [user("u1")])
    detail = requests.get(f"{emulator.admin_url}/datasets/{USERS}", timeout=5).json()
    assert detail["deliveries"] == [user("u1")]
    assert upload(emulator, USERS, "user", [user("u1")]).status_code == 200
    assert len(emulator.received(USERS).deliveries) == 2


def test_drop_rate_one_drops_every_stored_upload(emulator: EmulatorServer) -> None:
    emulator.set_faults(Faults(drop_rate=1.0, seed=1))
    for _ in range(2):
        with pytest.raises(requests.ConnectionError):
            upload(emulator, EVENTS, "interaction", [event("u1", "i1")])
    assert emulator.received(EVENTS).uploads == 2


def test_body_over_max_body_bytes_is_413_and_not_stored(emulator: EmulatorServer) -> None:
    emulator.set_faults(Faults(max_body_bytes=300))
    big = [user(f"u{i}") for i in range(20)]
    assert_gateway_error(upload(emulator, USERS, "user", big), 413, "430")
    assert emulator.received(USERS).uploads == 0
    assert upload(emulator, USERS, "user", big[:2]).status_code == 200


def test_queued_statuses_answer_in_order_then_normal(emulator: EmulatorServer) -> None:
    emulator.set_faults(Faults(statuses=[429, 503, 500, 504], retry_after=2.0))
    answers = [upload(emulator, USERS, "user", [user("u1")]) for _ in range(5)]
    assert [a.status_code for a in answers] == [429, 503, 500, 504, 200]
    assert [a.json()["error"]["errorCode"] for a in answers[:4]] == ["420", "500", "900", "510"]
    assert [a.headers.get("Retry-After") for a in answers] == ["2", "2", None, None, None]
    assert emulator.received(USERS).uploads == 1


def test_status_rate_draws_from_status_choices(emulator: EmulatorServer) -> None:
    emulator.set_faults(Faults(status_rate=1.0, status_choices=(503,), retry_after=0.5, seed=7))
    response = upload(emulator, USERS, "user", [user("u1")])
    assert_gateway_error(response, 503, "500")
    assert response.headers["Retry-After"] == "0.5"


def test_faults_do_not_touch_other_calls(emulator: EmulatorServer) -> None:
    emulator.set_faults(Faults(statuses=[500], max_body_bytes=1))
    assert call(emulator, "GET", f"/services/{SERVICE}").status_code == 200
    assert upload(emulator, USERS, "user", [user("u1")]).status_code == 413


def test_latency_is_applied_to_uploads(emulator: EmulatorServer) -> None:
    emulator.set_faults(Faults(latency=0.2, latency_jitter=0.05))
    started = time.perf_counter()
    assert upload(emulator, USERS, "user", [user("u1")]).status_code == 200
    assert 0.2 <= time.perf_counter() - started < 2


def test_faults_endpoint_updates_some_fields(emulator: EmulatorServer) -> None:
    emulator.set_faults(Faults(latency=0.01))
    url = f"{emulator.admin_url}/faults"
    shown = requests.put(url, json={"statuses": [429], "status_choices": [500]}, timeout=5).json()
    assert (shown["statuses"], shown["status_choices"], shown["latency"]) == ([429], [500], 0.01)
    assert upload(emulator, USERS, "user", [user("u1")]).status_code == 429
    assert requests.get(url, timeout=5).json()["statuses"] == []
    bad = requests.put(url, json={"latency": "slow", "nope": 1}, timeout=5)
    assert [p["field"] for p in assert_gateway_error(bad, 400, "100")["problems"]] == [
        "latency", "nope"]


# -- schemas, datasets, services -----------------------------------------------------------------

GOOD_FIELDS = [{"name": "USER_ID", "type": ["string"]},
               {"name": "AGE", "type": ["int", "null"], "categorical": False},
               {"name": "CITY", "type": ["string", "null"], "categorical": True}]
DATE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}")


def test_schema_create_get_list_and_default(emulator: EmulatorServer) -> None:
    body = {"datasetType": "user", "name": "my_users", "fields": GOOD_FIELDS}
    created = call(emulator, "POST", "/schemas", body).json()
    assert created["fields"][1] == {"name": "AGE", "type": ["int", "null"]}
    assert created["fields"][2]["categorical"] is True
    assert DATE.fullmatch(created["createdDate"])
    assert call(emulator, "GET", "/schemas/my_users").json() == created
    users = call(emulator, "GET", "/schemas?datasetType=user").json()
    assert [s["name"] for s in users["schemas"]] == ["demo_users", "my_users"]
    page = call(emulator, "GET", "/schemas?offset=1&limit=1").json()
    assert ([s["name"] for s in page["schemas"]], page["offset"], page["limit"]) == (
        ["demo_items"], 1, 1)
    default = call(emulator, "GET", "/schemas/default?datasetType=interaction").json()
    assert [f["name"] for f in default["fields"]] == ["USER_ID", "ITEM_ID", "TIMESTAMP"]
    assert_gateway_error(call(emulator, "GET", "/schemas/nosuch"), 404, "300")


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"name": "ab"}, "name", "name must be 3 to 20"),
        ({"name": "1abc"}, "name", "starting with a letter"),
        ({"name": "a" * 21}, "name", "name must be 3 to 20"),
        ({"name": "bad name"}, "name", "name must be 3 to 20"),
        ({"name": "demo_users"}, "name", "already exists"),
        ({"datasetType": "users"}, "datasetType", "datasetType must be user, item or interaction"),
        ({"description": "x" * 101}, "description", "0 to 100 characters"),
        ({"fields": GOOD_FIELDS[1:]}, "fields", "needs field USER_ID of type [string]"),
        ({"fields": [{"name": "USER_ID", "type": ["string", "null"]}]}, "fields",
         "needs field USER_ID of type [string] (required, never null)"),
        ({"fields": [*GOOD_FIELDS, GOOD_FIELDS[1]]}, "fields[3].name", "field AGE appears twice"),
        ({"fields": [*GOOD_FIELDS, {"name": "X", "type": ["varchar"]}]}, "fields[3].type",
         "must be a list of distinct types"),
        ({"fields": [*GOOD_FIELDS, {"name": "X", "type": "string"}]}, "fields[3].type",
         "must be a list of distinct types"),
        ({"fields": []}, "fields", "fields must be a non-empty list"),
    ],
)
def test_bad_schema_is_rejected(
    emulator: EmulatorServer, change: dict[str, Any], field: str, message: str
) -> None:
    body = {"datasetType": "user", "name": "my_users", "fields": GOOD_FIELDS, **change}
    answer = assert_gateway_error(call(emulator, "POST", "/schemas", body), 400, "100")
    assert any(p["field"] == field and message in p["message"] for p in answer["problems"])


@pytest.mark.parametrize("name", ["abc", "ok-name_1", "A" * 20])
def test_good_schema_names_are_accepted(emulator: EmulatorServer, name: str) -> None:
    body = {"datasetType": "user", "name": name, "fields": GOOD_FIELDS}
    assert call(emulator, "POST", "/schemas", body).status_code == 200


def test_dataset_create_get_list(emulator: EmulatorServer) -> None:
    body = {"type": "item", "name": "more-items", "description": "d", "schemaName": "demo_items",
            "osInfo": {"region": "KR", "bucket": "b", "key": "items.csv"}}
    created = call(emulator, "POST", "/datasets", body).json()
    assert re.fullmatch(r"[a-z0-9]{11}", created["datasetId"])
    assert (created["type"], created["schemaName"], created["connectedServices"]) == (
        "item", "demo_items", [])
    assert call(emulator, "GET", f"/datasets/{created['datasetId']}").json() == created
    listed = call(emulator, "GET", "/datasets").json()["datasets"]
    assert [d["datasetId"] for d in listed] == [USERS, ITEMS, EVENTS, created["datasetId"]]
    seeded = call(emulator, "GET", f"/datasets/{USERS}").json()
    assert seeded["connectedServices"] == [{"serviceId": SERVICE, "name": "demo"}]


@pytest.mark.parametrize(
    ("change", "field"),
    [({"schemaName": "demo_users"}, "schemaName"), ({"schemaName": "nosuch"}, "schemaName"),
     ({"osInfo": {"region": "KR"}}, "osInfo"), ({"name": "x"}, "name"), ({"type": "x"}, "type")],
)
def test_bad_dataset_is_rejected(
    emulator: EmulatorServer, change: dict[str, Any], field: str
) -> None:
    body = {"type": "item", "name": "more-items", "schemaName": "demo_items",
            "osInfo": {"region": "KR", "bucket": "b", "key": "k"}, **change}
    answer = assert_gateway_error(call(emulator, "POST", "/datasets", body), 400, "100")
    assert field in [p["field"] for p in answer["problems"]]


def test_service_create_attach_and_upload(emulator: EmulatorServer) -> None:
    created = call(emulator, "POST", "/services", {"name": "_svc-2"}).json()
    service_id = created["serviceId"]
    assert (created["type"], created["status"], created["datasets"]) == (
        "batch", "datasetRequired", [])
    path = f"/services/{service_id}/datasets"
    bad = call(emulator, "POST", path, {"datasetIds": [USERS, USERS, EVENTS]})
    assert "one user, one item and one interaction" in bad.json()["problems"][0]["message"]
    attached = call(emulator, "POST", path, {"datasetIds": [EVENTS, USERS, ITEMS]}).json()
    assert [d["datasetId"] for d in attached["datasets"]] == [EVENTS, USERS, ITEMS]
    assert call(emulator, "GET", f"/services/{service_id}").json() == attached
    assert [s["serviceId"] for s in call(emulator, "GET", "/services").json()["services"]] == [
        SERVICE, service_id]
    response = call(emulator, "POST", f"{path}/{USERS}", {"type": "user", "value": [user("u")]})
    assert response.status_code == 200
    users = call(emulator, "GET", f"/datasets/{USERS}").json()
    assert len(users["connectedServices"]) == 2


@pytest.mark.parametrize("body", [{"name": "ab"}, {"name": "-abc"}, {"name": "abc", "type": "x"}])
def test_bad_service_is_rejected(emulator: EmulatorServer, body: dict[str, Any]) -> None:
    assert_gateway_error(call(emulator, "POST", "/services", body), 400, "100")


# -- seed, state, speed --------------------------------------------------------------------------


def test_seed_file_loads_from_yaml_and_json(tmp_path: Path) -> None:
    seed = load_seed(DEMO_SEED)
    assert seed["keys"] == [{"access_key": DEMO_ACCESS_KEY, "secret_key": DEMO_SECRET_KEY}]
    as_json = tmp_path / "seed.json"
    as_json.write_text(json.dumps(seed))
    assert load_seed(as_json) == seed
    with running(seed=load_seed(as_json)) as server:
        assert upload(server, USERS, "user", [user("u1")]).status_code == 200


@pytest.mark.parametrize(
    ("seed", "message"),
    [
        ({"keys": [{"access_key": "a"}]}, "keys[0] must be {access_key, secret_key}"),
        ({"schemas": [{"name": "x", "datasetType": "user", "fields": GOOD_FIELDS}]},
         "schemas[0]: name must be 3 to 20"),
        ({"datasets": [{"datasetId": "a/b", "type": "user"}]}, "datasets[0]: datasetId must be"),
        ({"services": [{"serviceId": "s1", "name": "svc", "datasets": ["nosuch"]}]},
         "services[0]: dataset nosuch does not exist"),
    ],
)
def test_bad_seed_lists_its_problems(seed: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        EmulatorServer(seed=seed)


def test_port_in_use_is_usage_error(emulator: EmulatorServer) -> None:
    with pytest.raises(UsageError, match=f"cannot listen on 127.0.0.1:{emulator.port}"):
        EmulatorServer(port=emulator.port)


def test_unreadable_seed_file_is_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "seed.yaml"
    bad.write_text("keys: [")
    with pytest.raises(UsageError, match="cannot read the emulator seed"):
        load_seed(bad)


def test_state_file_survives_restart(tmp_path: Path) -> None:
    state = tmp_path / "emulator.sqlite"
    with running(state_path=state) as server:
        body = {"datasetType": "user", "name": "kept_users", "fields": GOOD_FIELDS}
        assert call(server, "POST", "/schemas", body).status_code == 200
        upload(server, USERS, "user", [user("u1", 1), user("u2", 2)])
        upload(server, EVENTS, "interaction", [event("u1", "i1")] * 2)
    with running(state_path=state) as server:
        assert call(server, "GET", "/schemas/kept_users").json()["fields"][0]["name"] == "USER_ID"
        upload(server, USERS, "user", [user("u1", 10)])
        users, events = server.received(USERS), server.received(EVENTS)
        assert users.rows == [user("u1", 10), user("u2", 2)]
        assert (users.uploads, users.rows_received, len(users.deliveries)) == (2, 3, 3)
        assert (events.rows, events.uploads) == ([event("u1", "i1")] * 2, 1)
        requests.post(f"{server.admin_url}/reset-data", timeout=5)
    with running(state_path=state) as server:
        assert server.received(USERS).uploads == 0


def test_keep_alive_requests_do_not_stall(emulator: EmulatorServer) -> None:
    # Without TCP_NODELAY each request on a kept-alive connection waits ~40 ms for a delayed ACK.
    session = requests.Session()
    upload(emulator, EVENTS, "interaction", [event("u", "i")], session=session)
    started = time.perf_counter()
    for _ in range(50):
        response = upload(emulator, EVENTS, "interaction", [event("u", "i")], session=session)
        assert response.status_code == 200
    assert time.perf_counter() - started < 1.0


def uploads_of(server: EmulatorServer, count: int) -> Callable[[], None]:
    def work() -> None:
        for i in range(count):
            upload(server, EVENTS, "interaction", [event(f"u{i}", "i")])
    return work


def test_concurrent_uploads_are_all_counted(emulator: EmulatorServer) -> None:
    threads = [threading.Thread(target=uploads_of(emulator, 20)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    received = emulator.received(EVENTS)
    assert (received.uploads, len(received.deliveries)) == (80, 80)


# -- the whole-upload check agrees with the row-by-row one -----------------------------------

_SCHEMA = {"name": "items", "fields": [
    {"name": "ITEM_ID", "type": ["string"]}, {"name": "STOCK", "type": ["int", "null"]},
    {"name": "VIEWS", "type": ["long"]}, {"name": "PRICE", "type": ["double", "null"]},
    {"name": "NEW", "type": ["boolean"]}]}
_SCHEMA_NAMES = [field["name"] for field in _SCHEMA["fields"]]  # type: ignore[index]
_ANY_VALUE = st.one_of(st.none(), st.booleans(), st.text(max_size=3), st.floats(allow_nan=False),
                       st.integers())
_ITEM = st.fixed_dictionaries({  # typed right; integers up to one past each bound
    "ITEM_ID": st.sampled_from(["a", "b", "c", "d"]),
    "STOCK": st.one_of(st.none(), st.integers(-(2**31) - 1, 2**31)),
    "VIEWS": st.integers(-(2**63) - 1, 2**63),
    "PRICE": st.one_of(st.none(), st.floats(allow_nan=False), st.integers()),
    "NEW": st.booleans(),
}).map(lambda row: {name: row[name] for name in _SCHEMA_NAMES})  # in the schema's order
_ODD_ROW = st.one_of(
    st.tuples(_ITEM, st.sampled_from(_SCHEMA_NAMES), _ANY_VALUE).map(
        lambda t: {**t[0], t[1]: t[2]}),  # one field of any type
    _ITEM.map(lambda row: dict(reversed(row.items()))),  # fields out of order
    _ITEM.map(lambda row: {k: v for k, v in row.items() if k != "NEW"}),  # a field missing
    _ITEM.map(lambda row: {**row, "EXTRA": 1}),  # a field too many
    st.just([]),  # not an object
)


@st.composite
def _uploads(draw: st.DrawFn) -> list[Any]:
    """Rows typed right (their keys may repeat), and maybe one odd row among them."""
    rows: list[Any] = draw(st.lists(_ITEM, max_size=6))
    odd = draw(st.none() | _ODD_ROW)
    if odd is not None:
        rows.insert(draw(st.integers(0, len(rows))), odd)
    return rows


@settings(max_examples=300)
@given(_uploads(), st.sampled_from([None, "ITEM_ID"]))
def test_the_whole_upload_check_accepts_exactly_the_uploads_without_row_problems(
    rows: list[Any], key: str | None
) -> None:
    checker = compile_checker(_SCHEMA)

    assert all_fit(checker, rows, key) == (row_problems(checker, rows, key) == [])


def test_a_client_that_resets_mid_request_costs_a_log_line_not_a_traceback(
    emulator: EmulatorServer, capfd: pytest.CaptureFixture[str]
) -> None:
    host, port = emulator.base_url.split("//")[1].split("/")[0].split(":")
    for _ in range(5):
        client = socket.create_connection((host, int(port)))
        client.sendall(b"POST /api/v1/services/x/datasets/y HTTP/1.1\r\nContent-Length: 100\r\n")
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # RST: the server's read fails with ConnectionResetError
    time.sleep(0.3)
    answer = urllib.request.urlopen(emulator.base_url.rsplit("/api", 1)[0] + "/_emulator/faults")

    assert answer.status == 200  # still serving
    assert "Traceback" not in capfd.readouterr().err
