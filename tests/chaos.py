"""Failure harness: a shop, its spec, `aitems-sync run` in real processes, kills, and the check
of the delivery promise against what the emulator received.

Shared by tests/test_kill.py, tests/test_failures.py and benchmarks/soak_kill.py. The promise
checked by ``check_delivery``: every source row is delivered, and a row delivered more than once
lies in a batch that a run reported as ambiguous (at most once more per such batch).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from click.testing import CliRunner

from aitems_sync.cli.main import main_group
from aitems_sync.emulator.server import EmulatorServer
from aitems_sync.state.store import StateStore
from tests.shop import EVENTS_DATASET, T0, Shop, customer_rows

ROOT = Path(__file__).resolve().parent.parent
USERS_ID, EVENTS_ID = "dsusers0001", "dsevent0001"
SEOUL = ZoneInfo("Asia/Seoul")

SPEC = """\
version: 1
aitems:
  endpoint: {endpoint}
  service_id: svcdemo0001
  access_key: demo-access-key
  secret_key: {secret_key}
  batch: {{max_rows: {max_rows}, in_flight: {in_flight}}}
  retry: {{attempts: {attempts}, backoff: 0.01s, max_backoff: 0.05s}}
state: "{state_url}"
sources:
  shop: {{url: "{source_url}", timezone: Asia/Seoul}}
datasets:
  users:
    type: user
    dataset_id: dsusers0001
    source: shop
    query: SELECT id AS USER_ID, {age} AS AGE, gender AS GENDER, updated_at FROM customers
    cursor: updated_at
    max_invalid: "50%"
    fields:
      - {{name: USER_ID, type: string}}
      - {{name: AGE, type: [{age_type}, "null"]}}
      - {{name: GENDER, type: [string, "null"], categorical: true}}
