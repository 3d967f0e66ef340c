"""A real Prometheus Pushgateway for the tests, started on a free loopback port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

BINARIES = ("prometheus-pushgateway", "pushgateway")


def find_binary() -> str | None:
    for name in BINARIES:
        path = shutil.which(name)
        if path:
            return path
    return None


@contextmanager
def running_pushgateway() -> Iterator[str]:
    """Start a Pushgateway; yield its base URL; stop it."""
    binary = find_binary()
    if binary is None:
        raise RuntimeError("prometheus-pushgateway not found (run scripts/ensure-servers.sh)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        # Debian's build persists to /var/lib/prometheus by default: every gateway of every
        # test session would start with the metrics the last one held. In memory only.
        process = subprocess.Popen([binary, f"--web.listen-address=127.0.0.1:{port}",
                                    "--persistence.file="], stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    urllib.request.urlopen(url + "/-/ready", timeout=1).read()
                    break
                except OSError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise RuntimeError("the Pushgateway did not start") from None
                    time.sleep(0.05)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=10)
