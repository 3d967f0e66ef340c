"""What a run did, per dataset: the counts the CLI prints and ``--json`` returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from aitems_sync.errors import EXIT_FAILED, EXIT_INVALID_ROWS, EXIT_OK, EXIT_USAGE

#: Dataset statuses, from best to worst.
OK, INVALID, INTERRUPTED, FAILED = "ok", "invalid", "interrupted", "failed"


@dataclass
class AmbiguousBatch:
    """A batch whose upload may have reached AiTEMS without its answer reaching us."""

    rows: int
    first_cursor: str | None
    last_cursor: str | None
    reason: str
    batch_id: int | None = None


@dataclass
class DatasetReport:
    """Counts for one dataset in one run.

    Every row read is ``unchanged`` (the ledger or the mark shows it delivered), ``invalid``
    (quarantined by our validation or refused by AiTEMS), or ``new``/``changed`` (routed for
    upload). Of those, ``superseded`` were replaced by a later version of the same key in the
    same batch, and ``sent`` were acknowledged by AiTEMS. ``null_cursor`` rows were not read
    at all: their cursor is NULL, so no run ever syncs them (counted every run).
    """

    dataset: str
    status: str = OK
    read: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    superseded: int = 0
    invalid: int = 0
    sent: int = 0
    batches: int = 0
    requests: int = 0
    seconds: float = 0.0
    ambiguous: list[AmbiguousBatch] = field(default_factory=list)
    error: str | None = None
    null_cursor: int = 0
    #: The dataset failed on a mistake in the spec (exit 2): running again cannot help.
    spec_error: bool = False


def null_cursor_message(count: int, cursor: str | None = None) -> str:
    """What to tell the operator about rows skipped for a NULL cursor (column ``cursor``)."""
    rows = "1 row has" if count == 1 else f"{count} rows have"
    column = f"the cursor column {cursor}" if cursor else "the cursor column"
    return (f"{rows} a NULL cursor and will never be synced: make {column} NOT NULL, or "
            "COALESCE it in the query (e.g. COALESCE(updated_at, created_at))")


@dataclass
class RunReport:
    """The whole run; ``exit_code`` follows design.md (2 a spec mistake beats 1 failed beats
    3 invalid beats 0: a dataset the spec keeps failing needs a person, not a retry)."""

    run_id: str
    datasets: list[DatasetReport] = field(default_factory=list)
    interrupted_exit_code: int | None = None

    @property
    def exit_code(self) -> int:
        if self.interrupted_exit_code is not None:
            return self.interrupted_exit_code
        if any(d.spec_error for d in self.datasets):
            return EXIT_USAGE
        statuses = {d.status for d in self.datasets}
        if FAILED in statuses:
            return EXIT_FAILED
        if INVALID in statuses:
            return EXIT_INVALID_ROWS
        return EXIT_OK

    @property
    def status(self) -> str:
        """The worst of the datasets' statuses (a run stopped by a signal: ``interrupted``)."""
        if self.interrupted_exit_code is not None:
            return INTERRUPTED
        statuses = {d.status for d in self.datasets}
        return next((s for s in (FAILED, INTERRUPTED, INVALID) if s in statuses), OK)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "exit_code": self.exit_code,
            "datasets": [asdict(d) for d in self.datasets],
        }
