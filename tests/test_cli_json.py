"""Machine-readable on every path, through the installed console script: with --json every
command writes exactly one JSON document on stdout whatever happens (its report, or an error
object), and with --log-format json every line on stderr is a JSON record, the final failure
included. The global options work before and after the command."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EmulatorServer
from tests.shop import T0, Shop, customer_rows, write_spec

SCRIPT = shutil.which("aitems-sync", path=str(Path(sys.executable).parent))

#: Every command that reads the spec, with arguments that make it do its work.
COMMANDS = [
    ["validate"], ["validate", "--connect"], ["plan"], ["run"], ["state", "show"],
    ["state", "reset", "users", "--yes"], ["state", "set", "users", "--cursor", "2026-01-01"],
    ["quarantine", "list"], ["quarantine", "show", "1"], ["quarantine", "export"],
    ["quarantine", "retry"], ["quarantine", "drop", "1", "--yes"], ["history"],
    ["schema", "pull", "users"], ["status"], ["bootstrap", "users"], ["apply", "--exit-code"],
]
SCENARIOS = ["ok", "spec-error", "wrong-secret", "aitems-unreachable", "database-unreachable"]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One spec per scenario, against the emulator of the module."""
    folder = tmp_path_factory.mktemp("json")
    server = EmulatorServer(seed=_demo_seed(), port=0)
    server.start()
    shop = Shop(f"sqlite:///{folder / 'shop.db'}")
    shop.add_customers(customer_rows(20))
    shop.close()
    base = write_spec(folder / "ok.yaml", endpoint=server.base_url,
                      source_url=f"sqlite:///{folder / 'shop.db'}",
                      state_url=f"sqlite:///{folder / 'state.db'}").read_text()
    down = f"http://127.0.0.1:{closed_port()}/api/v1"
    variants = {
        "ok": base,
        "spec-error": base.replace("cursor: updated_at", "cursor: updated_at\n    cursr: x", 1),
        "wrong-secret": base.replace("secret_key: demo-secret-key", "secret_key: wrong"),
        "aitems-unreachable": base.replace(server.base_url, down),
        "database-unreachable": base.replace(
            f"sqlite:///{folder / 'shop.db'}",
            f"postgresql+psycopg://nobody@127.0.0.1:{closed_port()}/shop"),
    }
    paths = {}
    for name, text in variants.items():
        paths[name] = folder / f"{name}.yaml"
        paths[name].write_text(text)
    yield paths
    server.stop()


def _demo_seed() -> Any:
    from aitems_sync.emulator.server import load_seed
    from tests.conftest import DEMO_SEED

    return load_seed(DEMO_SEED)


def invoke(args: list[str]) -> subprocess.CompletedProcess[str]:
    assert SCRIPT, "the aitems-sync console script is not installed in this environment"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AITEMS_SYNC")}
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=120, env=env,
                          check=False)


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_every_command_writes_one_json_document_and_json_log_lines_whatever_happens(
    specs: dict[str, Path], command: list[str], scenario: str,
) -> None:
    # The global options after the command, as a person types them.
    done = invoke([*command, "--config", str(specs[scenario]), "--json",
                   "--log-format", "json"])

    document = json.loads(done.stdout)  # exactly one document: a second one is "Extra data"
    for line in done.stderr.splitlines():
        record = json.loads(line)
        assert {"time", "level", "message"} <= set(record), line
    failed = isinstance(document, dict) and set(document) == {"error"}
    if failed:
        error = document["error"]
        assert error["exit_code"] == done.returncode
        assert {"type", "message", "exit_code", "location"} <= set(error)
    if scenario == "spec-error":
        assert done.returncode == 2
        (problem,) = document["error"]["problems"]
        assert problem["key"] == "datasets.users.cursr" and problem["line"] == 19
        assert document["error"]["location"]["key"] == "datasets.users.cursr"


def test_a_usage_error_is_a_json_error_too_and_says_what_is_wrong(
    specs: dict[str, Path],
) -> None:
    done = invoke(["run", "--no-such-option", "--json", "--log-format", "json", "-c",
                   str(specs["ok"])])

    assert done.returncode == 2
    error = json.loads(done.stdout)["error"]
    assert error["type"] == "UsageError" and "--no-such-option" in error["message"]
    (line,) = done.stderr.splitlines()
    assert json.loads(line)["event"] == "failed"


