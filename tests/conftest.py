"""Shared fixtures: a real PostgreSQL cluster and the AiTEMS emulator on loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from aitems_sync.emulator import EmulatorServer, load_seed
from tests import pgserver

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[str]:
    """Base URL of a throwaway PostgreSQL cluster. Skips locally without one; fails under CI."""
    if pgserver.find_bindir() is None:
        message = "PostgreSQL server binaries not found; run scripts/ensure-postgres.sh"
        if IN_CI:
            pytest.fail(message + " (CI=true: tests needing PostgreSQL must not skip)")
        pytest.skip(message)
    with pgserver.running_cluster() as url:
        yield url


@pytest.fixture
def pg_url(pg_cluster: str) -> str:
    """URL of a fresh, empty PostgreSQL database for one test."""
    return pgserver.create_database(pg_cluster)


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
