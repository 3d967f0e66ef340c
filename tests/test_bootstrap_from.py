"""`bootstrap --from`: a file another engine exported, registered as a dataset's first load, end
to end on loopback: a SQLite shop, moto's S3 server holding the export (written here with
Python's csv and gzip, as a warehouse or Spark would), and the emulator reading it. AiTEMS holds
the file's rows, the mark is the one given, and the next `run` sends only from it; an export
that cannot work is refused before AiTEMS is asked anything; a bootstrap killed while AiTEMS
reads is finished by the next one."""

from __future__ import annotations

import csv
import gzip
import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner, Result

from aitems_sync.cli.main import main_group
from aitems_sync.emulator.lifecycle import Timing
from aitems_sync.emulator.objectstorage import ObjectStorage
from aitems_sync.emulator.server import EmulatorServer
from aitems_sync.objectstorage.exports import CHUNK_BYTES, ExportFile, read_header
from aitems_sync.state.store import StateStore
from aitems_sync.sync.register import header_diff
from tests.conftest import S3Server
from tests.shop import T0, Shop, customer_rows
from tests.test_apply import SPEC as APPLY_SPEC
from tests.test_bootstrap import aitems, spec_for
from tests.test_client import closed_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "sync.yaml"
BUCKET = "shop-exports"
USERS = ["USER_ID", "AGE", "GENDER"]
EVENTS = ["USER_ID", "ITEM_ID", "TIMESTAMP", "EVENT_TYPE"]
CUTOFF = T0 + timedelta(seconds=2000)  # customers u00000..u01999 are before it
SEOUL = ZoneInfo("Asia/Seoul")  # the shop's timezone in every test spec


