"""`apply` end to end on loopback: an empty emulator reading files from moto's S3 server, a
SQLite or PostgreSQL shop. apply creates the schemas and the service, bootstrap the datasets,
apply attaches them, sets the cycle and starts the schedule; a second apply plans nothing. A field
change is refused without --allow-replace and, with it, replaces the dataset in the documented
order."""

from __future__ import annotations

import csv
import gzip
import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from aitems_sync.cli.main import main_group
from aitems_sync.emulator.lifecycle import Timing
from aitems_sync.emulator.objectstorage import ObjectStorage
from aitems_sync.emulator.server import EmulatorServer
from tests.conftest import S3Server, source_and_state_urls
from tests.shop import T0, Shop, customer_rows

BUCKET = "apply-e2e"

SPEC = """\
version: 1
aitems:
  endpoint: {endpoint}
  access_key: {access_key}
  secret_key: {secret_key}
  retry: {{attempts: 3, backoff: 0.01s, max_backoff: 0.05s}}
state: "{state_url}"
sources:
  shop: {{url: "{source_url}"}}
object_storage: {{endpoint: "{s3}", bucket: {bucket}, prefix: "{prefix}"}}
service: {{name: shop-recs, type: interval, cycle: 3h}}
datasets:
  users:
    type: user
    dataset_name: shop-users
    query: SELECT id AS USER_ID, age AS AGE, gender AS GENDER, updated_at FROM customers
    cursor: updated_at
    fields:
      - {{name: USER_ID, type: string}}
      - {{name: AGE, type: [int, "null"]}}
      - {{name: GENDER, type: [string, "null"], categorical: true}}
  items:
    type: item
    dataset_name: shop-items
    query: SELECT item_id AS ITEM_ID, MAX(occurred_at) AS seen FROM events GROUP BY item_id
    cursor: seen
    fields:
      - {{name: ITEM_ID, type: string}}
  events:
    type: interaction
    dataset_name: shop-events
    schema_name: shop_events
    query: >-
      SELECT id AS event_id, user_id AS USER_ID, item_id AS ITEM_ID,
      occurred_at AS TIMESTAMP FROM events
    cursor: event_id
    key: [event_id]
    fields:
      - {{name: USER_ID, type: string}}
      - {{name: ITEM_ID, type: string}}
      - {{name: TIMESTAMP, type: long}}
"""


@dataclass
class Setup:
    shop: Shop
    emulator: EmulatorServer
    spec: Path
    s3: Any

    def cli(self, *args: str) -> Result:
        return CliRunner().invoke(main_group, ["--config", str(self.spec), "--json", *args])

    def ok(self, *args: str) -> dict[str, Any]:
        result = self.cli(*args)
        assert result.exit_code == 0, result.output
        answer: dict[str, Any] = json.loads(result.stdout)
        return answer

    def service(self) -> dict[str, Any]:
        (service,) = self.emulator.model.list_services({})["services"]
        return dict(service)

    def datasets(self) -> dict[str, dict[str, Any]]:
        return {d["datasetId"]: d for d in self.emulator.model.list_datasets({})["datasets"]}

    def named(self, name: str) -> list[dict[str, Any]]:
        return [d for d in self.datasets().values() if d["name"] == name]


@pytest.fixture(scope="module")
def bucket(s3_server: S3Server) -> S3Server:
    """moto's S3 server (checking SigV4 with the one key pair its IAM issued: the spec's aitems
    keys here, as NCP takes the same keys for AiTEMS and Object Storage), holding BUCKET."""
    return s3_server.with_bucket(BUCKET)


