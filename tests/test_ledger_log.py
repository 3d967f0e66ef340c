"""The ledger's log and its merges keep each row version delivered once (end to end, and the
reading thread's near ledger on its own).

Batch commits append ledger entries to a log that is merged into the ledger every
``merge_every`` entries; the run holds what is not merged yet in memory. These runs repeat keys
across many batches and merges, with the state on SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from aitems_sync.aitems.client import AitemsClient
from aitems_sync.aitems.delivery import Target
from aitems_sync.commands import open_sources, open_state
from aitems_sync.emulator.server import EmulatorServer, Faults
from aitems_sync.rows.encode import ROW_HASH, encode_row
from aitems_sync.spec.load import load_spec
from aitems_sync.state.store import RECENT_LIMIT, LedgerEntry, StateStore
from aitems_sync.sync import engine
from aitems_sync.sync.batches import Batch
from aitems_sync.sync.dataset import DatasetSync, SyncSettings, _NearLedger
from aitems_sync.sync.options import RunOptions
from aitems_sync.sync.report import DatasetReport, RunReport
from tests.conftest import source_and_state_urls
from tests.shop import T0, TIMESTAMP, Shop, customer_rows, write_spec

visits = sa.Table(
    "visits", sa.MetaData(),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.String(20), nullable=False),
    sa.Column("age", sa.Integer, nullable=False),
    sa.Column("seen_at", TIMESTAMP, nullable=False),
)

# A user dataset whose query returns each key many times, in cursor order.
PROFILES = """\
  profiles:
    type: user
    dataset_id: dsusers0001  # the emulator's user dataset
    source: shop
    query: SELECT user_id AS USER_ID, age AS AGE, 'F' AS GENDER, seen_at FROM visits
    cursor: seen_at
    fields:
      - {name: USER_ID, type: string}
      - {name: AGE, type: [int, "null"]}
      - {name: GENDER, type: [string, "null"], categorical: true}
"""

USERS = 20
ROWS = 200  # each user 10 times: 5 times aged 20, then 5 times aged 21


@dataclass
class Visits:
    spec: Path
    source_url: str
    state_url: str
    emulator: EmulatorServer

    def run(self, recent_limit: int = RECENT_LIMIT, **options: object) -> RunReport:
        spec = load_spec(self.spec)
        run_options = RunOptions(**options)  # type: ignore[arg-type]
        with (StateStore.open(spec.state_url, recent_limit=recent_limit) as state,
              open_sources(spec) as sources):
            client = AitemsClient.from_config(spec.aitems)
            try:
                return engine.run(spec, [spec.datasets["profiles"]], state=state,
                                  uploader=client, sources=sources,
                                  options=run_options)
            finally:
                client.close()

    def plan(self, **options: object) -> RunReport:
        spec = load_spec(self.spec)
        run_options = RunOptions(**options)  # type: ignore[arg-type]
        with open_state(spec) as state, open_sources(spec) as sources:
            return engine.plan(spec, [spec.datasets["profiles"]], state=state, sources=sources,
                               options=run_options)

    def touch_last_rows(self, hours: int) -> None:
        """Move each user's last row to ``hours`` after the first run, unchanged otherwise."""
        later = T0 + timedelta(hours=hours)
        source = sa.create_engine(self.source_url)
        with source.begin() as conn:
            conn.execute(visits.update().where(visits.c.seq >= ROWS - USERS)
                         .values(seen_at=later))
        source.dispose()

    def delivered(self) -> Counter[tuple[str, int]]:
        rows = self.emulator.received("dsusers0001").deliveries
        return Counter((row["USER_ID"], row["AGE"]) for row in rows)

    def state(self) -> StateStore:
        return StateStore.open(self.state_url)


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def shop(request: pytest.FixtureRequest, tmp_path: Path,
         emulator: EmulatorServer) -> Iterator[Visits]:
    source_url, state_url = source_and_state_urls(request, tmp_path)
    source = sa.create_engine(source_url)
    visits.metadata.create_all(source)
    with source.begin() as conn:
        conn.execute(visits.insert(), [
            {"seq": n, "user_id": f"u{n % USERS:02d}", "age": 20 + n // 100,
             "seen_at": T0 + timedelta(seconds=n)} for n in range(ROWS)])
    source.dispose()
    spec = write_spec(tmp_path / "sync.yaml", endpoint=emulator.base_url, source_url=source_url,
                      state_url=state_url, max_rows=7, extra=PROFILES)
    yield Visits(spec, source_url, state_url, emulator)


