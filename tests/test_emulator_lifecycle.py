"""The emulator's dataset lifecycle and interval services, over real loopback HTTP and a real S3.

Dataset files are uploaded with boto3 to moto's S3 server (which checks every SigV4 signature);
datasets are created and modified with the project's own client; the emulator reads the file with
the key pair moto knows, checks it against the schema and moves the dataset through
``waiting``, ``processing`` and ``enable`` or ``failed``.
"""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from aitems_sync.aitems.client import AitemsClient
from aitems_sync.cli.main import main_group
from aitems_sync.emulator.csvfile import CHUNK_BYTES, FileRejected, read_rows
from aitems_sync.emulator.server import EmulatorServer, ObjectStorage, Timing, load_seed
from aitems_sync.errors import BadRequestError
from aitems_sync.spec.model import RetryPolicy
from tests.conftest import DEMO_ACCESS_KEY, DEMO_SECRET_KEY, DEMO_SEED, S3Server

USERS, ITEMS, EVENTS = "dsusers0001", "dsitems0001", "dsevent0001"
SERVICE = "svcdemo0001"  # the demo's interval service, with the three demo datasets attached
USERS_HEADER = "USER_ID,AGE,GENDER\n"
FAST = Timing(ingest_seconds=0.05, hour_seconds=0.5, train_seconds=0.05)


@pytest.fixture
def bucket(s3_server: S3Server) -> tuple[Any, str]:
    """A fresh bucket (outside us-east-1) and the client to fill it."""
    client = s3_server.client("eu-west-1")
    name = f"b-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name,
                         CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    return client, name


def emulator_with(storage: ObjectStorage | None, **kw: Any) -> EmulatorServer:
    kw.setdefault("seed", load_seed(DEMO_SEED))
    return EmulatorServer(object_storage=storage, timing=kw.pop("timing", FAST), **kw)


def storage(s3: S3Server) -> ObjectStorage:
    """The S3 server, read with the key pair it knows (``--object-storage-key``): the demo key
    pair that signs the dataset calls is not moto's."""
    return ObjectStorage(s3.url, s3.access_key, s3.secret_key)


@pytest.fixture
def server(s3_server: S3Server) -> Iterator[EmulatorServer]:
    """The demo emulator reading dataset files from the S3 server, with fast ingests."""
    emulator = emulator_with(storage(s3_server))
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


def client_for(emulator: EmulatorServer) -> AitemsClient:
    return AitemsClient(endpoint=emulator.base_url, access_key=DEMO_ACCESS_KEY,
                        secret_key=DEMO_SECRET_KEY, retry=RetryPolicy(attempts=1))


@pytest.fixture
def client(server: EmulatorServer) -> Iterator[AitemsClient]:
    with client_for(server) as aitems:
        yield aitems


def put(bucket: tuple[Any, str], key: str, text: str | bytes) -> None:
    """Upload a file, gzipped when the key ends in .gz."""
    s3, name = bucket
    data = text.encode() if isinstance(text, str) else text
    s3.put_object(Bucket=name, Key=key, Body=gzip.compress(data) if key.endswith(".gz") else data)


