"""The command line as a user meets it: exit codes, messages, help, and the demo."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from aitems_sync.cli.main import main_group
from aitems_sync.emulator.server import EmulatorServer
from tests.test_spec import expectations

ROOT = Path(__file__).resolve().parent.parent
CORPUS = sorted((ROOT / "tests" / "specs").glob("*.yaml"))
EXAMPLE = ROOT / "examples" / "sync.yaml"


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_validate_reports_each_broken_spec_with_exit_2_file_line_and_key(path: Path) -> None:
    result = CliRunner().invoke(main_group, ["--config", str(path), "validate"], env={})

    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert result.stderr.startswith("FAILED: ")
    for line, key, fragment in expectations(path):
        where = f"{path}:{line}" if line is not None else str(path)
        assert any(ln.strip().startswith(where) and (not key or f" {key}: " in ln)
                   and fragment in ln for ln in result.stderr.splitlines()), (line, key, fragment)


def test_a_broken_spec_in_a_real_process_prints_no_traceback() -> None:
    spec = ROOT / "tests" / "specs" / "unknown-source.yaml"
    done = subprocess.run([sys.executable, "-m", "aitems_sync", "--config", str(spec),
                           "validate"], capture_output=True, text=True)

    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert re.search(r"unknown-source\.yaml:\d+: datasets\.users\.source: ", done.stderr)


def test_a_real_process_ends_at_once_with_its_output_and_the_commands_status() -> None:
    # The entry point leaves through os._exit, skipping the interpreter's teardown.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # pipes buffered
    done = subprocess.run([sys.executable, "-m", "aitems_sync", "--help"],
                          capture_output=True, text=True, env=env)
    unknown = subprocess.run([sys.executable, "-m", "aitems_sync", "no-such-command"],
                             capture_output=True, text=True, env=env)

    assert done.returncode == 0
    assert done.stdout.startswith("Usage: ") and "validate" in done.stdout
    assert unknown.returncode == 2
    assert "No such command 'no-such-command'" in unknown.stderr


def test_validate_accepts_the_example_spec() -> None:
    result = CliRunner().invoke(main_group, ["--config", str(EXAMPLE), "validate"])

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok: spec")


def test_validate_connect_checks_queries_and_aitems(tmp_path: Path,
                                                   emulator: EmulatorServer) -> None:
    sys.path.insert(0, str(ROOT / "examples"))
    import make_sample_db

    make_sample_db.create(tmp_path / "shop.db", users=10, items=10, events=10, seed=1)
    env = {"AITEMS_ENDPOINT": emulator.base_url,
           "SHOP_DATABASE_URL": f"sqlite:///{tmp_path / 'shop.db'}"}

    result = CliRunner().invoke(main_group, ["--config", str(EXAMPLE), "validate", "--connect"],
                                env=env)

    assert result.exit_code == 0, result.output
    assert "dataset users: query columns match the fields" in result.stdout
    assert "AiTEMS dataset dsevent0001 (interaction) is attached" in result.stdout


def test_validate_connect_names_a_field_the_query_does_not_return(
        tmp_path: Path, emulator: EmulatorServer) -> None:
    sys.path.insert(0, str(ROOT / "examples"))
    import make_sample_db

    make_sample_db.create(tmp_path / "shop.db", users=1, items=1, events=1, seed=1)
    spec = tmp_path / "sync.yaml"
    spec.write_text(EXAMPLE.read_text().replace("gender AS GENDER, ", "")
                    .replace("sqlite:///data/shop.db", f"sqlite:///{tmp_path / 'shop.db'}"))

    result = CliRunner().invoke(main_group, ["--config", str(spec), "validate", "--connect"],
                                env={"AITEMS_ENDPOINT": emulator.base_url})

    assert result.exit_code == 2
    assert "datasets.users.fields" in result.stderr
    assert "GENDER" in result.stderr


def test_run_with_an_unknown_dataset_is_a_usage_error() -> None:
    result = CliRunner().invoke(main_group, ["--config", str(EXAMPLE), "run", "nope"])

    assert result.exit_code == 2
    assert "unknown dataset nope: the spec defines users, items, events" in result.stderr


def _commands() -> list[tuple[str, click.Command]]:
    """Every command and subcommand, as `aitems-sync NAME...` would run it."""
    found = []

    def walk(prefix: str, group: click.Group) -> None:
        for name, command in sorted(group.commands.items()):
            found.append((f"{prefix} {name}", command))
            if isinstance(command, click.Group):
                walk(f"{prefix} {name}", command)

    walk("aitems-sync", main_group)
    return found


@pytest.mark.parametrize(("name", "command"), _commands(), ids=[n for n, _ in _commands()])
def test_every_command_and_option_has_help_and_a_readme_mention(
        name: str, command: click.Command) -> None:
    readme = (ROOT / "README.md").read_text()

    assert command.help, f"{name} has no help text"
    assert f"`{name}" in readme, f"README does not mention `{name}`"
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{name} {param.opts} has no help text"
            assert any(opt in readme for opt in param.opts if opt.startswith("--")), \
                f"README does not mention {name} {param.opts}"


def test_demo_runs_end_to_end_and_shows_only_the_delta_second(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py")],
                          capture_output=True, text=True, timeout=180,
                          env={**os.environ, "AITEMS_DEMO_DIR": str(tmp_path)})

    assert done.returncode == 0, done.stdout + done.stderr
    first, second = done.stdout.split("== second run")
    assert re.search(r"events\s+ok\s+40000\s+40000", first)
    assert re.search(r"users\s+ok\s+41\s+5\s+25\s+11\s+0\s+30\s", second)
    assert re.search(r"events\s+ok\s+501\s+500", second)  # the mark's own row, read again
    assert re.search(r"events\s+41 uploads\s+40500 rows received", second)


@pytest.mark.parametrize("args", [
    ["run", "--lease-ttl", "1e400"], ["run", "--lease-ttl", "nan"], ["run", "--grace", "nan"],
    ["run", "--wait=nan"], ["run", "--parallel", "0"],
    ["emulator", "--port", "99999"], ["emulator", "--fail-statuses", "abc"],
    ["emulator", "--fail-statuses", "200"], ["emulator", "--latency", "nan"],
    ["emulator", "--fail-rate", "2"], ["emulator", "--max-body-bytes", "0"],
    ["emulator", "--ingest-seconds", "nan"], ["emulator", "--hour-seconds", "0"],
    ["emulator", "--train-seconds", "-1"],
    ["emulator", "--object-storage-key", "ak:sk"],
    ["emulator", "--object-storage", "http://127.0.0.1:9", "--object-storage-key", "no-colon"],
])
def test_a_number_no_call_could_take_is_a_usage_error(args: list[str]) -> None:
    result = CliRunner().invoke(main_group, ["--config", str(EXAMPLE), *args])

    assert result.exit_code == 2, result.output
    assert "Invalid value for" in result.output
    assert "Traceback" not in result.output
