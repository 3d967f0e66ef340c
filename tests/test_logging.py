"""Logs for machines: `--log-format json` writes one parseable object per line, no secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from aitems_sync.emulator.server import EmulatorServer
from tests.shop import Shop, customer_rows, write_spec

WRONG_SECRET = "not-the-secret-0123456789"


def run_cli(spec: Path, *args: str, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aitems_sync", "--config", str(spec), "--log-format", "json",
         "--log-level", "debug", *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=60)


def test_json_logs_parse_line_by_line_and_hold_no_secret(tmp_path: Path,
                                                          emulator: EmulatorServer) -> None:
    shop = Shop(f"sqlite:///{tmp_path / 'shop.db'}")
    shop.add_customers(customer_rows(30))
    spec = write_spec(tmp_path / "sync.yaml", endpoint=emulator.base_url, source_url=shop.url,
                      state_url=f"sqlite:///{tmp_path / 'state.db'}")
    text = spec.read_text().replace("secret_key: demo-secret-key",
                                    "secret_key: ${NCP_SECRET_KEY:-demo-secret-key}")
    spec.write_text(text)

    bad = run_cli(spec, "run", env={"NCP_SECRET_KEY": WRONG_SECRET})
    good = run_cli(spec, "run")

    assert good.returncode == 0, good.stderr
    assert bad.returncode == 1
    lines = (good.stderr + bad.stderr).splitlines()
    assert lines
    for line in lines:
        entry = json.loads(line)
        assert {"time", "level", "logger", "message"} <= set(entry), line
    messages = [json.loads(line)["message"] for line in bad.stderr.splitlines()]
    assert any("401" in m for m in messages)
    everything = good.stdout + good.stderr + bad.stdout + bad.stderr
    assert "demo-secret-key" not in everything
    assert WRONG_SECRET not in everything
    shop.close()
