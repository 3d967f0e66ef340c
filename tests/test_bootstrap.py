"""`bootstrap` end to end on loopback: a SQLite or PostgreSQL source, moto's S3 server (which
checks every signature, with the one key pair its IAM issued: the spec's aitems keys here, as
NCP takes the same keys for AiTEMS and Object Storage) and the emulator reading the file from
it. The file read back equals the source rows in schema order; AiTEMS holds them; the next
`run` sends exactly what changed after the snapshot; a failure or a signal hands nothing over
and leaves no multipart upload open, and a rerun succeeds; a key pair Object Storage refuses
stops the load before anything moves."""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from aitems_sync import commands
from aitems_sync.cli.main import main_group
from aitems_sync.emulator.lifecycle import Timing
from aitems_sync.emulator.objectstorage import ObjectStorage
from aitems_sync.emulator.server import EmulatorServer, load_seed
from aitems_sync.spec.load import load_spec
from aitems_sync.state.store import StateStore
from aitems_sync.sync.handover import READ_GRACE_SECONDS, read_verdict
from tests.conftest import DEMO_SEED, S3Server, source_and_state_urls
from tests.shop import T0, Shop, customer_rows, write_spec

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "shop-aitems"
AGE = "CASE WHEN age = 33 THEN age + 3000000000 ELSE age END"  # age 33: invalid
INVALID = {f"u{i:05d}" for i in range(3000) if 20 + i % 50 == 33}


@dataclass
class Setup:
    shop: Shop
    emulator: EmulatorServer
    spec: Path
    s3: Any
    state_url: str

    def cli(self, *args: str) -> Result:
        return CliRunner().invoke(main_group, ["--config", str(self.spec), "--json", *args])

    def file_rows(self, key: str) -> list[list[str]]:
        body = self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        return list(csv.reader(io.StringIO(gzip.decompress(body).decode("utf-8"), newline="")))

    def unfinished(self) -> list[str]:
        answer = self.s3.list_multipart_uploads(Bucket=BUCKET)
        return [u["Key"] for u in answer.get("Uploads", [])]


@pytest.fixture(scope="module")
def bucket(s3_server: S3Server) -> S3Server:
    """The S3 server, holding BUCKET."""
    return s3_server.with_bucket(BUCKET)


def aitems(s3: S3Server, **kw: Any) -> EmulatorServer:
    """The demo AiTEMS, also taking S3's key pair (the spec's: see ``spec_for``)."""
    return EmulatorServer(seed=load_seed(DEMO_SEED), port=0,
                          keys={s3.access_key: s3.secret_key}, **kw)


def spec_for(path: Path, s3: S3Server, prefix: str, **kw: Any) -> Path:
    """The shop's spec with S3's key pair as the aitems keys and files under ``prefix``."""
    spec = write_spec(path, access_key=s3.access_key, secret_key=s3.secret_key, **kw)
    spec.write_text(spec.read_text() + f"object_storage: {{endpoint: '{s3.url}', bucket: "
                    f"{BUCKET}, prefix: {prefix}}}\n")
    return spec


@pytest.fixture(params=["sqlite", "postgresql"])
def setup(request: pytest.FixtureRequest, tmp_path: Path, bucket: S3Server) -> Iterator[Setup]:
    source_url, state_url = source_and_state_urls(request, tmp_path)
    shop = Shop(source_url)
    shop.add_customers(customer_rows(3000))
    shop.add_events([(n, f"u{n % 97:05d}", f"i{n % 31:03d}", "view", T0 + timedelta(seconds=n))
                     for n in range(2000)])
    emulator = aitems(bucket, object_storage=ObjectStorage(bucket.url),
                      timing=Timing(ingest_seconds=0.05))
    emulator.start()
    spec = spec_for(tmp_path / "sync.yaml", bucket, f"t-{tmp_path.name}/",
                    endpoint=emulator.base_url, source_url=source_url, state_url=state_url,
                    age=AGE)
    s3 = bucket.client()
    try:
        yield Setup(shop, emulator, spec, s3, state_url)
    finally:
        emulator.stop()
        shop.close()