@dataclass
class Setup:
    shop: Shop
    emulator: EmulatorServer
    spec: Path
    s3: Any
    state_url: str
    folder: str  # this test's folder in the bucket

    def cli(self, *args: str) -> Result:
        return CliRunner().invoke(main_group, ["--config", str(self.spec), "--json", *args])

    def url(self, path: str) -> str:
        return f"s3://{BUCKET}/{self.folder}{path}"

    def put(self, path: str, body: bytes) -> None:
        self.s3.put_object(Bucket=BUCKET, Key=self.folder + path, Body=body)

    def export(self, path: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """A gzip CSV as an exporter writes it: RFC 4180, CRLF, a header row."""
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        writer.writerow(header)
        writer.writerows(rows)
        self.put(path, gzip.compress(text.getvalue().encode("utf-8")))


@pytest.fixture(scope="module")
def bucket(s3_server: S3Server) -> S3Server:
    """moto's S3 server (checking SigV4 with its IAM's key pair, the specs' aitems keys here),
    holding BUCKET: the exports, and bootstrap's own files under loads/."""
    return s3_server.with_bucket(BUCKET)


def _spec(path: Path, s3: S3Server, *, endpoint: str, source_url: str,
          state_url: str) -> Path:
    return spec_for(path, s3, "loads/", endpoint=endpoint, source_url=source_url,
                    state_url=state_url)


def _aitems(s3: S3Server, ingest_seconds: float = 0.05) -> EmulatorServer:
    """The demo AiTEMS, reading files from S3 with its key pair."""
    return aitems(s3, object_storage=ObjectStorage(s3.url),
                  timing=Timing(ingest_seconds=ingest_seconds))


@pytest.fixture
def setup(tmp_path: Path, bucket: S3Server) -> Iterator[Setup]:
    source_url, state_url = f"sqlite:///{tmp_path / 'shop.db'}", f"sqlite:///{tmp_path / 's.db'}"
    shop = Shop(source_url)
    shop.add_customers(customer_rows(3000))
    shop.add_events([(n, f"u{n % 97:05d}", f"i{n % 31:03d}", "view", T0 + timedelta(seconds=n))
                     for n in range(2000)])
    emulator = _aitems(bucket)
    emulator.start()
    spec = _spec(tmp_path / "sync.yaml", bucket, endpoint=emulator.base_url,
                 source_url=source_url, state_url=state_url)
    try:
        yield Setup(shop, emulator, spec, bucket.client(), state_url, f"x-{tmp_path.name}/")
    finally:
        emulator.stop()
        shop.close()


def users_before(cutoff: datetime) -> list[list[Any]]:
    return [[u, a, g] for u, a, g, at in customer_rows(3000) if at < cutoff]


def event_row(n: int) -> list[Any]:
    """Event n as the run sends it: TIMESTAMP in epoch seconds of the shop's timezone."""
    at = (T0 + timedelta(seconds=n)).replace(tzinfo=SEOUL)
    return [f"u{n % 97:05d}", f"i{n % 31:03d}", int(at.timestamp()), "view"]


def test_an_export_is_registered_and_run_then_sends_only_from_the_mark(setup: Setup) -> None:
    setup.export("users/part-00000-7d1c.csv.gz", USERS, users_before(CUTOFF))
    setup.put("users/_SUCCESS", b"")  # Spark's marker: left out

    result = setup.cli("bootstrap", "--from", setup.url("users"), "--mark",
                       CUTOFF.isoformat(), "--type", "datetime", "users")

    assert result.exit_code == 0, result.output
    [load] = json.loads(result.stdout)["datasets"]
    assert load["status"] == "ok" and load["rows"] is None  # not read by us
    assert load["file"] == setup.url("users/part-00000-7d1c.csv.gz")
    assert load["mark"] == CUTOFF.isoformat()
    held = setup.emulator.received("dsusers0001")
    assert held.rows_loaded == 2000 and held.rows_received == 0
    assert {r["USER_ID"] for r in held.rows} == {f"u{i:05d}" for i in range(2000)}
    with StateStore.open(setup.state_url) as state:
        mark = state.get_mark("users")
        assert mark is not None and (mark.cursor, mark.key) == (CUTOFF, (None,))
        assert state.ledger_size("users") == 0  # what the file holds is not known
        assert state.handover("users") is None and state.binding("users") == (
            "svcdemo0001", "dsusers0001")

    ran = setup.cli("run", "users")

    assert ran.exit_code == 0, ran.output
    assert json.loads(ran.stdout)["datasets"][0]["sent"] == 1000
    assert sorted(r["USER_ID"] for r in setup.emulator.received("dsusers0001").deliveries) == [
        f"u{i:05d}" for i in range(2000, 3000)]  # from the mark's value on, each once


@pytest.mark.parametrize(("mark", "sent"), [(1500, 500), (1499, 501)],
                         ids=["the-cut-off", "the-exports-last-value"])
def test_an_interaction_export_is_doubled_only_at_a_mark_it_holds(
    setup: Setup, mark: int, sent: int
) -> None:
    """The export holds the events before 1500. The mark's own value is read again by the next
    run: with the exporter's cut-off no event is sent twice; with the export's last value, the
    events at that value are (AiTEMS appends interactions)."""
    setup.export("events/events.csv.gz", EVENTS, [event_row(n) for n in range(1500)])

    result = setup.cli("bootstrap", "--from", setup.url("events/events.csv.gz"), "--mark",
                       str(mark), "events")
    assert result.exit_code == 0, result.output
    ran = setup.cli("run", "events")

    assert ran.exit_code == 0, ran.output
    assert json.loads(ran.stdout)["datasets"][0]["sent"] == sent
    held = setup.emulator.received("dsevent0001")
    timestamps = [r["TIMESTAMP"] for r in held.rows]
    assert len(timestamps) == 1500 + sent
    twice = {t for t in timestamps if timestamps.count(t) > 1}
    assert twice == (set() if mark == 1500 else {event_row(1499)[2]})


def test_a_dataset_the_spec_names_is_created_from_the_export(
    tmp_path: Path, bucket: S3Server
) -> None:
    """apply made the schema and the service; bootstrap --from creates the dataset from the
    file, under its dataset_name, and the state store is bound to the new id."""
    source_url, state_url = f"sqlite:///{tmp_path / 'shop.db'}", f"sqlite:///{tmp_path / 's.db'}"
    shop = Shop(source_url)
    shop.add_customers(customer_rows(3000))
    emulator = EmulatorServer(port=0, keys={bucket.access_key: bucket.secret_key},
                              object_storage=ObjectStorage(bucket.url),
                              timing=Timing(ingest_seconds=0.05))
    emulator.start()
    spec = tmp_path / "sync.yaml"
    spec.write_text(APPLY_SPEC.format(endpoint=emulator.base_url, state_url=state_url,
                                      source_url=source_url, s3=bucket.url, bucket=BUCKET,
                                      prefix="loads/", access_key=bucket.access_key,
                                      secret_key=bucket.secret_key))
    setup = Setup(shop, emulator, spec, bucket.client(), state_url, f"n-{tmp_path.name}/")
    try:
        assert setup.cli("apply", "--yes").exit_code == 0  # the schemas and the service
        setup.export("users.csv.gz", USERS, users_before(CUTOFF))

        result = setup.cli("bootstrap", "--from", setup.url("users.csv.gz"), "--mark",
                           CUTOFF.isoformat(), "--type", "datetime", "users")

        assert result.exit_code == 0, result.output
        [load] = json.loads(result.stdout)["datasets"]
        [created] = [d for d in emulator.model.list_datasets({})["datasets"]
                     if d["name"] == "shop-users"]
        assert load["dataset_id"] == created["datasetId"]
        assert emulator.received(created["datasetId"]).rows_loaded == 2000
        with StateStore.open(state_url) as state:
            binding = state.binding("users")
            assert binding is not None and binding[1] == created["datasetId"]
        # A service attaches all three datasets: the others from their queries, then apply.
        assert setup.cli("bootstrap", "items", "events").exit_code == 0
        assert setup.cli("apply", "--yes").exit_code == 0
        ran = setup.cli("run", "users")
        assert ran.exit_code == 0, ran.output
        assert json.loads(ran.stdout)["datasets"][0]["sent"] == 1000
    finally:
        emulator.stop()
        shop.close()


def _gzip_text(text: str) -> bytes:
    return gzip.compress(text.encode("utf-8"))


@pytest.mark.parametrize(("name", "body", "expected"), [
    ("u.csv.gz", _gzip_text("USER_ID,GENDER,AGE\r\nu1,F,20\r\n"),
     ["header: USER_ID,GENDER,AGE", "the columns are in another order than the fields"]),
    ("u.csv.gz", _gzip_text("user_id,AGE,GENDER\r\n"),
     ["column 1 'user_id' is field 'USER_ID' written otherwise"]),
    ("u.csv", b"USER_ID,AGE\nu1,20\n", ["field 'GENDER' has no column"]),
    ("u.csv", b'"USER_ID","AGE","GENDER","EMAIL"\n', ["column 4 'EMAIL' is not a field"]),
    ("u.csv", b"\xef\xbb\xbfUSER_ID,AGE,GENDER\n", ["starts with a byte order mark"]),
    ("u.csv.gz", b"USER_ID,AGE,GENDER\n", ["is not gzip data, though its name ends in .gz"]),
    ("u.csv", _gzip_text("USER_ID,AGE,GENDER\n"), ["is gzip data, though its name ends in .csv"]),
    ("u.csv", b"", ["is empty: AiTEMS needs a header row"]),
], ids=["order", "case", "missing", "extra", "bom", "not-gzip", "gzip-named-csv", "empty"])
def test_a_header_that_is_not_the_fields_is_refused_before_aitems_is_asked(
    setup: Setup, name: str, body: bytes, expected: list[str]
) -> None:
    setup.put(f"bad/{name}", body)
    # AiTEMS out of reach: any call to it would fail with a connection error instead.
    text = setup.spec.read_text()
    setup.spec.write_text(text.replace(setup.emulator.base_url,
                                       f"http://127.0.0.1:{closed_port()}"))

    result = setup.cli("bootstrap", "--from", setup.url("bad/"), "--mark", "2026-03-01",
                       "--type", "date", "users")

    assert result.exit_code == 2, result.output
    [load] = json.loads(result.stdout)["datasets"]
    assert load["status"] == "failed" and load["spec_error"]
    for part in expected:
        assert part in load["error"]
    with StateStore.open(setup.state_url) as state:
        assert state.handover("users") is None and state.get_mark("users") is None
        assert state.lease_holder("users") is None


@pytest.mark.parametrize(("objects", "expected"), [
    ([], "no .csv or .csv.gz file at s3://shop-exports/{folder}users"),
    (["users/_SUCCESS", "users/part-0.parquet", "users2/part-0.csv.gz"],
     "2 other object(s) there were left out (_SUCCESS, part-0.parquet)"),
    (["users/_temporary/0/part-0.csv.gz"], "a _temporary folder means the export is still "
                                           "writing, or failed"),
    (["users/part-0.csv.gz", "users/part-1.csv.gz"],
     "2 .csv or .csv.gz files at s3://shop-exports/{folder}users (s3://shop-exports/{folder}"
     "users/part-0.csv.gz, s3://shop-exports/{folder}users/part-1.csv.gz): bootstrap --from "
     "registers exactly one file per dataset"),
], ids=["nothing", "no-data-file", "unfinished-spark-output", "two-files"])
def test_a_url_without_exactly_one_file_is_refused(
    setup: Setup, objects: list[str], expected: str
) -> None:
    for path in objects:
        setup.export(path, USERS, [["u1", 20, "F"]])

    result = setup.cli("bootstrap", "--from", setup.url("users"), "--mark", "5", "users")

    assert result.exit_code == 2, result.output
    [load] = json.loads(result.stdout)["datasets"]
    assert expected.format(folder=setup.folder) in load["error"]
    assert setup.emulator.received("dsusers0001").rows_loaded == 0


@pytest.mark.parametrize(("args", "expected"), [
    (["--from", "s3://b/p", "--mark", "1"], "name exactly one DATASET (named: none)"),
    (["--from", "s3://b/p", "--mark", "1", "users", "events"],
     "name exactly one DATASET (named: users, events)"),
    (["--from", "s3://b/p", "users"], "--from needs --mark CURSOR"),
    (["--mark", "1", "users"], "--mark and --type go with --from"),
    (["--type", "int", "users"], "--mark and --type go with --from"),
])
def test_from_goes_with_a_mark_and_one_dataset(args: list[str], expected: str) -> None:
    result = CliRunner().invoke(main_group, ["--config", str(EXAMPLE), "bootstrap", *args])

    assert result.exit_code == 2, result.output
    assert expected in result.output


@pytest.mark.parametrize(("args", "expected"), [
    (["--from", "http://x/y", "--mark", "1"], "give the export as s3://BUCKET/PATH"),
    (["--from", "s3:///y", "--mark", "1"], "no bucket name"),
    (["--from", "s3://b/y", "--mark", "2026-03-01"], "--mark '2026-03-01' looks like a date"),
    (["--from", "s3://b/y", "--mark", "soon", "--type", "datetime"],
     "--mark 'soon' is not a valid datetime"),
])
def test_a_url_or_mark_that_cannot_be_used_is_a_usage_error(
    setup: Setup, args: list[str], expected: str
) -> None:
    result = CliRunner().invoke(main_group, ["--config", str(setup.spec), "bootstrap", *args,
                                             "users"])

    assert result.exit_code == 2, result.output
    assert expected in result.stderr


@pytest.mark.parametrize("finish", ["from", "plain"])
def test_a_bootstrap_killed_while_aitems_reads_is_finished_by_the_next(
    tmp_path: Path, bucket: S3Server, finish: str
) -> None:
    """kill -9 after the hand-over is recorded and AiTEMS was asked: runs refuse the dataset,
    and the next bootstrap (with --from, or without) takes the snapshot, asking AiTEMS to read
    nothing again."""
    source_url, state_url = f"sqlite:///{tmp_path / 'shop.db'}", f"sqlite:///{tmp_path / 's.db'}"
    shop = Shop(source_url)
    shop.add_customers(customer_rows(3000))
    emulator = _aitems(bucket, ingest_seconds=1.0)
    emulator.start()
    spec = _spec(tmp_path / "sync.yaml", bucket, endpoint=emulator.base_url,
                 source_url=source_url, state_url=state_url)
    setup = Setup(shop, emulator, spec, bucket.client(), state_url, f"k-{tmp_path.name}/")
    setup.export("users/users.csv.gz", USERS, users_before(CUTOFF))
    register = ["bootstrap", "--from", setup.url("users"), "--mark", CUTOFF.isoformat(),
                "--type", "datetime", "users"]
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "aitems_sync", "--config", str(spec), *register,
             "--lease-ttl", "2"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while emulator.model.get_dataset("dsusers0001")["status"] == "enable":
            assert process.poll() is None and time.monotonic() < deadline, process.stderr
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)  # AiTEMS is reading: the hand-over is recorded
        process.wait(timeout=60)

        with StateStore.open(state_url) as state:
            pending = state.handover("users")
            assert pending is not None and pending.object_key.endswith("users/users.csv.gz")
            assert state.get_mark("users") is None
        refused = setup.cli("run", "users", "--wait", "30")  # kill -9 kept the lease 2 s
        assert refused.exit_code == 1 and "bootstrap users` to finish" in refused.output

        args = register if finish == "from" else ["bootstrap", "users"]
        again = setup.cli(*args)

        assert again.exit_code == 0, again.output
        assert "finishing the hand-over of bootstrap" in again.stderr
        [load] = json.loads(again.stdout)["datasets"]
        assert load["file"] == setup.url("users/users.csv.gz")
        held = emulator.received("dsusers0001")
        assert held.rows_loaded == 2000 and held.rows_received == 0
        with StateStore.open(state_url) as state:
            assert state.handover("users") is None
            mark = state.get_mark("users")
            assert mark is not None and mark.cursor == CUTOFF
        ran = setup.cli("run", "users")
        assert ran.exit_code == 0 and json.loads(ran.stdout)["datasets"][0]["sent"] == 1000
    finally:
        emulator.stop()
        shop.close()