@pytest.fixture(params=["sqlite", "postgresql"])
def setup(request: pytest.FixtureRequest, tmp_path: Path, bucket: S3Server) -> Iterator[Setup]:
    source_url, state_url = source_and_state_urls(request, tmp_path)
    shop = Shop(source_url)
    shop.add_customers(customer_rows(500))
    shop.add_events([(n, f"u{n % 97:05d}", f"i{n % 31:03d}", "view", T0 + timedelta(seconds=n))
                     for n in range(300)])
    emulator = EmulatorServer(port=0, keys={bucket.access_key: bucket.secret_key},
                              object_storage=ObjectStorage(bucket.url),
                              timing=Timing(ingest_seconds=0.05))
    emulator.start()
    spec = tmp_path / "sync.yaml"
    spec.write_text(SPEC.format(endpoint=emulator.base_url, state_url=state_url,
                                source_url=source_url, s3=bucket.url, bucket=BUCKET,
                                prefix=f"t-{tmp_path.name}/", access_key=bucket.access_key,
                                secret_key=bucket.secret_key))
    try:
        yield Setup(shop, emulator, spec, bucket.client())
    finally:
        emulator.stop()
        shop.close()


def provision(setup: Setup) -> None:
    """apply, bootstrap, apply: the documented way from an empty AiTEMS to a running service."""
    setup.ok("apply", "--yes")
    setup.ok("bootstrap")
    setup.ok("apply", "--yes")


def test_apply_bootstrap_apply_provisions_an_empty_aitems_and_a_second_apply_plans_nothing(
    setup: Setup,
) -> None:
    first = setup.ok("apply", "--yes")

    created = [(c["action"], c["kind"], c["name"]) for c in first["changes"]]
    assert created == [("+", "schema", "shop-users"), ("+", "schema", "shop-items"),
                       ("+", "schema", "shop_events"), ("+", "service", "shop-recs"),
                       ("...", "dataset", "users"), ("...", "dataset", "items"),
                       ("...", "dataset", "events")]
    schemas = setup.emulator.model.list_schemas({})["schemas"]
    assert {s["name"]: s["datasetType"] for s in schemas} == {
        "shop-users": "user", "shop-items": "item", "shop_events": "interaction"}
    assert (setup.service()["type"], setup.service()["datasets"]) == ("interval", [])

    loaded = setup.ok("bootstrap")
    assert [(d["dataset"], d["status"], d["rows"]) for d in loaded["datasets"]] == [
        ("users", "ok", 500), ("items", "ok", 31), ("events", "ok", 300)]
    assert {d["name"]: d["status"] for d in setup.datasets().values()} == {
        "shop-users": "enable", "shop-items": "enable", "shop-events": "enable"}

    second = setup.ok("apply", "--yes")
    assert [(c["action"], c["kind"]) for c in second["changes"]] == [("~", "service")]
    service = setup.service()
    assert sorted(d["name"] for d in service["datasets"]) == [
        "shop-events", "shop-items", "shop-users"]
    assert (service["term"], service["schedule"]) == ("hour3", "running")

    again = setup.cli("apply", "--exit-code")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["changes"] == []


def test_after_provisioning_the_spec_the_file_aitems_and_run_all_agree(setup: Setup) -> None:
    provision(setup)

    pulled = setup.cli("schema", "pull", "users")
    assert pulled.exit_code == 0, pulled.output
    assert yaml.safe_load(pulled.stdout)["fields"] == [
        {"name": "USER_ID", "type": "string"}, {"name": "AGE", "type": ["int", "null"]},
        {"name": "GENDER", "type": ["string", "null"], "categorical": True}]
    # The users' file, read back with Python's csv module after gunzip: the rows, schema order.
    (users,) = setup.named("shop-users")
    body = setup.s3.get_object(Bucket=BUCKET, Key=users["osInfo"]["key"])["Body"].read()
    rows = list(csv.reader(io.StringIO(gzip.decompress(body).decode("utf-8"), newline="")))
    assert rows == [["USER_ID", "AGE", "GENDER"],
                    *([u, str(a), g] for u, a, g, _ in customer_rows(500))]

    for n in range(100):  # 100 users change after the snapshot
        setup.shop.update_customer(f"u{n * 5:05d}", age=71, updated_at=T0 + timedelta(days=2))
    ran = setup.ok("run")
    assert {d["dataset"]: d["sent"] for d in ran["datasets"]} == {
        "users": 100, "items": 0, "events": 0}
    assert sorted(r["USER_ID"] for r in setup.emulator.received(users["datasetId"]).deliveries
                  ) == [f"u{n * 5:05d}" for n in range(100)]

    status = setup.ok("status")
    assert {d["dataset"]: d["aitems_status"] for d in status["datasets"]} == {
        "users": "enable", "items": "enable", "events": "enable"}
    assert status["service"]["schedule"] == "running"

    setup.emulator.model.set_schedule(setup.service()["serviceId"], "stop")  # someone stops it
    stopped = setup.cli("status")
    assert stopped.exit_code == 1
    (alert,) = json.loads(stopped.stdout)["alerts"]
    assert "schedule is stopped, but the spec says schedule: true" in alert


