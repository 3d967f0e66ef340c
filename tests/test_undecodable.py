"""One value the source's driver cannot decode costs one row, not the dataset.

PostgreSQL dates and timestamps outside Python's range (``infinity``, ``-infinity``, BC dates,
year 10000) and SQLite TEXT that is not UTF-8 made the driver raise while it fetched a chunk:
every run failed at the same place with nothing read or quarantined. Now the row holding such
a value is quarantined with the raw text and the reason, and every other row is delivered once;
a cursor or key that cannot be read stops the dataset at that row, after the rows before it
are delivered, with a message naming the row and what to change in the query.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from aitems_sync.aitems.client import AitemsClient
from aitems_sync.cli.main import main_group
from aitems_sync.commands import open_sources, open_state
from aitems_sync.emulator.server import EmulatorServer
from aitems_sync.errors import UnreadableRowError
from aitems_sync.spec.load import load_spec
from aitems_sync.state.store import StateStore
from aitems_sync.sync import engine
from aitems_sync.sync.options import RunOptions
from aitems_sync.sync.report import RunReport
from aitems_sync.undecodable import Undecodable

SPEC = """\
version: 1
aitems:
  endpoint: {endpoint}
  service_id: svcdemo0001
  access_key: demo-access-key
  secret_key: demo-secret-key
  batch: {{max_rows: 2}}
  retry: {{attempts: 2, backoff: 0.01s, max_backoff: 0.02s}}
state: "{state}"
sources:
  db: {{url: "{source}"}}
datasets:
  users:
    type: user
    dataset_id: dsusers0001
    source: db
    query: SELECT id AS USER_ID, seen AS AGE, note AS GENDER, updated_at FROM members
    cursor: updated_at
    max_invalid: 100%
    fields:
      - {{name: USER_ID, type: string}}
      - {{name: AGE, type: [int, "null"]}}
      - {{name: GENDER, type: [string, "null"], categorical: true}}
  events:
    type: interaction
    dataset_id: dsevent0001
    source: db
    query: >-
      SELECT user_id AS USER_ID, item_id AS ITEM_ID, at AS TIMESTAMP, 'view' AS EVENT_TYPE
      FROM clicks
    cursor: TIMESTAMP
    max_invalid: 100%
    fields:
      - {{name: USER_ID, type: string}}
      - {{name: ITEM_ID, type: string}}
      - {{name: TIMESTAMP, type: long}}
      - {{name: EVENT_TYPE, type: string}}