def test_a_first_load_goes_through_object_storage_and_run_then_sends_only_changes(
    setup: Setup,
) -> None:
    setup.shop.update_customer("u00005", gender="")  # an empty string, not null
    result = setup.cli("bootstrap", "users", "events")

    assert result.exit_code == 0, result.output
    report = {d["dataset"]: d for d in json.loads(result.stdout)["datasets"]}
    users, events = report["users"], report["events"]
    assert (users["status"], users["rows"], users["invalid"]) == ("ok", 3000 - len(INVALID),
                                                                   len(INVALID))
    assert (events["status"], events["rows"]) == ("ok", 2000)
    # The file, read back with Python's csv module after gunzip: the source rows, schema order.
    key = users["file"].removeprefix(f"s3://{BUCKET}/")
    rows = setup.file_rows(key)
    assert rows[0] == ["USER_ID", "AGE", "GENDER"]
    assert rows[1:] == [[u, str(a), "" if u == "u00005" else g]
                        for u, a, g, _ in customer_rows(3000) if u not in INVALID]
    # AiTEMS (the emulator) read both files into the datasets.
    held = setup.emulator.received("dsusers0001")
    assert held.rows_loaded == 3000 - len(INVALID) and held.rows_received == 0
    assert {r["USER_ID"]: r["GENDER"] for r in held.rows}["u00005"] == ""
    assert setup.emulator.received("dsevent0001").rows_loaded == 2000
    assert setup.unfinished() == []

    for n in range(100):  # 100 users change after the snapshot
        setup.shop.update_customer(f"u{n * 29:05d}", age=71, updated_at=T0 + timedelta(days=2))
    ran = setup.cli("run")

    assert ran.exit_code == 0, ran.output
    sent = {d["dataset"]: d["sent"] for d in json.loads(ran.stdout)["datasets"]}
    assert sent == {"users": 100, "events": 0}
    assert {r["USER_ID"] for r in setup.emulator.received("dsusers0001").deliveries} == {
        f"u{n * 29:05d}" for n in range(100)}


def test_bootstrap_files_are_kept_apart_by_service_so_another_environment_is_left_alone(
    setup: Setup, tmp_path: Path
) -> None:
    """Staging and production specs may share a bucket and a prefix: a bootstrap aborts only
    the unfinished uploads of its own service's dataset."""
    prefix = f"t-{tmp_path.name}/"
    theirs = setup.s3.create_multipart_upload(Bucket=BUCKET,
                                              Key=f"{prefix}svcother0001/users/r1.csv.gz")
    setup.s3.create_multipart_upload(Bucket=BUCKET, Key=f"{prefix}svcdemo0001/users/r0.csv.gz")

    result = setup.cli("bootstrap", "users")

    assert result.exit_code == 0, result.output
    [load] = json.loads(result.stdout)["datasets"]
    assert load["file"].startswith(f"s3://{BUCKET}/{prefix}svcdemo0001/users/")
    assert [k for k in setup.unfinished() if k.startswith(prefix)] == [
        f"{prefix}svcother0001/users/r1.csv.gz"]  # the other environment's, still going
    setup.s3.abort_multipart_upload(Bucket=BUCKET, Key=f"{prefix}svcother0001/users/r1.csv.gz",
                                    UploadId=theirs["UploadId"])


def test_fields_that_differ_from_the_aitems_schema_stop_before_any_upload(
    setup: Setup,
) -> None:
    text = setup.spec.read_text()
    age = '      - {name: AGE, type: [int, "null"]}\n'
    gender = '      - {name: GENDER, type: [string, "null"], categorical: true}\n'
    setup.spec.write_text(text.replace(age + gender, gender + age, 1))  # AiTEMS: AGE first

    result = setup.cli("bootstrap", "users")

    assert result.exit_code == 2, result.output
    [load] = json.loads(result.stdout)["datasets"]
    assert load["spec_error"] and "order" in load["error"]
    assert load["file"] == "" and setup.unfinished() == []


