"""Every command, every option and argument, given values it should refuse: an answer, never a
traceback.

The walk goes through the click command tree itself, so a command or option added later is
walked too. Each value is one an operator could type by mistake (a word for a number, an empty
string, a number past any range, NaN, a NUL byte, a path that is not there). A refused value is
a usage error (exit 2); a value the type accepts (a string, a negative limit) runs the command,
which must then answer with its documented exit code and a message, not a traceback.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from aitems_sync.cli.main import main_group
from tests.test_client import closed_port

BAD_VALUES = ["abc", "", "-1", "1e400", "nan", "-inf", "99999999999999999999999", "\x00",
              "../no/such/file"]

SPEC = """\
version: 1
aitems:
  endpoint: http://127.0.0.1:{port}/api/v1
  service_id: svc1
  access_key: ak
  secret_key: sk
  retry: {{attempts: 1, backoff: 0.01s}}
state: sqlite:///{tmp}/state.db
sources:
  shop: {{url: "sqlite:///{tmp}/shop.db"}}
datasets:
  users:
    type: user
    dataset_id: ds1
    source: shop
    query: SELECT 'u1' AS USER_ID, 30 AS AGE, '2026-01-01' AS updated_at
    cursor: updated_at
    fields:
      - {{name: USER_ID, type: string}}
      - {{name: AGE, type: [int, "null"]}}
"""


def _commands(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from _commands(sub, (*path, name))


def _cases() -> Iterator[tuple[tuple[str, ...], click.Parameter, str]]:
    for path, command in _commands(main_group):
        for param in command.params:
            if isinstance(param, click.Option) and (param.is_flag or param.name == "help"):
                continue
            for value in BAD_VALUES:
                yield path, param, value


CASES = list(_cases())


def _argv(path: tuple[str, ...], param: click.Parameter, value: str) -> list[str]:
    if not path:  # an option of the group itself: give it a command to precede
        return [param.opts[0], value, "validate"]
    if isinstance(param, click.Argument):
        return [*path, value]
    return [*path, param.opts[0], value]


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("walk")
    path = tmp / "sync.yaml"
    path.write_text(SPEC.format(port=closed_port(), tmp=tmp))
    return path


@pytest.fixture(scope="module")
def taken_port() -> Iterator[int]:
    """A port something listens on: an emulator given it (its other options accepted) fails to
    start rather than serve for ever."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


@pytest.mark.parametrize(("path", "param", "value"), CASES,
                         ids=[f"{' '.join(p) or 'main'}:{q.name}={v!r}" for p, q, v in CASES])
def test_a_bad_value_gets_an_answer_never_a_traceback(
    spec: Path, taken_port: int, path: tuple[str, ...], param: click.Parameter, value: str,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # where a value taken as a file name is written
    argv = ["--config", str(spec), *_argv(path, param, value)]
    if path == ("emulator",) and param.name != "port":
        argv += ["--host", "127.0.0.1", "--port", str(taken_port)]
    if path == ("emulator",) and param.name == "host":
        argv = ["--config", str(spec), "emulator", "--host", value, "--port", str(taken_port)]

    result = CliRunner().invoke(main_group, argv)

    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        repr(result.exception))
    if isinstance(param.type, click.types._NumberParamTypeBase | click.Choice) and value in (
            "abc", "", "nan"):
        assert result.exit_code == 2, output
    if result.exit_code not in (0, 2):  # ran, and failed (or a prompt was declined): it said why
        assert any(word in output.lower() for word in ("fail", "error", "aborted")), output
