"""A lease whose holder is gone from this host is taken over at once; any other waits.

Each case starts `aitems-sync run` as a real process with a lease of an hour, kills it with
SIGKILL while it uploads, and runs again on this host: the run takes the dead run's lease over
at once (it would exit 75 for the hour otherwise), logs it, and delivers every row. A live
holder, one on another host name, one in another pid namespace or boot, and one that recorded
no process token (an older aitems-sync) are left to their expiry. The decision itself
(``sync.liveness.gone``) is tested as a table below.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aitems_sync.emulator.server import EmulatorServer, Faults
from aitems_sync.sync import liveness
from aitems_sync.sync.liveness import Process, Seen
from tests.chaos import Chaos, check_delivery, no_batch_left_sending

USERS = 200
HOUR = "3600"


@pytest.fixture
def chaos(tmp_path: Path, emulator: EmulatorServer) -> Iterator[Chaos]:
    built = Chaos.build(tmp_path, emulator, users=USERS)
    yield built
    built.stop_all()


def _holding_run(chaos: Chaos, spec: Path) -> subprocess.Popen[str]:
    """A run of the users that holds its lease for an hour and is uploading (slowly) now."""
    chaos.emulator.set_faults(Faults(latency=0.2))
    process = chaos.start(spec, "users", "--lease-ttl", HOUR)
    assert chaos.wait_for_uploads(1, process), "the first run ended before it uploaded"
    return process


def _killed_run(chaos: Chaos, spec: Path, *, reap: bool = True) -> int:
    """The pid of a run killed with SIGKILL while it held the lease (left a zombie unless
    ``reap``); uploads are fast again afterwards."""
    process = _holding_run(chaos, spec)
    process.kill()
    if reap:
        process.wait()
    chaos.emulator.set_faults(Faults())
    return process.pid


def _lease(chaos: Chaos) -> tuple[str, int, str | None]:
    db = sqlite3.connect(chaos.tmp / "state.db")
    try:
        host, pid, process = db.execute("SELECT host, pid, process FROM leases").fetchone()
    finally:
        db.close()
    return host, pid, process


def _change_lease(chaos: Chaos, assignment: str, **values: object) -> None:
    db = sqlite3.connect(chaos.tmp / "state.db")
    try:
        db.execute(f"UPDATE leases SET {assignment}", values)
        db.commit()
    finally:
        db.close()


def test_a_run_on_the_same_host_takes_a_killed_runs_lease_over_at_once(chaos: Chaos) -> None:
    spec = chaos.spec(max_rows=10, in_flight=1)
    dead = _killed_run(chaos, spec)
    host, pid, token = _lease(chaos)
    assert (host, pid, token is not None) == (socket.gethostname(), dead, True)

    rerun = chaos.run(spec, "users")

    assert rerun.code == 0, rerun.stderr[-2000:]
    assert "took over the lease on dataset users from run" in rerun.stderr
    assert f"(pid {dead} on this host) before it expired: no process has pid {dead} any more" \
        in rerun.stderr
    check_delivery(chaos, [rerun.report], datasets=("users",))
    no_batch_left_sending(chaos, ("users",))


def test_a_killed_run_not_yet_reaped_by_its_parent_is_gone_too(chaos: Chaos) -> None:
    spec = chaos.spec(max_rows=10, in_flight=1)
    zombie = _killed_run(chaos, spec, reap=False)

    rerun = chaos.run(spec, "users")

    assert rerun.code == 0, rerun.stderr[-2000:]
    assert f"before it expired: process {zombie} has exited" in rerun.stderr


def test_a_lease_whose_pid_now_belongs_to_another_process_is_taken_over(chaos: Chaos) -> None:
    spec = chaos.spec(max_rows=10, in_flight=1)
    _killed_run(chaos, spec)
    _change_lease(chaos, "pid = :pid", pid=os.getpid())  # a live process, started at another time

    rerun = chaos.run(spec, "users")

    assert rerun.code == 0, rerun.stderr[-2000:]
    assert f"before it expired: pid {os.getpid()} now belongs to another process" in rerun.stderr


def _token_with(token: str | None, index: int, value: str) -> str:
    fields = (token or "").split(" ")
    fields[index] = value
    return " ".join(fields)


@pytest.mark.parametrize(("change", "why"), [
    (lambda host, token: ("another-host", token),
     "another host name: its pids say nothing here"),
    (lambda host, token: (host, _token_with(token, 0, "another-boot")),
     "recorded before a reboot"),
    (lambda host, token: (host, _token_with(token, 1, "pid:[1]")),
     "another pid namespace (a container that shares the host name)"),
    (lambda host, token: (host, None), "an older aitems-sync recorded no process token"),
])
def test_a_dead_holder_that_cannot_be_judged_from_here_keeps_its_lease(
        chaos: Chaos, change: Callable[[str, str | None], tuple[str, str | None]],
        why: str) -> None:
    spec = chaos.spec(max_rows=10, in_flight=1)
    dead = _killed_run(chaos, spec)
    host, _pid, token = _lease(chaos)
    host, token = change(host, token)
    _change_lease(chaos, "host = :host, process = :token", host=host, token=token)

    rerun = chaos.run(spec, "users")

    assert rerun.code == 75, why
    assert f"on host {host} (pid {dead}) holds its lease until" in rerun.stderr, why
    assert "took over" not in rerun.stderr


def test_a_live_holder_on_the_same_host_keeps_its_lease(chaos: Chaos) -> None:
    spec = chaos.spec(max_rows=10, in_flight=1)
    holder = _holding_run(chaos, spec)

    second = chaos.run(spec, "users")

    assert second.code == 75, second.stderr[-2000:]
    assert f"(pid {holder.pid}) holds its lease until" in second.stderr
    assert "took over" not in second.stderr
    assert holder.poll() is None


# -- the decision -----------------------------------------------------------------------------

HERE = Process("node-1", 100, "boot-a pid:[7] 5000")


@pytest.mark.parametrize(("holder", "seen", "expected"), [
    (Process("node-1", 42, "boot-a pid:[7] 4000"), Seen(exists=False),
     "no process has pid 42 any more"),
    (Process("node-1", 42, "boot-a pid:[7] 4000"), Seen(exists=True, start="4000", exited=True),
     "process 42 has exited"),
    (Process("node-1", 42, "boot-a pid:[7] 4000"), Seen(exists=True, start="4800"),
     "pid 42 now belongs to another process"),
    (Process("node-1", 42, "boot-a pid:[7] 4000"), Seen(exists=True, start="4000"), None),
    (Process("node-1", 42, "boot-a pid:[7] 4000"), Seen(exists=True), None),  # start unreadable
    (Process("node-2", 42, "boot-a pid:[7] 4000"), Seen(exists=False), None),
    (Process("node-1", 42, "boot-b pid:[7] 4000"), Seen(exists=False), None),
    (Process("node-1", 42, "boot-a pid:[8] 4000"), Seen(exists=False), None),
    (Process("node-1", 42, None), Seen(exists=False), None),
    (Process("node-1", 42, "garbled"), Seen(exists=False), None),
])
def test_a_holder_is_gone_only_on_evidence_from_the_same_host_boot_and_namespace(
        holder: Process, seen: Seen, expected: str | None) -> None:
    assert liveness.gone(holder, HERE, seen, namespaces=True) == expected


@pytest.mark.parametrize(("seen", "expected"), [
    (Seen(exists=False), "no process has pid 42 any more"),
    (Seen(exists=True), None),  # no start time to tell a reused pid: it may be the holder
])
def test_without_pid_namespaces_only_a_missing_pid_is_gone(seen: Seen, expected: str | None
                                                           ) -> None:
    holder, here = Process("mac", 42, None), Process("mac", 100, None)
    assert liveness.gone(holder, here, seen, namespaces=False) == expected


def test_this_process_is_seen_alive_with_the_start_time_it_records() -> None:
    me = liveness.this_process()
    assert me.token is not None  # the tests run on Linux
    seen = liveness.look(me.pid)
    assert (seen.exists, seen.exited, seen.start) == (True, False, me.token.split(" ")[2])
    assert liveness.gone(me, me, seen) is None