def settle(client: AitemsClient, dataset_id: str, timeout: float = 10.0) -> tuple[
        dict[str, Any], list[str]]:
    """Poll a dataset until it is enable or failed: its last state and every status seen."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        dataset = client.get_dataset(dataset_id)
        if not seen or seen[-1] != dataset["status"]:
            seen.append(dataset["status"])
        if dataset["status"] in ("enable", "failed") or time.monotonic() > deadline:
            return dataset, seen
        time.sleep(0.01)


def create_users(client: AitemsClient, bucket: tuple[Any, str], key: str) -> dict[str, Any]:
    return client.create_dataset(dataset_type="user", name="file-users",
                                 schema_name="demo_users", bucket=bucket[1], key=key)


def inspect(emulator: EmulatorServer, dataset_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = requests.get(f"{emulator.admin_url}/datasets/{dataset_id}",
                                          timeout=5).json()
    return answer


def user(user_id: str, age: int | None = None, gender: str | None = None) -> dict[str, Any]:
    return {"USER_ID": user_id, "AGE": age, "GENDER": gender}


# -- ingest --------------------------------------------------------------------------------------


def test_a_dataset_from_a_gzip_csv_goes_waiting_processing_enable_and_holds_its_rows(
    s3_server: S3Server, bucket: tuple[Any, str]
) -> None:
    put(bucket, "users.csv.gz", USERS_HEADER + 'u1,20,F\r\nu2,,\n"u,3",31,"x ""y"""\nü4,-5,é\n')
    # Each status lasts 0.3 s here, so that polling sees every one even on a loaded machine.
    server = emulator_with(storage(s3_server), timing=Timing(ingest_seconds=0.3))
    server.start()
    try:
        with client_for(server) as client:
            check_the_first_ingest(server, client, bucket)
    finally:
        server.stop()


def check_the_first_ingest(
    server: EmulatorServer, client: AitemsClient, bucket: tuple[Any, str]
) -> None:
    created = create_users(client, bucket, "users.csv.gz")
    assert (created["status"], created["statusReason"]) == ("waiting", None)
    dataset, seen = settle(client, created["datasetId"])
    assert seen == ["waiting", "processing", "enable"]
    assert dataset["statusReason"] is None
    held = inspect(server, created["datasetId"])
    assert held["rows"] == [user("u1", 20, "F"), user("u2"), user("u,3", 31, 'x "y"'),
                            user("ü4", -5, "é")]
    assert (held["rowsLoaded"], held["uploads"], held["deliveries"]) == (4, 0, [])


def test_quoting_tells_an_empty_string_from_null_and_text_from_a_number(
    server: EmulatorServer, client: AitemsClient, bucket: tuple[Any, str]
) -> None:
    """The file format bootstrap writes: text is quoted, null is an empty unquoted field."""
    put(bucket, "quoted.csv", USERS_HEADER + '"007",,""\r\n"u,8",21,\r\n')
    users = create_users(client, bucket, "quoted.csv")["datasetId"]
    assert settle(client, users)[0]["status"] == "enable"
    assert inspect(server, users)["rows"] == [
        {"USER_ID": "007", "AGE": None, "GENDER": ""},
        {"USER_ID": "u,8", "AGE": 21, "GENDER": None}]


@pytest.mark.parametrize("key", ["big.csv", "big.csv.gz"])
def test_a_file_of_several_chunks_streams_from_object_storage_with_quoted_line_breaks(
    server: EmulatorServer, client: AitemsClient, bucket: tuple[Any, str], key: str
) -> None:
    """Over a megabyte of text, read as it downloads: chunk boundaries fall inside quoted
    values that hold line breaks, commas and quotes."""
    rows = [user(f"u{n}", n % 90, f'line\r\none, "{n}"\nend') for n in range(50_000)]
    text = USERS_HEADER + "".join(
        f'"{r["USER_ID"]}",{r["AGE"]},"{r["GENDER"].replace(chr(34), 2 * chr(34))}"\r\n'
        for r in rows)
    assert len(text.encode()) > CHUNK_BYTES
    put(bucket, key, text)
    users = create_users(client, bucket, key)["datasetId"]
    dataset, _ = settle(client, users, timeout=60)
    assert (dataset["status"], dataset["statusReason"]) == ("enable", None)
    assert inspect(server, users)["rows"] == rows


def test_uploads_after_an_ingest_upsert_on_top_of_the_files_rows(
    server: EmulatorServer, client: AitemsClient, bucket: tuple[Any, str]
) -> None:
    put(bucket, "users.csv", USERS_HEADER + "u1,20,F\nu2,30,M\n")
    users = create_users(client, bucket, "users.csv")["datasetId"]
    assert settle(client, users)[0]["status"] == "enable"
    service = client.create_service("files")["serviceId"]
    client.attach_datasets(service, [users, ITEMS, EVENTS])
    client.upload(service, users, "user", [user("u2", 31, "M"), user("u3")])
    assert inspect(server, users)["rows"] == [user("u1", 20, "F"), user("u2", 31, "M"),
                                              user("u3")]