def test_a_field_change_is_refused_with_the_diff_without_allow_replace(setup: Setup) -> None:
    provision(setup)
    before = setup.datasets()
    setup.spec.write_text(setup.spec.read_text().replace(
        '      - {name: GENDER, type: [string, "null"], categorical: true}\n',
        '      - {name: GENDER, type: [string, "null"]}\n', 1))

    refused = CliRunner().invoke(main_group, ["--config", str(setup.spec), "apply", "--yes"])

    assert refused.exit_code == 2, refused.output
    assert "! dataset users" in refused.output and "--allow-replace" in refused.output
    assert "- GENDER: [string, \"null\"] (categorical)" in refused.output
    assert "+ GENDER: [string, \"null\"]" in refused.output
    assert setup.datasets() == before  # nothing changed at AiTEMS
    assert setup.service()["schedule"] == "running"
    drift = setup.cli("apply", "--exit-code")
    assert drift.exit_code == 2  # a refused change is not something --exit-code can pass


def test_allow_replace_replaces_the_dataset_in_the_documented_order(setup: Setup) -> None:
    provision(setup)
    (old,) = setup.named("shop-users")
    setup.spec.write_text(setup.spec.read_text().replace(
        '      - {name: GENDER, type: [string, "null"], categorical: true}\n',
        '      - {name: GENDER, type: [string, "null"]}\n', 1))

    replaced = setup.ok("apply", "--allow-replace", "--yes")

    steps = [step.split(" ")[0] for step in replaced["applied"]]
    assert steps == ["created", "replaced", "stopped", "attached", "started"]
    assert "schema shop-users_2" in replaced["applied"][0]
    new = next(d for d in setup.named("shop-users") if d["datasetId"] != old["datasetId"])
    assert new["schemaName"] == "shop-users_2" and new["status"] == "enable"
    service = setup.service()
    assert new["datasetId"] in {d["datasetId"] for d in service["datasets"]}
    assert old["datasetId"] not in {d["datasetId"] for d in service["datasets"]}
    assert setup.datasets()[old["datasetId"]]["connectedServices"] == []  # detached, kept
    assert service["schedule"] == "running"
    assert setup.emulator.received(new["datasetId"]).rows_loaded == 500
    # The state was handed over to the new dataset: a run sends nothing, then only changes.
    assert {d["dataset"]: d["sent"] for d in setup.ok("run")["datasets"]}["users"] == 0
    setup.shop.update_customer("u00007", age=70, updated_at=T0 + timedelta(days=3))
    assert {d["dataset"]: d["sent"] for d in setup.ok("run")["datasets"]}["users"] == 1
    assert setup.cli("apply", "--exit-code").exit_code == 0


def test_exit_code_reports_drift_and_a_pipe_without_yes_is_refused(setup: Setup) -> None:
    provision(setup)
    setup.spec.write_text(setup.spec.read_text().replace("cycle: 3h", "cycle: 12h"))

    drift = setup.cli("apply", "--exit-code")
    assert drift.exit_code == 1, drift.output
    (change,) = json.loads(drift.stdout)["changes"]
    assert change["action"] == "~" and "cycle hour3 -> hour12" in change["details"]
    assert setup.service()["term"] == "hour3"  # --exit-code only plans

    piped = CliRunner().invoke(main_group, ["--config", str(setup.spec), "apply"])
    assert piped.exit_code == 2 and "--yes" in piped.output
    assert setup.service()["term"] == "hour3"

    setup.ok("apply", "--yes")
    assert (setup.service()["term"], setup.service()["schedule"]) == ("hour12", "running")


