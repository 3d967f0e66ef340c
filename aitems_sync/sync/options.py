"""How a run (or a plan) goes: the one options type the API, the CLI and the engine share."""

from __future__ import annotations

from dataclasses import dataclass

from aitems_sync.state.store import MERGE_EVERY

#: Rows a dataset reads in-process before ``extract_worker`` hands the rest to a worker
#: process: a delta never pays the worker's start-up, a backfill pays it once.
WORKER_AFTER = 20_000


@dataclass(frozen=True)
class RunOptions:
    """The knobs of a run; the defaults are those of ``aitems-sync run``."""

    full_refresh: bool = False  # re-read every row; the ledger still skips what was delivered
    lease_ttl: float = 60.0  # seconds; a killed run's lease is taken over after this
    wait: float | None = None  # seconds to wait for held leases (math.inf: no limit); None: 75
    parallel: int = 1  # datasets synced at once
    chunk_rows: int = 5000  # rows read and diffed against the ledger at a time
    mark_every: int = 10_000  # rows after which a stretch with nothing to send commits its mark
    merge_every: int = MERGE_EVERY  # ledger entries logged before the log is merged
    # Rows read in-process before an extraction worker process reads the rest (None: never;
    # 0: from the first row; ``--extract-worker`` sets WORKER_AFTER).
    worker_after: int | None = None