@pytest.mark.parametrize("args", [
    ["--config", "{spec}", "--json", "history"],
    ["history", "--config", "{spec}", "--json"],
    ["history", "--json", "--config={spec}"],
    ["--json", "history", "-c{spec}"],
    ["--config", "/nowhere.yaml", "history", "--config", "{spec}", "--json"],  # later wins
], ids=["before", "after", "after-equals", "short-attached", "twice-later-wins"])
def test_global_options_are_accepted_before_and_after_the_command(
    specs: dict[str, Path], args: list[str],
) -> None:
    done = invoke([a.format(spec=specs["ok"]) for a in args])

    assert done.returncode == 0, done.stderr
    assert isinstance(json.loads(done.stdout), list)


def test_a_command_option_value_that_looks_global_stays_the_value(
    specs: dict[str, Path],
) -> None:
    """`--cursor --json` sets the cursor to the text "--json", it does not ask for JSON."""
    done = invoke(["-c", str(specs["ok"]), "state", "set", "users", "--cursor", "--json",
                   "--type", "str"])

    assert "--json" in done.stdout + done.stderr
    with pytest.raises(json.JSONDecodeError):
        json.loads(done.stdout)


STATE_COMMANDS = [
    ["history"], ["state", "show"], ["state", "reset", "users", "--yes"],
    ["state", "set", "users", "--cursor", "2026-01-01T00:00:00+00:00"],
    ["quarantine", "list"], ["quarantine", "export"], ["quarantine", "show", "1"],
    ["quarantine", "drop", "1", "--yes"],
]


@pytest.mark.parametrize("command", STATE_COMMANDS, ids=[" ".join(c) for c in STATE_COMMANDS])
def test_state_commands_need_no_aitems_keys_or_source_urls(
    specs: dict[str, Path], tmp_path: Path, command: list[str],
) -> None:
    text = specs["ok"].read_text()
    for written, variable in (("demo-access-key", "${NO_KEY}"),
                              ("demo-secret-key", "${NO_SECRET}")):
        text = text.replace(written, variable)
    source = text.split('shop: {url: "', 1)[1].split('"', 1)[0]
    spec = tmp_path / "sync.yaml"
    spec.write_text(text.replace(source, "${NO_SHOP_URL}"))

    done = invoke([*command, "-c", str(spec), "--json"])
    needing = invoke(["run", "-c", str(spec), "--json"])

    assert "error" not in json.loads(done.stdout) or \
        json.loads(done.stdout)["error"]["type"] != "SpecError", done.stdout
    assert {p["message"].split(" is not set")[0] for p in
            json.loads(needing.stdout)["error"]["problems"]} == {
        "environment variable NO_KEY", "environment variable NO_SECRET",
        "environment variable NO_SHOP_URL"}


def test_a_failed_dataset_is_told_once_to_a_person_and_kept_in_machine_logs(
    specs: dict[str, Path],
) -> None:
    text = invoke(["run", "-c", str(specs["database-unreachable"])])
    machine = invoke(["run", "-c", str(specs["database-unreachable"]), "--json",
                      "--log-format", "json"])

    assert text.returncode == machine.returncode == 1
    said = text.stdout + text.stderr
    for dataset in ("users", "events"):  # in the summary, not again as a log line
        assert said.count(f"\n{dataset}: source 'shop': cannot connect") == 1, said
        assert f"dataset {dataset} stopped" not in said
    records = [json.loads(line) for line in machine.stderr.splitlines()]
    assert {r.get("dataset") for r in records if r.get("event") == "dataset_failed"} == {
        "users", "events"}


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_the_readmes_completion_and_version_commands_work(shell: str) -> None:
    assert SCRIPT
    env = {**os.environ, "_AITEMS_SYNC_COMPLETE": f"{shell}_source"}
    script = subprocess.run([SCRIPT], capture_output=True, text=True, env=env, timeout=60,
                            check=False)
    words = subprocess.run([SCRIPT], capture_output=True, text=True, timeout=60, check=False,
                           env={**os.environ, "_AITEMS_SYNC_COMPLETE": f"{shell}_complete",
                                "COMP_WORDS": "aitems-sync ap",
                                # fish passes the word being completed, the others its index
                                "COMP_CWORD": "ap" if shell == "fish" else "1"})
    version = invoke(["--version"])

    assert script.returncode == 0 and "_AITEMS_SYNC_COMPLETE" in script.stdout
    assert "apply" in words.stdout
    assert version.returncode == 0 and version.stdout.startswith("aitems-sync, version ")


