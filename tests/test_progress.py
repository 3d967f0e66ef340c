"""The progress display shows on a terminal only: never in pipes, logs or JSON output."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from aitems_sync.emulator.server import EmulatorServer
from tests.shop import Shop, customer_rows, write_spec


@pytest.fixture
def spec(tmp_path: Path, emulator: EmulatorServer) -> Path:
    shop = Shop(f"sqlite:///{tmp_path / 'shop.db'}")
    shop.add_customers(customer_rows(3000))
    shop.close()
    return write_spec(tmp_path / "sync.yaml", endpoint=emulator.base_url, source_url=shop.url,
                      state_url=f"sqlite:///{tmp_path / 'state.db'}")


def run_with_terminal_stderr(*args: str) -> tuple[int, str]:
    """Run the CLI with stderr on a pseudo-terminal; its exit code and what the terminal got."""
    leader, follower = pty.openpty()
    # A fresh pseudo-terminal is 0 columns wide; give it a real terminal's size.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen([sys.executable, "-m", "aitems_sync", *args],
                               stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return process.wait(timeout=60), b"".join(chunks).decode(errors="replace")


def test_a_terminal_shows_a_bar_per_dataset(spec: Path) -> None:
    code, terminal = run_with_terminal_stderr("--config", str(spec), "run", "users")

    assert code == 0
    assert "users: 3000 rows" in terminal
    assert "sent=3000" in terminal


def test_a_pipe_gets_no_progress(spec: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "aitems_sync", "--config", str(spec), "run",
                           "users"], capture_output=True, text=True, timeout=60)

    assert done.returncode == 0
    assert "rows/s" not in done.stderr
    assert "\r" not in done.stderr


def test_json_output_on_a_terminal_gets_no_progress(spec: Path) -> None:
    code, terminal = run_with_terminal_stderr("--config", str(spec), "--json", "run", "users")

    assert code == 0
    assert " rows" not in terminal
