"""Shared fixtures: real PostgreSQL and MariaDB servers, and the AiTEMS emulator on loopback."""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from aitems_sync.emulator.server import EmulatorServer, load_seed
from aitems_sync.objectstorage.client import s3_client
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


@dataclass(frozen=True)
class S3Server:
    """moto's S3 server on loopback, checking SigV4 signatures, and the one key pair its IAM
    knows (any other key is refused with 403 InvalidAccessKeyId, a wrong secret with 403
    SignatureDoesNotMatch)."""

    url: str
    access_key: str
    secret_key: str = field(repr=False)

    def client(self, region: str = "kr-standard", *, access_key: str | None = None,
               secret_key: str | None = None) -> Any:
        """The project's S3 client for this server, with its key pair unless told otherwise."""
        return s3_client(self.url, region, access_key or self.access_key,
                         secret_key or self.secret_key)

    def with_bucket(self, name: str, region: str = "kr-standard") -> S3Server:
        """This server, once it holds the bucket ``name`` (made in ``region``)."""
        self.client(region).create_bucket(
            Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
        return self


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real S3 server on loopback (moto's server mode) that checks every request's SigV4
    signature against its IAM, as NCP Object Storage does. Its buckets last for the session, so
    each test makes its own. Skips locally without moto; fails under CI."""
    present = all(importlib.util.find_spec(name) for name in ("moto", "flask", "boto3"))
    require_server(present, "moto[server] or boto3",
                   "pip install 'moto[server]>=5' 'boto3>=1.36' (the test extra)")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    try:
        access_key, secret_key = _moto_key_pair(url)
        SECRETS.add(secret_key)
        # From now on moto authenticates every request (its INITIAL_NO_AUTH_ACTION_COUNT, set
        # through its server-mode endpoint: the server may share this process or not).
        previous = _moto_auth_after(url, 0)
        try:
            yield S3Server(url, access_key, secret_key)
        finally:
            _moto_auth_after(url, previous)
    finally:
        server.stop()


def _moto_key_pair(url: str) -> tuple[str, str]:
    """A user in moto's IAM allowed every S3 action, and a key pair of it (moto makes the
    keys: an access key it has not issued is refused once authentication is on)."""
    import boto3

    iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1",
                       aws_access_key_id="setup", aws_secret_access_key="setup")
    iam.create_user(UserName="aitems-sync-tests")
    iam.put_user_policy(UserName="aitems-sync-tests", PolicyName="s3", PolicyDocument=json.dumps(
        {"Version": "2012-10-17",
         "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="aitems-sync-tests")["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def _moto_auth_after(url: str, requests_without_auth: float) -> float:
    """Make moto authenticate every request after the next ``requests_without_auth`` (0: all;
    infinity: none, its default); the setting it had."""
    answer = requests.post(f"{url}/moto-api/reset-auth", data=str(requests_without_auth),
                           timeout=10)
    answer.raise_for_status()
    return float(answer.json()["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"])


DEMO_SEED = Path(__file__).resolve().parent.parent / "examples" / "emulator-seed.yaml"
DEMO_ACCESS_KEY = "demo-access-key"
DEMO_SECRET_KEY = "demo-secret-key"
#: Secrets that must never appear in a test's output: the demo's, and moto's once it started.
SECRETS = {DEMO_SECRET_KEY}


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
    """Fail any test whose captured output or logs contain a secret key of `SECRETS`.

    Every spec and emulator in the tests uses one, so this scans all test output for a leak.
    """
    report = yield
    leaked = [name for name, text in report.sections
              if name.endswith(report.when) and any(secret in text for secret in SECRETS)]
    if leaked and report.passed:
        report.outcome = "failed"
        report.longrepr = f"the secret key appeared in the captured {', '.join(leaked)}"
    return report
