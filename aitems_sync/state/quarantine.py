"""The quarantine's share of a batch commit: rows stored, and open entries closed, in the commit's
own transaction.

An open entry is closed ``superseded`` by the commit that delivers a later version of its key
(a version read after it: the source's newer row, in cursor order), or that finds AiTEMS holding
the key's newest version already (read unchanged); ``quarantine retry`` closes what it sent
``resolved``, and what it found superseded, in the commit of its own batch. So an entry is
closed if and only if the transaction that records the delivery commits: a batch AiTEMS did not
acknowledge, a failed write, or a run that lost its lease closes nothing.

Most datasets have no open entry, and a delta's commit must not pay for looking: the store keeps
each dataset's open key hashes in memory (:class:`OpenKeys`), read once per run under its
lease, the only writer of new entries meanwhile, and a commit looks its keys up there, a set
operation in C, and goes to the table only for the keys it finds. A dataset with more open
entries than :data:`WATCH_LIMIT` (the store's ``watch_limit``) looks its commits' keys up in
the table instead (an indexed ``IN`` list per commit).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from itertools import chain
from typing import Any

import sqlalchemy as sa

from aitems_sync.state import connect, tables
from aitems_sync.state.records import KEY_HASH, BatchCommit

#: Open entries' key hashes kept in memory per dataset (a few megabytes); past it, a commit's
#: keys are looked up in the table.
WATCH_LIMIT = 100_000

_Q = tables.quarantine

_CLOSE_BY_KEY = (
    sa.update(_Q)
    .where(_Q.c.dataset_id == sa.bindparam("in_dataset"), _Q.c.status == "open",
           _Q.c.key_hash.in_(sa.bindparam("keys", expanding=True)))
    .values(status="superseded", resolved_at=sa.bindparam("now"),
            resolved_by=sa.bindparam("by"))
)
_CLOSE_BY_ID = (
    sa.update(_Q)
    .where(_Q.c.id.in_(sa.bindparam("ids", expanding=True)), _Q.c.status == "open")
    .values(status=sa.bindparam("new_status"), resolved_at=sa.bindparam("now"),
            resolved_by=sa.bindparam("by"))
)


def open_keys(conn: sa.Connection, dataset_id: int, limit: int = WATCH_LIMIT) -> set[int] | None:
    """The key hashes of the dataset's open entries, or None when there are more than
    ``limit`` (an index-only read of ``ix_quarantine_dataset_status_key``)."""
    query = (sa.select(_Q.c.key_hash)
             .where(_Q.c.dataset_id == dataset_id, _Q.c.status == "open",
                    _Q.c.key_hash.is_not(None))
             .limit(limit + 1))
    found = {int(k) for k in conn.execute(query).scalars()}
    return None if len(found) > limit else found


class OpenKeys:
    """Each dataset's open key hashes as the run committing it knows them: read at the run's
    first commit, then kept up to date by its commits (the run holds the dataset's lease, so no
    one else adds entries meanwhile; an entry dropped by `quarantine drop` only leaves a key
    that finds nothing). A run id other than the one it was read for reads it again. None for
    a dataset: more than ``limit``, looked up in the table."""

    def __init__(self, limit: int = WATCH_LIMIT) -> None:
        self.limit = limit
        self._known: dict[int, tuple[str, set[int] | None]] = {}

    def of(self, conn: sa.Connection, dataset_id: int, run_id: str) -> set[int] | None:
        known = self._known.get(dataset_id)
        if known is not None and known[0] == run_id:
            return known[1]
        keys = open_keys(conn, dataset_id, self.limit)
        self._known[dataset_id] = (run_id, keys)
        return keys

    def overflow(self, dataset_id: int) -> None:
        """Too many to keep: the dataset's commits look their keys up in the table."""
        known = self._known.get(dataset_id)
        if known is not None:
            self._known[dataset_id] = (known[0], None)

    def forget(self, dataset_id: int) -> None:
        self._known.pop(dataset_id, None)

    def clear(self) -> None:
        """Forget every dataset's (a write failed and rolled back what it noted)."""
        self._known.clear()


def close(conn: sa.Connection, ids: Sequence[int], status: str, run_id: str,
          now: datetime) -> None:
    """Close the open entries ``ids`` as ``status`` (``quarantine retry``)."""
    for chunk in connect.chunks(ids):
        conn.execute(_CLOSE_BY_ID, {"ids": chunk, "new_status": status, "now": now,
                                    "by": run_id})


def commit_share(conn: sa.Connection, dataset_id: int, run_id: str,
                 commits: Sequence[BatchCommit], rows: Sequence[Sequence[dict[str, Any]]],
                 watched: OpenKeys, now: datetime) -> None:
    """Apply the quarantine's share of ``commits`` in order: each one closes the open entries
    of the keys it delivered or found current (stored before it, or by an earlier commit of
    the group), then stores its own rejected rows (``rows``, one list per commit; a row of its
    own batch that a later version in that batch superseded comes already closed)."""
    keys = watched.of(conn, dataset_id, run_id)
    for commit, rejected in zip(commits, rows, strict=True):
        if keys is None or keys:
            _close_delivered(conn, dataset_id, run_id, commit, keys, now)
        if rejected:
            conn.execute(sa.insert(_Q), list(rejected))
            if keys is not None:
                keys.update(r["key_hash"] for r in rejected
                            if r["status"] == "open" and r["key_hash"] is not None
                            and r["dataset_id"] == dataset_id)
                if len(keys) > watched.limit:
                    watched.overflow(dataset_id)
                    keys = None


def _close_delivered(conn: sa.Connection, dataset_id: int, run_id: str, commit: BatchCommit,
                     keys: set[int] | None, now: datetime) -> None:
    delivered = _delivered(commit)
    found: Iterable[int] = list(delivered) if keys is None else keys.intersection(delivered)
    hits = list(found)
    if not hits:
        return
    for chunk in connect.chunks(hits):
        conn.execute(_CLOSE_BY_KEY, {"in_dataset": dataset_id, "keys": chunk, "now": now,
                                     "by": run_id})
    if keys is not None:
        keys.difference_update(hits)


def _delivered(commit: BatchCommit) -> Iterator[int]:
    """The key hashes whose newest version the commit records as AiTEMS's."""
    return chain(map(KEY_HASH, commit.ledger), map(KEY_HASH, commit.unlogged), commit.current)
