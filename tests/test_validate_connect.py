"""`validate --connect` finds what `run` would fail on, every problem in one go, each at its
file:line; and `run` stops a dataset the spec gets wrong before sending it, with exit 2.

Real SQLite files for the sources and the state, the emulator on loopback for AiTEMS.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from aitems_sync.cli.main import main_group
from aitems_sync.emulator.server import EmulatorServer
from tests.conftest import source_and_state_urls
from tests.shop import T0, Shop, customer_rows, write_spec

ROOT = Path(__file__).resolve().parent.parent

SPEC = """\
version: 1
aitems:
  endpoint: {endpoint}
  service_id: svcdemo0001
  access_key: demo-access-key
  secret_key: demo-secret-key
state: sqlite:///{folder}/state/state.db
sources:
  shop: {{url: "sqlite:///{folder}/shop.db"}}
datasets:
  users:
    type: user
    dataset_id: dsusers0001
    query: SELECT id AS USER_ID, gender AS GENDER, age AS AGE, updated_at FROM customers
    cursor: updated_at
    fields:
      - {{name: USER_ID, type: string}}
      - {{name: GENDER, type: [string, "null"]}}
      - {{name: AGE, type: [string, "null"]}}
  items:
    type: item
    dataset_id: dsitems0001
    query: SELECT id AS ITEM_ID, updated_at FROM no_such_table
    cursor: updated_at
    fields:
      - {{name: ITEM_ID, type: string}}
      - {{name: CATEGORY, type: [string, "null"]}}
      - {{name: PRICE, type: [float, "null"]}}
      - {{name: CREATION_TIMESTAMP, type: long}}
      - {{name: COLOR, type: [string, "null"]}}
  events:
    type: interaction
    dataset_id: dsevent0001
    query: SELEC user_id AS USER_ID, ts FROM events
    cursor: ts
    fields:
      - {{name: USER_ID, type: string}}
      - {{name: ITEM_ID, type: string}}
      - {{name: TIMESTAMP, type: long}}
      - {{name: EVENT_TYPE, type: string}}
  events_by_kind:
    type: interaction
    dataset_id: dsevent0001
    query: >-
      SELECT user_id AS USER_ID, item_id AS ITEM_ID, ts AS TIMESTAMP, kind AS EVENT_TYPE
      FROM events
    cursor: EVENT_TYPE
    lookback: 10m
    fields:
      - {{name: USER_ID, type: string}}
      - {{name: ITEM_ID, type: string}}
      - {{name: TIMESTAMP, type: long}}
      - {{name: EVENT_TYPE, type: string}}
"""


def make_shop(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE customers (id TEXT, age INTEGER, gender TEXT, updated_at TEXT)")
        db.executemany("INSERT INTO customers VALUES (?, ?, ?, ?)", [
            ("u1", 30, "F", "2026-03-01 12:00:00"), ("u2", 40, "M", None),
            ("u3", 50, "F", None), ("u4", 20, "M", "2026-03-01 12:00:01")])
        db.execute("CREATE TABLE events (user_id TEXT, item_id TEXT, ts INTEGER, kind TEXT)")
        db.execute("INSERT INTO events VALUES ('u1', 'i1', 1772366400, 'view')")
    db.close()


def line_of(text: str, fragment: str, after: str = "") -> int:
    """The 1-based line of the first line holding ``fragment`` after the line holding ``after``."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if after in ln) if after else 0
    return next(i for i, ln in enumerate(lines) if i >= start and fragment in ln) + 1


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main_group, list(args), env={})


@pytest.fixture
def broken(tmp_path: Path, emulator: EmulatorServer) -> tuple[Path, str]:
    make_shop(tmp_path / "shop.db")
    text = SPEC.format(endpoint=emulator.base_url, folder=tmp_path)
    path = tmp_path / "sync.yaml"
    path.write_text(text)
    return path, text


