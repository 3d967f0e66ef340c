"""Property: whatever a spec holds, `validate` answers with exit 0 or with exit 2 and located
problems, and `run` (against a real SQLite source and the emulator) succeeds or fails with a
message, never a traceback. Hypothesis mutates a valid spec: a value replaced by another
value or structure, a key renamed or dropped, or bytes inserted anywhere."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aitems_sync.cli.main import main_group
from aitems_sync.emulator.server import EmulatorServer

VALID: dict[str, Any] = {
    "version": 1,
    "aitems": {"service_id": "svc1", "access_key": "ak", "secret_key": "sk", "timeout": "30s",
               "batch": {"max_rows": 500, "in_flight": 2},
               "retry": {"attempts": 3, "backoff": "0.5s"}},
    "state": "sqlite:///state.db",
    "sources": {"shop": {"url": "sqlite:///shop.db", "timezone": "Asia/Seoul"}},
    "datasets": {"users": {
        "type": "user", "dataset_id": "ds1", "source": "shop",
        "query": "SELECT id AS USER_ID, age AS AGE, updated_at FROM customers",
        "cursor": "updated_at", "lookback": "10m", "max_invalid": "1%",
        "fields": [{"name": "USER_ID", "type": "string"},
                   {"name": "AGE", "type": ["int", "null"]}],
    }},
}

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats()
    | st.text(max_size=20) | st.sampled_from(["1e400", "nan", "-1", "0", "99999999999d",
                                              "${NOPE}", "${file:/dev/null}", "http://x y/",
                                              "[", "{", "*a", "&a", "\x00"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=3),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


PATHS = _paths(VALID)


def _mutated(path: tuple[Any, ...], value: Any, drop: bool,
             base: dict[str, Any] = VALID) -> str:
    """``base`` as YAML with the value at ``path`` replaced by ``value`` (or its key dropped)."""
    spec = yaml.safe_load(yaml.safe_dump(base))
    node = spec
    for part in path[:-1]:
        node = node[part]
    if drop and isinstance(node, dict):
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return yaml.safe_dump(spec, allow_unicode=True)


def _check(tmp: Path, text: str) -> None:
    spec = tmp / "sync.yaml"
    spec.write_text(text, encoding="utf-8", errors="surrogatepass")
    result = CliRunner().invoke(main_group, ["--config", str(spec), "validate"])
    output = result.output
    assert "Traceback" not in output, output
    assert result.exit_code in (0, 2), (result.exit_code, output, result.exception)
    if result.exit_code == 2:
        assert re.search(r"sync\.yaml(:\d+)?:|Error: ", output), output


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(PATHS), value=VALUES, drop=st.booleans())
def test_a_mutated_value_is_valid_or_a_located_problem(
    tmp_path: Path, path: tuple[Any, ...], value: Any, drop: bool
) -> None:
    _check(tmp_path, _mutated(path, value, drop))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(at=st.integers(min_value=0), junk=st.text(min_size=1, max_size=6))
def test_characters_inserted_anywhere_are_valid_or_a_located_problem(
    tmp_path: Path, at: int, junk: str
) -> None:
    text = yaml.safe_dump(VALID)
    at %= len(text)
    _check(tmp_path, text[:at] + junk + text[at:])


# -- run: the mutated spec against a real SQLite source and the emulator ----------------------

RUN_SPEC: dict[str, Any] = {
    **VALID,
    "aitems": {**VALID["aitems"], "service_id": "svcdemo0001", "access_key": "demo-access-key",
               "secret_key": "demo-secret-key", "retry": {"attempts": 2, "backoff": "0.01s"}},
    "datasets": {"users": {
        **VALID["datasets"]["users"], "dataset_id": "dsusers0001",
        "query": "SELECT id AS USER_ID, age AS AGE, updated_at FROM customers",
    }},
}
RUN_PATHS = [p for p in _paths(RUN_SPEC) if p[:2] != ("aitems", "endpoint")]


def _run_spec(tmp: Path, endpoint: str, path: tuple[Any, ...], value: Any, drop: bool) -> str:
    spec = yaml.safe_load(yaml.safe_dump(RUN_SPEC))
    spec["aitems"]["endpoint"] = endpoint
    spec["state"] = f"sqlite:///{tmp}/state.db"
    spec["sources"]["shop"]["url"] = f"sqlite:///{tmp}/shop.db"
    return _mutated(path, value, drop, base=spec)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(RUN_PATHS), value=VALUES, drop=st.booleans())
def test_a_mutated_spec_runs_or_fails_with_a_message_never_a_traceback(
    tmp_path_factory: pytest.TempPathFactory, emulator: EmulatorServer,
    path: tuple[Any, ...], value: Any, drop: bool
) -> None:
    tmp = tmp_path_factory.mktemp("run")
    with sqlite3.connect(tmp / "shop.db") as db:
        db.execute("CREATE TABLE customers (id TEXT PRIMARY KEY, age INTEGER, updated_at TEXT)")
        db.executemany("INSERT INTO customers VALUES (?, ?, ?)",
                       [(f"u{n}", 20 + n, f"2026-03-01 12:00:0{n}") for n in range(5)])
    spec = tmp / "sync.yaml"
    spec.write_text(_run_spec(tmp, emulator.base_url, path, value, drop), encoding="utf-8",
                    errors="surrogatepass")

    result = CliRunner().invoke(main_group, ["--config", str(spec), "run"])

    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        repr(result.exception), output)
    assert result.exit_code in (0, 1, 2, 3), (result.exit_code, output)
    if result.exit_code == 2:
        assert re.search(r"sync\.yaml(:\d+)?:|Error: |FAILED: ", output), output
    elif result.exit_code != 0:  # the run started, and a dataset failed or quarantined: why
        assert re.search(r"users: |FAILED: ", output), output
