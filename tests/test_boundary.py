"""Rows that share the mark's cursor value: a row committed after a run with exactly that value
is sent once whatever its key, and nothing delivered at it is sent again; an invalid row at it is
quarantined once; an event's key may be any column, and is its identity.

Every timestamp here is the same second, as a table with one-second ``updated_at`` or a bulk
import gives: the mark's cursor value is shared by every row, and only its key orders them.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from aitems_sync.cli.main import main_group
from aitems_sync.emulator.server import EmulatorServer
from aitems_sync.state.store import StateStore
from tests.conftest import source_and_state_urls
from tests.shop import T0, Shop

SPEC = """\
version: 1
aitems:
  endpoint: {endpoint}
  service_id: svcdemo0001
  access_key: demo-access-key
  secret_key: demo-secret-key
  batch: {{max_rows: 3, in_flight: 2}}
  retry: {{attempts: 2, backoff: 0.01s, max_backoff: 0.02s}}
state: "{state}"
sources:
  shop: {{url: "{source}"}}
datasets:
  users:
    type: user
    dataset_id: dsusers0001
    source: shop
    query: SELECT id AS USER_ID, age AS AGE, gender AS GENDER, updated_at FROM customers
    cursor: updated_at
    lookback: {lookback}
    max_invalid: 100%
    fields:
      - {{name: USER_ID, type: string}}
      - {{name: AGE, type: [int, "null"]}}
      - {{name: GENDER, type: [string, "null"], categorical: true}}
  events:
    type: interaction
    dataset_id: dsevent0001
    source: shop
    query: >-
      SELECT id AS event_id, user_id AS USER_ID, item_id AS ITEM_ID,
      occurred_at AS TIMESTAMP, event_type AS EVENT_TYPE FROM events
    cursor: TIMESTAMP
    {key}
    lookback: {lookback}
    fields:
      - {{name: USER_ID, type: string}}
      - {{name: ITEM_ID, type: string}}
      - {{name: TIMESTAMP, type: long}}
      - {{name: EVENT_TYPE, type: string}}