def test_validate_connect_reports_every_problem_in_one_run_each_at_its_line(
        broken: tuple[Path, str]) -> None:
    path, text = broken

    result = invoke("--config", str(path), "validate", "--connect")

    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    err = result.stderr
    expected = [
        # the fields against the AiTEMS schemas
        (line_of(text, "name: AGE", "users:"), "datasets.users.fields[2]",
         "AGE has type [string, \"null\"] in the spec but [int, \"null\"] in AiTEMS"),
        (line_of(text, "name: GENDER", "users:"), "datasets.users.fields[1]",
         "GENDER is out of the AiTEMS schema's order, which is USER_ID, AGE, GENDER"),
        (line_of(text, "name: COLOR"), "datasets.items.fields[4]",
         "field COLOR is not in the AiTEMS schema"),
        (line_of(text, "fields:", "users:"), "datasets.users.fields",
         "`aitems-sync schema pull users` prints the schema"),
        # both broken queries, not only the first
        (line_of(text, "query:", "  items:"), "datasets.items.query",
         "no such table: no_such_table"),
        (line_of(text, "query:", "  events:"), "datasets.events.query", "syntax error"),
        # a lookback on a text cursor
        (line_of(text, "lookback: 10m"), "datasets.events_by_kind.lookback",
         "cursor EVENT_TYPE holds text that is not an ISO 8601 date or timestamp"),
    ]
    for line, key, fragment in expected:
        assert any(ln.strip().startswith(f"{path}:{line}: {key}: ") and fragment in ln
                   for ln in err.splitlines()), (line, key, fragment, err)
    assert "      - AGE: [int, \"null\"]" in err and "      + AGE: [string, \"null\"]" in err
    warning = next(ln for ln in err.splitlines() if "NULL cursor" in ln)
    assert warning.strip().startswith(f"{path}:{line_of(text, 'cursor: updated_at')}: "
                                       "datasets.users.cursor: ")
    assert "2 rows of the query have a NULL cursor updated_at" in warning
    assert "validate --connect" not in err  # no advice to run the command that is running


def test_run_sends_nothing_for_a_dataset_whose_fields_differ_from_aitems_and_exits_2(
        tmp_path: Path, emulator: EmulatorServer) -> None:
    shop = Shop(f"sqlite:///{tmp_path / 'shop.db'}")
    shop.add_customers(customer_rows(30))
    shop.add_events([(n, "u1", "i1", "view", T0 + timedelta(seconds=n)) for n in range(5)])
    spec = write_spec(tmp_path / "sync.yaml", endpoint=emulator.base_url, source_url=shop.url,
                      state_url=f"sqlite:///{tmp_path / 'state.db'}", age="CAST(age AS TEXT)")
    text = spec.read_text().replace('{name: AGE, type: [int, "null"]}',
                                    '{name: AGE, type: [string, "null"]}')
    spec.write_text(text)

    result = invoke("--config", str(spec), "--json", "run")

    assert result.exit_code == 2, result.output
    report = json.loads(result.stdout)
    users = next(d for d in report["datasets"] if d["dataset"] == "users")
    assert (users["status"], users["spec_error"], users["sent"], users["invalid"]) == (
        "failed", True, 0, 0)
    assert f"{spec}:{line_of(text, 'name: AGE')}: datasets.users.fields[1]: " in users["error"]
    assert emulator.received("dsusers0001").uploads == 0
    assert emulator.received("dsevent0001").rows_received == 5  # the other dataset ran
    assert "bisect" not in result.stderr
    shop.close()


def test_validate_connect_accepts_a_spec_that_fits(tmp_path: Path,
                                                   emulator: EmulatorServer) -> None:
    shop = Shop(f"sqlite:///{tmp_path / 'shop.db'}")
    shop.add_customers(customer_rows(3))
    spec = write_spec(tmp_path / "sync.yaml", endpoint=emulator.base_url, source_url=shop.url,
                      state_url=f"sqlite:///{tmp_path / 'state' / 'state.db'}", lookback="10m")

    result = invoke("--config", str(spec), "validate", "--connect")

    assert result.exit_code == 0, result.output
    assert "ok: state store sqlite:///" in result.stdout
    assert "a new store will be created there" in result.stdout
    assert "dataset users: lookback fits the cursor's values" in result.stdout
    assert ("dataset users: AiTEMS dataset dsusers0001 (user) is attached and its schema "
            "matches the fields") in result.stdout
    assert "warning" not in result.stdout
    assert not (tmp_path / "state").exists()  # validate creates nothing
    shop.close()


@pytest.mark.parametrize(("state", "fragment"), [
    ("nosuch://x", "names the database 'nosuch', which the state store cannot use"),
    ("postgresql+nosuchdriver://h/db", "names the driver 'postgresql+nosuchdriver'"),
    ("sqlite+nosuch:///x.db", "names the driver 'sqlite+nosuch'"),
])
@pytest.mark.parametrize("command", [["validate"], ["run"], ["state", "show"]])
def test_a_state_url_no_store_can_have_exits_2_in_every_command(
        tmp_path: Path, state: str, fragment: str, command: list[str]) -> None:
    spec = write_spec(tmp_path / "sync.yaml", endpoint="http://127.0.0.1:9",
                      source_url=f"sqlite:///{tmp_path / 'shop.db'}", state_url=state)

    result = invoke("--config", str(spec), *command)

    assert result.exit_code == 2, result.output
    line = line_of(spec.read_text(), "state:")
    assert f"{spec}:{line}: state: the state URL {fragment}" in result.stderr


#: The CLI in a process where some modules cannot be imported, as when they are not installed.
WITHOUT_MODULES = ("import sys; sys.modules.update(dict.fromkeys(sys.argv.pop(1).split(',')));"
                   "sys.argv[0] = 'aitems-sync'; from aitems_sync.cli.main import main; main()")


