"""`quarantine retry`: after a spec fix the quarantined rows go out once and leave the
quarantine; a row whose key was delivered again since is dropped, never sent over the newer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from aitems_sync.cli.main import main_group
from aitems_sync.emulator.server import EmulatorServer
from aitems_sync.rows.encode import ROW_HASH
from tests.conftest import register_dataset
from tests.shop import T0, Shop, customer_rows, write_spec

STRICT = "    json_schema: {properties: {AGE: {minimum: 0}}}"


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    shop = Shop(f"sqlite:///{tmp_path / 'shop.db'}")
    shop.add_customers(customer_rows(10))
    shop.update_customer("u00002", age=-1)
    shop.update_customer("u00006", age=-7)
    yield shop
    shop.close()


def spec(tmp_path: Path, emulator: EmulatorServer, shop: Shop, *, strict: bool) -> Path:
    return write_spec(tmp_path / "sync.yaml", endpoint=emulator.base_url, source_url=shop.url,
                      state_url=f"sqlite:///{tmp_path / 'state.db'}",
                      extra=STRICT if strict else "")


def cli(path: Path, *args: str) -> Result:
    return CliRunner().invoke(main_group, ["--config", str(path), "--json", *args])


def retry(path: Path) -> dict[str, int]:
    result = cli(path, "quarantine", "retry", "users")
    assert result.exit_code == 0, result.output
    [report] = json.loads(result.stdout)
    return {k: v for k, v in report.items() if k != "dataset"}


def quarantined(path: Path) -> list[str]:
    result = cli(path, "quarantine", "list")
    return [r["key"]["USER_ID"] for r in json.loads(result.stdout)["rows"]]


def test_retry_after_a_spec_fix_delivers_the_rows_once_and_empties_the_quarantine(
        tmp_path: Path, emulator: EmulatorServer, shop: Shop) -> None:
    strict = spec(tmp_path, emulator, shop, strict=True)
    assert cli(strict, "run", "users").exit_code == 0
    assert quarantined(strict) == ["u00002", "u00006"]

    fixed = spec(tmp_path, emulator, shop, strict=False)
    first = retry(fixed)
    second = retry(fixed)

    assert first == {"checked": 2, "still_invalid": 0, "already_delivered": 0, "superseded": 0,
                     "sent": 2, "refused": 0, "batches": 1}
    assert second["checked"] == 0
    assert quarantined(fixed) == []
    delivered = [r["USER_ID"] for r in emulator.received("dsusers0001").deliveries]
    assert sorted(delivered) == [f"u{i:05d}" for i in range(10)]
    held = {r["USER_ID"]: r for r in emulator.received("dsusers0001").rows}
    assert held["u00002"] == {"USER_ID": "u00002", "AGE": -1, "GENDER": "F"}


def test_retry_without_a_fix_keeps_the_rows_quarantined(
        tmp_path: Path, emulator: EmulatorServer, shop: Shop) -> None:
    strict = spec(tmp_path, emulator, shop, strict=True)
    assert cli(strict, "run", "users").exit_code == 0

    report = retry(strict)

    assert report["still_invalid"] == 2
    assert report["sent"] == 0
    assert quarantined(strict) == ["u00002", "u00006"]


@pytest.mark.parametrize("scheme", [ROW_HASH, "blake2b-64"])
def test_a_row_whose_fix_a_run_delivered_is_closed_then_and_not_sent_again(
        tmp_path: Path, emulator: EmulatorServer, shop: Shop, scheme: str) -> None:
    """Whichever row hash the dataset's ledger is written with (BLAKE2b: a dataset registered
    before state schema version 4)."""
    strict = spec(tmp_path, emulator, shop, strict=True)
    if scheme != ROW_HASH:
        register_dataset(f"sqlite:///{tmp_path / 'state.db'}", "users", scheme)
    assert cli(strict, "run", "users").exit_code == 0
    # The data is fixed at the source and the fixed version delivered by the next run.
    shop.update_customer("u00002", age=30, updated_at=T0 + timedelta(days=1))
    assert cli(strict, "run", "users").exit_code == 0
    assert quarantined(strict) == ["u00006"]  # closed by the commit that delivered the fix

    report = retry(spec(tmp_path, emulator, shop, strict=False))

    assert (report["checked"], report["sent"]) == (1, 1)  # u00006
    assert quarantined(strict) == []
    received = emulator.received("dsusers0001")
    assert [r for r in received.deliveries if r["USER_ID"] == "u00002"] == [
        {"USER_ID": "u00002", "AGE": 30, "GENDER": "F"}]
