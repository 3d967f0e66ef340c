"""What a run imports: a run with nothing to send never imports jsonschema or requests.

Every run is a new process, so start-up is most of a no-op run (benchmarks/README.md, "No-op:
process start is the run"); these packages cost ~100-150 ms together and a run needs them only
to explain a broken spec or a rejected row, to check a user's json_schema, or to send.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.conftest import DEMO_ACCESS_KEY, DEMO_SECRET_KEY, EmulatorServer
from tests.test_spec import MINIMAL_SPEC

#: Imported only on the paths that need them (see the docstrings of spec.load, rows.shape and
#: aitems.client).
LAZY = ("jsonschema", "requests", "urllib3", "fastjsonschema",
        # and apply's own modules: only `apply` (and a bootstrap that creates) needs them
        "aitems_sync.sync.apply", "aitems_sync.sync.provision")
REPORT = f"import sys; print('imported:', sorted(m for m in {LAZY!r} if m in sys.modules))"


def imported(code: str, *args: str) -> tuple[str, subprocess.CompletedProcess[str]]:
    """Run ``code`` in a fresh interpreter; the LAZY packages it imported, and the process."""
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=60)
    lines = [line for line in done.stdout.splitlines() if line.startswith("imported: ")]
    assert lines, done.stdout + done.stderr
    return lines[-1].removeprefix("imported: "), done


def test_importing_what_run_imports_leaves_the_lazy_packages_out() -> None:
    found, _ = imported(f"import aitems_sync.cli.main, aitems_sync.commands\n{REPORT}")

    assert found == "[]"


def items_spec(tmp_path: Path, emulator: EmulatorServer, secret_key: str) -> Path:
    """The spec tests' minimal spec against the emulator's demo service, with an empty items
    table and a state store."""
    with sqlite3.connect(tmp_path / "shop.db") as db:
        db.execute("CREATE TABLE items (id TEXT, changed INTEGER)")
    db.close()
    demo = (f'aitems: {{endpoint: "{emulator.base_url}", service_id: svcdemo0001, '
            f"access_key: {DEMO_ACCESS_KEY}, secret_key: {secret_key}}}")
    spec = tmp_path / "sync.yaml"
    spec.write_text(MINIMAL_SPEC.replace("aitems: {service_id: svc, access_key: ak, "
                                         "secret_key: sk}", demo)
                    + "state: sqlite:///state.db\n")
    return spec


def test_a_run_with_nothing_to_send_imports_none_of_them(
    tmp_path: Path, emulator: EmulatorServer,
) -> None:
    """Not even for its one signed read of the service, which checks the keys (probe.py)."""
    spec = items_spec(tmp_path, emulator, DEMO_SECRET_KEY)
    code = (f"from aitems_sync.cli.main import main_group\ntry:\n"
            f"    main_group.main(prog_name='aitems-sync')\nfinally:\n    {REPORT}")

    found, done = imported(code, "--json", "--config", str(spec), "run")

    assert done.returncode == 0, done.stdout + done.stderr
    assert '"sent": 0' in done.stdout
    assert found == "[]"


def test_a_run_with_nothing_to_send_still_fails_on_keys_aitems_refuses(
    tmp_path: Path, emulator: EmulatorServer,
) -> None:
    spec = items_spec(tmp_path, emulator, "not-the-secret")

    done = subprocess.run([sys.executable, "-m", "aitems_sync", "--json", "--config", str(spec),
                           "run"], capture_output=True, text=True, timeout=60)

    assert done.returncode == 1, done.stdout + done.stderr
    (items,) = json.loads(done.stdout)["datasets"]
    assert items["status"] == "failed" and "answered 401" in items["error"]


def test_a_broken_spec_still_gets_jsonschemas_messages(tmp_path: Path) -> None:
    spec = tmp_path / "sync.yaml"
    spec.write_text("version: 1\naitems: {service_id: svc, access_key: ak, secret_key: sk}\n"
                    "sources: {}\ndatasets: {}\nstate: 7\n")
    code = (f"from aitems_sync.cli.main import main_group\ntry:\n"
            f"    main_group.main(prog_name='aitems-sync')\nfinally:\n    {REPORT}")

    found, done = imported(code, "--config", str(spec), "validate")

    assert done.returncode == 2
    assert "sync.yaml:3: sources: must have at least one entry" in done.stderr
    assert "sync.yaml:5: state: must be a SQLAlchemy URL (got a whole number)" in done.stderr
    assert "jsonschema" in found