def _profiles(report: RunReport) -> dict[str, object]:
    [dataset] = report.datasets
    return {"status": dataset.status, "read": dataset.read, "new": dataset.new,
            "changed": dataset.changed, "unchanged": dataset.unchanged, "sent": dataset.sent}


def _newest(user: int) -> tuple[int, int]:
    """The ledger's key hash and payload hash of a user's last version (aged 21)."""
    _encoded, key_hash, payload = encode_row(["USER_ID", "AGE", "GENDER"],
                                           [f"u{user:02d}", 21, "F"], [0], ROW_HASH)
    return key_hash, payload


NEWEST = dict(_newest(u) for u in range(USERS))


@pytest.mark.parametrize(("merge_every", "recent_limit"), [
    (15, RECENT_LIMIT),
    (15, 25),  # the second level is merged into the ledger every other merge or so
    (1_000_000, RECENT_LIMIT),
])
@pytest.mark.parametrize("chunk_rows", [5000, USERS])  # one chunk; chunks of unique new keys
def test_keys_repeated_across_batches_and_merges_are_sent_once_per_version(
    shop: Visits, merge_every: int, recent_limit: int, chunk_rows: int
) -> None:
    report = shop.run(merge_every=merge_every, chunk_rows=chunk_rows, recent_limit=recent_limit)
    assert _profiles(report) == {"status": "ok", "read": ROWS, "new": USERS,
                                 "changed": USERS, "unchanged": ROWS - 2 * USERS,
                                 "sent": 2 * USERS}
    assert shop.delivered() == Counter(
        {(f"u{u:02d}", age): 1 for u in range(USERS) for age in (20, 21)})
    with shop.state() as state:
        assert state.ledger_lookup("profiles", list(NEWEST)) == NEWEST
        logged = state.logged_count("profiles")
    assert logged < 15 if merge_every == 15 else logged == 2 * USERS


@pytest.mark.parametrize("recent_limit", [RECENT_LIMIT, 100])  # in either level by then
def test_a_first_load_compares_a_key_read_again_long_after_its_entry_was_merged(
    shop: Visits, recent_limit: int,
) -> None:
    # 2,000 other users, then u00's last version again: by then the entry of its first
    # delivery is long merged (every 15 entries) and forgotten by the reader's memory, so
    # only the ledger (or the first load's filter of merged keys) knows it.
    later = T0 + timedelta(seconds=ROWS)
    source = sa.create_engine(shop.source_url)
    with source.begin() as conn:
        conn.execute(visits.insert(), [
            {"seq": ROWS + n, "user_id": f"w{n:04d}", "age": 30,
             "seen_at": later + timedelta(seconds=n)} for n in range(2000)])
        conn.execute(visits.insert(), {"seq": ROWS + 2000, "user_id": "u00", "age": 21,
                                       "seen_at": later + timedelta(seconds=2000)})
    source.dispose()

    report = shop.run(merge_every=15, chunk_rows=50, recent_limit=recent_limit)

    assert _profiles(report)["sent"] == 2 * USERS + 2000
    assert shop.delivered()[("u00", 21)] == 1


