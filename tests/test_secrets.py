"""Credentials never leave the process: marker strings in every credential slot of a spec (the
AiTEMS keys, a `${file:}` secret, the endpoint's user info, a database password as a URL query
parameter, the state store's in its user info and its query) never appear in any output of any
command (human and JSON output, text, JSON and debug logs, `--debug` tracebacks, a 401, an
unreachable endpoint, an unreachable database) nor anywhere in the state store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from aitems_sync.cli.main import main_group
from aitems_sync.emulator.server import EmulatorServer, load_seed
from aitems_sync.redact import redact, register, url_for_display
from tests.conftest import DEMO_SEED
from tests.shop import T0, Shop, customer_rows
from tests.test_client import closed_port

ACCESS = "MARKacc-3f9e21"
SECRET = "MARKsec-7a41c0"  # read from a file: ${file:secret_key.txt}
ENDPOINT_PW = "MARKend-55c1d2"
SOURCE_PW = "MARKsrc-0b7e44"
STATE_PW = "MARKsta-9d2a61"
STATE_USER_PW = "MARKstu-4c8b19"  # in the state URL's user info
MARKERS = (ACCESS, SECRET, ENDPOINT_PW, SOURCE_PW, STATE_PW, STATE_USER_PW)

SPEC = """\
version: 1
aitems:
  endpoint: {endpoint}
  service_id: svcdemo0001
  access_key: {access}
  secret_key: ${{file:secret_key.txt}}
  retry: {{attempts: 2, backoff: 0.01s, max_backoff: 0.02s}}
state: "{state}"
sources:
  shop: {{url: "{source}"}}
datasets:
  users:
    type: user
    dataset_id: dsusers0001
    query: SELECT id AS USER_ID, age AS AGE, gender AS GENDER, updated_at FROM customers
    cursor: updated_at
    max_invalid: 100%
    fields:
      - {{name: USER_ID, type: string}}
      - {{name: AGE, type: [int, "null"]}}
      - {{name: GENDER, type: [string, "null"], categorical: true}}
