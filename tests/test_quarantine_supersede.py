"""A quarantine that tracks reality: the commit that delivers a later version of a quarantined key
closes its entry (``superseded``, kept for audit), and only a commit does.

Through the CLI, on real SQLite files and the emulator: the stumble of issue 23 (a row fixed at
the source, delivered, and still listed), a batch AiTEMS does not acknowledge, a run killed with
the batch on the wire, and a key read unchanged after its invalid version.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from aitems_sync.cli.main import main_group
from aitems_sync.emulator.server import EmulatorServer, Faults
from aitems_sync.state.store import StateStore
from tests.shop import T0, Shop, customer_rows, write_spec

ROOT = Path(__file__).resolve().parent.parent
AGE_MINIMUM = "    json_schema: {properties: {AGE: {minimum: 0}}}"


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    shop = Shop(f"sqlite:///{tmp_path / 'shop.db'}")
    shop.add_customers(customer_rows(20))
    shop.update_customer("u00003", age=-1)
    yield shop
    shop.close()


@pytest.fixture
def spec(tmp_path: Path, emulator: EmulatorServer, shop: Shop) -> Path:
    """Users with AGE at least 0, synced once: u00003 (AGE -1) quarantined."""
    path = write_spec(tmp_path / "sync.yaml", endpoint=emulator.base_url, source_url=shop.url,
                      state_url=f"sqlite:///{tmp_path / 'state.db'}", extra=AGE_MINIMUM,
                      max_invalid="100%")
    assert run(path)["datasets"][0]["invalid"] == 1
    return path


def cli(spec: Path, *args: str) -> Result:
    return CliRunner().invoke(main_group, ["--config", str(spec), "--json", *args])


def run(spec: Path, exit_code: int = 0) -> Any:
    result = cli(spec, "run", "users")
    assert result.exit_code == exit_code, result.output
    return json.loads(result.stdout)


def listed(spec: Path, *flags: str) -> list[dict[str, Any]]:
    result = cli(spec, "quarantine", "list", *flags)
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = json.loads(result.stdout)["rows"]
    return rows


def fix_u00003(shop: Shop, age: int = 30, days: int = 1) -> None:
    """The data fixed at the source: a valid AGE and a later updated_at."""
    shop.update_customer("u00003", age=age, updated_at=T0 + timedelta(days=days))


def test_a_row_fixed_at_the_source_leaves_the_quarantine_with_the_commit_that_delivers_it(
        spec: Path, shop: Shop, emulator: EmulatorServer) -> None:
    [entry] = listed(spec)
    assert (entry["key"], entry["status"]) == ({"USER_ID": "u00003"}, "open")
    fix_u00003(shop)

    report = run(spec)

    assert listed(spec) == []
    [closed] = listed(spec, "--all")
    assert (closed["id"], closed["status"], closed["resolved_by"]) == (
        entry["id"], "superseded", report["run_id"])
    assert closed["raw"]["AGE"] == -1  # the rejected version, kept for audit
    retried = cli(spec, "quarantine", "retry", "users")
    assert json.loads(retried.stdout)[0]["checked"] == 0  # nothing left to say "still invalid"
    state = json.loads(cli(spec, "state", "show").stdout)
    assert {s["dataset"]: s["quarantined"] for s in state}["users"] == 0
    held = {r["USER_ID"]: r["AGE"] for r in emulator.received("dsusers0001").rows}
    assert held["u00003"] == 30


def test_the_entry_stays_open_while_the_batch_delivering_the_fix_is_not_acknowledged(
        spec: Path, shop: Shop, emulator: EmulatorServer) -> None:
    fix_u00003(shop)
    emulator.set_faults(Faults(status_rate=1.0, status_choices=(503,), retry_after=None))

    failed = run(spec, exit_code=1)

    assert failed["datasets"][0]["sent"] == 0
    assert [e["status"] for e in listed(spec)] == ["open"]
    emulator.set_faults(Faults())
    run(spec)
    assert listed(spec) == []
    assert [e["status"] for e in listed(spec, "--all")] == ["superseded"]


def test_a_run_killed_with_the_fix_on_the_wire_leaves_the_entry_open_until_a_run_commits(
        spec: Path, shop: Shop, emulator: EmulatorServer, tmp_path: Path) -> None:
    fix_u00003(shop)
    emulator.set_faults(Faults(latency=5.0))
    process = subprocess.Popen(
        [sys.executable, "-m", "aitems_sync", "--config", str(spec), "--json", "run", "users",
         "--lease-ttl", "1"],  # the dead run's lease lapses a second after its last renewal
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        _wait_for_a_batch_sending(f"sqlite:///{tmp_path / 'state.db'}", process)
        process.send_signal(signal.SIGKILL)  # the request left; no answer came back
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert [e["status"] for e in listed(spec)] == ["open"]
    emulator.set_faults(Faults())
    result = cli(spec, "run", "users", "--wait=30")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["datasets"][0]["ambiguous"]  # the batch the kill left
    assert [e["status"] for e in listed(spec, "--all")] == ["superseded"]


def _wait_for_a_batch_sending(state_url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before its batch went out"
        with StateStore.open(state_url) as store:
            if store.batches("users", status="sending"):
                time.sleep(0.2)  # journalled before the request leaves: let it leave
                return
        time.sleep(0.02)
    raise AssertionError("no batch was journalled sending within 30 s")


def test_a_key_read_unchanged_after_its_invalid_version_closes_the_entry(
        tmp_path: Path, emulator: EmulatorServer) -> None:
    """AiTEMS holds the version the source went back to: nothing to send, the entry closes."""
    shop = Shop(f"sqlite:///{tmp_path / 'shop.db'}")
    shop.add_customers(customer_rows(5))
    spec = write_spec(tmp_path / "sync.yaml", endpoint=emulator.base_url, source_url=shop.url,
                      state_url=f"sqlite:///{tmp_path / 'state.db'}", extra=AGE_MINIMUM,
                      max_invalid="100%")
    run(spec)
    shop.update_customer("u00003", age=-1, updated_at=T0 + timedelta(days=1))
    run(spec)
    assert [e["status"] for e in listed(spec)] == ["open"]
    shop.update_customer("u00003", age=23, updated_at=T0 + timedelta(days=2))  # as delivered

    report = run(spec)

    assert report["datasets"][0]["unchanged"] >= 1 and report["datasets"][0]["sent"] == 0
    assert listed(spec) == []
    assert [e["status"] for e in listed(spec, "--all")] == ["superseded"]
    assert len(emulator.received("dsusers0001").deliveries) == 5
    shop.close()


def test_an_invalid_version_after_the_delivered_one_stays_open(
        spec: Path, shop: Shop) -> None:
    """A later version that is invalid again is a new entry; the older one is closed with the
    delivery that came between them, the newer stays open."""
    fix_u00003(shop)
    run(spec)
    shop.update_customer("u00003", age=-5, updated_at=T0 + timedelta(days=2))

    run(spec)

    assert [(e["raw"]["AGE"], e["status"]) for e in listed(spec, "--all")] == [
        (-1, "superseded"), (-5, "open")]
