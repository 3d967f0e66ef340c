"""`plan`: a dry run whose counts are exactly what the next `run` sends, and which changes
nothing: no upload, no mark, no ledger, no quarantine, no lease, no run record, no state store
created and none migrated."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from aitems_sync.cli.main import main_group
from aitems_sync.emulator.server import EmulatorServer
from aitems_sync.state.tables import LATEST_VERSION

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "sync.yaml"
COUNTS = ("read", "new", "changed", "unchanged", "invalid", "sent", "batches")

sys.path.insert(0, str(ROOT / "examples"))
import make_sample_db  # noqa: E402


@pytest.fixture
def demo(tmp_path: Path, emulator: EmulatorServer) -> dict[str, str]:
    """The demo spec on a fresh sample shop and state store in tmp_path."""
    make_sample_db.create(tmp_path / "shop.db", users=1500, items=800, events=5000, seed=3)
    return {"AITEMS_ENDPOINT": emulator.base_url,
            "SHOP_DATABASE_URL": f"sqlite:///{tmp_path / 'shop.db'}",
            "AITEMS_SYNC_STATE": f"sqlite:///{tmp_path / 'state.db'}"}


def cli(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main_group, ["--config", str(EXAMPLE), "--json", *args], env=env)


def counts(result: Result) -> dict[str, dict[str, Any]]:
    report = json.loads(result.stdout)
    return {d["dataset"]: {k: d[k] for k in COUNTS} for d in report["datasets"]}


def state_fingerprint(path: Path) -> tuple[str, list[str]]:
    """The state file's bytes (hashed) and a full SQL dump."""
    db = sqlite3.connect(path)
    dump = list(db.iterdump())
    db.close()
    return hashlib.sha256(path.read_bytes()).hexdigest(), dump


def change_rows(shop: Path) -> None:
    db = sqlite3.connect(shop)
    db.execute("UPDATE customers SET age = coalesce(age, 20) + 1, updated_at = '2026-09-01 "
               "00:00:00' WHERE id IN (SELECT id FROM customers ORDER BY id LIMIT 40)")
    db.execute("UPDATE customers SET updated_at = '2026-09-01 00:00:00' "
               "WHERE id IN (SELECT id FROM customers ORDER BY id DESC LIMIT 7)")
    db.execute("UPDATE products SET category = NULL, updated_at = '2027-09-01 00:00:00' "
               "WHERE id IN (SELECT id FROM products ORDER BY id LIMIT 3)")
    db.executemany("INSERT INTO events VALUES (?, 'u000001', 'i000002', 'view', ?)",
                   [(100_000 + i, f"2026-09-01 00:{i // 60:02d}:{i % 60:02d}")
                    for i in range(1234)])
    db.commit()
    db.close()


def test_plan_on_a_new_state_counts_what_the_first_run_sends(demo: dict[str, str]) -> None:
    planned = cli(demo, "plan")
    ran = cli(demo, "run")

    assert planned.exit_code == 0, planned.output
    assert ran.exit_code == 0, ran.output
    assert counts(planned) == counts(ran)
    assert counts(planned)["events"]["sent"] == 5000


def test_plan_after_changes_counts_exactly_the_delta_and_changes_nothing(
        demo: dict[str, str], emulator: EmulatorServer, tmp_path: Path) -> None:
    assert cli(demo, "run").exit_code == 0
    change_rows(tmp_path / "shop.db")
    uploads = {d: emulator.received(d).uploads for d in ("dsusers0001", "dsevent0001")}
    before = state_fingerprint(tmp_path / "state.db")

    planned = cli(demo, "plan")

    assert planned.exit_code == 0, planned.output
    assert state_fingerprint(tmp_path / "state.db") == before
    assert {d: emulator.received(d).uploads for d in uploads} == uploads
    ran = cli(demo, "run")
    assert counts(planned) == counts(ran)
    users = counts(ran)["users"]
    # 40 changed and 7 touched rows, plus whatever the 10-minute lookback re-reads
    assert (users["changed"], users["new"], users["sent"], users["batches"]) == (40, 0, 40, 1)
    assert users["unchanged"] == users["read"] - 40 >= 7
    assert counts(ran)["events"]["sent"] == 1234


def test_plan_exit_code_says_whether_there_is_something_to_send(demo: dict[str, str]) -> None:
    assert cli(demo, "plan", "--exit-code").exit_code == 1
    assert cli(demo, "run").exit_code == 0

    assert cli(demo, "plan", "--exit-code").exit_code == 0


# -- a store plan must not create or migrate ---------------------------------------------------


def files_under(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path -> hash of its bytes)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_plan_without_a_state_store_creates_nothing_and_reports_every_row_new(
        demo: dict[str, str], tmp_path: Path) -> None:
    state = tmp_path / "state" / "new" / "state.db"
    env = {**demo, "AITEMS_SYNC_STATE": f"sqlite:///{state}"}
    before = files_under(tmp_path)

    planned = cli(env, "plan")

    assert planned.exit_code == 0, planned.output
    assert files_under(tmp_path) == before
    assert not (tmp_path / "state").exists()
    assert "migrating" not in planned.stderr
    for dataset in counts(planned).values():
        assert dataset["new"] == dataset["read"] == dataset["sent"] > 0
        assert dataset["changed"] == dataset["unchanged"] == 0
    ran = cli(env, "run")  # the first run creates the store, announced in one line
    assert counts(ran) == counts(planned)
    assert "migrating" not in ran.stderr


def test_plan_on_an_empty_postgresql_database_creates_no_table(
        demo: dict[str, str], pg_url: str) -> None:
    env = {**demo, "AITEMS_SYNC_STATE": pg_url}
    planned = cli(env, "plan")

    assert planned.exit_code == 0, planned.output
    assert counts(planned)["events"]["new"] == 5000
    engine = sa.create_engine(pg_url)
    try:
        assert sa.inspect(engine).get_table_names() == []
        assert cli(env, "run").exit_code == 0
        replanned = cli(env, "plan")  # the store as the run left it, read in place
        assert replanned.exit_code == 0, replanned.output
        assert counts(replanned)["events"]["sent"] == 0
    finally:
        engine.dispose()


def as_version_8(path: Path) -> None:
    """Take a current store back to schema version 8: leases without the process token."""
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE leases DROP COLUMN process")
    db.execute("UPDATE schema_version SET version = 8")
    db.commit()
    db.close()


def test_plan_on_an_older_store_changes_no_byte_and_says_how_to_migrate(
        demo: dict[str, str], tmp_path: Path) -> None:
    assert cli(demo, "run").exit_code == 0
    change_rows(tmp_path / "shop.db")
    as_version_8(tmp_path / "state.db")
    before = files_under(tmp_path), state_fingerprint(tmp_path / "state.db")

    refused = cli(demo, "plan")

    assert refused.exit_code == 1
    assert (files_under(tmp_path), state_fingerprint(tmp_path / "state.db")) == before
    assert f"has schema version 8, older than this aitems-sync's {LATEST_VERSION}" in \
        refused.stderr
    assert "plan reads a store as it is and never migrates one" in refused.stderr
    assert "migrating" not in refused.stderr
    migrated = cli(demo, "state", "show")  # as the message says: it migrates and sends nothing
    assert migrated.exit_code == 0, migrated.output
    assert "migrating the state store" in migrated.stderr
    planned = cli(demo, "plan")
    assert planned.exit_code == 0, planned.output
    assert counts(planned)["users"]["changed"] == 40