def test_interaction_rows_of_the_file_come_before_the_uploaded_ones(
    server: EmulatorServer, client: AitemsClient, bucket: tuple[Any, str]
) -> None:
    put(bucket, "events/2024.csv", "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE\n"
        "u1,i1,1700000000,view\nu1,i1,1700000000,view\nu2,i9,9000000000,buy\n")
    events = client.create_dataset(dataset_type="interaction", name="file-events",
                                   schema_name="demo_events", bucket=bucket[1],
                                   key="events/2024.csv")["datasetId"]
    assert settle(client, events)[0]["status"] == "enable"
    service = client.create_service("files")["serviceId"]
    client.attach_datasets(service, [USERS, ITEMS, events])
    late = {"USER_ID": "u3", "ITEM_ID": "i1", "TIMESTAMP": 1, "EVENT_TYPE": "view"}
    client.upload(service, events, "interaction", [late])
    rows = inspect(server, events)["rows"]
    assert [r["TIMESTAMP"] for r in rows] == [1700000000, 1700000000, 9000000000, 1]
    summary = requests.get(f"{server.admin_url}/datasets", timeout=5).json()[events]
    assert summary == {"uploads": 1, "rowsReceived": 1, "rows": 4}


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("AGE,USER_ID,GENDER\nu1,20,F\n",
         "the header does not match schema demo_users in name, order and case: expected "
         "USER_ID,AGE,GENDER; got AGE,USER_ID,GENDER"),
        ("user_id,AGE,GENDER\nu1,20,F\n", "the header does not match schema demo_users"),
        ("USER_ID,AGE\nu1,20\n", "the header does not match schema demo_users"),
        (USERS_HEADER + "u1,abc,F\n", "1 problem(s) in the file; first: line 2: field AGE: "
                                      "the value is not int"),
        (USERS_HEADER + "u1,2.5,F\n", "line 2: field AGE: the value is not int"),
        (USERS_HEADER + "u1,2147483648,F\n", "line 2: field AGE: the value is not int"),
        (USERS_HEADER + "u1,20,F\n,21,M\n", "line 3: field USER_ID is required and empty"),
        (USERS_HEADER + 'u1,20,F\n"",21,M\n21,"",M\n', "line 4: field AGE: the value is not int"),
        (USERS_HEADER + 'u1,20,F"x"\n', "line 2: not valid CSV (a quote inside a field"),
        (USERS_HEADER + "u1,20\n", "line 2: expected 3 values, got 2"),
        (USERS_HEADER + "u1,20,F\n\n", "line 3: expected 3 values, got 0"),
        (USERS_HEADER + "u1,20,F\nu1,21,M\n", "data row 2: USER_ID repeats data row 1"),
        (USERS_HEADER + 'u1,20,"F\n', "not valid CSV"),
        ("", "the file is empty; it needs a header row"),
        ("\ufeff" + USERS_HEADER + "u1,20,F\n", "starts with a byte order mark"),
        (USERS_HEADER.encode() + b"u\xff,20,F\n", "the file is not UTF-8 text"),
    ],
)
def test_a_bad_file_ends_failed_with_a_reason(
    client: AitemsClient, bucket: tuple[Any, str], content: str | bytes, reason: str
) -> None:
    put(bucket, "bad.csv.gz", content)
    dataset, seen = settle(client, create_users(client, bucket, "bad.csv.gz")["datasetId"])
    assert (seen[0], seen[-1]) == ("waiting", "failed")  # processing too, if a poll caught it
    assert dataset["statusReason"].startswith(f"s3://{bucket[1]}/bad.csv.gz: ")
    assert reason in dataset["statusReason"]


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("nosuch.csv.gz", "nosuch.csv.gz: no such object"),
        ("users.json", "the key must end in .csv or .csv.gz"),
        ("plain.csv.gz", "the object is not gzip data, though its key ends in .gz"),
        ("empty/", "no .csv or .csv.gz object under the prefix"),
        ("two/", "more than one .csv or .csv.gz object under the prefix (two/a.csv, two/b.csv"),
    ],
)
def test_a_missing_or_unreadable_object_ends_failed_with_a_reason(
    client: AitemsClient, bucket: tuple[Any, str], key: str, reason: str
) -> None:
    s3, name = bucket
    s3.put_object(Bucket=name, Key="plain.csv.gz", Body=USERS_HEADER.encode())
    s3.put_object(Bucket=name, Key="empty/_SUCCESS", Body=b"")
    for part in ("two/a.csv", "two/b.csv"):
        put(bucket, part, USERS_HEADER)
    dataset, _ = settle(client, create_users(client, bucket, key)["datasetId"])
    assert dataset["status"] == "failed"
    assert reason in dataset["statusReason"]