def test_a_file_aitems_cannot_read_hands_nothing_over_and_a_rerun_succeeds(
    setup: Setup, tmp_path: Path, bucket: S3Server
) -> None:
    from tests.test_client import closed_port

    # An AiTEMS whose Object Storage is out of reach: the dataset ends failed.
    blind = aitems(bucket, timing=Timing(ingest_seconds=0.05),
                   object_storage=ObjectStorage(f"http://127.0.0.1:{closed_port()}"))
    blind.start()
    text = setup.spec.read_text()
    try:
        setup.spec.write_text(text.replace(setup.emulator.base_url, blind.base_url))
        failed = setup.cli("bootstrap", "users")
    finally:
        blind.stop()
    setup.spec.write_text(text)

    assert failed.exit_code == 1, failed.output
    [load] = json.loads(failed.stdout)["datasets"]
    assert "AiTEMS did not read" in load["error"]
    with StateStore.open(setup.state_url) as state:
        assert state.get_mark("users") is None  # nothing handed over
        assert state.ledger_size("users") == 0
        assert state.handover("users") is None  # AiTEMS said it did not take the file

    again = setup.cli("bootstrap", "users")

    assert again.exit_code == 0, again.output
    with StateStore.open(setup.state_url) as state:
        mark = state.get_mark("users")
        assert mark is not None and mark.key == ("u02999",)
        assert state.ledger_size("users") == 3000 - len(INVALID)
    assert setup.unfinished() == []


def test_without_object_storage_bootstrap_is_a_spec_error(setup: Setup) -> None:
    text = setup.spec.read_text()
    setup.spec.write_text(text[:text.index("object_storage:")])

    result = CliRunner().invoke(main_group, ["--config", str(setup.spec), "bootstrap"])

    assert result.exit_code == 2
    assert "object_storage: bootstrap writes each dataset's first load" in result.stderr


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_a_bootstrap_killed_mid_upload_moves_nothing_and_the_rerun_succeeds(
    tmp_path: Path, bucket: S3Server, how: signal.Signals
) -> None:
    users = 200_000
    source_url, state_url = f"sqlite:///{tmp_path / 'shop.db'}", f"sqlite:///{tmp_path / 's.db'}"
    shop = Shop(source_url)
    shop.add_customers(customer_rows(users))
    emulator = aitems(bucket, object_storage=ObjectStorage(bucket.url),
                      timing=Timing(ingest_seconds=0.05))
    emulator.start()
    prefix = f"k-{tmp_path.name}/"
    spec = spec_for(tmp_path / "sync.yaml", bucket, prefix, endpoint=emulator.base_url,
                    source_url=source_url, state_url=state_url, age=AGE)
    setup = Setup(shop, emulator, spec, bucket.client(), state_url)
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "aitems_sync", "--config", str(spec), "bootstrap", "users",
             "--lease-ttl", "2"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not any(k.startswith(prefix) for k in setup.unfinished()):
            assert process.poll() is None and time.monotonic() < deadline, process.stderr
            time.sleep(0.02)
        time.sleep(random.uniform(0, 0.5))  # somewhere in the upload
        process.send_signal(how)
        _, stderr = process.communicate(timeout=60)

        if how == signal.SIGTERM:
            assert process.returncode == 143, stderr
            assert "Traceback" not in stderr
            assert [k for k in setup.unfinished() if k.startswith(prefix)] == []  # aborted
        else:
            assert process.returncode == -signal.SIGKILL
            assert any(k.startswith(prefix) for k in setup.unfinished())  # left open: the rerun
        with StateStore.open(state_url) as state:
            assert state.get_mark("users") is None and state.ledger_size("users") == 0
        assert emulator.received("dsusers0001").rows_loaded == 0

        rerun = setup.cli("bootstrap", "users", "--wait", "30")  # kill -9 kept the lease 2 s

        assert rerun.exit_code == 0, rerun.output
        assert [k for k in setup.unfinished() if k.startswith(prefix)] == []
        invalid = sum(1 for i in range(users) if 20 + i % 50 == 33)
        assert emulator.received("dsusers0001").rows_loaded == users - invalid
        with StateStore.open(state_url) as state:
            assert state.ledger_size("users") == users - invalid
    finally:
        emulator.stop()
        shop.close()