"""



@pytest.fixture
def emulator_with_markers() -> Iterator[EmulatorServer]:
    seed = load_seed(DEMO_SEED)
    seed["keys"].append({"access_key": ACCESS, "secret_key": SECRET})
    server = EmulatorServer(seed=seed, port=0)
    server.start()
    yield server
    server.stop()


def with_param(url: str, name: str, value: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{name}={value}"


def write(tmp_path: Path, *, endpoint: str, source: str, state: str) -> Path:
    (tmp_path / "secret_key.txt").write_text(SECRET + "\n")
    spec = tmp_path / "sync.yaml"
    spec.write_text(SPEC.format(endpoint=endpoint, access=ACCESS, source=source, state=state))
    return spec


def cli(spec: Path, *args: str) -> Result:
    return CliRunner().invoke(main_group, ["--config", str(spec), *args])


def leaks(text: str) -> list[str]:
    return [marker for marker in MARKERS if marker in text]


def store_contents(url: str) -> str:
    """Every row of every table of the state store, as text."""
    engine = sa.create_engine(url)
    try:
        meta = sa.MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            return "\n".join(str(row) for table in meta.sorted_tables
                             for row in conn.execute(sa.select(table)))
    finally:
        engine.dispose()


def test_no_credential_reaches_any_output_or_the_state_store(
    tmp_path: Path, emulator_with_markers: EmulatorServer, pg_url: str
) -> None:
    emulator = emulator_with_markers
    shop = Shop(pg_url)
    shop.add_customers(customer_rows(30))
    endpoint = emulator.base_url.replace("http://", f"http://probe:{ENDPOINT_PW}@")
    source = with_param(pg_url, "password", SOURCE_PW)
    # The test cluster trusts local connections: a password in the URL is sent and ignored.
    state = with_param(sa.make_url(pg_url).set(password=STATE_USER_PW).render_as_string(False),
                       "sslpassword", STATE_PW)
    spec = write(tmp_path, endpoint=endpoint, source=source, state=state)
    bad_key = tmp_path / "bad"
    bad_key.mkdir()
    wrong_secret = write(bad_key, endpoint=endpoint, source=source, state=state)
    (bad_key / "secret_key.txt").write_text(SECRET + "-not\n")  # a 401
    no_endpoint = tmp_path / "no-endpoint"
    no_endpoint.mkdir()
    unreachable = write(no_endpoint, source=source, state=state,
                        endpoint=f"http://probe:{ENDPOINT_PW}@127.0.0.1:{closed_port()}/api/v1")
    no_database = tmp_path / "no-database"
    no_database.mkdir()
    dead_source = sa.make_url(pg_url).set(port=closed_port()).render_as_string(False)
    database_down = write(no_database, endpoint=endpoint, state=state,
                          source=with_param(dead_source, "password", SOURCE_PW))

    results: dict[str, Result] = {}
    for name, chosen, args in [
        ("validate", spec, ["validate"]),
        ("validate --connect", spec, ["--json", "validate", "--connect"]),
        ("plan", spec, ["plan"]),
        ("run --json, json logs", spec, ["--json", "--log-format", "json", "run"]),
        ("run, debug logs", spec, ["--log-level", "debug", "run"]),
        ("run --debug", spec, ["--debug", "run", "--full-refresh"]),
        ("history", spec, ["--json", "history"]),
        ("state show", spec, ["state", "show"]),
        ("quarantine list", spec, ["quarantine", "list"]),
        ("quarantine export", spec, ["quarantine", "export", "users"]),
        ("state show --json", spec, ["--json", "state", "show"]),
        ("a 401", wrong_secret, ["--debug", "run"]),
        ("a 401 --json", wrong_secret, ["--json", "validate", "--connect"]),
        ("unreachable endpoint", unreachable, ["--debug", "--json", "run"]),
        ("unreachable database", database_down, ["--debug", "--json", "run"]),
        ("unreachable database, validate", database_down, ["validate", "--connect"]),
    ]:
        if name == "a 401":  # something to send, so that a request is made
            shop.update_customer("u00001", age=99, updated_at=T0 + timedelta(days=1))
        results[name] = cli(chosen, *args)

    assert results["run --json, json logs"].exit_code == 0, results["run --json, json logs"].output
    assert results["a 401"].exit_code == 1
    assert results["unreachable endpoint"].exit_code == 1
    assert results["unreachable database"].exit_code == 1
    found = {name: leaks(r.stdout + r.stderr) for name, r in results.items()}
    assert found == {name: [] for name in results}, found
    assert leaks(store_contents(pg_url)) == []
    assert emulator.received("dsusers0001").rows_received > 0


def test_a_urls_secrets_are_hidden_wherever_they_sit() -> None:
    assert url_for_display("postgresql+psycopg://u:pw@h/db") == "postgresql+psycopg://u:***@h/db"
    assert url_for_display("postgresql+psycopg://u@h/db?sslmode=require&password=x&Token=y"
                           ) == "postgresql+psycopg://u@h/db?sslmode=require&password=***&Token=***"
    assert url_for_display("mysql://h/db?passwd=p&sslpassword=q&client_secret=r") == (
        "mysql://h/db?passwd=***&sslpassword=***&client_secret=***")
    assert url_for_display("http://user:pw@host/api/v1") == "http://user:***@host/api/v1"
    assert url_for_display("sqlite:////var/lib/state.db") == "sqlite:////var/lib/state.db"


def test_a_registered_secret_is_masked_in_any_text_and_its_url_encoded_forms() -> None:
    register(["p@ss w/rd-42"])
    text = "failed: p@ss w/rd-42, p%40ss%20w%2Frd-42 and p%40ss+w%2Frd-42"
    assert redact(text) == "failed: ***, *** and ***"

