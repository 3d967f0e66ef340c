"""The published JSON Schemas of `run`/`plan --json` reports and of the error object
(docs/schemas/) hold for real output: a clean run, invalid rows, an ambiguous batch, a failed
dataset, a plan, a spec error and a held lease; and they list every key the code writes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from jsonschema import Draft202012Validator

from aitems_sync.cli.main import main_group
from aitems_sync.emulator.faults import Faults
from aitems_sync.state.store import StateStore
from aitems_sync.sync.report import AmbiguousBatch, DatasetReport, RunReport
from tests.conftest import EmulatorServer
from tests.shop import Shop, customer_rows, write_spec

SCHEMAS = Path(__file__).resolve().parent.parent / "docs" / "schemas"


def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def cli(spec: Path, *args: str) -> tuple[int, Any]:
    result = CliRunner().invoke(main_group, ["--config", str(spec), "--json", *args])
    return result.exit_code, json.loads(result.stdout)


def assert_valid(name: str, document: Any) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}"
              for e in validator(name).iter_errors(document)]
    assert not errors, errors


@pytest.fixture
def spec(tmp_path: Path, emulator: EmulatorServer) -> Path:
    shop = Shop(f"sqlite:///{tmp_path / 'shop.db'}")
    shop.add_customers(customer_rows(300))
    shop.close()
    return write_spec(tmp_path / "sync.yaml", endpoint=emulator.base_url,
                      source_url=f"sqlite:///{tmp_path / 'shop.db'}",
                      state_url=f"sqlite:///{tmp_path / 'state.db'}", max_rows=100,
                      age="CASE WHEN age = 33 THEN 'x' ELSE age END")


def test_a_plan_and_a_run_with_invalid_rows_match_the_report_schema(spec: Path) -> None:
    code, planned = cli(spec, "plan")
    assert code == 0 and planned["run_id"] == "plan"
    assert_valid("run-report.schema.json", planned)

    code, ran = cli(spec, "run")
    assert code == 0 and {d["dataset"]: d["invalid"] for d in ran["datasets"]}["users"] == 6
    assert_valid("run-report.schema.json", ran)


def test_an_ambiguous_batch_and_a_failed_dataset_match_the_report_schema(
    spec: Path, emulator: EmulatorServer,
) -> None:
    emulator.set_faults(Faults(statuses=[502] * 50, retry_after=None))

    code, ran = cli(spec, "run", "users")

    users = ran["datasets"][0]
    assert code == 1 and users["status"] == "failed" and users["ambiguous"], ran
    assert_valid("run-report.schema.json", ran)


def test_a_spec_error_and_a_held_lease_match_the_error_schema(spec: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(spec.read_text().replace("cursor: updated_at", "cursor: 3", 1))
    code, document = cli(broken, "run")
    assert code == 2
    assert_valid("error.schema.json", document)

    store = StateStore.open(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        store.acquire_lease("users", owner="another-run", host="another-host", pid=1, ttl=60)
        code, document = cli(spec, "run", "users")
    finally:
        store.close()
    assert code == 75 and document["error"]["type"] == "LockHeldError"
    assert_valid("error.schema.json", document)


@pytest.mark.parametrize(("cls", "pointer"), [
    (RunReport, ()), (DatasetReport, ("$defs", "dataset")),
    (AmbiguousBatch, ("$defs", "ambiguous")),
])
def test_the_report_schema_lists_every_key_the_code_writes(cls: type, pointer: tuple[str, ...]
                                                           ) -> None:
    schema: Any = json.loads((SCHEMAS / "run-report.schema.json").read_text())
    for part in pointer:
        schema = schema[part]
    written = set(RunReport("r").to_dict()) if cls is RunReport else {
        f.name for f in dataclasses.fields(cls)}

    assert set(schema["properties"]) == written
    assert set(schema["required"]) == written