def test_an_aitems_that_never_reads_the_file_hands_nothing_over(
    tmp_path: Path, bucket: S3Server
) -> None:
    """The emulator without Object Storage makes a modified dataset `enable` at once, reading
    nothing: bootstrap must not take that for the file being read."""
    source_url, state_url = f"sqlite:///{tmp_path / 'shop.db'}", f"sqlite:///{tmp_path / 's.db'}"
    shop = Shop(source_url)
    shop.add_customers(customer_rows(30))
    emulator = aitems(bucket)  # no object_storage
    emulator.start()
    try:
        spec = spec_for(tmp_path / "sync.yaml", bucket, f"n-{tmp_path.name}/",
                        endpoint=emulator.base_url, source_url=source_url, state_url=state_url)
        result = CliRunner().invoke(main_group, ["--config", str(spec), "bootstrap", "users"])

        assert result.exit_code == 1, result.output
        assert "no file read: the emulator runs without --object-storage" in result.output
        with StateStore.open(state_url) as state:
            assert state.get_mark("users") is None
    finally:
        emulator.stop()
        shop.close()


def test_a_secret_key_object_storage_refuses_stops_the_load_before_anything_moves(
    tmp_path: Path, bucket: S3Server
) -> None:
    """moto checks the signature: a secret that AiTEMS takes (the emulator is told so) but
    Object Storage does not fails the dataset with the likely cause, and moves nothing."""
    source_url, state_url = f"sqlite:///{tmp_path / 'shop.db'}", f"sqlite:///{tmp_path / 's.db'}"
    shop = Shop(source_url)
    shop.add_customers(customer_rows(30))
    wrong = S3Server(bucket.url, bucket.access_key, "not-the-secret-key")
    emulator = aitems(wrong, object_storage=ObjectStorage(bucket.url),
                      timing=Timing(ingest_seconds=0.05))
    emulator.start()
    prefix = f"w-{tmp_path.name}/"
    try:
        spec = spec_for(tmp_path / "sync.yaml", wrong, prefix, endpoint=emulator.base_url,
                        source_url=source_url, state_url=state_url)
        result = CliRunner().invoke(main_group, ["--config", str(spec), "--json", "bootstrap",
                                                 "users"])

        assert result.exit_code == 1, result.output
        [load] = json.loads(result.stdout)["datasets"]
        assert load["status"] == "failed" and load["file"] == ""
        assert ("Object Storage answered 403 SignatureDoesNotMatch; check aitems.secret_key and "
                "the machine's clock") in load["error"]
        assert "not-the-secret-key" not in result.output
        with StateStore.open(state_url) as state:
            assert state.get_mark("users") is None and state.ledger_size("users") == 0
            assert state.handover("users") is None
        dataset = emulator.model.get_dataset("dsusers0001")
        assert (dataset["status"], dataset["osInfo"]["key"]) == ("enable", "users.csv")
        s3 = bucket.client()
        assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        assert s3.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix).get("Uploads", []) == []
    finally:
        emulator.stop()
        shop.close()


def test_a_dataset_another_run_holds_exits_75(setup: Setup) -> None:
    with StateStore.open(setup.state_url) as state:
        state.acquire_lease("users", owner="someone", host="h", pid=1, ttl=60)

    result = setup.cli("bootstrap", "users")

    assert result.exit_code == 75, result.output
    assert "is locked by another run" in result.stderr