def cli_without(modules: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", WITHOUT_MODULES, modules, *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize(("missing", "state", "source", "fix"), [
    ("psycopg", "postgresql+psycopg://u:pw@127.0.0.1:9/st", None,
     "state: the state URL needs the driver 'postgresql+psycopg', whose Python module psycopg "
     "is not installed: install it with pip install 'aitems-sync[postgres]'"),
    ("pymysql", "mysql+pymysql://u:pw@127.0.0.1:9/st", None,
     "whose Python module pymysql is not installed: install it with pip install "
     "'aitems-sync[mysql]'"),
    ("psycopg", None, "postgresql+psycopg://u:pw@127.0.0.1:9/shop",
     "sources.shop.url: source 'shop': cannot use postgresql+psycopg://u:***@127.0.0.1:9/shop: "
     "its driver is not installed ("),
    ("psycopg", None, "postgresql+psycopg://u:pw@127.0.0.1:9/shop",
     "); install it with pip install 'aitems-sync[postgres]'"),
    ("pymysql", None, "mysql+pymysql://u:pw@127.0.0.1:9/shop",
     "); install it with pip install 'aitems-sync[mysql]'"),
    ("", None, "mysql+mysqldb://u:pw@127.0.0.1:9/shop",
     "the URL names mysqldb, which aitems-sync does not install: write it as "
     "mysql+pymysql://... and pip install 'aitems-sync[mysql]', or install mysqldb yourself"),
    ("", "mariadb://u:pw@127.0.0.1:9/st", None,
     "the URL names no driver, so SQLAlchemy picks mysqldb, which aitems-sync does not "
     "install: write it as mariadb+pymysql://... and pip install 'aitems-sync[mysql]'"),
])
def test_a_missing_driver_is_named_with_the_extra_that_installs_it(
        tmp_path: Path, emulator: EmulatorServer, missing: str, state: str | None,
        source: str | None, fix: str) -> None:
    spec = write_spec(tmp_path / "sync.yaml", endpoint=emulator.base_url,
                      source_url=source or f"sqlite:///{tmp_path / 'shop.db'}",
                      state_url=state or f"sqlite:///{tmp_path / 'state.db'}")
    Shop(f"sqlite:///{tmp_path / 'shop.db'}").close()

    result = cli_without(missing, "--config", str(spec), "validate", "--connect")

    assert result.returncode == 2, result.stderr
    assert fix in result.stderr
    assert "pw@" not in result.stderr


def test_validate_connect_refuses_a_state_store_of_a_newer_version(
        tmp_path: Path, emulator: EmulatorServer) -> None:
    shop = Shop(f"sqlite:///{tmp_path / 'shop.db'}")
    state = tmp_path / "state.db"
    with sqlite3.connect(state) as db:
        db.execute("CREATE TABLE schema_version (id INTEGER PRIMARY KEY, version INTEGER)")
        db.execute("INSERT INTO schema_version VALUES (1, 999)")
    db.close()
    spec = write_spec(tmp_path / "sync.yaml", endpoint=emulator.base_url, source_url=shop.url,
                      state_url=f"sqlite:///{state}")

    result = invoke("--config", str(spec), "validate", "--connect")

    assert result.exit_code == 2, result.output
    assert "state: the state store" in result.stderr
    assert "has schema version 999, but this aitems-sync only knows versions up to" in \
        result.stderr
    shop.close()


@pytest.mark.parametrize("command", [["validate", "--connect"], ["run"]])
def test_a_cursor_the_query_returns_twice_exits_2_in_validate_and_run(
        tmp_path: Path, emulator: EmulatorServer, command: list[str]) -> None:
    shop = Shop(f"sqlite:///{tmp_path / 'shop.db'}")
    shop.add_customers(customer_rows(3))
    spec = write_spec(tmp_path / "sync.yaml", endpoint=emulator.base_url, source_url=shop.url,
                      state_url=f"sqlite:///{tmp_path / 'state.db'}",
                      age="updated_at, age")  # the query now returns updated_at twice

    result = invoke("--config", str(spec), *command)

    assert result.exit_code == 2, result.output
    line = line_of(spec.read_text(), "cursor: updated_at")
    assert (f"{spec}:{line}: datasets.users.cursor: dataset users: the cursor 'updated_at': "
            "the query returns it 2 times (SQLite names the copies updated_at:1, ..."
            ) in result.output
    assert emulator.received("dsusers0001").uploads == 0
    shop.close()