"""


@dataclass
class Setup:
    emulator: EmulatorServer
    spec: Path
    db: sa.Engine
    state_url: str

    def run(self, dataset: str, **options: Any) -> RunReport:
        spec = load_spec(self.spec)
        with open_state(spec) as state, open_sources(spec) as sources:
            client = AitemsClient.from_config(spec.aitems)
            try:
                return engine.run(spec, [spec.datasets[dataset]], state=state, uploader=client,
                                  sources=sources, options=RunOptions(chunk_rows=4, **options))
            finally:
                client.close()

    def sql(self, *statements: str) -> None:
        with self.db.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))

    def users(self) -> Counter[str]:
        return Counter(r["USER_ID"] for r in self.emulator.received("dsusers0001").deliveries)

    def quarantined(self, dataset: str) -> list[dict[str, Any]]:
        with StateStore.open(self.state_url) as store:
            return [e.to_dict() for e in store.quarantined(dataset)]


def _setup(tmp_path: Path, emulator: EmulatorServer, source: str, state: str) -> Iterator[Setup]:
    spec = tmp_path / "sync.yaml"
    spec.write_text(SPEC.format(endpoint=emulator.base_url, source=source, state=state))
    db = sa.create_engine(source)
    try:
        yield Setup(emulator, spec, db, state)
    finally:
        db.dispose()


@pytest.fixture
def pg(tmp_path: Path, emulator: EmulatorServer, pg_url: str) -> Iterator[Setup]:
    yield from _setup(tmp_path, emulator, pg_url, pg_url)


@pytest.fixture
def lite(tmp_path: Path, emulator: EmulatorServer) -> Iterator[Setup]:
    yield from _setup(tmp_path, emulator, f"sqlite:///{tmp_path / 'shop.db'}",
                      f"sqlite:///{tmp_path / 'state.db'}")


PG_MEMBERS = """CREATE TABLE members (id text PRIMARY KEY, note text, seen timestamp,
                joined date, updated_at timestamp NOT NULL)"""

#: (id, the SEEN value, as PostgreSQL reads it): twelve rows, four of them beyond Python.
PG_SEEN = {f"u{n:02d}": "2026-03-01 10:00:00" for n in range(12)} | {
    "u02": "infinity", "u05": "-infinity", "u06": "4713-01-01 00:00:00 BC",
    "u09": "10000-01-01 00:00:00"}
BAD_PG = {"u02", "u05", "u06", "u09"}


def _pg_members(setup: Setup) -> None:
    setup.sql(PG_MEMBERS)
    setup.sql(*(f"INSERT INTO members VALUES ('{id_}', 'n', '{seen}', '2026-01-01', "
                f"'2026-03-01 12:00:{n:02d}')" for n, (id_, seen) in enumerate(PG_SEEN.items())))


@pytest.mark.parametrize("worker_after", [None, 0], ids=["in-process", "worker"])
def test_postgresql_infinite_bc_and_year_10000_values_are_each_quarantined_alone(
    pg: Setup, worker_after: int | None
) -> None:
    _pg_members(pg)

    report = pg.run("users", worker_after=worker_after).datasets[0]
    again = pg.run("users", worker_after=worker_after).datasets[0]

    assert (report.read, report.sent, report.invalid) == (12, 8, 4)
    assert pg.users() == Counter({id_: 1 for id_ in PG_SEEN if id_ not in BAD_PG})
    quarantined = {q["key"]["USER_ID"]: q for q in pg.quarantined("users")}
    assert set(quarantined) == BAD_PG
    seen = {id_: q["raw"]["age"] for id_, q in quarantined.items()}
    assert seen["u02"]["undecodable"] == "infinity"
    assert seen["u05"]["undecodable"] == "-infinity"
    assert seen["u06"]["undecodable"] == "4713-01-01 00:00:00 BC"
    assert seen["u09"]["undecodable"] == "10000-01-01 00:00:00"
    assert all("timestamp too" in s["reason"] for s in seen.values())
    errors = quarantined["u02"]["errors"]
    assert errors[0]["path"] == "$.AGE" and "'infinity'" in errors[0]["message"]
    # The next run reads them again at most at the mark's value, and sends nothing twice.
    assert (again.sent, again.invalid) == (0, 0)


def test_a_postgresql_date_field_at_infinity_is_quarantined(pg: Setup) -> None:
    pg.sql(PG_MEMBERS, "INSERT INTO members VALUES ('a', 'n', NULL, 'infinity', '2026-03-01'),"
           " ('b', 'n', NULL, '2026-01-01', '2026-03-02')")
    pg.spec.write_text(pg.spec.read_text().replace("seen AS AGE", "joined AS AGE"))

    report = pg.run("users").datasets[0]

    assert (report.sent, report.invalid) == (1, 1)
    [entry] = pg.quarantined("users")
    assert entry["raw"]["age"] == {"undecodable": "infinity",
                                    "reason": "date too large (after year 10K)"}


def test_an_infinite_cursor_stops_the_dataset_at_its_row_after_the_rows_before_it(
    pg: Setup,
) -> None:
    _pg_members(pg)
    pg.sql("UPDATE members SET seen = NULL",
           "UPDATE members SET updated_at = 'infinity' WHERE id = 'u07'")

    first, second = pg.run("users"), pg.run("users")

    assert first.exit_code == second.exit_code == UnreadableRowError.exit_code
    message = first.datasets[0].error or ""
    assert second.datasets[0].error == message and second.datasets[0].sent == 0
    assert "dataset users: the row at cursor 'infinity' with key 'u07'" in message
    assert "column updated_at = 'infinity' (timestamp too large" in message
    assert "LEAST(GREATEST(updated_at, '0001-01-01'), '9999-12-31')" in message
    # Every other row sorts before it (infinity is last): each is delivered, once.
    assert pg.users() == Counter({id_: 1 for id_ in PG_SEEN if id_ != "u07"})
    with StateStore.open(pg.state_url) as store:
        mark = store.get_mark("users")
    assert mark is not None and mark.key == ("u11",)


def test_the_cli_names_the_unreadable_cursor_row_without_a_traceback(pg: Setup) -> None:
    pg.sql(PG_MEMBERS, "INSERT INTO members VALUES ('a', 'n', NULL, NULL, '-infinity')")

    result = CliRunner().invoke(main_group, ["--config", str(pg.spec), "run", "users"])

    assert result.exit_code == 1
    assert "the row at cursor '-infinity' with key 'a' has a cursor value" in result.output
    assert "Traceback" not in result.stderr + result.stdout


# -- SQLite: TEXT that is not UTF-8 ------------------------------------------------------------

def _lite_members(setup: Setup, bad: dict[str, str]) -> None:
    """Twelve members; ``bad`` maps an id to the column that holds invalid UTF-8 for it."""
    setup.sql("CREATE TABLE members (id TEXT PRIMARY KEY, note TEXT, seen TEXT, "
              "updated_at TEXT NOT NULL)")
    for n in range(12):
        id_ = f"u{n:02d}"
        note = "CAST(x'ff41' AS TEXT)" if bad.get(id_) == "note" else "'caf\u00e9'"
        key = "CAST(x'75c3' AS TEXT)" if bad.get(id_) == "id" else f"'{id_}'"
        setup.sql(f"INSERT INTO members VALUES ({key}, {note}, NULL, "
                  f"'2026-03-01 12:00:{n:02d}')")


@pytest.mark.parametrize("worker_after", [None, 0], ids=["in-process", "worker"])
def test_sqlite_text_that_is_not_utf8_costs_its_row_alone(
    lite: Setup, worker_after: int | None
) -> None:
    # u03 is the last row of the first chunk, u05 in the middle of one, u08 the first of one.
    bad = {"u03": "note", "u05": "note", "u08": "note"}
    _lite_members(lite, bad)

    report = lite.run("users", worker_after=worker_after).datasets[0]
    again = lite.run("users", worker_after=worker_after).datasets[0]

    assert (report.read, report.sent, report.invalid) == (12, 9, 3)
    assert lite.users() == Counter({f"u{n:02d}": 1 for n in range(12) if f"u{n:02d}" not in bad})
    quarantined = {q["key"]["USER_ID"]: q for q in lite.quarantined("users")}
    assert set(quarantined) == set(bad)
    assert quarantined["u05"]["raw"]["GENDER"] == {
        "undecodable": "\\xffA", "reason": "not valid UTF-8 (byte 0 of 2)"}
    assert quarantined["u05"]["errors"][0]["path"] == "$.GENDER"
    assert (again.sent, again.invalid) == (0, 0)


@pytest.mark.parametrize("worker_after", [None, 0], ids=["in-process", "worker"])
def test_an_event_with_text_that_is_not_utf8_is_quarantined_alone(
    lite: Setup, worker_after: int | None
) -> None:
    # The bad event ends the first chunk (4 rows); its place (a whole-row key) holds the value.
    lite.sql("CREATE TABLE clicks (user_id TEXT, item_id TEXT, at INTEGER NOT NULL)")
    lite.sql(*(f"INSERT INTO clicks VALUES ('u{n}', 'i{n}', {1000 + n})" for n in range(9)))
    lite.sql("UPDATE clicks SET item_id = CAST(x'69fe' AS TEXT) WHERE at = 1003")

    report = lite.run("events", worker_after=worker_after).datasets[0]
    again = lite.run("events", worker_after=worker_after).datasets[0]

    assert (report.sent, report.invalid) == (8, 1)
    delivered = Counter(r["USER_ID"] for r in lite.emulator.received("dsevent0001").deliveries)
    assert delivered == Counter({f"u{n}": 1 for n in range(9) if n != 3})
    [entry] = lite.quarantined("events")
    assert entry["raw"]["ITEM_ID"]["undecodable"] == "i\\xfe"
    assert (again.sent, again.invalid) == (0, 0)


def test_a_key_that_is_not_utf8_stops_the_dataset_at_its_row(lite: Setup) -> None:
    _lite_members(lite, {"u06": "id"})

    message = lite.run("users").datasets[0].error or ""

    assert "the row at cursor '2026-03-01 12:00:06' with key 'u\\\\xc3'" in message
    assert "has a key value the source's driver cannot read: column USER_ID" in message
    assert lite.users() == Counter({f"u{n:02d}": 1 for n in range(6)})


@pytest.mark.parametrize("worker_after", [None, 20_000], ids=["in-process", "worker-later"])
@pytest.mark.parametrize("row", [4, 6], ids=["first-of-a-chunk", "mid-chunk"])
def test_an_unreadable_key_anywhere_in_a_chunk_stops_the_dataset_cleanly(
    lite: Setup, worker_after: int | None, row: int
) -> None:
    # chunk_rows 4: row 4 opens the second chunk, which the dataset then prepares empty.
    _lite_members(lite, {f"u{row:02d}": "id"})

    report = lite.run("users", worker_after=worker_after).datasets[0]

    assert report.status == "failed" and "has a key value" in (report.error or "")
    assert lite.users() == Counter({f"u{n:02d}": 1 for n in range(row)})


def test_undecodable_values_round_trip_through_the_state_store(lite: Setup) -> None:
    value = Undecodable("\\xffA", "not valid UTF-8 (byte 0 of 2)")
    from aitems_sync.state.values import decode_value, encode_value

    assert decode_value(json.loads(json.dumps(encode_value(value)))) == value
