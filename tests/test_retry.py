"""`quarantine retry`: after a spec fix the quarantined rows go out once and leave the
quarantine; a row whose key was delivered again since is dropped, never sent over the newer."""

from __future__ import annotations

import json
import sqlite3
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
                     "sent": 2, "refused": 0, "batches": 1, "from_source": 2,
                     "not_at_source": 0}
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


def test_an_entry_from_before_schema_9_whose_key_was_delivered_since_is_closed_by_retry(
        tmp_path: Path, emulator: EmulatorServer, shop: Shop) -> None:
    """Entries stored before version 9 have no key hash: no commit can close them, retry does
    (the source's row is what the ledger holds), and sends nothing twice."""
    strict = spec(tmp_path, emulator, shop, strict=True)
    assert cli(strict, "run", "users").exit_code == 0
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute("UPDATE quarantine SET key_hash = NULL")
    shop.update_customer("u00002", age=30, updated_at=T0 + timedelta(days=1))
    assert cli(strict, "run", "users").exit_code == 0
    assert quarantined(strict) == ["u00002", "u00006"]

    report = retry(strict)

    assert (report["already_delivered"], report["still_invalid"], report["sent"]) == (1, 1, 0)
    assert quarantined(strict) == ["u00006"]
    delivered = [r for r in emulator.received("dsusers0001").deliveries
                 if r["USER_ID"] == "u00002"]
    assert len(delivered) == 1


def test_retry_reads_a_row_fixed_at_the_source_and_sends_it(
        tmp_path: Path, emulator: EmulatorServer, shop: Shop) -> None:
    """Issue 23: a fix that left the cursor alone (a run would not read the row again) used to
    stay "still invalid", since retry checked only the stored copy."""
    strict = spec(tmp_path, emulator, shop, strict=True)
    assert cli(strict, "run", "users").exit_code == 0
    shop.update_customer("u00002", age=41)  # updated_at untouched

    report = retry(strict)

    assert (report["from_source"], report["sent"], report["still_invalid"]) == (2, 1, 1)
    assert quarantined(strict) == ["u00006"]
    entries = json.loads(cli(strict, "quarantine", "list", "--all").stdout)["rows"]
    assert [(e["key"]["USER_ID"], e["status"]) for e in entries] == [
        ("u00002", "resolved"), ("u00006", "open")]
    assert entries[0]["raw"]["AGE"] == -1  # the rejected version, kept for audit
    held = {r["USER_ID"]: r["AGE"] for r in emulator.received("dsusers0001").rows}
    assert held["u00002"] == 41
    assert cli(strict, "run", "users").exit_code == 0  # the next run does not send it again
    assert len([r for r in emulator.received("dsusers0001").deliveries
                if r["USER_ID"] == "u00002"]) == 1


def test_retry_leaves_a_row_deleted_at_the_source_as_it_was(
        tmp_path: Path, emulator: EmulatorServer, shop: Shop) -> None:
    """The stored copy is not sent in its stead, even where the spec now accepts it: AiTEMS
    would get back a row the source deleted."""
    strict = spec(tmp_path, emulator, shop, strict=True)
    assert cli(strict, "run", "users").exit_code == 0
    shop.delete_customer("u00002")

    report = retry(spec(tmp_path, emulator, shop, strict=False))

    assert (report["from_source"], report["not_at_source"], report["sent"]) == (2, 1, 1)
    assert quarantined(strict) == ["u00002"]
    assert "u00002" not in {r["USER_ID"] for r in emulator.received("dsusers0001").rows}
    text = CliRunner().invoke(main_group, ["--config", str(strict), "quarantine", "retry"])
    assert "read again from the source 1 (no longer there: 1, left as they were)" in (
        text.stdout)


def test_retry_reads_an_event_fixed_at_the_source_by_its_key(
        tmp_path: Path, emulator: EmulatorServer) -> None:
    """An interaction dataset with a key of its own: the event is read again by it."""
    shop = Shop(f"sqlite:///{tmp_path / 'shop.db'}")
    shop.add_events([(i, f"u{i}", f"i{i}", "view", T0 + timedelta(seconds=i))
                     for i in range(1, 6)])
    shop.update_event(3, event_type="oops")
    events_key = ("key: [event_id]\n    max_invalid: 50%\n"
                  "    json_schema: {properties: {EVENT_TYPE: {enum: [view, buy]}}}")
    path = write_spec(tmp_path / "sync.yaml", endpoint=emulator.base_url, source_url=shop.url,
                      state_url=f"sqlite:///{tmp_path / 'state.db'}", events_key=events_key)
    assert cli(path, "run", "events").exit_code == 0
    shop.update_event(3, event_type="buy")

    result = cli(path, "quarantine", "retry", "events")

    assert result.exit_code == 0, result.output
    [report] = json.loads(result.stdout)
    assert (report["from_source"], report["sent"]) == (1, 1)
    entries = json.loads(cli(path, "quarantine", "list", "--all").stdout)["rows"]
    assert [(e["key"], e["status"]) for e in entries] == [({"event_id": 3}, "resolved")]
    types = sorted(r["EVENT_TYPE"] for r in emulator.received("dsevent0001").deliveries)
    assert types == ["buy", "view", "view", "view", "view"]
    shop.close()