def test_a_missing_bucket_ends_failed_with_a_reason(client: AitemsClient) -> None:
    created = client.create_dataset(dataset_type="user", name="lost", schema_name="demo_users",
                                    bucket="no-such-bucket-here", key="users.csv")
    dataset, _ = settle(client, created["datasetId"])
    assert (dataset["status"], dataset["statusReason"]) == (
        "failed", "s3://no-such-bucket-here/users.csv: no such bucket no-such-bucket-here")


def test_a_prefix_reads_the_one_data_file_under_it(
    server: EmulatorServer, client: AitemsClient, bucket: tuple[Any, str]
) -> None:
    put(bucket, "export/run-1/part-0000.csv.gz", USERS_HEADER + "u1,1,\n")
    put(bucket, "export/run-1/_SUCCESS", "")
    dataset, _ = settle(client, create_users(client, bucket, "export/run-1/")["datasetId"])
    assert dataset["status"] == "enable"
    assert inspect(server, dataset["datasetId"])["rows"] == [user("u1", 1)]


def test_modify_reads_the_new_file_and_its_rows_replace_the_old(
    server: EmulatorServer, client: AitemsClient, bucket: tuple[Any, str]
) -> None:
    put(bucket, "a.csv", USERS_HEADER + "u1,1,\nu2,2,\n")
    put(bucket, "b.csv", USERS_HEADER + "u3,3,\n")
    dataset_id = create_users(client, bucket, "a.csv")["datasetId"]
    settle(client, dataset_id)
    modified = client.modify_dataset(dataset_id, dataset_type="user", name="renamed",
                                     schema_name="demo_users", bucket=bucket[1], key="b.csv")
    assert (modified["status"], modified["name"], modified["osInfo"]["key"]) == (
        "waiting", "renamed", "b.csv")
    with pytest.raises(BadRequestError, match="is waiting: wait until it is enable or failed"):
        client.modify_dataset(dataset_id, dataset_type="user", name="renamed",
                              schema_name="demo_users", bucket=bucket[1], key="b.csv")
    assert settle(client, dataset_id)[0]["status"] == "enable"
    assert inspect(server, dataset_id)["rows"] == [user("u3", 3)]


def test_modify_keeps_the_type_and_schema(client: AitemsClient) -> None:
    client.create_schema("other_users", "user", [{"name": "USER_ID", "type": ["string"]}])
    with pytest.raises(BadRequestError, match="a dataset keeps its type and schema"):
        client.modify_dataset(USERS, dataset_type="user", name="demo-users",
                              schema_name="other_users", bucket="b", key="k.csv")


def test_a_failed_dataset_can_be_fixed_by_modifying_it(
    client: AitemsClient, bucket: tuple[Any, str]
) -> None:
    dataset_id = create_users(client, bucket, "late.csv")["datasetId"]
    assert settle(client, dataset_id)[0]["status"] == "failed"
    put(bucket, "late.csv", USERS_HEADER + "u1,1,\n")
    client.modify_dataset(dataset_id, dataset_type="user", name="file-users",
                          schema_name="demo_users", bucket=bucket[1], key="late.csv")
    dataset, _ = settle(client, dataset_id)
    assert (dataset["status"], dataset["statusReason"]) == ("enable", None)


