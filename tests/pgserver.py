"""A throwaway PostgreSQL cluster for the tests: initdb in a temp dir, started on a free port.

When the tests run as root the server runs as the ``postgres`` user, as PostgreSQL requires.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def find_bindir() -> Path | None:
    """The newest installed PostgreSQL server's bin directory, if any."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    if candidates:
        return Path(candidates[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _version_key(path: str) -> int:
    try:
        return int(Path(path).parent.parent.name)
    except ValueError:
        return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


@contextmanager
def running_cluster() -> Iterator[str]:
    """Start a cluster; yield its base SQLAlchemy URL (``.../postgres``); stop and delete it."""
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL server binaries not found (run scripts/ensure-servers.sh)")
    root = Path(tempfile.mkdtemp(prefix="aitems-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    port = _free_port()
    run = lambda argv: subprocess.run(  # noqa: E731
        _as_server_user(argv), check=True, capture_output=True, text=True
    )
    try:
        run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
             "--no-sync", "-E", "UTF8"])
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off " \
                  "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        run([str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l",
             str(root / "log"), "-w", "start"])
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m",
                                            "immediate", "stop"]), capture_output=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def create_database(base_url: str) -> str:
    """Create a fresh, empty database on the cluster; return its URL."""
    import sqlalchemy as sa

    name = "t_" + uuid.uuid4().hex[:12]
    engine = sa.create_engine(base_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return base_url.rsplit("/", 1)[0] + "/" + name