def test_a_key_read_again_while_its_batch_is_being_built_is_compared_with_that_batch(
    shop: Visits, tmp_path: Path,
) -> None:
    shop.spec = write_spec(tmp_path / "one-batch.yaml", endpoint=shop.emulator.base_url,
                           source_url=shop.source_url, state_url=shop.state_url,
                           max_rows=1000, extra=PROFILES)
    report = shop.run(chunk_rows=USERS)  # every chunk holds each user once, all in one batch

    # A user's second version replaces the first in the batch (superseded): both count as new,
    # as neither was ever sent.
    assert _profiles(report) == {"status": "ok", "read": ROWS, "new": 2 * USERS,
                                 "changed": 0, "unchanged": ROWS - 2 * USERS, "sent": USERS}
    assert shop.delivered() == Counter({(f"u{u:02d}", 21): 1 for u in range(USERS)})


def test_a_run_compares_with_the_log_earlier_runs_left_and_merges_it_once_large(
    shop: Visits,
) -> None:
    assert _profiles(shop.run(merge_every=1_000_000))["sent"] == 2 * USERS
    with shop.state() as state:
        assert state.logged_count("profiles") == 2 * USERS
        assert state.ledger_lookup("profiles", list(NEWEST), logged=False) == {}

    # Each user's last row touched, nothing else changed: the log, not yet merged, keeps
    # them off the wire.
    touched = {"status": "ok", "read": USERS, "new": 0, "changed": 0, "unchanged": USERS,
               "sent": 0}
    shop.touch_last_rows(hours=1)
    assert _profiles(shop.plan()) == touched
    assert _profiles(shop.run(merge_every=1_000_000)) == touched
    with shop.state() as state:
        assert state.logged_count("profiles") == 2 * USERS  # under half the threshold: kept

    # With half the threshold or more logged, the run that has rows merges the log after its
    # first transaction, while it reads on.
    shop.touch_last_rows(hours=2)
    assert _profiles(shop.run(merge_every=2 * USERS + 1)) == touched
    with shop.state() as state:
        assert state.logged_count("profiles") == 0
        assert state.ledger_lookup("profiles", list(NEWEST), logged=False) == NEWEST
    assert sum(shop.delivered().values()) == 2 * USERS


def test_a_log_of_merge_every_entries_or_more_is_merged_before_the_run_reads(
    shop: Visits,
) -> None:
    assert _profiles(shop.run(merge_every=1_000_000))["sent"] == 2 * USERS
    shop.touch_last_rows(hours=1)
    report = shop.run(merge_every=30)  # 40 logged entries: merged first, then compared
    assert _profiles(report) == {"status": "ok", "read": USERS, "new": 0, "changed": 0,
                                 "unchanged": USERS, "sent": 0}
    with shop.state() as state:
        assert state.logged_count("profiles") == 0
        assert state.ledger_lookup("profiles", list(NEWEST), logged=False) == NEWEST


# -- the reading thread's near ledger ---------------------------------------------------------


def _batch(seq: int, *entries: tuple[int, int]) -> Batch:
    return Batch(seq=seq, rows=[b"{}"] * len(entries), keys=[None] * len(entries),
                 ledger=[LedgerEntry(k, p) for k, p in entries], first=None, last=None,
                 end=None, quarantine=[], body_bytes=0)


def test_the_near_ledger_forgets_a_batch_once_covered_but_keeps_a_newer_version() -> None:
    near = _NearLedger(earlier={7: 70, 8: 80})
    near.add(_batch(1, (1, 10), (2, 20)))
    near.add(_batch(2, (2, 21), (7, 71)))
    assert [near.get(k) for k in (1, 2, 7, 8, 9)] == [10, 21, 71, 80, None]

    near.covered_through = 1  # batch 1 committed where the mark alone covers it
    near.purge()
    assert [near.get(k) for k in (1, 2, 7, 8)] == [None, 21, 71, 80]

    near.earlier_merged, near.covered_through = True, 2  # a merge: batch 2 and the old log
    near.purge()
    assert near.hashes == {} and near.earlier == {}


