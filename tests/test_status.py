"""`status`: the service and each dataset, at AiTEMS (the emulator) and in the state store, with
an exit code to alert on: 1 when a dataset failed or is unknown to AiTEMS, or the latest train
failed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from aitems_sync.aitems.client import AitemsClient
from aitems_sync.cli.main import main_group
from aitems_sync.emulator.lifecycle import Timing
from aitems_sync.emulator.server import EmulatorServer, load_seed
from aitems_sync.spec.load import load_spec
from tests.conftest import DEMO_SEED
from tests.shop import Shop, customer_rows, write_spec

AGE_MINIMUM = "    json_schema: {properties: {AGE: {minimum: 0}}}"


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    """The emulator, its trains finishing in 50 ms."""
    server = EmulatorServer(seed=load_seed(DEMO_SEED), port=0,
                            timing=Timing(train_seconds=0.05))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def spec(tmp_path: Path, emulator: EmulatorServer) -> Iterator[Path]:
    """Users synced once: 20 rows, one quarantined (AGE -1); events never."""
    shop = Shop(f"sqlite:///{tmp_path / 'shop.db'}")
    shop.add_customers(customer_rows(20))
    shop.update_customer("u00003", age=-1)
    path = write_spec(tmp_path / "sync.yaml", endpoint=emulator.base_url, source_url=shop.url,
                      state_url=f"sqlite:///{tmp_path / 'state.db'}", extra=AGE_MINIMUM)
    assert cli(path, "run", "users").exit_code == 0
    yield path
    shop.close()


def cli(spec: Path, *args: str) -> Result:
    return CliRunner().invoke(main_group, ["--config", str(spec), *args])


def status(spec: Path) -> tuple[int, dict[str, Any]]:
    result = cli(spec, "--json", "status")
    assert "Traceback" not in result.output
    return result.exit_code, json.loads(result.stdout)


def test_status_shows_the_service_each_dataset_and_its_last_run(spec: Path) -> None:
    code, report = status(spec)

    assert code == 0 and report["alerts"] == []
    service = report["service"]
    assert (service["service_id"], service["name"], service["type"]) == (
        "svcdemo0001", "demo", "interval")
    assert service["schedule"] == "stopped" and service["trains"] == []
    by_name = {d["dataset"]: d for d in report["datasets"]}
    users, events = by_name["users"], by_name["events"]
    assert (users["aitems_status"], users["schema_name"]) == ("enable", "demo_users")
    assert users["last_run"]["sent"] == 19 and users["last_run"]["invalid"] == 1
    assert users["last_run"]["status"] == "ok" and users["quarantined"] == 1
    assert users["mark"] is not None and users["lease_owner"] is None
    assert (events["aitems_status"], events["last_run"], events["mark"]) == ("enable", None, None)


def test_the_human_report_is_a_table_and_names_what_is_wrong(spec: Path) -> None:
    result = cli(spec, "status", "users")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("service svcdemo0001 (demo): type interval")
    assert lines[1].split()[:4] == ["dataset", "aitems", "schema", "last"]
    assert lines[2].split()[:3] == ["users", "enable", "demo_users"]
    assert not [line for line in lines if line.startswith("ALERT")]


def test_a_failed_train_alerts(spec: Path, emulator: EmulatorServer) -> None:
    # A train needs rows in all three datasets: items and events have none.
    with AitemsClient.from_config(load_spec(spec).aitems) as client:
        client.set_interval("svcdemo0001", "hour1")
        client.set_schedule("svcdemo0001", "start")
        deadline = time.monotonic() + 10
        while not (trains := client.list_trains("svcdemo0001", recent=True)) or \
                trains[0]["status"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)

    code, report = status(spec)

    assert code == 1
    [alert] = report["alerts"]
    assert alert.startswith(f"service svcdemo0001: the latest train {trains[0]['trainId']} "
                            "is failed: ")
    assert report["service"]["schedule"] == "running"
    human = cli(spec, "status")
    assert human.exit_code == 1 and f"ALERT: {alert}" in human.stdout


def test_a_dataset_aitems_does_not_know_alerts(spec: Path) -> None:
    spec.write_text(spec.read_text().replace("dataset_id: dsevent0001",
                                             "dataset_id: dsnosuch0001"))

    code, report = status(spec)

    assert code == 1
    [alert] = report["alerts"]
    assert alert.startswith("dataset events: ") and "404" in alert
    assert report["datasets"][0]["aitems_status"] == "enable"  # the others are still shown
