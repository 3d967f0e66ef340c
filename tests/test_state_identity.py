"""The state store knows what it is and whom its marks belong to: an empty or foreign file is
refused rather than taken for a new store, and a spec that points a dataset at another AiTEMS
dataset is refused until the operator says what it means (``state reset``)."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from aitems_sync.cli.main import main_group
from aitems_sync.emulator.server import EmulatorServer
from tests.shop import T0, Shop, customer_rows, write_spec


def cli(spec: Path, *args: str) -> Result:
    return CliRunner().invoke(main_group, ["--config", str(spec), *args])


@pytest.fixture
def shop(tmp_path: Path) -> Shop:
    shop = Shop(f"sqlite:///{tmp_path / 'shop.db'}")
    shop.add_customers(customer_rows(40))
    shop.add_events([(n, f"u{n % 7:05d}", f"i{n % 5}", "view", T0 + timedelta(seconds=n))
                     for n in range(1, 31)])
    return shop


def spec_for(tmp_path: Path, emulator: EmulatorServer, shop: Shop, state: Path) -> Path:
    return write_spec(tmp_path / "sync.yaml", endpoint=emulator.base_url, source_url=shop.url,
                      state_url=f"sqlite:///{state}")


def received(emulator: EmulatorServer) -> int:
    return sum(emulator.received(d).rows_received for d in ("dsusers0001", "dsevent0001"))


def test_an_empty_state_file_is_refused_and_nothing_is_sent(
    tmp_path: Path, emulator: EmulatorServer, shop: Shop
) -> None:
    state = tmp_path / "state.db"
    spec = spec_for(tmp_path, emulator, shop, state)
    assert cli(spec, "run").exit_code == 0
    state.write_bytes(b"")  # a store that lost its content
    for leftover in tmp_path.glob("state.db-*"):
        leftover.unlink()
    sent = received(emulator)

    result = cli(spec, "run")

    assert result.exit_code == 1
    assert f"the state store sqlite:///{state} is an empty file (0 bytes)" in result.stderr
    assert "Traceback" not in result.stderr
    assert received(emulator) == sent
    assert state.stat().st_size == 0


def test_a_database_that_is_not_a_state_store_is_refused(
    tmp_path: Path, emulator: EmulatorServer, shop: Shop
) -> None:
    spec = spec_for(tmp_path, emulator, shop, tmp_path / "shop.db")  # the source, by mistake

    result = cli(spec, "run")

    assert result.exit_code == 1
    assert "is an existing database that is not an aitems-sync state store" in result.stderr
    assert received(emulator) == 0
    with closing(sqlite3.connect(tmp_path / "shop.db")) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert "schema_version" not in tables


def test_a_missing_state_file_is_created_private_and_whole(
    tmp_path: Path, emulator: EmulatorServer, shop: Shop
) -> None:
    state = tmp_path / "deep" / "state.db"
    spec = spec_for(tmp_path, emulator, shop, state)

    result = cli(spec, "run")

    assert result.exit_code == 0, result.stderr
    assert state.stat().st_mode & 0o777 == 0o600
    assert not list(state.parent.glob(".state.db.*"))  # the temporary name is gone


def test_a_changed_dataset_id_is_refused_until_the_dataset_is_reset(
    tmp_path: Path, emulator: EmulatorServer, shop: Shop
) -> None:
    state = tmp_path / "state.db"
    spec = spec_for(tmp_path, emulator, shop, state)
    assert cli(spec, "run").exit_code == 0
    spec.write_text(spec.read_text().replace("dataset_id: dsusers0001", "dataset_id: dsusers0002"))
    sent = received(emulator)

    refused_run = cli(spec, "run")
    refused_plan = cli(spec, "plan")
    refused_retry = cli(spec, "quarantine", "retry", "users")
    after_reset = cli(spec, "state", "reset", "users", "--yes")
    planned = cli(spec, "--json", "plan", "users")

    for refused in (refused_run, refused_plan, refused_retry):
        assert refused.exit_code == 2
        assert "datasets.users.dataset_id: the state store's mark and ledger of dataset users " \
               "were delivered to AiTEMS dataset dsusers0001 of service svcdemo0001, but the " \
               "spec names dataset dsusers0002" in refused.stderr
        assert "aitems-sync state reset users" in refused.stderr
    assert received(emulator) == sent
    assert after_reset.exit_code == 0
    [users] = json.loads(planned.stdout)["datasets"]
    assert (users["new"], users["unchanged"]) == (40, 0)


def test_an_unchanged_dataset_id_runs_as_before(
    tmp_path: Path, emulator: EmulatorServer, shop: Shop
) -> None:
    spec = spec_for(tmp_path, emulator, shop, tmp_path / "state.db")
    assert cli(spec, "run").exit_code == 0
    shop.update_customer("u00003", age=99, updated_at=T0 + timedelta(days=1))

    result = cli(spec, "--json", "run")

    assert result.exit_code == 0, result.stderr
    sent = {d["dataset"]: d["sent"] for d in json.loads(result.stdout)["datasets"]}
    assert sent == {"users": 1, "events": 0}