def test_without_object_storage_a_dataset_is_enable_at_once_and_reads_nothing() -> None:
    emulator = emulator_with(None)
    emulator.start()
    try:
        with client_for(emulator) as aitems:
            created = aitems.create_dataset(dataset_type="user", name="x-users",
                                            schema_name="demo_users", bucket="b", key="u.csv")
            assert (created["status"], created["statusReason"]) == (
                "enable", "no file read: the emulator runs without --object-storage")
            time.sleep(0.2)
            assert aitems.get_dataset(created["datasetId"])["status"] == "enable"
    finally:
        emulator.stop()


def test_ingested_rows_and_statuses_survive_a_restart_with_state(
    s3_server: S3Server, bucket: tuple[Any, str], tmp_path: Path
) -> None:
    put(bucket, "users.csv.gz", USERS_HEADER + "u1,1,\n")
    state = tmp_path / "emulator.db"
    slow = Timing(ingest_seconds=30)
    first = emulator_with(storage(s3_server), state_path=state)
    first.start()
    with client_for(first) as aitems:
        loaded = create_users(aitems, bucket, "users.csv.gz")["datasetId"]
        settle(aitems, loaded)
    first.stop()
    second = emulator_with(storage(s3_server), state_path=state, timing=slow)
    second.start()
    with client_for(second) as aitems:
        cut_short = create_users(aitems, bucket, "users.csv.gz")["datasetId"]
    second.stop()
    third = emulator_with(storage(s3_server), state_path=state)
    third.start()
    try:
        with client_for(third) as aitems:
            assert inspect(third, loaded)["rows"] == [user("u1", 1)]
            dataset = aitems.get_dataset(cut_short)
            assert dataset["status"] == "failed"
            assert "the emulator stopped during the ingest" in dataset["statusReason"]
    finally:
        third.stop()


def test_by_default_the_emulator_reads_with_the_key_pair_that_signed_the_call(
    s3_server: S3Server, bucket: tuple[Any, str]
) -> None:
    """As NCP: the API gateway's key pair is also Object Storage's."""
    put(bucket, "users.csv", USERS_HEADER + "u1,1,\n")
    emulator = emulator_with(ObjectStorage(s3_server.url),
                             keys={s3_server.access_key: s3_server.secret_key})
    emulator.start()
    try:
        with AitemsClient(endpoint=emulator.base_url, access_key=s3_server.access_key,
                          secret_key=s3_server.secret_key, retry=RetryPolicy(attempts=1)) as aitems:
            dataset, _ = settle(aitems, create_users(aitems, bucket, "users.csv")["datasetId"])
        assert (dataset["status"], dataset["statusReason"]) == ("enable", None)
        assert inspect(emulator, dataset["datasetId"])["rows"] == [user("u1", 1)]
    finally:
        emulator.stop()


@pytest.mark.parametrize(
    ("reads_with", "code"),
    [
        ("the-signer", "InvalidAccessKeyId"),  # the demo key pair, which moto never issued
        ("a-wrong-secret", "SignatureDoesNotMatch"),  # moto's access key, another secret
    ],
)
def test_a_key_pair_the_storage_refuses_ends_failed_with_a_hint(
    s3_server: S3Server, bucket: tuple[Any, str], reads_with: str, code: str
) -> None:
    put(bucket, "users.csv", USERS_HEADER + "u1,1,\n")
    fixed = (ObjectStorage(s3_server.url) if reads_with == "the-signer" else
             ObjectStorage(s3_server.url, s3_server.access_key, "not-the-secret-key"))
    emulator = emulator_with(fixed)
    emulator.start()
    try:
        with client_for(emulator) as aitems:
            dataset, _ = settle(aitems, create_users(aitems, bucket, "users.csv")["datasetId"])
        assert dataset["status"] == "failed"
        assert dataset["statusReason"] == (
            f"s3://{bucket[1]}/users.csv: access denied ({code}); check the key pair the "
            "emulator reads with (--object-storage-key, or the key that signed the dataset call)")
    finally:
        emulator.stop()