""" + EVENTS_DATASET


def event_rows(count: int) -> list[tuple[int, str, str, str, datetime]]:
    """``count`` events with ids 1..count and distinct timestamps (so each row is unique)."""
    return [(i, f"u{i % 97}", f"i{i % 89}", ("view", "click", "buy")[i % 3],
             T0 + timedelta(seconds=i)) for i in range(1, count + 1)]


def event_id_of(timestamp: int) -> int:
    """The id of the event whose TIMESTAMP (epoch seconds, Seoul wall time) this is."""
    start = int(T0.replace(tzinfo=SEOUL).timestamp())
    return timestamp - start


@dataclass
class Outcome:
    """A finished `aitems-sync --json run`: exit code, per-dataset report, stderr."""

    code: int
    report: dict[str, dict[str, Any]]
    stderr: str


@dataclass
class Chaos:
    """A shop database, a state store and an emulator, driven through real processes."""

    tmp: Path
    emulator: EmulatorServer
    source_url: str
    state_url: str
    users: int = 0
    events: int = 0
    spawned: list[subprocess.Popen[str]] = field(default_factory=list)

    @classmethod
    def build(cls, tmp: Path, emulator: EmulatorServer, *, users: int, events: int = 0,
              source_url: str | None = None, state_url: str | None = None) -> Chaos:
        """Create the shop (SQLite files in ``tmp`` unless URLs are given) and fill it."""
        tmp.mkdir(parents=True, exist_ok=True)
        source_url = source_url or f"sqlite:///{tmp / 'shop.db'}"
        state_url = state_url or f"sqlite:///{tmp / 'state.db'}"
        shop = Shop(source_url)
        try:
            if users:
                shop.add_customers(customer_rows(users))
            if events:
                shop.add_events(event_rows(events))
        finally:
            shop.close()
        return cls(tmp, emulator, source_url, state_url, users, events)

    def spec(self, *, max_rows: int = 50, in_flight: int = 4, attempts: int = 8,
             secret_key: str = "demo-secret-key", age: str = "age", age_type: str = "int",
             name: str = "sync.yaml", events_key: str = "") -> Path:
        """Write a spec for this shop; ``age``/``age_type`` change the AGE column and field,
        ``events_key`` is the events' ``key:`` line (none: the whole row)."""
        path = self.tmp / name
        path.write_text(SPEC.format(
            endpoint=self.emulator.base_url, source_url=self.source_url,
            state_url=self.state_url, max_rows=max_rows, in_flight=in_flight,
            attempts=attempts, secret_key=secret_key, age=age, age_type=age_type,
            events_lookback="0s", events_key=events_key))
        return path

    # -- processes ----------------------------------------------------------------------------

    def start(self, spec: Path, *args: str) -> subprocess.Popen[str]:
        """`python -m aitems_sync --config SPEC --json run ARGS` in the background."""
        stderr = open(self.tmp / f"stderr-{len(self.spawned)}.log", "w+")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "aitems_sync", "--config", str(spec), "--json", "run", *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.spawned.append(process)
        return process

    def finish(self, process: subprocess.Popen[str], timeout: float = 60) -> Outcome:
        """Wait for a process started with ``start``; its outcome."""
        stdout, _ = process.communicate(timeout=timeout)
        index = self.spawned.index(process)
        stderr = (self.tmp / f"stderr-{index}.log").read_text()
        report = json.loads(stdout) if stdout.strip() else {}
        by_dataset = {d["dataset"]: d for d in report.get("datasets", [])}
        return Outcome(process.returncode, by_dataset, stderr)

    def run(self, spec: Path, *args: str, timeout: float = 60) -> Outcome:
        """Run to the end in a process."""
        return self.finish(self.start(spec, *args), timeout)

    def run_here(self, spec: Path, *args: str) -> Outcome:
        """The same run in this process (through click), for tests that need no signals."""
        result = CliRunner().invoke(main_group,
                                    ["--config", str(spec), "--json", "run", *args])
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        report = json.loads(result.stdout) if result.stdout.strip() else {}
        return Outcome(result.exit_code, {d["dataset"]: d for d in report.get("datasets", [])},
                       result.stderr)

    def stop_all(self) -> None:
        """Kill whatever this harness started and is still running."""
        for process in self.spawned:
            if process.poll() is None:
                process.kill()
                process.wait()

    # -- the emulator -------------------------------------------------------------------------

    def uploads(self) -> int:
        """Uploads the emulator accepted so far, all datasets."""
        return sum(d["uploads"] for d in self.emulator.model.summary().values())

    def wait_for_uploads(self, count: int, process: subprocess.Popen[str] | None = None,
                         timeout: float = 30) -> bool:
        """Poll until the emulator accepted ``count`` uploads (False if the process ended)."""
        deadline = time.monotonic() + timeout
        while self.uploads() < count:
            if process is not None and process.poll() is not None:
                return False
            if time.monotonic() > deadline:
                raise AssertionError(f"the emulator did not get {count} uploads in {timeout} s")
            time.sleep(0.002)
        return True

    def user_deliveries(self) -> Counter[int]:
        """How many times each customer (by index) was delivered."""
        rows = self.emulator.received(USERS_ID).deliveries
        return Counter(int(row["USER_ID"][1:]) for row in rows)

    def event_deliveries(self) -> Counter[int]:
        """How many times each event (by id) was delivered."""
        rows = self.emulator.received(EVENTS_ID).deliveries
        return Counter(event_id_of(row["TIMESTAMP"]) for row in rows)

    def state(self) -> StateStore:
        return StateStore.open(self.state_url)


# -- the promise --------------------------------------------------------------------------------

def user_cursor(index: int) -> datetime:
    """The updated_at of customer ``index``."""
    return T0 + timedelta(seconds=index)


def user_index(cursor: Any) -> int:
    """The customer whose updated_at a cursor value is (SQLite gives text, PostgreSQL a
    datetime; a report shows either as text)."""
    moment = datetime.fromisoformat(cursor) if isinstance(cursor, str) else cursor
    return int((moment - T0).total_seconds())


def _covering(ambiguous: Iterable[Mapping[str, Any]], parse: Callable[[str], Any],
              cursor: Any) -> int:
    return sum(1 for batch in ambiguous
               if parse(batch["first_cursor"]) <= cursor <= parse(batch["last_cursor"]))


@dataclass
class Tally:
    """What a check found: rows, extra deliveries, and ambiguous batches reported."""

    rows: int = 0
    duplicated_rows: int = 0
    extra_deliveries: int = 0
    ambiguous_batches: int = 0


