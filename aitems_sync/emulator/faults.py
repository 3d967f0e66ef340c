"""The faults the emulator injects into uploads: what is configured, and the dice behind the rates.

See ``server.py``'s docstring for the order in which they apply.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aitems_sync.emulator.rows import Problem, Rejection


@dataclass
class Faults:
    """Faults injected into uploads. Mutable: the server consumes ``delays``, ``statuses`` and
    ``drop_after_store`` as it applies them."""

    latency: float = 0.0
    latency_jitter: float = 0.0
    delays: list[float] = field(default_factory=list)  # extra seconds for the next uploads
    statuses: list[int] = field(default_factory=list)
    status_rate: float = 0.0
    status_choices: tuple[int, ...] = (429, 500, 503, 504)
    retry_after: float | None = 1.0
    max_body_bytes: int | None = None
    drop_after_store: int = 0
    drop_rate: float = 0.0
    seed: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The faults as the admin endpoint shows them."""
        data = dataclasses.asdict(self)
        data["status_choices"] = list(self.status_choices)
        return data


_FAULT_TYPES: dict[str, tuple[type, ...]] = {
    "latency": (int, float), "latency_jitter": (int, float), "delays": (list,),
    "statuses": (list,),
    "status_rate": (int, float), "status_choices": (list,), "retry_after": (int, float, type(None)),
    "max_body_bytes": (int, type(None)), "drop_after_store": (int,), "drop_rate": (int, float),
    "seed": (int, type(None)),
}

#: What the items of each list fault must be: whole numbers (statuses), or seconds (delays).
_LIST_ITEM: dict[str, Callable[[Any], bool]] = {
    "statuses": lambda v: type(v) is int, "status_choices": lambda v: type(v) is int,
    "delays": lambda v: type(v) in (int, float) and v >= 0,
}


def patch_faults(current: Faults, patch: Any) -> Faults:
    """A copy of ``current`` with the fields of a JSON object replaced; 400 on a bad field."""
    if not isinstance(patch, dict):
        raise Rejection(400, "the faults must be a JSON object of Faults fields")
    problems = []
    for name, value in patch.items():
        allowed = _FAULT_TYPES.get(name)
        if allowed is None:
            problems.append(Problem(None, name, f"unknown fault {name!r}"))
        elif isinstance(value, bool) or not isinstance(value, allowed) or (
            isinstance(value, list) and not all(_LIST_ITEM[name](v) for v in value)
        ):
            problems.append(Problem(None, name, f"fault {name} has the wrong type"))
    if problems:
        raise Rejection(400, f"bad faults: {problems[0].message}", problems)
    changes = dict(patch)
    if "status_choices" in changes:
        changes["status_choices"] = tuple(changes["status_choices"])
    return dataclasses.replace(current, **changes)


class FaultState:
    """The faults in force and the random source behind their rates (thread-safe)."""

    def __init__(self, faults: Faults) -> None:
        self._lock = threading.Lock()
        self.faults = faults
        self._rng = random.Random(faults.seed)

    def replace(self, faults: Faults) -> None:
        """Put other faults in force (the random source restarts from their seed)."""
        with self._lock:
            self.faults = faults
            self._rng = random.Random(faults.seed)

    def delay(self) -> float:
        """Seconds to wait before storing and answering this upload."""
        with self._lock:
            f = self.faults
            extra = float(f.delays.pop(0)) if f.delays else 0.0
            return extra + f.latency + (
                self._rng.uniform(0, f.latency_jitter) if f.latency_jitter else 0)

    def too_large(self, size: int) -> bool:
        """Whether a body of this many bytes gets 413."""
        limit = self.faults.max_body_bytes
        return limit is not None and size > limit

    def injected_status(self) -> tuple[int, float | None] | None:
        """The status (and Retry-After) to answer this upload with instead of storing it."""
        with self._lock:
            f = self.faults
            if f.statuses:
                status = f.statuses.pop(0)
            elif f.status_rate and f.status_choices and self._rng.random() < f.status_rate:
                status = self._rng.choice(f.status_choices)
            else:
                return None
            return status, f.retry_after if status in (429, 503) else None

    def drop_now(self) -> bool:
        """Whether to close the connection without answering this (stored) upload."""
        with self._lock:
            f = self.faults
            if f.drop_after_store > 0:
                f.drop_after_store -= 1
                return True
            return bool(f.drop_rate) and self._rng.random() < f.drop_rate