def test_the_near_ledger_keeps_a_key_cut_again_until_its_newest_batch_is_covered() -> None:
    near = _NearLedger()
    near.add(_batch(1, (5, 50), (6, 60)))
    near.add(_batch(2, (5, 51)))
    near.add(_batch(3, (5, 52), (6, 61)))

    near.covered_through = 2
    near.purge()
    assert [near.get(5), near.get(6)] == [52, 61]
    near.covered_through = 3
    near.purge()
    assert near.hashes == {} and near.repeated == {}

    near.add(_batch(4, (5, 53)))  # cut again once all the others were covered: once here
    near.covered_through = 4
    near.purge()
    assert near.hashes == {} and near.repeated == {}


def test_the_near_ledger_forgets_only_what_a_lookup_begun_after_its_coverage_finds() -> None:
    near = _NearLedger(earlier={7: 70})
    near.add(_batch(1, (1, 10)))
    before_lookup = near.coverage()  # the lookup thread reads it, then looks the keys up

    near.covered_through, near.earlier_merged = 1, True  # a merge the lookup may not have seen
    near.purge(before_lookup)
    assert [near.get(1), near.get(7)] == [10, 70]

    near.purge(near.coverage())  # the next chunk's lookup began after that merge
    assert near.hashes == {} and near.earlier == {}


@pytest.mark.parametrize(("dataset", "merge_every"), [("events", 1_000_000), ("users", 500)])
def test_after_a_run_the_reader_holds_only_what_neither_mark_nor_merged_ledger_covers(
    tmp_path: Path, emulator: EmulatorServer, dataset: str, merge_every: int
) -> None:
    """Events (no lookback) keep no ledger: each commit's mark covers its rows. Users log
    their entries: only those logged since the last merge may stay in the reader's memory."""
    shop = Shop(f"sqlite:///{tmp_path / 'shop.db'}")
    shop.add_customers(customer_rows(6000))
    shop.add_events([(n, f"u{n % 97}", f"i{n % 89}", "view", T0 + timedelta(seconds=n))
                     for n in range(6000)])
    spec = load_spec(write_spec(tmp_path / "sync.yaml", endpoint=emulator.base_url,
                                source_url=shop.url, state_url=f"sqlite:///{tmp_path / 's.db'}",
                                max_rows=100))
    chosen = spec.datasets[dataset]
    settings = SyncSettings(run_id="r1", batch=spec.aitems.batch,
                            options=RunOptions(merge_every=merge_every),
                            target=Target(spec.aitems.service_id, chosen.dataset_id, chosen.type))
    with open_state(spec) as state, open_sources(spec) as sources:
        state.acquire_lease(dataset, owner="r1", host="here", pid=1, ttl=600)  # as a run does
        client = AitemsClient.from_config(spec.aitems)
        try:
            sync = DatasetSync(chosen, settings, state, client, sources[chosen.source],
                               threading.Event(), DatasetReport(chosen.name))
            sync.run()
        finally:
            client.close()
        unmerged = state.logged_count(dataset)
    shop.close()

    sync.near.purge()  # what the reader would forget before its next chunk
    assert sync.report.sent == 6000
    assert unmerged < merge_every
    assert len(sync.near.hashes) == unmerged


def test_with_answers_out_of_order_aitems_ends_with_each_keys_newest_version(
        shop: Visits) -> None:
    # Answers come back in random order: with in_flight 4 a key's newer version, cut three
    # batches after its older one, could land first and then be overwritten by the older one.
    shop.emulator.set_faults(Faults(latency_jitter=0.05, seed=7))

    report = shop.run()

    assert report.datasets[0].status == "ok"
    held = {row["USER_ID"]: row["AGE"] for row in shop.emulator.received("dsusers0001").rows}
    assert held == {f"u{u:02d}": 21 for u in range(USERS)}
