"""A first load's file and its hand-over: the CSV holds every valid row once, in schema order;
nothing is the dataset's until the hand-over; after it, `run` sends only what changed after
the snapshot. (Object Storage and AiTEMS's dataset creation are the caller's:
tests/test_objectstorage.py and the bootstrap command's tests.)"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from aitems_sync.cli.main import main_group
from aitems_sync.commands import open_sources, open_state
from aitems_sync.emulator.server import EmulatorServer
from aitems_sync.errors import InvalidRowsError, SourceError, UnreadableRowError
from aitems_sync.spec.load import load_spec
from aitems_sync.sync.fileload import FileLoad, Snapshot, staging_name
from tests.conftest import source_and_state_urls
from tests.shop import T0, Shop, customer_rows, write_spec

AGE = "CASE WHEN age = 33 THEN age + 3000000000 ELSE age END"  # age 33: invalid


@dataclass
class Setup:
    shop: Shop
    emulator: EmulatorServer
    spec: Path

    def load(self, dataset: str, *, hand_over: bool = True) -> tuple[Snapshot, str]:
        spec = load_spec(self.spec)
        out = io.StringIO()
        with open_state(spec) as state, open_sources(spec) as sources:
            chosen = spec.datasets[dataset]
            for name in (dataset, staging_name(dataset)):
                state.acquire_lease(name, owner="boot-1", host="h", pid=1, ttl=60)
            snapshot = FileLoad(chosen, sources[chosen.source], state, run_id="boot-1",
                                chunk_rows=700).write(out)
            if hand_over and snapshot.mark is not None:
                state.adopt(dataset, staging_name(dataset), run_id="boot-1", mark=snapshot.mark,
                            boundary=snapshot.boundary,
                            binding=(spec.aitems.service_id, chosen.dataset_id),
                            identity=snapshot.identity)
            for name in (dataset, staging_name(dataset)):
                state.release_lease(name, owner="boot-1")
        return snapshot, out.getvalue()

    def run(self, *datasets: str) -> dict[str, Any]:
        result = CliRunner().invoke(main_group, ["--config", str(self.spec), "--json", "run",
                                                 *datasets])
        assert result.exit_code in (0, 3), result.output
        return {d["dataset"]: d for d in json.loads(result.stdout)["datasets"]}


@pytest.fixture(params=["sqlite", "postgresql"])
def setup(request: pytest.FixtureRequest, tmp_path: Path,
          emulator: EmulatorServer) -> Iterator[Setup]:
    source_url, state_url = source_and_state_urls(request, tmp_path)
    shop = Shop(source_url)
    shop.add_customers(customer_rows(3000))
    shop.add_events([(n, f"u{n % 97:05d}", f"i{n % 31:03d}", "view", T0 + timedelta(seconds=n))
                     for n in range(2000)])
    spec = write_spec(tmp_path / "sync.yaml", endpoint=emulator.base_url, source_url=source_url,
                      state_url=state_url, age=AGE)
    yield Setup(shop, emulator, spec)
    shop.close()


def _csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def test_the_file_holds_every_valid_user_once_in_schema_order(setup: Setup) -> None:
    snapshot, text = setup.load("users")

    rows = _csv(text)
    invalid = {f"u{i:05d}" for i in range(3000) if 20 + i % 50 == 33}
    assert rows[0] == ["USER_ID", "AGE", "GENDER"]
    assert len(rows) - 1 == snapshot.rows == 3000 - len(invalid)
    expected = [[u, str(a), g] for u, a, g, _ in customer_rows(3000) if u not in invalid]
    assert sorted(rows[1:]) == sorted(expected)
    assert (snapshot.read, snapshot.invalid) == (3000, len(invalid))
    assert snapshot.mark is not None and snapshot.mark.key == ("u02999",)


def test_after_the_hand_over_a_run_sends_only_what_changed(setup: Setup) -> None:
    setup.load("users")
    for n in range(0, 100):
        setup.shop.update_customer(f"u{n * 7:05d}", age=70, updated_at=T0 + timedelta(days=2))

    report = setup.run("users")["users"]

    # Those that were invalid (age 33) are not in the file: new now.
    were_invalid = sum(1 for n in range(100) if 20 + (n * 7) % 50 == 33)
    assert were_invalid > 0
    assert (report["sent"], report["changed"], report["new"]) == (
        100, 100 - were_invalid, were_invalid)
    assert report["invalid"] == 0  # the file's invalid rows were quarantined by the load
    received = Counter(r["USER_ID"] for r in setup.emulator.received("dsusers0001").deliveries)
    assert received == Counter({f"u{n * 7:05d}": 1 for n in range(100)})


def test_events_after_the_snapshot_are_the_only_ones_sent(setup: Setup) -> None:
    snapshot, text = setup.load("events")
    setup.shop.add_events([(5000 + n, "u00001", "i001", "click", T0 + timedelta(days=1, seconds=n))
                           for n in range(10)])

    report = setup.run("events")["events"]

    assert snapshot.rows == len(_csv(text)) - 1 == 2000
    assert report["sent"] == 10


def test_nothing_is_the_datasets_until_the_hand_over(setup: Setup) -> None:
    setup.load("users", hand_over=False)

    report = setup.run("users")["users"]

    assert report["new"] == 3000 - 60 and report["invalid"] == 60  # as if never loaded


def test_a_key_the_query_returns_twice_stops_the_load(setup: Setup, tmp_path: Path) -> None:
    text = setup.spec.read_text().replace("FROM customers",
                                          "FROM customers UNION ALL SELECT id, 40, 'F', "
                                          "updated_at FROM customers WHERE id = 'u00002'", 1)
    setup.spec.write_text(text)

    with pytest.raises(SourceError) as failed:
        setup.load("users")

    assert "the query returns USER_ID 'u00002' more than once" in str(failed.value)


def test_too_many_invalid_rows_hand_nothing_over(setup: Setup) -> None:
    setup.spec.write_text(setup.spec.read_text().replace('max_invalid: "50%"', 'max_invalid: "10"'))

    with pytest.raises(InvalidRowsError):
        setup.load("users")


def test_events_sharing_the_snapshots_last_second_across_chunks_are_each_sent_once(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    """The boundary of an interaction file: the rows at its last cursor value, here split
    between two chunks (700 rows each), are recorded, so a run sends a row committed later at
    that second and none of those in the file."""
    source, state = f"sqlite:///{tmp_path / 'shop.db'}", f"sqlite:///{tmp_path / 'state.db'}"
    shop = Shop(source)
    last = T0 + timedelta(days=1)
    shop.add_events([(n, f"u{n:05d}", "i1", "view", T0 + timedelta(seconds=n))
                     for n in range(1395)])
    shop.add_events([(n, f"u{n:05d}", "i1", "view", last) for n in range(1395, 1405)])
    spec = write_spec(tmp_path / "sync.yaml", endpoint=emulator.base_url, source_url=source,
                      state_url=state)
    spec.write_text(spec.read_text().replace("cursor: event_id", "cursor: TIMESTAMP"))
    setup = Setup(shop, emulator, spec)
    snapshot, _ = setup.load("events")
    shop.add_events([(5000, "u99999", "i1", "view", last)])  # committed after, same second

    report = setup.run("events")["events"]

    assert snapshot.rows == 1405 and snapshot.boundary is not None
    assert len(snapshot.boundary.entries) == 10
    assert (report["sent"], report["unchanged"]) == (1, 10)
    shop.close()


def test_a_cursor_the_driver_cannot_read_stops_the_load_naming_the_row(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    source, state = f"sqlite:///{tmp_path / 'shop.db'}", f"sqlite:///{tmp_path / 'state.db'}"
    shop = Shop(source)
    shop.add_customers(customer_rows(50))
    with shop.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE customers SET updated_at = CAST(x'32ff' AS TEXT) "
                             "WHERE id = 'u00007'")
    spec = write_spec(tmp_path / "sync.yaml", endpoint=emulator.base_url, source_url=source,
                      state_url=state)

    with pytest.raises(UnreadableRowError) as failed:
        Setup(shop, emulator, spec).load("users")

    assert "with key 'u00007' has a cursor value the source's driver cannot read" in str(
        failed.value)
    assert "nothing was handed over" in str(failed.value)
    shop.close()
