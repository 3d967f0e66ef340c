"""The public Python API, as an orchestrator uses it: ``import aitems_sync`` and nothing else.

Every test here reaches the package only through ``aitems_sync.<name>``; the emulator (started
by the ``emulator`` fixture) and the shop database are the world around it.
"""

from __future__ import annotations

import ast
import logging
import re
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest

import aitems_sync
from aitems_sync.emulator.server import EmulatorServer
from aitems_sync.state.store import StateStore
from tests.shop import T0, Shop, customer_rows, write_spec

ROOT = Path(__file__).resolve().parent.parent

PUBLIC = [
    "AitemsSyncError", "AmbiguousBatch", "ApiError", "AuthError", "DatasetReport",
    "InvalidRowsError", "LockHeldError", "RunReport", "SourceError", "Spec", "SpecError",
    "SpecProblem", "StateError", "UsageError", "ValidationReport", "__version__", "load_spec",
    "plan", "run", "validate",
]


def test_all_lists_the_api_and_each_name_resolves() -> None:
    assert sorted(aitems_sync.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(aitems_sync, name) is not None, name
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        aitems_sync.nope  # type: ignore[attr-defined]  # noqa: B018


def test_python_c_prints_the_api() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import aitems_sync as a; print(a.__all__)"],
        capture_output=True, text=True, check=True, timeout=60)

    assert sorted(ast.literal_eval(done.stdout)) == PUBLIC


def test_importing_the_package_imports_no_part_of_it_until_a_name_is_used() -> None:
    # The extraction worker imports the package first: it must not pay for the whole API.
    code = ("import sys, aitems_sync\n"
            "print(sorted(m for m in sys.modules if m.startswith('aitems_sync.')))\n"
            "aitems_sync.RunReport\n"
            "print('aitems_sync.sync.report' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)

    assert done.stdout.splitlines() == ["[]", "True"]


@pytest.fixture
def shop_spec(tmp_path: Path, emulator: EmulatorServer) -> tuple[Shop, Path]:
    shop = Shop(f"sqlite:///{tmp_path / 'shop.db'}")
    shop.add_customers(customer_rows(30))
    shop.add_events([(n, f"u{n % 7:05d}", f"i{n % 5}", "view", T0 + timedelta(seconds=n))
                     for n in range(40)])
    spec = write_spec(tmp_path / "sync.yaml", endpoint=emulator.base_url, source_url=shop.url,
                      state_url=f"sqlite:///{tmp_path / 'state.db'}", max_rows=10)
    return shop, spec


def test_plan_run_and_validate_through_the_api_alone(
    shop_spec: tuple[Shop, Path], emulator: EmulatorServer
) -> None:
    shop, path = shop_spec
    spec = aitems_sync.load_spec(path)

    checked = aitems_sync.validate(spec, connect=True)
    planned = aitems_sync.plan(spec)
    received_after_plan = emulator.received("dsusers0001").rows_received
    report = aitems_sync.run(spec)
    again = aitems_sync.run(spec, ["users"])

    assert isinstance(checked, aitems_sync.ValidationReport)
    assert checked.to_dict()["valid"] is True
    assert any("attached" in line for line in checked.checks)
    assert isinstance(planned, aitems_sync.RunReport)
    assert [(d.dataset, d.new, d.sent) for d in planned.datasets] == [
        ("users", 30, 30), ("events", 40, 40)]  # what a run would send
    assert received_after_plan == 0
    assert emulator.received("dsusers0001").rows_received == 30
    assert (report.exit_code, report.status) == (0, "ok")
    assert {d["dataset"]: d["sent"] for d in report.to_dict()["datasets"]} == {
        "users": 30, "events": 40}
    assert emulator.received("dsevent0001").rows_received == 40
    assert [(d.dataset, d.unchanged, d.sent) for d in again.datasets] == [("users", 1, 0)]
    shop.close()


def test_a_spec_mistake_raises_spec_error_with_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "sync.yaml"
    path.write_text("version: 1\nstate: 7\nsources: {}\ndatasets: {}\n")

    with pytest.raises(aitems_sync.SpecError) as caught:
        aitems_sync.load_spec(path)

    error = caught.value
    assert isinstance(error, aitems_sync.AitemsSyncError)
    assert error.exit_code == 2
    assert {p.key for p in error.problems} >= {"aitems", "state", "sources"}
    assert all(p.file == str(path) for p in error.problems)


def test_an_unknown_dataset_raises_usage_error_before_anything_is_opened(
    shop_spec: tuple[Shop, Path], tmp_path: Path
) -> None:
    _, path = shop_spec
    spec = aitems_sync.load_spec(path)

    with pytest.raises(aitems_sync.UsageError, match="unknown dataset nope: the spec defines"):
        aitems_sync.run(spec, ["nope"])

    assert not (tmp_path / "state.db").exists()


def test_a_set_stop_event_returns_a_report_and_never_exits(
    shop_spec: tuple[Shop, Path], emulator: EmulatorServer
) -> None:
    _, path = shop_spec
    stop = threading.Event()
    stop.set()

    report = aitems_sync.run(aitems_sync.load_spec(path), stop=stop)

    assert isinstance(report, aitems_sync.RunReport)
    assert emulator.received("dsusers0001").rows_received == 0


def test_the_api_configures_no_logging(shop_spec: tuple[Shop, Path]) -> None:
    root = logging.getLogger()
    before = (list(root.handlers), root.level)

    aitems_sync.plan(aitems_sync.load_spec(shop_spec[1]))

    assert (list(root.handlers), root.level) == before


def test_a_held_lease_raises_lock_held_error_with_exit_75(shop_spec: tuple[Shop, Path]) -> None:
    spec = aitems_sync.load_spec(shop_spec[1])
    with StateStore.open(spec.state_url) as store:  # another run, alive, holds users
        store.acquire_lease("users", owner="other-run", host="elsewhere", pid=1, ttl=600)

        with pytest.raises(aitems_sync.LockHeldError) as caught:
            aitems_sync.run(spec, ["users"])

    assert caught.value.exit_code == 75
    assert "other-run" in caught.value.message


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_the_api_docs_examples_parse_and_use_only_the_public_api() -> None:
    blocks = _python_blocks((ROOT / "docs" / "api.md").read_text(encoding="utf-8"))

    assert len(blocks) >= 2  # at least the Airflow and the Dagster examples
    used: set[str] = set()
    for block in blocks:
        tree = ast.parse(block)
        used |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                 and isinstance(node.value, ast.Name) and node.value.id == "aitems_sync"}
    assert used, "the examples never call aitems_sync"
    assert used <= set(PUBLIC), used - set(PUBLIC)
    assert "Airflow" in "".join(blocks) or "airflow" in "".join(blocks)
    assert "dagster" in "".join(blocks)