@pytest.mark.parametrize(
    ("types", "text", "value"),
    [
        (["boolean"], "true", True), (["boolean"], "false", False), (["double"], "-1.5e3", -1500.0),
        (["float", "null"], "2", 2.0), (["long"], "9223372036854775807", 2**63 - 1),
        (["int", "string"], "12", 12), (["int", "string"], "12a", "12a"),
        (["string", "null"], "", None),
    ],
)
def test_a_value_is_read_as_the_first_type_whose_syntax_it_has(
    types: list[str], text: str, value: Any
) -> None:
    schema = {"name": "s", "fields": [{"name": "USER_ID", "type": ["string"]},
                                      {"name": "X", "type": types}]}
    rows = read_rows(io.BytesIO(f"USER_ID,X\nu1,{text}\n".encode()), False, schema, "user")
    assert rows == [{"USER_ID": "u1", "X": value}]
    assert type(rows[0]["X"]) is type(value)


@pytest.mark.parametrize(("types", "text"), [(["boolean"], "True"), (["boolean"], "1"),
                                              (["double"], "nan"), (["double"], "1e999"),
                                              (["long"], "9223372036854775808")])
def test_a_value_outside_its_types_syntax_is_refused(types: list[str], text: str) -> None:
    schema = {"name": "s", "fields": [{"name": "USER_ID", "type": ["string"]},
                                      {"name": "X", "type": types}]}
    with pytest.raises(FileRejected, match="line 2: field X: the value is not"):
        read_rows(io.BytesIO(f"USER_ID,X\nu1,{text}\n".encode()), False, schema, "user")


def test_the_emulator_starts_without_importing_boto3() -> None:
    code = ("import sys; from aitems_sync.emulator.server import EmulatorServer; "
            "s = EmulatorServer(); s.stop(); sys.exit('boto3' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_object_storage_without_boto3_is_a_usage_error_naming_the_extra() -> None:
    code = ("import sys; sys.modules['boto3'] = None\n"
            "from aitems_sync.emulator.server import EmulatorServer, ObjectStorage\n"
            "from aitems_sync.errors import UsageError\n"
            "try:\n    EmulatorServer(object_storage=ObjectStorage('http://127.0.0.1:9'))\n"
            "except UsageError as error:\n    print(error, error.exit_code)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip() == ("--object-storage needs boto3: pip install "
                                   "'aitems-sync[objectstorage]' 2")


def test_the_emulator_command_ingests_from_object_storage(
    s3_server: S3Server, bucket: tuple[Any, str]
) -> None:
    put(bucket, "users.csv.gz", USERS_HEADER + "u1,1,\n")
    command = [sys.executable, "-m", "aitems_sync", "emulator", "--port", "0",
               "--seed", str(DEMO_SEED), "--object-storage", s3_server.url,
               "--ingest-seconds", "0.3"]
    # The key pair from the environment, so that the secret stays out of the process list.
    key_pair = f"{s3_server.access_key}:{s3_server.secret_key}"
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "AITEMS_EMULATOR_OBJECT_STORAGE_KEY": key_pair})
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert line.startswith("AiTEMS emulator listening on http://127.0.0.1:")
        endpoint = line.split()[-1]
        with AitemsClient(endpoint=endpoint, access_key=DEMO_ACCESS_KEY,
                          secret_key=DEMO_SECRET_KEY) as aitems:
            dataset, seen = settle(aitems, create_users(aitems, bucket, "users.csv.gz")[
                "datasetId"])
        assert seen == ["waiting", "processing", "enable"]
        admin = endpoint.replace("/api/v1", "/_emulator")
        held = requests.get(f"{admin}/datasets/{dataset['datasetId']}", timeout=5).json()
        assert held["rows"] == [user("u1", 1)]
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_key_pair_in_the_object_storage_url_is_refused_without_showing_it() -> None:
    """A URL reaches logs and connection errors; the key pair has its own option."""
    result = CliRunner().invoke(main_group, [
        "emulator", "--port", "0", "--object-storage", "http://ak:the-secret@127.0.0.1:9"])
    assert result.exit_code == 2
    assert ("--object-storage: the URL must not hold a key pair; give it with "
            "--object-storage-key or the environment variable "
            "AITEMS_EMULATOR_OBJECT_STORAGE_KEY") in result.output
    assert "the-secret" not in result.output