def test_run_stops_a_lookback_on_a_text_cursor_as_a_spec_error(
        tmp_path: Path, emulator: EmulatorServer) -> None:
    shop = Shop(f"sqlite:///{tmp_path / 'shop.db'}")
    shop.add_events([(n, "u1", "i1", "view", T0 + timedelta(seconds=n)) for n in range(3)])
    spec = write_spec(tmp_path / "sync.yaml", endpoint=emulator.base_url, source_url=shop.url,
                      state_url=f"sqlite:///{tmp_path / 'state.db'}")
    text = spec.read_text().replace("cursor: event_id", "cursor: EVENT_TYPE")
    text = text.replace("lookback: 0s\n    \n", "lookback: 10m\n    \n")
    spec.write_text(text)
    first = invoke("--config", str(spec), "run", "events")
    assert first.exit_code == 0, first.output  # no mark yet: nothing to move back

    second = invoke("--config", str(spec), "run", "events")

    assert second.exit_code == 2, second.output
    assert "datasets.events.lookback: dataset events: lookback needs a cursor of timestamps" \
        in second.output
    shop.close()


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def source_and_state(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    return source_and_state_urls(request, tmp_path)


def test_validate_connect_counts_null_cursors_and_compares_fields_on_each_database(
        tmp_path: Path, emulator: EmulatorServer, source_and_state: tuple[str, str]) -> None:
    source_url, state_url = source_and_state
    shop = Shop(source_url)
    shop.add_customers(customer_rows(10))  # ages 20 to 29
    spec = write_spec(tmp_path / "sync.yaml", endpoint=emulator.base_url, source_url=source_url,
                      state_url=state_url, lookback="10m")
    text = spec.read_text().replace(
        ", updated_at FROM customers",
        ", CASE WHEN age < 25 THEN NULL ELSE updated_at END AS updated_at FROM customers"
    ).replace('{name: AGE, type: [int, "null"]}', '{name: AGE, type: [boolean, "null"]}')
    spec.write_text(text)

    result = invoke("--config", str(spec), "validate", "--connect")

    assert result.exit_code == 2, result.output
    assert (f"{spec}:{line_of(text, 'name: AGE')}: datasets.users.fields[1]: dataset users: "
            'field AGE has type [boolean, "null"] in the spec but [int, "null"] in AiTEMS'
            ) in result.stderr
    assert (f"{spec}:{line_of(text, 'cursor: updated_at')}: datasets.users.cursor: dataset "
            "users: 5 rows of the query have a NULL cursor updated_at") in result.stderr
    assert "lookback" not in result.stderr  # a timestamp cursor can be moved back
    shop.close()


def test_a_long_where_aitems_has_an_int_is_a_warning_and_validate_passes(
        tmp_path: Path, emulator: EmulatorServer) -> None:
    shop = Shop(f"sqlite:///{tmp_path / 'shop.db'}")
    spec = write_spec(tmp_path / "sync.yaml", endpoint=emulator.base_url, source_url=shop.url,
                      state_url=f"sqlite:///{tmp_path / 'state.db'}")
    text = spec.read_text().replace('{name: AGE, type: [int, "null"]}',
                                    '{name: AGE, type: [long, "null"]}')
    spec.write_text(text)

    result = invoke("--config", str(spec), "--json", "validate", "--connect")

    assert result.exit_code == 0, result.output
    [warning] = json.loads(result.stdout)["warnings"]
    assert warning.startswith(f"{spec}:{line_of(text, 'name: AGE')}: datasets.users.fields[1]: ")
    assert "refuses values outside the signed 32-bit range" in warning
    shop.close()


@pytest.mark.parametrize("store", ["sqlite", "postgresql", "mariadb"])
@pytest.mark.parametrize("query", [
    "SELECT id AS USER_ID, age AS AGE, gender AS GENDER, updated_at FROM no_such_table",
    "SELECT id AS USER_ID, no_such_column AS AGE, gender AS GENDER, updated_at FROM customers",
    "SELEC id AS USER_ID, age AS AGE, gender AS GENDER, updated_at FROM customers",
], ids=["table", "column", "syntax"])
def test_run_reports_a_query_the_database_refuses_as_a_spec_error(
    request: pytest.FixtureRequest, tmp_path: Path, emulator: EmulatorServer, store: str,
    query: str,
) -> None:
    request.param = store  # type: ignore[attr-defined]  # source_and_state_urls reads it
    source, state = source_and_state_urls(request, tmp_path)
    Shop(source).add_customers(customer_rows(3))
    spec = write_spec(tmp_path / "sync.yaml", endpoint=emulator.base_url, source_url=source,
                      state_url=state)
    text = spec.read_text()
    spec.write_text(text.replace(
        "SELECT id AS USER_ID, age AS AGE, gender AS GENDER, updated_at FROM customers", query))

    result = CliRunner().invoke(main_group, ["--config", str(spec), "run", "users"])

    assert result.exit_code == 2, result.output
    assert "datasets.users.query: dataset users: source 'shop': the database refused the " \
           "query" in result.output
    assert "Traceback" not in result.output