class CountingGets:
    """The real S3 client, with the ranges of its GETs recorded."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.ranges: list[str | None] = []

    def get_object(self, **kwargs: Any) -> Any:
        self.ranges.append(kwargs.get("Range"))
        return self.client.get_object(**kwargs)


def test_the_header_of_a_large_file_costs_one_ranged_get(setup: Setup) -> None:
    rows = [[f"u{i:07d}", i % 90, f"{i * 7919:x}"] for i in range(300_000)]
    setup.export("big/users.csv.gz", USERS, rows)
    key = setup.folder + "big/users.csv.gz"
    size = setup.s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"]
    client = CountingGets(setup.s3)

    header = read_header(client, ExportFile(BUCKET, key, size))

    assert header == USERS and size > 10 * CHUNK_BYTES
    assert client.ranges == [f"bytes=0-{CHUNK_BYTES - 1}"]


@pytest.mark.parametrize(("header", "lines"), [
    (USERS, []),
    (["USER_ID", "AGE", "AGE"], ["column 3 'AGE' repeats column 2", "field 'GENDER' has no "
                                                                      "column"]),
    ([" USER_ID", "AGE", "GENDER"], ["column 1 ' USER_ID' is field 'USER_ID' written otherwise "
                                     "(names must match exactly: letter case, no spaces)"]),
    (["GENDER", "AGE", "USER_ID"], ["the columns are in another order than the fields"]),
    (["AGE", "user_id", "GENDER"], ["column 2 'user_id' is field 'USER_ID' written otherwise "
                                    "(names must match exactly: letter case, no spaces)",
                                    "the columns are in another order than the fields"]),
    ([], ["field 'USER_ID' has no column", "field 'AGE' has no column",
          "field 'GENDER' has no column"]),
])
def test_how_a_header_differs_from_the_fields(header: list[str], lines: list[str]) -> None:
    assert header_diff(USERS, header) == lines
