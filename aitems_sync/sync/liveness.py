"""Whether the process holding a lease is gone, so that a run on its host takes the lease over at
once instead of waiting for it to expire.

A lease records its holder's host name and pid and, on Linux, a process token: the boot id, the
pid namespace and the process's start time (clock ticks since boot, field 22 of
``/proc/<pid>/stat``). A holder is judged gone only on evidence a live process cannot produce:

- the same host name, and on Linux the same boot and pid namespace: a process in another
  container (Docker with the host's network and name, a pod with ``hostNetwork``), or one from
  before a reboot, cannot be seen from here whatever its pid, so its lease waits for its expiry;
- then no process with that pid (``kill(pid, 0)`` says so, which ``/proc`` mounted with
  ``hidepid`` cannot hide), or one that exited and awaits its parent (a zombie), or one that
  started at another moment (the pid was reused by another process).

Everything else (another host, a holder that recorded no token, an unreadable ``/proc``,
Windows) is left to the lease's expiry, as for a holder on another machine. ``gone`` decides;
``this_process`` and ``look`` read the host.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

#: Whether pids are only comparable within one boot and pid namespace (where /proc tells both).
NAMESPACES = sys.platform.startswith("linux")


@dataclass(frozen=True)
class Process:
    """A process as a lease records it: host name, pid and (Linux) its token."""

    host: str
    pid: int
    #: ``"BOOT_ID PID_NAMESPACE START_TICKS"``, or None where they cannot be read.
    token: str | None


@dataclass(frozen=True)
class Seen:
    """What this host shows now of a pid."""

    exists: bool
    #: Its start time (clock ticks since boot), when readable.
    start: str | None = None
    #: It exited and awaits its parent (a zombie): it runs no code any more.
    exited: bool = False


def gone(holder: Process, here: Process, seen: Seen, *, namespaces: bool = NAMESPACES
         ) -> str | None:
    """Why the lease's ``holder`` no longer runs, judged from this process (``here``) and what
    this host shows of the holder's pid (``seen``); None when it may still run."""
    if holder.host != here.host:
        return None
    start = None
    if namespaces:
        theirs, ours = _fields(holder.token), _fields(here.token)
        if theirs is None or ours is None or theirs[:2] != ours[:2]:
            return None
        start = theirs[2]
    elif seen.exists:
        return None  # no start time to compare: a pid that exists may be the holder
    if not seen.exists:
        return f"no process has pid {holder.pid} any more"
    if seen.exited:
        return f"process {holder.pid} has exited"
    if seen.start is not None and seen.start != start:
        return f"pid {holder.pid} now belongs to another process"
    return None


def _fields(token: str | None) -> list[str] | None:
    fields = None if token is None else token.split(" ")
    return fields if fields is not None and len(fields) == 3 else None


def this_process() -> Process:
    """This process, as its leases record it."""
    pid = os.getpid()
    token = None
    if NAMESPACES:
        boot = _read("/proc/sys/kernel/random/boot_id")
        space = _readlink("/proc/self/ns/pid")
        stat = _read(f"/proc/{pid}/stat")
        start = None if stat is None else _parse_stat(stat)[1]
        if boot and space and start:
            token = f"{boot} {space} {start}"
    return Process(socket.gethostname(), pid, token)


def look(pid: int) -> Seen:
    """What this host shows of ``pid`` now (a pid that cannot be judged shows as existing)."""
    if pid <= 0 or os.name != "posix":  # on Windows, os.kill(pid, 0) would end the process
        return Seen(exists=True)
    stat = _read(f"/proc/{pid}/stat") if NAMESPACES else None
    if stat is None:
        return Seen(exists=_exists(pid))
    state, start = _parse_stat(stat)
    exited = state in ("Z", "X") and _threads(pid) <= 1
    return Seen(exists=True, start=start, exited=exited)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process (EPERM): it exists
    return True


def _parse_stat(text: str) -> tuple[str, str | None]:
    """The state letter and the start time of a ``/proc/<pid>/stat`` line (the command name in
    parentheses may hold spaces and parentheses itself)."""
    fields = text[text.rfind(")") + 2:].split()
    return (fields[0] if fields else "?"), (fields[19] if len(fields) > 19 else None)


def _threads(pid: int) -> int:
    """The threads of ``pid`` (a zombie leader whose other threads still run has several)."""
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None