def test_a_bootstrap_stopped_while_aitems_reads_is_finished_by_the_next(
    tmp_path: Path, bucket: S3Server
) -> None:
    """Once AiTEMS is asked to read the file, AiTEMS may hold its rows whatever happens next:
    the store records the hand-over, runs refuse the dataset, and the next bootstrap takes
    the snapshot without writing another file."""
    source_url, state_url = f"sqlite:///{tmp_path / 'shop.db'}", f"sqlite:///{tmp_path / 's.db'}"
    shop = Shop(source_url)
    shop.add_customers(customer_rows(300))
    emulator = aitems(bucket, object_storage=ObjectStorage(bucket.url),
                      timing=Timing(ingest_seconds=1.0))
    emulator.start()
    try:
        spec_path = spec_for(tmp_path / "sync.yaml", bucket, f"h-{tmp_path.name}/",
                             endpoint=emulator.base_url, source_url=source_url,
                             state_url=state_url)
        spec = load_spec(spec_path)
        stop = threading.Event()

        def stop_once_aitems_reads() -> None:
            while emulator.model.get_dataset("dsusers0001")["status"] == "enable":
                time.sleep(0.01)
            stop.set()

        threading.Thread(target=stop_once_aitems_reads, daemon=True).start()
        first = commands.bootstrap(spec, ["users"], stop=stop)

        [load] = first.datasets
        assert load.status == "interrupted" and "run bootstrap again" in (load.error or "")
        with StateStore.open(state_url) as state:
            pending = state.handover("users")
            assert pending is not None and state.get_mark("users") is None
        refused = CliRunner().invoke(main_group, ["--config", str(spec_path), "run", "users"])
        assert refused.exit_code == 1
        assert "Run `aitems-sync bootstrap users` to finish" in refused.output
        retried = CliRunner().invoke(main_group, ["--config", str(spec_path), "quarantine",
                                                  "retry", "users"])
        assert retried.exit_code == 1 and "has not finished its hand-over" in retried.output
        shown = CliRunner().invoke(main_group, ["--config", str(spec_path), "--json", "status",
                                                "users"])
        assert shown.exit_code == 1
        assert "did not finish handing" in json.loads(shown.stdout)["alerts"][0]

        second = commands.bootstrap(spec, ["users"])

        [load] = second.datasets
        assert load.status == "ok" and load.file.endswith(pending.object_key)
        assert load.rows == 0  # no second file: the first one's snapshot is taken
        with StateStore.open(state_url) as state:
            assert state.handover("users") is None
            mark = state.get_mark("users")
            assert mark is not None and mark.key == ("u00299",)
        assert emulator.received("dsusers0001").rows_loaded == 300
        ran = CliRunner().invoke(main_group, ["--config", str(spec_path), "--json", "run",
                                              "users"])
        assert ran.exit_code == 0 and json.loads(ran.stdout)["datasets"][0]["sent"] == 0
    finally:
        emulator.stop()
        shop.close()


KEY = "p/users/run2.csv.gz"


@pytest.mark.parametrize(("answer", "reading", "waited", "verdict"), [
    ({"status": "waiting", "osInfo": {"key": KEY}}, False, 0, "reading"),
    ({"status": "processing"}, False, 0, "reading"),  # no osInfo: taken as ours
    ({"status": "processing", "osInfo": {"key": "p/users/run1.csv.gz"}}, False, 0, "not read"),
    ({"status": "enable", "osInfo": {"key": KEY}}, True, 0, "read"),
    ({"status": "enable", "osInfo": {"key": KEY}}, False, 0, None),  # not seen reading yet
    ({"status": "enable", "osInfo": {"key": KEY}}, False, READ_GRACE_SECONDS, "read"),
    ({"status": "enable", "osInfo": {"key": "p/users/run1.csv.gz"}}, True, 0, "not read"),
    ({"status": "enable", "osInfo": {"key": KEY}, "statusReason": "no file read"}, True, 0,
     "not read"),
    ({"status": "failed", "osInfo": {"key": KEY}, "statusReason": "bad header"}, True, 0,
     "not read"),
    ({"status": "suspended", "osInfo": {"key": KEY}}, True, 99, None),  # says nothing
])
def test_what_a_datasets_answer_says_of_the_file(
    answer: dict[str, Any], reading: bool, waited: float, verdict: str | None
) -> None:
    assert read_verdict(answer, KEY, reading=reading, waited=waited) == verdict


def test_a_query_without_rows_loads_an_empty_file_and_leaves_no_mark(setup: Setup) -> None:
    setup.spec.write_text(setup.spec.read_text().replace(
        "updated_at FROM customers", "updated_at FROM customers WHERE 1 = 0", 1))

    result = setup.cli("bootstrap", "users")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["datasets"][0]["rows"] == 0
    with StateStore.open(setup.state_url) as state:
        assert state.get_mark("users") is None and state.handover("users") is None
    assert setup.emulator.received("dsusers0001").rows_loaded == 0