# -- interval services ---------------------------------------------------------------------------


def fill_demo(client: AitemsClient) -> None:
    """One row in each demo dataset, so that a train of the demo service can succeed."""
    client.upload(SERVICE, USERS, "user", [user("u1")])
    client.upload(SERVICE, ITEMS, "item", [{"ITEM_ID": "i1", "CATEGORY": None, "PRICE": None,
                                            "CREATION_TIMESTAMP": 1}])
    client.upload(SERVICE, EVENTS, "interaction", [
        {"USER_ID": "u1", "ITEM_ID": "i1", "TIMESTAMP": 1, "EVENT_TYPE": "view"}])


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c, s: c.set_interval(s, "hour1"), "its interval can be set on interval services "
                                                  "only"),
        (lambda c, s: c.set_schedule(s, "start"), "its schedule can be set on interval services "
                                                  "only"),
    ],
)
def test_interval_and_schedule_are_for_interval_services_only(
    client: AitemsClient, call: Callable[[AitemsClient, str], Any], message: str
) -> None:
    batch = client.create_service("batchy")
    assert (batch["type"], batch["term"], batch["schedule"]) == ("batch", None, None)
    with pytest.raises(BadRequestError, match=f"is a batch service; {message}"):
        call(client, batch["serviceId"])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.set_interval(SERVICE, "hour2"), "term must be hour1, hour3, hour6 or hour12"),
        (lambda c: c.request("PUT", f"/services/{SERVICE}/interval", body=b'{"term": []}'),
         "term must be hour1, hour3, hour6 or hour12"),
        (lambda c: c.request("PUT", f"/services/{SERVICE}/interval", body=b'[]'),
         "the body of set interval must be a JSON object"),
        (lambda c: c.request("PUT", f"/services/{SERVICE}/schedule"),
         "action must be start or stop"),
        (lambda c: c.set_schedule(SERVICE, "pause"), "action must be start or stop"),
        (lambda c: c.set_schedule(SERVICE, "start"), f"service {SERVICE} has no interval: set "
                                                     f"one with PUT /services/{SERVICE}/interval"),
    ],
)
def test_bad_interval_or_schedule_calls_are_refused(
    client: AitemsClient, call: Callable[[AitemsClient], Any], message: str
) -> None:
    with pytest.raises(BadRequestError, match=message):
        call(client)


def test_a_schedule_needs_datasets(client: AitemsClient) -> None:
    service = client.create_service("fresh", "interval")["serviceId"]
    client.set_interval(service, "hour3")
    with pytest.raises(BadRequestError, match="has no datasets: attach them"):
        client.set_schedule(service, "start")


