"""Shared fixtures: real PostgreSQL and MariaDB servers, and the AiTEMS emulator on loopback."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from aitems_sync.emulator.server import EmulatorServer, load_seed
from aitems_sync.state.store import StateStore
from tests import mariadbserver, pgserver

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_server(present: bool, what: str, fix: str = "run scripts/ensure-servers.sh") -> None:
    """Skip a test whose server is not installed; under CI=true fail instead, never skip."""
    if present:
        return
    message = f"{what} not found; {fix}"
    if IN_CI:
        pytest.fail(message + " (CI=true: tests that need it must not skip)")
    pytest.skip(message)


def source_and_state_urls(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """For a test parametrized by store (``sqlite``, ``postgresql`` or ``mariadb``): SQLite
    files for source and state, or one fresh PostgreSQL (or MariaDB) database holding both."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shop.db'}", f"sqlite:///{tmp_path / 'state.db'}"
    fixture = "pg_url" if request.param == "postgresql" else "mariadb_url"
    url = str(request.getfixturevalue(fixture))
    return url, url


def register_dataset(state_url: str, dataset: str, row_hash: str) -> None:
    """Register the dataset as a store of an earlier schema version holds it: its ledger hashed
    with ``row_hash`` (the BLAKE2b of state schema versions 1-3)."""
    with StateStore.open(state_url) as store:
        store.set_mark(dataset, None)
    engine = sa.create_engine(state_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE datasets SET row_hash = :h WHERE name = :n"),
                     {"h": row_hash, "n": dataset})
    engine.dispose()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[str]:
    """Base URL of a throwaway PostgreSQL cluster. Skips locally without one; fails under CI."""
    require_server(pgserver.find_bindir() is not None, "PostgreSQL server binaries")
    with pgserver.running_cluster() as url:
        yield url


@pytest.fixture
def pg_url(pg_cluster: str) -> str:
    """URL of a fresh, empty PostgreSQL database for one test."""
    return pgserver.create_database(pg_cluster)


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[str]:
    """Base URL of a throwaway MariaDB server. Skips locally without one; fails under CI."""
    require_server(mariadbserver.find_server() is not None, "MariaDB server binaries")
    with mariadbserver.running_server() as url:
        yield url


@pytest.fixture
def mariadb_url(mariadb_server: str) -> str:
    """URL of a fresh, empty MariaDB database (utf8mb4) for one test."""
    return mariadbserver.create_database(mariadb_server)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """Endpoint URL of a real S3 server on loopback (moto's server mode; its buckets last for
    the session, so each test makes its own). Skips locally without moto; fails under CI."""
    present = all(importlib.util.find_spec(name) for name in ("moto", "flask", "boto3"))
    require_server(present, "moto[server] or boto3",
                   "pip install 'moto[server]>=5' 'boto3>=1.36' (the test extra)")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


DEMO_SEED = Path(__file__).resolve().parent.parent / "examples" / "emulator-seed.yaml"
DEMO_ACCESS_KEY = "demo-access-key"
DEMO_SECRET_KEY = "demo-secret-key"


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    """The AiTEMS emulator on a free loopback port, seeded with the demo service and datasets."""
    server = EmulatorServer(seed=load_seed(DEMO_SEED), port=0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Fail any test whose captured output or logs contain the demo secret key.

    Every spec and emulator in the tests uses it, so this scans all test output for a leak.
    """
    report = yield
    leaked = [name for name, text in report.sections
              if name.endswith(report.when) and DEMO_SECRET_KEY in text]
    if leaked and report.passed:
        report.outcome = "failed"
        report.longrepr = f"the secret key appeared in the captured {', '.join(leaked)}"
    return report
