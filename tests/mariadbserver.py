"""A throwaway MariaDB server for the tests: mariadb-install-db in a temp dir, on a free port.

The server listens on 127.0.0.1 only; its ``root`` user has no password (``normal``
authentication, not unix_socket), so the tests connect over TCP like any client. When the tests
run as root the server drops to the ``mysql`` user, which must own the data directory.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

START_TIMEOUT_SECONDS = 30
# Durability costs time and the data is thrown away: no binlog, no flush per commit.
SERVER_OPTIONS = [
    "--skip-log-bin",
    "--skip-name-resolve",
    "--innodb-flush-log-at-trx-commit=0",
    "--innodb-doublewrite=0",
    "--innodb-buffer-pool-size=64M",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_unicode_ci",
    "--max-connections=200",
]


def find_server() -> tuple[Path, Path] | None:
    """The installed ``(mariadb-install-db, mariadbd)`` pair (or their mysql names), if any."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
    for install, server in (("mariadb-install-db", "mariadbd"), ("mysql_install_db", "mysqld")):
        install_path, server_path = shutil.which(install, path=search), shutil.which(server,
                                                                                      path=search)
        if install_path and server_path:
            return Path(install_path), Path(server_path)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _user_options(root: Path) -> list[str]:
    if os.geteuid() != 0:
        return []
    shutil.chown(root, "mysql", "mysql")
    return ["--user=mysql"]


@contextmanager
def running_server() -> Iterator[str]:
    """Start a server; yield its base SQLAlchemy URL (no database); stop it and delete it all."""
    found = find_server()
    if found is None:
        raise RuntimeError("MariaDB server binaries not found (run scripts/ensure-servers.sh)")
    install_db, mariadbd = found
    root = Path(tempfile.mkdtemp(prefix="aitems-mariadb-"))
    data, log = root / "data", root / "error.log"
    user = _user_options(root)
    port = _free_port()
    try:
        subprocess.run(
            [str(install_db), "--no-defaults", f"--datadir={data}", *user,
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            check=True, capture_output=True, text=True,
        )
        server = subprocess.Popen(
            [str(mariadbd), "--no-defaults", f"--datadir={data}", f"--socket={root / 'sock'}",
             f"--port={port}", "--bind-address=127.0.0.1", f"--pid-file={root / 'pid'}",
             f"--log-error={log}", *user, *SERVER_OPTIONS],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            _wait_until_ready(port, server, log)
            yield f"mysql+pymysql://root@127.0.0.1:{port}"
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _wait_until_ready(port: int, server: subprocess.Popen[bytes], log: Path) -> None:
    import pymysql

    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        try:
            pymysql.connect(host="127.0.0.1", port=port, user="root", connect_timeout=2).close()
            return
        except pymysql.err.OperationalError:
            if server.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"MariaDB did not start on port {port}:\n{tail}") from None
            time.sleep(0.1)


def create_database(base_url: str) -> str:
    """Create a fresh, empty utf8mb4 database on the server; return its URL."""
    import sqlalchemy as sa

    name = "t_" + uuid.uuid4().hex[:12]
    engine = sa.create_engine(base_url)
    with engine.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    engine.dispose()
    # No ?charset=: the code under test must choose utf8mb4 itself, as users leave it out.
    return f"{base_url}/{name}"