def test_a_running_schedule_trains_every_term_and_refuses_attach(
    client: AitemsClient
) -> None:
    fill_demo(client)
    assert client.set_interval(SERVICE, "hour1")["term"] == "hour1"
    started = client.set_schedule(SERVICE, "start")
    assert (started["type"], started["term"], started["schedule"]) == (
        "interval", "hour1", "running")
    assert client.set_schedule(SERVICE, "start")["schedule"] == "running"  # no change
    with pytest.raises(BadRequestError, match=f"service {SERVICE}'s schedule is running: stop it"):
        client.attach_datasets(SERVICE, [USERS, ITEMS, EVENTS])
    with pytest.raises(BadRequestError, match="schedule is running: stop it before changing"):
        client.set_interval(SERVICE, "hour3")
    # hour1 lasts 0.5 s here: a second train starts half a second after the first.
    wait_for(lambda: len(client.list_trains(SERVICE)) >= 2)
    assert client.set_schedule(SERVICE, "stop")["schedule"] == "stopped"
    wait_for(lambda: all(t["status"] != "running" for t in client.list_trains(SERVICE)))
    trains = client.list_trains(SERVICE)
    assert {t["status"] for t in trains} == {"succeeded"}
    assert trains[0]["createdDate"] >= trains[1]["createdDate"]  # newest first
    assert set(trains[0]) == {"trainId", "serviceId", "term", "status", "statusReason",
                              "createdDate", "finishedDate"}
    assert client.list_trains(SERVICE, recent=True) == trains[:1]
    assert client.list_trains(SERVICE, offset=1, limit=1) == trains[1:2]
    assert client.attach_datasets(SERVICE, [USERS, ITEMS, EVENTS])["schedule"] == "stopped"
    count = len(trains)
    time.sleep(0.7)
    assert len(client.list_trains(SERVICE)) == count  # stopped: no more trains


def test_a_train_fails_when_a_dataset_holds_no_rows(client: AitemsClient) -> None:
    client.set_interval(SERVICE, "hour12")
    client.set_schedule(SERVICE, "start")
    wait_for(lambda: client.list_trains(SERVICE, recent=True)[0]["status"] != "running")
    train = client.list_trains(SERVICE, recent=True)[0]
    assert (train["status"], train["statusReason"], train["term"]) == (
        "failed", f"dataset {USERS} holds no rows", "hour12")
    assert train["finishedDate"] is not None


def test_a_train_fails_when_a_dataset_failed(
    client: AitemsClient, bucket: tuple[Any, str]
) -> None:
    broken = create_users(client, bucket, "nosuch.csv")["datasetId"]
    settle(client, broken)
    client.attach_datasets(SERVICE, [broken, ITEMS, EVENTS])
    client.set_interval(SERVICE, "hour6")
    client.set_schedule(SERVICE, "start")
    wait_for(lambda: client.list_trains(SERVICE, recent=True)[0]["status"] != "running")
    assert client.list_trains(SERVICE, recent=True)[0]["statusReason"] == (
        f"dataset {broken} is failed, not enable")


def test_trains_list_of_an_unknown_service_is_404_and_bad_paging_400(
    server: EmulatorServer, client: AitemsClient
) -> None:
    assert client.list_trains(SERVICE) == []
    with pytest.raises(Exception, match="404"):
        client.list_trains("nosuch")
    with pytest.raises(BadRequestError, match="isRecent must be true or false"):
        client.request("GET", f"/services/{SERVICE}/trains", params={"isRecent": "yes"})


def test_a_running_schedule_goes_on_after_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "emulator.db"
    first = emulator_with(None, state_path=state, timing=Timing(hour_seconds=3600,
                                                                train_seconds=30))
    first.start()
    with client_for(first) as aitems:
        aitems.set_interval(SERVICE, "hour1")
        aitems.set_schedule(SERVICE, "start")
        wait_for(lambda: len(aitems.list_trains(SERVICE)) == 1)
        cut_short_id = aitems.list_trains(SERVICE)[0]["trainId"]
    first.stop()
    second = emulator_with(None, state_path=state)
    second.start()
    try:
        with client_for(second) as aitems:
            assert aitems.get_service(SERVICE)["schedule"] == "running"
            wait_for(lambda: len(aitems.list_trains(SERVICE)) >= 2)
            cut_short = next(t for t in aitems.list_trains(SERVICE)
                             if t["trainId"] == cut_short_id)
            assert (cut_short["status"], cut_short["statusReason"]) == (
                "failed", "the emulator stopped while it ran")
    finally:
        second.stop()