def check_delivery(chaos: Chaos, reports: Sequence[Mapping[str, Mapping[str, Any]]],
                   *, datasets: Sequence[str] = ("users", "events")) -> Tally:
    """Assert the promise for every dataset named, given the reports of the runs since the
    data was loaded (any run may have reported the ambiguous batch). Returns the tally."""
    tally = Tally()
    checks = {
        "users": (chaos.users, chaos.user_deliveries, lambda i: user_cursor(i),
                  datetime.fromisoformat, range(chaos.users)),
        "events": (chaos.events, chaos.event_deliveries, lambda i: i, int,
                   range(1, chaos.events + 1)),
    }
    for name in datasets:
        count, deliveries, cursor_of, parse, expected = checks[name]
        ambiguous = [b for r in reports if name in r for b in r[name]["ambiguous"]]
        tally.ambiguous_batches += len(ambiguous)
        delivered = deliveries()
        missing = [i for i in expected if delivered[i] == 0]
        assert not missing, f"{name}: {len(missing)} rows never delivered, e.g. {missing[:5]}"
        unknown = set(delivered) - set(expected)
        assert not unknown, f"{name}: rows delivered that are not in the source: {unknown}"
        tally.rows += count
        for index, copies in delivered.items():
            if copies == 1:
                continue
            cover = _covering(ambiguous, parse, cursor_of(index))
            assert copies - 1 <= cover, (
                f"{name}: row {index} delivered {copies} times but only {cover} ambiguous "
                f"batch(es) reported cover its cursor {cursor_of(index)}; reported: "
                f"{[(b['first_cursor'], b['last_cursor'], b['reason']) for b in ambiguous]}")
            tally.duplicated_rows += 1
            tally.extra_deliveries += copies - 1
    return tally


def no_batch_left_sending(chaos: Chaos, datasets: Sequence[str] = ("users", "events")) -> None:
    """Assert that the journal holds no batch still `sending` (every one was resolved)."""
    store = chaos.state()
    try:
        for name in datasets:
            left = store.unfinished_batches(name)
            assert not left, f"{name}: batches left sending: {[b.batch_id for b in left]}"
    finally:
        store.close()


# -- the kill loop ------------------------------------------------------------------------------

@dataclass
class KillResult:
    """One kill-and-resume round: when the kill landed, and the tally of the check."""

    seed: int
    killed_after_uploads: int
    killed_mid_run: bool
    tally: Tally
    seconds: float


def kill_and_resume(chaos: Chaos, seed: int, *, max_rows: int = 50, in_flight: int = 4,
                    lease_ttl: float = 0.5, events_key: str = "") -> KillResult:
    """Start a run, SIGKILL it at a random moment, re-run to completion, check the promise.

    The moment is a random number of accepted uploads (0: a random time after the start,
    possibly before anything was sent) plus a random few milliseconds. The re-run waits for the
    dead run's lease (``--wait``), which expires ``lease_ttl`` seconds after its last renewal.
    """
    started = time.monotonic()
    rng = random.Random(seed)
    spec = chaos.spec(max_rows=max_rows, in_flight=in_flight, events_key=events_key)
    batches = -(-chaos.users // max_rows) - (-chaos.events // max_rows)
    threshold = rng.randrange(0, batches)
    process = chaos.start(spec, "--parallel", "2", "--lease-ttl", str(lease_ttl))
    if threshold == 0:
        time.sleep(rng.uniform(0.1, 1.0))
        alive = process.poll() is None
    else:
        alive = chaos.wait_for_uploads(threshold, process)
        time.sleep(rng.uniform(0, 0.03))
    alive = alive and process.poll() is None
    killed_after = chaos.uploads()
    process.send_signal(signal.SIGKILL)
    process.wait()
    rerun = chaos.run(spec, "--parallel", "2", "--wait=30")
    assert rerun.code == 0, f"re-run exited {rerun.code}: {rerun.stderr[-2000:]}"
    tally = check_delivery(chaos, [rerun.report])
    no_batch_left_sending(chaos)
    return KillResult(seed, killed_after, alive, tally, time.monotonic() - started)


def history(spec: Path) -> list[dict[str, Any]]:
    """`aitems-sync --json history` of the spec's state store."""
    result = CliRunner().invoke(main_group, ["--config", str(spec), "--json", "history"])
    assert result.exit_code == 0, result.output
    runs: list[dict[str, Any]] = json.loads(result.stdout)
    return runs