def test_a_replacement_stopped_before_the_attach_is_finished_by_the_next_apply_without_reloading(
    setup: Setup,
) -> None:
    setup.emulator.lifecycle.timing = Timing(ingest_seconds=0.05, train_seconds=60)
    provision(setup)  # its schedule starts a train that runs for 60 s
    (old,) = setup.named("shop-users")
    setup.spec.write_text(setup.spec.read_text().replace(
        '      - {name: GENDER, type: [string, "null"], categorical: true}\n',
        '      - {name: GENDER, type: [string, "null"]}\n', 1))

    stopped = setup.cli("apply", "--allow-replace", "--yes", "--timeout", "1")

    assert stopped.exit_code == 1 and "still training" in stopped.output
    (new,) = [d for d in setup.named("shop-users") if d["datasetId"] != old["datasetId"]]
    # Meanwhile a run goes to the dataset its marks are bound to (the new one), not a spec error.
    assert setup.cli("run").exit_code in (0, 1)
    for train in setup.emulator.model.list_trains(setup.service()["serviceId"], {})["trains"]:
        setup.emulator.model.finish_train(setup.service()["serviceId"], train["trainId"])

    finished = setup.ok("apply", "--yes")  # no --allow-replace: nothing is replaced again

    assert [step.split(" ")[0] for step in finished["applied"]] == ["stopped", "attached",
                                                                     "started"]
    assert finished["bootstraps"] == []
    assert {d["datasetId"] for d in setup.service()["datasets"]} >= {new["datasetId"]}
    assert len(setup.named("shop-users")) == 2
    assert setup.cli("apply", "--exit-code").exit_code == 0


def test_a_second_apply_while_one_runs_exits_75(setup: Setup) -> None:
    from aitems_sync.spec.load import load_spec
    from aitems_sync.state.store import StateStore

    store = StateStore.open(load_spec(setup.spec).state_url)
    try:
        store.acquire_lease("~apply", owner="another-apply", host="elsewhere", pid=1, ttl=60)
        held = setup.cli("apply", "--yes")
    finally:
        store.close()

    assert held.exit_code == 75 and "another-apply" in held.output
    assert setup.emulator.model.list_schemas({})["schemas"] == []  # it changed nothing


def test_an_apply_killed_while_aitems_reads_the_replacement_converges_on_the_next(
    setup: Setup,
) -> None:
    provision(setup)
    (old,) = setup.named("shop-users")
    setup.spec.write_text(setup.spec.read_text().replace(
        '      - {name: GENDER, type: [string, "null"], categorical: true}\n',
        '      - {name: GENDER, type: [string, "null"]}\n', 1))
    setup.emulator.lifecycle.timing = Timing(ingest_seconds=5)  # AiTEMS reads slowly
    applying = subprocess.Popen(
        [sys.executable, "-m", "aitems_sync", "--config", str(setup.spec), "apply",
         "--allow-replace", "--yes"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(setup.named("shop-users")) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    applying.send_signal(signal.SIGKILL)  # mid-replacement: the new dataset is being read
    applying.wait()
    assert len(setup.named("shop-users")) == 2, "the replacement never created its dataset"
    setup.emulator.lifecycle.timing = Timing(ingest_seconds=0.05)
    time.sleep(5.5)  # the killed apply's file is read (or not) by now

    again = setup.ok("apply", "--allow-replace", "--yes")  # the dead holder's leases: at once

    assert again["error"] is None
    attached = {d["datasetId"] for d in setup.service()["datasets"]}
    assert old["datasetId"] not in attached and setup.service()["schedule"] == "running"
    assert len(setup.named("shop-users")) == 2  # the left-over dataset was loaded, not a third
    assert setup.s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    assert setup.cli("apply", "--exit-code").exit_code == 0
    assert {d["dataset"]: d["sent"] for d in setup.ok("run")["datasets"]}["users"] == 0