"""

SECOND = T0  # every row's cursor value


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def urls(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    return source_and_state_urls(request, tmp_path)


def write(tmp_path: Path, emulator: EmulatorServer, urls: tuple[str, str], *,
          lookback: str = "0s", key: str = "") -> Path:
    spec = tmp_path / "sync.yaml"
    spec.write_text(SPEC.format(endpoint=emulator.base_url, source=urls[0], state=urls[1],
                                lookback=lookback, key=key))
    return spec


def cli(spec: Path, *args: str) -> Result:
    return CliRunner().invoke(main_group, ["--config", str(spec), "--json", *args])


def run(spec: Path, *datasets: str) -> dict[str, Any]:
    result = cli(spec, "run", *datasets)
    assert result.exit_code == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return {d["dataset"]: d for d in report["datasets"]}


def users_received(emulator: EmulatorServer) -> Counter[tuple[str, Any]]:
    return Counter((r["USER_ID"], r["AGE"]) for r in emulator.received("dsusers0001").deliveries)


def events_received(emulator: EmulatorServer) -> Counter[str]:
    return Counter(r["EVENT_TYPE"] for r in emulator.received("dsevent0001").deliveries)


def events(shop: Shop, ids: list[int], *, user: str | None = None) -> None:
    """Events at the one second, each with its own EVENT_TYPE (``e<id>``) to recognize it; the
    whole-row order follows USER_ID, which is ``user`` or follows the id."""
    shop.add_events([(n, user or f"u{n:03d}", "i1", f"e{n}", SECOND) for n in ids])


@pytest.mark.parametrize("lookback", ["0s", "1h"])
def test_users_committed_later_at_the_marks_second_are_each_sent_once(
    tmp_path: Path, emulator: EmulatorServer, urls: tuple[str, str], lookback: str
) -> None:
    shop = Shop(urls[0])
    shop.add_customers([(f"m{n:02d}", n, "F", SECOND) for n in range(10)])
    spec = write(tmp_path, emulator, urls, lookback=lookback)
    assert run(spec, "users")["users"]["sent"] == 10

    # After the run, with the mark's cursor value: keys before and after the mark's (m09).
    shop.add_customers([("a00", 1, "F", SECOND), ("m05x", 2, "F", SECOND),
                        ("z99", 3, "F", SECOND)])
    second = run(spec, "users")["users"]
    third = run(spec, "users")["users"]

    assert second["sent"] == 3 and second["new"] == 3
    assert third["sent"] == 0 and third["read"] == 13 and third["unchanged"] == 13
    received = users_received(emulator)
    assert len(received) == 13 and set(received.values()) == {1}


@pytest.mark.parametrize("lookback", ["0s", "1h"])
@pytest.mark.parametrize("key", ["", "key: [event_id]"], ids=["whole-row", "event-id"])
def test_events_committed_later_at_the_marks_second_are_each_sent_once(
    tmp_path: Path, emulator: EmulatorServer, urls: tuple[str, str], lookback: str, key: str
) -> None:
    shop = Shop(urls[0])
    events(shop, list(range(10, 20)))
    spec = write(tmp_path, emulator, urls, lookback=lookback, key=key)
    assert run(spec, "events")["events"]["sent"] == 10

    # Later, at the same second: by whole row (USER_ID) and by id, before and after the mark.
    events(shop, [5, 25])
    shop.add_events([(15 + 100, "u000", "i1", "e115", SECOND)])  # sorts first by USER_ID
    second = run(spec, "events")["events"]
    third = run(spec, "events")["events"]

    assert second["sent"] == 3
    assert third["sent"] == 0
    assert events_received(emulator) == Counter(f"e{n}" for n in [*range(10, 20), 5, 25, 115])


def test_a_mark_without_a_boundary_reads_strictly_after_it_until_the_cursor_moves(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    """A mark written before the boundary was recorded (an older version, or `state set`)
    does not say which rows at its cursor value were sent: an events dataset reads strictly
    after it, and records a boundary only once a batch ends at a later value."""
    urls = (f"sqlite:///{tmp_path / 'shop.db'}", f"sqlite:///{tmp_path / 'state.db'}")
    shop = Shop(urls[0])
    events(shop, list(range(10, 20)))
    spec = write(tmp_path, emulator, urls)
    run(spec, "events")
    with StateStore.open(urls[1]) as store:
        mark = store.get_mark("events")
        assert mark is not None and store.boundary("events") is not None
        store.set_mark("events", mark)  # as an older version left it
        assert store.boundary("events") is None

    events(shop, [25])
    assert run(spec, "events")["events"]["sent"] == 1  # after the mark's key: read
    with StateStore.open(urls[1]) as store:
        assert store.boundary("events") is None  # still at that second
    shop.add_events([(30, "u030", "i1", "e30", SECOND + timedelta(seconds=1))])
    assert run(spec, "events")["events"]["sent"] == 1
    with StateStore.open(urls[1]) as store:
        assert store.boundary("events") is not None
    assert run(spec, "events")["events"]["sent"] == 0
    assert set(events_received(emulator).values()) == {1}


def test_an_invalid_row_at_the_marks_cursor_value_is_quarantined_once(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    urls = (f"sqlite:///{tmp_path / 'shop.db'}", f"sqlite:///{tmp_path / 'state.db'}")
    shop = Shop(urls[0])
    shop.add_customers([("m01", 1, "F", SECOND), ("m02", 2, "F", SECOND)])
    with shop.engine.begin() as conn:  # the last row: its AGE is not an int
        conn.exec_driver_sql("INSERT INTO customers VALUES ('m03', 'old', 'F', ?)",
                             (SECOND.strftime("%Y-%m-%d %H:%M:%S.%f"),))
    spec = write(tmp_path, emulator, urls)

    first = run(spec, "users")["users"]
    second = run(spec, "users")["users"]

    assert first["invalid"] == 1 and first["sent"] == 2
    assert (second["invalid"], second["unchanged"], second["status"]) == (0, 3, "ok"), second
    with StateStore.open(urls[1]) as store:
        assert store.quarantine_count("users") == 1


def test_identical_events_with_their_own_ids_all_arrive_once(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    """``key: [event_id]`` names a column that is not uploaded: two genuine identical events
    (the same user, item, second and type) are two events, in one batch or across runs."""
    urls = (f"sqlite:///{tmp_path / 'shop.db'}", f"sqlite:///{tmp_path / 'state.db'}")
    shop = Shop(urls[0])
    shop.add_events([(n, "u1", "i1", "view", SECOND) for n in range(1, 5)])
    spec = write(tmp_path, emulator, urls, key="key: [event_id]")

    first = run(spec, "events")["events"]
    shop.add_events([(n, "u1", "i1", "view", SECOND) for n in range(5, 7)])
    second = run(spec, "events")["events"]
    third = run(spec, "events")["events"]

    assert (first["sent"], second["sent"], third["sent"]) == (4, 2, 0)
    assert first["superseded"] == 0
    assert events_received(emulator) == Counter({"view": 6})


def test_without_a_key_identical_events_are_one_event(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    """The whole-row default, as documented: identical rows are collapsed in a batch."""
    urls = (f"sqlite:///{tmp_path / 'shop.db'}", f"sqlite:///{tmp_path / 'state.db'}")
    shop = Shop(urls[0])
    shop.add_events([(n, "u1", "i1", "view", SECOND) for n in range(1, 3)])
    spec = write(tmp_path, emulator, urls)

    assert run(spec, "events")["events"]["sent"] == 1
    assert events_received(emulator) == Counter({"view": 1})


def test_changing_the_key_of_a_dataset_with_a_ledger_is_refused_until_reset(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    urls = (f"sqlite:///{tmp_path / 'shop.db'}", f"sqlite:///{tmp_path / 'state.db'}")
    shop = Shop(urls[0])
    events(shop, list(range(1, 6)))
    write(tmp_path, emulator, urls, lookback="1h")
    run(tmp_path / "sync.yaml", "events")
    spec = write(tmp_path, emulator, urls, lookback="1h", key="key: [event_id]")

    refused = cli(spec, "run", "events")

    assert refused.exit_code == 2
    assert "datasets.events.key" in refused.stderr
    assert "by the whole row, but the spec identifies them by key [event_id]" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert sum(events_received(emulator).values()) == 5
    # The way out the message names starts with a reset; then the new key is recorded.
    assert cli(spec, "state", "reset", "events", "--yes").exit_code == 0
    events(shop, [7])
    assert run(spec, "events")["events"]["sent"] == 6  # after a reset: everything, as it says
    with StateStore.open(urls[1]) as store:
        assert store.identity("events") == ("event_id",)
    assert run(spec, "events")["events"]["sent"] == 0