def test_state_show_prints_marks_and_keys_as_plain_iso_text(specs: dict[str, Path]) -> None:
    assert invoke(["run", "-c", str(specs["ok"])]).returncode in (0, 3)

    shown = invoke(["state", "show", "-c", str(specs["ok"])])

    assert shown.returncode == 0, shown.stderr
    users = next(line for line in shown.stdout.splitlines() if line.startswith("users: mark "))
    # SQLite keeps the shop's timestamps as text: the mark is that text, unquoted, no repr
    assert re.fullmatch(r"users: mark 2026-03-01 12:00:\d\d\.\d+ \(str\), key u\d{5}", users), users
    assert "datetime.datetime(" not in shown.stdout and "UUID(" not in shown.stdout


def test_an_aitems_that_cannot_be_reached_fails_in_seconds_with_one_message(
    specs: dict[str, Path],
) -> None:
    started = time.monotonic()
    done = invoke(["validate", "--connect", "-c", str(specs["aitems-unreachable"])])
    took = time.monotonic() - started

    assert done.returncode == 2 and took < 10, (took, done.stderr)
    assert done.stderr.count("cannot be reached") == 1, done.stderr
    assert "retrying" not in done.stderr


def test_plan_on_a_spec_never_run_writes_no_state_store(
    specs: dict[str, Path], tmp_path: Path,
) -> None:
    state = tmp_path / "new" / "state.db"
    spec = tmp_path / "sync.yaml"
    spec.write_text(specs["ok"].read_text().replace(
        specs["ok"].read_text().split('state: "', 1)[1].split('"', 1)[0], f"sqlite:///{state}"))

    planned = invoke(["plan", "-c", str(spec), "--json"])

    assert planned.returncode == 0, planned.stderr
    assert {d["dataset"]: d["new"] for d in json.loads(planned.stdout)["datasets"]} == {
        "users": 20, "events": 0}
    assert not state.parent.exists()
    assert "migrating" not in planned.stderr


def test_marks_and_keys_of_every_cursor_type_are_shown_as_plain_text() -> None:
    import datetime as dt
    import uuid
    from decimal import Decimal

    from aitems_sync.sync.status import shown

    stamp = dt.datetime(2026, 12, 5, 0, 18, 2, 51345, tzinfo=dt.UTC)
    key = uuid.UUID("fdb2c7a0-0000-4000-8000-000000000001")

    assert shown(stamp) == "2026-12-05T00:18:02.051345+00:00"
    assert shown(dt.date(2026, 12, 5)) == "2026-12-05"
    assert shown(Decimal("1.50")) == "1.50"
    assert shown(key) == "fdb2c7a0-0000-4000-8000-000000000001"
    assert shown(7) == 7 and shown("u1") == "u1"


def test_the_quarantine_and_max_invalid_stumbles_through_the_console_script(
    tmp_path: Path, emulator: EmulatorServer,
) -> None:
    """Issue 23's walk-through, as a person types it: one bad event-sized delta does not fail
    the run under the default max_invalid; the row fixed at the source leaves `quarantine list`
    with the run that delivers it, and `--all` still shows it, superseded."""
    shop = Shop(f"sqlite:///{tmp_path / 'shop.db'}")
    shop.add_customers(customer_rows(20))
    spec = write_spec(tmp_path / "sync.yaml", endpoint=emulator.base_url, source_url=shop.url,
                      state_url=f"sqlite:///{tmp_path / 'state.db'}",
                      extra="    json_schema: {properties: {AGE: {minimum: 0}}}")
    spec.write_text(spec.read_text().replace('    max_invalid: "50%"\n', "", 1))  # the default
    assert invoke(["run", "users", "-c", str(spec)]).returncode == 0
    shop.update_customer("u00004", age=-1, updated_at=T0 + timedelta(days=1))

    one_bad = invoke(["run", "users", "-c", str(spec), "--json"])
    assert one_bad.returncode == 0, one_bad.stdout  # 1 of 2 rows read, within the floor of 10
    assert json.loads(one_bad.stdout)["datasets"][0]["invalid"] == 1
    assert "u00004" in invoke(["quarantine", "list", "-c", str(spec)]).stdout

    shop.update_customer("u00004", age=40, updated_at=T0 + timedelta(days=2))
    fixed = invoke(["run", "users", "-c", str(spec), "--json"])
    shop.close()

    assert json.loads(fixed.stdout)["datasets"][0]["sent"] == 1
    assert json.loads(invoke(["quarantine", "list", "-c", str(spec), "--json"]).stdout)[
        "rows"] == []
    closed = json.loads(invoke(["quarantine", "list", "--all", "-c", str(spec),
                                "--json"]).stdout)["rows"]
    assert [(r["key"], r["status"]) for r in closed] == [({"USER_ID": "u00004"}, "superseded")]
