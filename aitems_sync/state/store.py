"""The state store: marks, ledger, batch journal, quarantine, runs and leases in one database.

Any SQLAlchemy URL: a SQLite file by default, PostgreSQL or MySQL where a pod's disk does not
last. Tables and migrations live in :mod:`aitems_sync.state.tables`, connection details in
:mod:`aitems_sync.state.connect`, the record types in :mod:`aitems_sync.state.records` and the
typed value codec in :mod:`aitems_sync.state.values`; this module re-exports what callers need.

Every write is its own short transaction. :meth:`StateStore.commit_batch` is the one that
matters: a batch's journal status, its ledger entries, the mark and its quarantined rows commit
together or not at all. Database failures surface as :class:`~aitems_sync.errors.StateError`
naming the store (never its password) and the operation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import Any

import sqlalchemy as sa

from aitems_sync.errors import LeaseLostError, LockHeldError, StateError
from aitems_sync.redact import redact
from aitems_sync.rows.encode import ROW_HASH, ROW_HASHES
from aitems_sync.state import connect, records, tables
from aitems_sync.state import quarantine as quarantine_share
from aitems_sync.state.marks import (
    CursorValue,
    Mark,
    decode_mark,
    encode_mark,
    mark_from_json,
    mark_to_json,
)
from aitems_sync.state.records import (
    BatchCommit,
    BatchRecord,
    Boundary,
    Handover,
    LateBatch,
    LeaseHolder,
    LedgerEntry,
    QuarantineEntry,
    QuarantineListing,
    QuarantineRecord,
    RunRecord,
    Sending,
)
from aitems_sync.state.values import decode_value, dumps, loads
from aitems_sync.state.values import encode_value as encode_value

__all__ = [
    "BatchCommit",
    "BatchRecord",
    "Boundary",
    "CursorValue",
    "LateBatch",
    "LeaseHolder",
    "LedgerEntry",
    "Mark",
    "QuarantineEntry",
    "QuarantineListing",
    "QuarantineRecord",
    "RunRecord",
    "Sending",
    "StateStore",
    "decode_value",
    "encode_value",
]

log = logging.getLogger(__name__)

#: Keys ``ledger_recent`` (the ledger's second level, :mod:`aitems_sync.state.tables`) gathers
#: before a merge moves them into ``ledger``. A large backfill ran as fast with smaller or larger
#: limits (measured: docs/perf-history.md); merging a full level into a large ledger is cheap but
#: not free, and each such merge at the end of a run is paid by that run.
RECENT_LIMIT = 2_000_000

#: Ledger entries logged before the committer merges the log into the ledger: the reader
#: holds them in memory meanwhile, and each merge rewrites the ledger pages they
#: touch.
MERGE_EVERY = 50_000

#: Boundary entries kept in the marks row itself (``tables.marks.boundary``): written with the
#: mark, no statement of their own, which is the usual case (one row at the mark's cursor
#: value); more go to the ``boundary`` table.
INLINE_BOUNDARY = 64
_IN_TABLE = "table"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _batches(ids: Sequence[int]) -> str:
    """``batch 7`` or ``batches 7, 8``, for messages."""
    if len(ids) == 1:
        return f"batch {ids[0]}"
    return "batches " + ", ".join(str(i) for i in ids) if ids else "a batch"


class _Statements:
    """The statements a streaming dataset's committer runs in every transaction, built once:
    building a SQLAlchemy statement (and its cache key) per call cost more Python time than
    SQLite took to run it."""

    def __init__(self, dialect: str) -> None:
        self.put_mark = connect.upsert(dialect, tables.marks, ["dataset_id"],
                                       ["cursor", "key", "updated_at", "boundary"])
        self.put_boundary = connect.upsert(dialect, tables.boundary, ["dataset_id", "key_hash"],
                                           ["payload_hash"])
        self.clear_boundary = sa.delete(tables.boundary).where(
            tables.boundary.c.dataset_id == sa.bindparam("in_dataset"))
        self.journal = sa.insert(tables.batches)
        self.set_status = (
            sa.update(tables.batches)
            .where(tables.batches.c.dataset_id == sa.bindparam("in_dataset"),
                   tables.batches.c.batch_id.in_(sa.bindparam("ids", expanding=True)))
            .values(status=sa.bindparam("new_status"), updated_at=sa.bindparam("now"))
        )
        self.set_status_of_sending = self.set_status.where(tables.batches.c.status == "sending")
        self.lease_owner = (
            sa.select(tables.leases.c.owner)
            .where(tables.leases.c.dataset_id == sa.bindparam("dataset_id")).with_for_update()
        )


class StateStore:
    """The state of every dataset in one database; safe to share between threads."""

    def __init__(self, engine: sa.Engine, *, display: str, clock: Callable[[], datetime],
                 recent_limit: int = RECENT_LIMIT, read_only: bool = False,
                 watch_limit: int = quarantine_share.WATCH_LIMIT):
        """Use :meth:`open`, which also creates and migrates the tables, or :meth:`read`."""
        self._engine = engine
        self._read_only = read_only
        self._writer = engine.execution_options(**{connect.WRITE_OPTION: True})
        self._dialect = engine.dialect.name
        self._clock = clock
        self._ids: dict[str, int] = {}
        self._row_hashes: dict[str, str] = {}
        self._ledger_log = connect.LedgerLog(engine.dialect)
        self._recent_limit = recent_limit
        # dataset id -> keys in its ledger_recent, at most (counted at the first merge).
        self._recent_sizes: dict[int, int] = {}
        # dataset id -> its boundary as last written (a dict kept in the marks row, or
        # _IN_TABLE): the lease holder is its one writer, so a commit that adds to it need not
        # read it back. Dropped when a write fails.
        self._boundaries: dict[int, dict[int, int] | str] = {}
        # Each dataset's open quarantine keys, as its run's commits keep them (see
        # state.quarantine). Forgotten with the boundaries when a write fails.
        self._open_keys = quarantine_share.OpenKeys(watch_limit)
        self._statements = _Statements(self._dialect)
        self.url_for_display = display

    @classmethod
    def open(cls, url: str, *, clock: Callable[[], datetime] = _utcnow,
             recent_limit: int = RECENT_LIMIT,
             watch_limit: int = quarantine_share.WATCH_LIMIT) -> StateStore:
        """Open (creating and migrating if needed) the store at a SQLAlchemy URL.
        ``watch_limit``: open quarantine keys a dataset's commits keep in memory
        (``state.quarantine``)."""
        engine, display = connect.open_engine(url)
        return cls(engine, display=display, clock=clock, recent_limit=recent_limit,
                   watch_limit=watch_limit)

    @classmethod
    def read(cls, url: str, *, clock: Callable[[], datetime] = _utcnow) -> StateStore:
        """The store at a SQLAlchemy URL as it is, for reading only (``plan``): nothing is
        created, migrated or written, and a write is a bug. Where no store exists yet, an empty
        one in memory stands for it; a store of an older schema version is a StateError that
        says how to migrate it (``connect.open_reader``)."""
        engine, display = connect.open_reader(url)
        if engine is None:
            log.info("the state store %s does not exist yet: read as empty (the first run "
                     "creates it)", display)
            engine = connect.empty_store()
        return cls(engine, display=display, clock=clock, read_only=True)

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except sa.exc.SQLAlchemyError as exc:
            raise StateError(
                f"the state store {self.url_for_display} failed to {what}: {connect.reason(exc)}"
            ) from exc

    @contextmanager
    def _write(self, what: str) -> Iterator[sa.Connection]:
        """One write transaction; committed when the block ends, rolled back if it raises."""
        if self._read_only:
            raise RuntimeError(f"a store opened for reading only was asked to {what}")
        with self._guard(what):
            try:
                with self._writer.begin() as conn:
                    yield conn
            except BaseException:
                self._boundaries.clear()  # what the rolled-back write remembered is unsure
                self._open_keys.clear()
                raise

    @contextmanager
    def _read(self, what: str) -> Iterator[sa.Connection]:
        with self._guard(what), self._engine.connect() as conn:
            yield conn

    def _dataset_id(self, name: str, *, create: bool = False) -> int | None:
        """The dataset's small id; registered in its own transaction so a rollback keeps it."""
        if name in self._ids:
            return self._ids[name]
        query = sa.select(tables.datasets.c.id).where(tables.datasets.c.name == name)
        with self._read(f"look up dataset {name!r}") as conn:
            found = conn.execute(query).scalar_one_or_none()
        if found is None and create:
            with self._write(f"register dataset {name!r}") as conn:
                conn.execute(connect.insert_ignore(self._dialect, tables.datasets, ["name"]),
                             {"name": name, "row_hash": ROW_HASH})
                found = conn.execute(query).scalar_one()
        if found is not None:
            self._ids[name] = found
        return found

    def binding(self, dataset: str) -> tuple[str, str] | None:
        """The AiTEMS (service id, dataset id) the dataset's marks and ledger belong to, or None
        while it has none (never run, reset, or a store older than version 6)."""
        query = (sa.select(tables.datasets.c.aitems_service_id, tables.datasets.c.aitems_dataset_id)
                 .where(tables.datasets.c.name == dataset))
        with self._read(f"look up dataset {dataset!r}") as conn:
            row = conn.execute(query).one_or_none()
        if row is None or row.aitems_dataset_id is None:
            return None
        return str(row.aitems_service_id), str(row.aitems_dataset_id)

    def bind(self, dataset: str, service_id: str, aitems_dataset_id: str,
             identity: Sequence[str]) -> None:
        """Record the AiTEMS service and dataset the dataset's deliveries go to, where none is
        recorded, and the key its ledger and boundary identify rows by ([]: the whole row)."""
        dataset_id = self._known_id(dataset)
        table = tables.datasets
        where = table.c.id == dataset_id
        with self._write(f"bind dataset {dataset!r} to AiTEMS dataset {aitems_dataset_id}") as conn:
            conn.execute(sa.update(table).where(where, table.c.aitems_dataset_id.is_(None))
                         .values(aitems_service_id=service_id,
                                 aitems_dataset_id=aitems_dataset_id))
            conn.execute(sa.update(table).where(where).values(identity=dumps(list(identity))))

    def has_boundary(self, dataset: str) -> bool:
        """Whether the dataset's mark records any row at its cursor value."""
        return bool(self.boundary(dataset))

    def identity(self, dataset: str) -> tuple[str, ...] | None:
        """The key the dataset's ledger and boundary identify rows by (empty: the whole row),
        or None while none is recorded (never run, reset, or a store older than version 7)."""
        query = sa.select(tables.datasets.c.identity).where(tables.datasets.c.name == dataset)
        with self._read(f"look up dataset {dataset!r}") as conn:
            found = conn.execute(query).scalar_one_or_none()
        return None if found is None else tuple(loads(found))

    def row_hash_of(self, dataset: str) -> str:
        """The row hash the dataset's ledger is written with (one of ``rows.encode.ROW_HASHES``):
        the one it was registered with, or for a dataset not registered yet the one it will be."""
        if dataset in self._row_hashes:
            return self._row_hashes[dataset]
        query = sa.select(tables.datasets.c.row_hash).where(tables.datasets.c.name == dataset)
        with self._read(f"look up dataset {dataset!r}") as conn:
            found = conn.execute(query).scalar_one_or_none()
        if found is None:
            return ROW_HASH
        if found not in ROW_HASHES:
            raise StateError(
                f"dataset {dataset!r} in the state store {self.url_for_display} has its ledger "
                f"hashed with {found!r}, which this aitems-sync does not know; upgrade aitems-sync"
            )
        self._row_hashes[dataset] = found
        return str(found)

    def _known_id(self, name: str) -> int:
        found = self._dataset_id(name, create=True)
        assert found is not None
        return found

    # -- runs -------------------------------------------------------------------------------

    def begin_run(self, run_id: str, *, datasets: Sequence[str], host: str, pid: int) -> None:
        """Record the start of a run."""
        row = {"run_id": run_id, "started_at": self._clock(), "status": "running", "host": host,
               "pid": pid, "datasets": dumps(list(datasets)), "summary": "{}"}
        with self._write(f"record the start of run {run_id}") as conn:
            conn.execute(sa.insert(tables.runs), row)

    def end_run(self, run_id: str, *, status: str, summary: Mapping[str, Any],
                reported: Sequence[int] = ()) -> None:
        """Record the end of a run, its status and its summary (JSON-able; Decimal as text),
        and that the ambiguous batches ``reported`` (batch ids) are reported now."""
        values = {"finished_at": self._clock(), "status": status,
                  "summary": redact(dumps(dict(summary)))}
        batch = tables.batches
        with self._write(f"record the end of run {run_id}") as conn:
            runs = tables.runs
            done = conn.execute(sa.update(runs).where(runs.c.run_id == run_id).values(values))
            if done.rowcount != 1:
                raise StateError(f"run {run_id} is not in the state store's history")
            for chunk in connect.chunks(reported):
                conn.execute(sa.update(batch).where(batch.c.batch_id.in_(chunk),
                                                    batch.c.status.in_(["sending", "ambiguous"]))
                             .values(status="reported", updated_at=values["finished_at"]))

    def mark_crashed_runs(self, *, but: str) -> list[str]:
        """Record as ``crashed`` every run still ``running`` that holds no live lease (killed,
        or lost with its machine; ``but`` is the caller's own run), with the rows its committed
        batches delivered as its summary. Returns their ids."""
        runs, leases, batches = tables.runs, tables.leases, tables.batches
        now = self._clock()
        alive = sa.select(leases.c.owner).where(leases.c.expires_at >= now)
        dead = sa.select(runs.c.run_id).where(runs.c.status == "running", runs.c.run_id != but,
                                              runs.c.run_id.not_in(alive))
        delivered = (sa.select(tables.datasets.c.name, sa.func.count(), sa.func.sum(batches.c.rows))
                     .join(tables.datasets).where(batches.c.run_id == sa.bindparam("run_id"),
                                                  batches.c.status == "committed")
                     .group_by(tables.datasets.c.name))
        with self._write("record the runs that crashed") as conn:
            crashed = [str(r) for r in conn.execute(dead).scalars()]
            for run_id in crashed:
                counts = conn.execute(delivered, {"run_id": run_id}).all()
                summary = {"run_id": run_id, "status": "crashed", "datasets": [
                    {"dataset": name, "status": "crashed", "sent": int(rows or 0),
                     "batches": int(count)} for name, count, rows in counts]}
                conn.execute(sa.update(runs).where(runs.c.run_id == run_id,
                                                   runs.c.status == "running")
                             .values(status="crashed", summary=dumps(summary)))
        return crashed

    def runs(self, limit: int = 20) -> list[RunRecord]:
        """The latest runs, newest first."""
        runs = tables.runs
        query = sa.select(runs).order_by(runs.c.started_at.desc(), runs.c.run_id.desc())
        with self._read("list runs") as conn:
            return [records.run_record(row) for row in conn.execute(query.limit(limit))]

    # -- marks ------------------------------------------------------------------------------

    def get_mark(self, dataset: str) -> Mark | None:
        """The dataset's high-water mark, or None before its first commit (or after a reset)."""
        dataset_id = self._dataset_id(dataset)
        if dataset_id is None:
            return None
        marks = tables.marks
        query = sa.select(marks.c.cursor, marks.c.key).where(marks.c.dataset_id == dataset_id)
        with self._read(f"read the mark of dataset {dataset!r}") as conn:
            row = conn.execute(query).one_or_none()
        return None if row is None else decode_mark(row.cursor, row.key)

    def boundary(self, dataset: str) -> dict[int, int] | None:
        """The rows the dataset handled at its mark's cursor value (identity hash -> content
        hash), or None when its mark records none (no mark, or one written before schema
        version 7 or by `state set`)."""
        dataset_id = self._dataset_id(dataset)
        if dataset_id is None:
            return None
        with self._read(f"read the mark's boundary of dataset {dataset!r}") as conn:
            stored = self._stored_boundary(conn, dataset_id)
            if stored is None:
                return None
            if isinstance(stored, dict):
                return dict(stored)
            rows = sa.select(tables.boundary.c.key_hash, tables.boundary.c.payload_hash).where(
                tables.boundary.c.dataset_id == dataset_id)
            return {int(k): int(p) for k, p in conn.execute(rows)}

    def _stored_boundary(self, conn: sa.Connection,
                         dataset_id: int) -> dict[int, int] | str | None:
        """The boundary as the marks row holds it (None: none recorded), remembered."""
        query = sa.select(tables.marks.c.boundary).where(tables.marks.c.dataset_id == dataset_id)
        text = conn.execute(query).scalar_one_or_none()
        if text is None:
            self._boundaries.pop(dataset_id, None)
            return None
        stored = loads(text)
        found: dict[int, int] | str = (
            _IN_TABLE if stored == _IN_TABLE else {int(k): int(p) for k, p in stored})
        self._boundaries[dataset_id] = found
        return found

    def set_mark(self, dataset: str, mark: Mark | None) -> None:
        """Set (or with None, forget) the dataset's mark; it records no boundary."""
        dataset_id = self._known_id(dataset)
        self._boundaries.pop(dataset_id, None)
        with self._write(f"set the mark of dataset {dataset!r}") as conn:
            self._put_mark(conn, dataset_id, mark)
            conn.execute(self._statements.clear_boundary, {"in_dataset": dataset_id})

    def _put_mark(self, conn: sa.Connection, dataset_id: int, mark: Mark | None,
                  boundary: str | None = None) -> None:
        if mark is None:
            conn.execute(sa.delete(tables.marks).where(tables.marks.c.dataset_id == dataset_id))
            return
        cursor, key = encode_mark(mark)
        conn.execute(self._statements.put_mark, {
            "dataset_id": dataset_id, "cursor": cursor, "key": key, "updated_at": self._clock(),
            "boundary": boundary})

    def _put_mark_and_boundary(self, conn: sa.Connection, dataset_id: int, mark: Mark,
                               commits: Sequence[BatchCommit]) -> None:
        """Move the mark, recording the boundaries of ``commits`` (in order) with it: in the
        marks row while they are few, else in the ``boundary`` table."""
        entries: dict[int, int] = {}
        replace = False
        for commit in commits:
            if commit.boundary is not None:
                if commit.boundary.fresh:
                    entries, replace = {}, True
                entries.update(commit.boundary.entries)
        known = self._boundaries.get(dataset_id)
        if known is None:
            known = self._stored_boundary(conn, dataset_id) or {}
        if not replace and isinstance(known, dict):
            entries, replace = {**known, **entries}, True  # what the row held, and these
        if replace and known == _IN_TABLE:
            conn.execute(self._statements.clear_boundary, {"in_dataset": dataset_id})
        if replace and len(entries) <= INLINE_BOUNDARY:
            self._put_mark(conn, dataset_id, mark, dumps(sorted(entries.items())))
            self._boundaries[dataset_id] = entries
            return
        if entries:  # a new table, or more rows for the one there
            conn.execute(self._statements.put_boundary, [
                {"dataset_id": dataset_id, "key_hash": k, "payload_hash": p}
                for k, p in entries.items()])
        self._put_mark(conn, dataset_id, mark, dumps(_IN_TABLE))
        self._boundaries[dataset_id] = _IN_TABLE

    def reset(self, dataset: str) -> None:
        """Forget the dataset's mark, ledger, journal and AiTEMS binding (its quarantine stays)."""
        dataset_id = self._dataset_id(dataset)
        if dataset_id is None:
            return
        with self._write(f"reset dataset {dataset!r}") as conn:
            for table in (tables.marks, tables.boundary, tables.ledger, tables.ledger_recent,
                          tables.ledger_log, tables.batches, tables.late_batches,
                          tables.handovers):
                conn.execute(sa.delete(table).where(table.c.dataset_id == dataset_id))
            conn.execute(sa.update(tables.datasets).where(tables.datasets.c.id == dataset_id)
                         .values(aitems_service_id=None, aitems_dataset_id=None, identity=None))
        self._recent_sizes.pop(dataset_id, None)

    def discard(self, dataset: str) -> None:
        """Forget everything of a dataset, its quarantine too: a first load's staging."""
        self.reset(dataset)
        dataset_id = self._dataset_id(dataset)
        if dataset_id is not None:
            self._open_keys.forget(dataset_id)
            with self._write(f"clear dataset {dataset!r}") as conn:
                conn.execute(sa.delete(tables.quarantine)
                             .where(tables.quarantine.c.dataset_id == dataset_id))

    def begin_handover(self, dataset: str, *, run_id: str, aitems_dataset_id: str,
                       object_key: str, mark: Mark | None, boundary: Boundary | None,
                       identity: Sequence[str]) -> None:
        """Record, while ``run_id`` holds the dataset's lease, that AiTEMS is about to be asked
        to read a first load's file, with the snapshot to take once it has (see
        ``tables.handovers``); replaces an earlier record."""
        dataset_id = self._known_id(dataset)
        row = {"dataset_id": dataset_id, "run_id": run_id,
               "aitems_dataset_id": aitems_dataset_id, "object_key": object_key,
               "snapshot": records.handover_snapshot(mark, boundary, identity),
               "created_at": self._clock()}
        with self._write(f"record the first load of dataset {dataset!r}") as conn:
            self._hold_lease(conn, dataset_id, dataset, run_id)
            conn.execute(sa.delete(tables.handovers)
                         .where(tables.handovers.c.dataset_id == dataset_id))
            conn.execute(sa.insert(tables.handovers), row)

    def handover(self, dataset: str) -> Handover | None:
        """The dataset's first load AiTEMS was asked to read and the store has not taken."""
        dataset_id = self._dataset_id(dataset)
        if dataset_id is None:
            return None
        query = sa.select(tables.handovers).where(tables.handovers.c.dataset_id == dataset_id)
        with self._read(f"look up the first load of dataset {dataset!r}") as conn:
            row = conn.execute(query).one_or_none()
        return None if row is None else records.handover_record(row)

    def end_handover(self, dataset: str, *, run_id: str) -> None:
        """Forget the dataset's pending first load (AiTEMS did not take the file), while
        ``run_id`` holds the dataset's lease (LeaseLostError, and nothing forgotten, else)."""
        dataset_id = self._known_id(dataset)
        with self._write(f"forget the first load of dataset {dataset!r}") as conn:
            self._hold_lease(conn, dataset_id, dataset, run_id)
            conn.execute(sa.delete(tables.handovers)
                         .where(tables.handovers.c.dataset_id == dataset_id))

    def adopt(self, dataset: str, staging: str, *, run_id: str, mark: Mark,
              boundary: Boundary | None, binding: tuple[str, str],
              identity: Sequence[str]) -> None:
        """Hand a first load over: in ONE transaction, while ``run_id`` holds ``dataset``'s
        lease, the dataset's mark, boundary, ledger, journal and binding are replaced by what
        the load staged under ``staging`` (its ledger and quarantine) and the snapshot's
        ``mark`` and ``boundary``, bound to the AiTEMS ``binding`` (service id, dataset id).
        Before this commits nothing of the load is the dataset's; a load that fails or dies
        leaves only the staging dataset, which the next load clears (:meth:`reset`)."""
        dataset_id, staged = self._known_id(dataset), self._known_id(staging)
        row_hash = self.row_hash_of(staging)
        with self._write(f"hand the first load of dataset {dataset!r} over") as conn:
            self._hold_lease(conn, dataset_id, dataset, run_id)
            self._hold_lease(conn, staged, staging, run_id)
            for table in (tables.marks, tables.boundary, tables.ledger, tables.ledger_recent,
                          tables.ledger_log, tables.batches, tables.late_batches,
                          tables.handovers):
                conn.execute(sa.delete(table).where(table.c.dataset_id == dataset_id))
            # The quarantine of before: the snapshot read every row again, and its own invalid
            # ones are moved in below; a retry of an old entry could send a row twice.
            conn.execute(sa.delete(tables.quarantine)
                         .where(tables.quarantine.c.dataset_id == dataset_id))
            for table in (tables.ledger, tables.ledger_recent, tables.ledger_log,
                          tables.quarantine):
                conn.execute(sa.update(table).where(table.c.dataset_id == staged)
                             .values(dataset_id=dataset_id))
            conn.execute(sa.update(tables.datasets).where(tables.datasets.c.id == dataset_id)
                         .values(row_hash=row_hash, aitems_service_id=binding[0],
                                 aitems_dataset_id=binding[1], identity=dumps(list(identity))))
            self._boundaries.pop(dataset_id, None)
            self._put_mark_and_boundary(conn, dataset_id, mark,
                                        [BatchCommit(None, mark=mark, boundary=boundary)])
        self._row_hashes[dataset] = row_hash
        for cached in (dataset_id, staged):
            self._recent_sizes.pop(cached, None)
            self._open_keys.forget(cached)

    # -- ledger -----------------------------------------------------------------------------

    def ledger_lookup(self, dataset: str, key_hashes: Sequence[int], *,
                      logged: bool = True) -> dict[int, int]:
        """key_hash -> payload_hash for the given keys that are in the ledger.

        A key's newest entry in the ledger's log overrides the merged ledger. With ``logged``
        False only the merged ledger is read: for a run that holds the dataset's lease and
        keeps the logged entries in memory (:meth:`logged_entries`), since the log has no
        index by key.
        """
        dataset_id = self._dataset_id(dataset)
        if dataset_id is None or not key_hashes:
            return {}
        with self._read(f"read the ledger of dataset {dataset!r}") as conn:
            # The log before the levels it is merged into: a merge committed in between moves
            # an entry from where it was read to where it will be.
            log_ = connect.log_lookup(conn, dataset_id, key_hashes) if logged else {}
            found = connect.ledger_lookup(conn, dataset_id, key_hashes)
        found.update(log_)
        return found

    def logged_entries(self, dataset: str) -> dict[int, int]:
        """key_hash -> payload_hash of the dataset's log, not merged yet (newest per key)."""
        dataset_id = self._dataset_id(dataset)
        if dataset_id is None:
            return {}
        with self._read(f"read the ledger log of dataset {dataset!r}") as conn:
            return connect.logged_entries(conn, dataset_id)

    def logged_count(self, dataset: str) -> int:
        """How many entries of the dataset wait in the log to be merged into the ledger."""
        dataset_id = self._dataset_id(dataset)
        if dataset_id is None:
            return 0
        query = sa.select(sa.func.count()).where(tables.ledger_log.c.dataset_id == dataset_id)
        with self._read(f"count the ledger log of dataset {dataset!r}") as conn:
            return int(conn.execute(query).scalar_one())

    def merge_ledger(self, dataset: str) -> int:
        """Merge the dataset's log into its ledger (one transaction); how many entries moved.

        The log goes into ``ledger_recent``, and that into ``ledger`` once it holds the
        store's ``recent_limit`` keys. Call while holding the dataset's lease: a run holding it
        may keep the log in memory.
        """
        dataset_id = self._dataset_id(dataset)
        if dataset_id is None:
            return 0
        with self._write(f"merge the ledger log of dataset {dataset!r}") as conn:
            merged, recent = self._merge_log(conn, dataset_id, settle=False)
        self._recent_sizes[dataset_id] = recent  # once committed
        return merged

    def _merge_log(self, conn: sa.Connection, dataset_id: int, *,
                   settle: bool) -> tuple[int, int]:
        """Merge the log into ``ledger_recent``, and that into ``ledger`` when it is full or
        ``settle`` asks for it; how many log entries moved, and the keys now in
        ``ledger_recent`` (at most)."""
        merged = self._ledger_log.merge(conn, dataset_id)
        recent = self._recent_sizes.pop(dataset_id, None)  # counted again if this rolls back
        if recent is None:
            level = tables.ledger_recent
            count = sa.select(sa.func.count()).where(level.c.dataset_id == dataset_id)
            recent = int(conn.execute(count).scalar_one())
        else:
            recent += merged  # at most: some entries replaced a key's older one
        if settle or recent >= self._recent_limit:
            self._ledger_log.merge_recent(conn, dataset_id)
            recent = 0
        return merged, recent

    def ledger_size(self, dataset: str) -> int:
        """The number of keys in the dataset's ledger, its second level and log included."""
        dataset_id = self._dataset_id(dataset)
        if dataset_id is None:
            return 0
        ledger, recent, log_ = tables.ledger, tables.ledger_recent, tables.ledger_log

        def elsewhere(table: sa.Table, key_hash: sa.ColumnElement[int]) -> Any:
            return ~sa.exists().where(table.c.dataset_id == dataset_id,
                                      table.c.key_hash == key_hash)

        # Each level's keys not in a larger one: the probes are as many as the smaller
        # levels' entries, not the ledger's.
        queries = [
            sa.select(sa.func.count()).where(ledger.c.dataset_id == dataset_id),
            sa.select(sa.func.count()).where(recent.c.dataset_id == dataset_id,
                                             elsewhere(ledger, recent.c.key_hash)),
            sa.select(sa.func.count(sa.distinct(log_.c.key_hash))).where(
                log_.c.dataset_id == dataset_id, elsewhere(recent, log_.c.key_hash),
                elsewhere(ledger, log_.c.key_hash)),
        ]
        with self._read(f"count the ledger of dataset {dataset!r}") as conn:
            return sum(int(conn.execute(query).scalar_one()) for query in queries)

    def has_ledger(self, dataset: str) -> bool:
        """Whether the dataset's ledger (either level) or its log holds any entry (index
        probes, no count)."""
        dataset_id = self._dataset_id(dataset)
        if dataset_id is None:
            return False
        with self._read(f"probe the ledger of dataset {dataset!r}") as conn:
            for table in (tables.ledger, tables.ledger_recent, tables.ledger_log):
                query = sa.select(table.c.key_hash).where(table.c.dataset_id == dataset_id)
                if conn.execute(query.limit(1)).first() is not None:
                    return True
        return False

    def prune_ledger(self, dataset: str, before: float) -> int:
        """Merge the dataset's log and second level into its ledger, then delete its entries
        whose position is below ``before``; returns how many. Call while holding the dataset's
        lease.

        Pruning concerns interaction ledgers, which stay small (the lookback window): merging
        them whole keeps a key's newest entry in one place, where deleting an old position from
        one level could bring back an older entry of the key from the next."""
        dataset_id = self._dataset_id(dataset)
        if dataset_id is None:
            return 0
        stmt = sa.delete(tables.ledger).where(tables.ledger.c.dataset_id == dataset_id,
                                       tables.ledger.c.position < before)
        with self._write(f"prune the ledger of dataset {dataset!r}") as conn:
            self._merge_log(conn, dataset_id, settle=True)
            pruned = int(conn.execute(stmt).rowcount)
        self._recent_sizes[dataset_id] = 0
        return pruned

    # -- journal and the atomic commit -------------------------------------------------------

    def journal_sending(
        self, dataset: str, run_id: str, *, rows: int, first: Mark | None, last: Mark | None,
        fenced: bool = False,
    ) -> int:
        """Journal a batch as ``sending`` and commit, before its request leaves; its batch id."""
        [batch_id] = self.commit_batches(dataset, run_id=run_id, commits=(),
                                         sending=[Sending(rows, first, last)], fenced=fenced)
        return batch_id

    def commit_batch(
        self,
        dataset: str,
        *,
        run_id: str,
        batch_id: int | None,
        ledger: Sequence[LedgerEntry],
        mark: Mark | None,
        quarantine: Sequence[QuarantineEntry] = (),
        resolved: Sequence[int] = (),
        superseded: Sequence[int] = (),
        fenced: bool = False,
    ) -> None:
        """Commit one acknowledged batch in ONE transaction, all or nothing.

        The journal row becomes ``committed`` (when ``batch_id`` is given), the ledger entries
        are upserted, the mark moves (when not None), the quarantined rows are stored, the
        open quarantine entries ``resolved`` (sent by ``quarantine retry``) and ``superseded``
        (ids) are closed so, and so are the open entries of the keys the batch delivered.
        """
        self.commit_batches(dataset, run_id=run_id,
                            commits=[BatchCommit(batch_id, ledger, mark, quarantine)],
                            resolved=resolved, superseded=superseded, fenced=fenced)

    def commit_batches(
        self,
        dataset: str,
        *,
        run_id: str,
        commits: Sequence[BatchCommit],
        sending: Sequence[Sending] = (),
        resolved: Sequence[int] = (),
        superseded: Sequence[int] = (),
        failed: Sequence[int] = (),
        fenced: bool = False,
    ) -> list[int]:
        """Commit acknowledged batches and journal the next ones: ONE transaction, one fsync.

        ``commits`` are applied in order, as :meth:`commit_batch` would one by one (the last
        mark given wins, and so does a key's last ledger entry); each of ``sending`` gets a
        journal row ``sending``; the batches ``failed`` (ids), still ``sending``, become
        ``failed``. Returns the new batch ids, in the order of ``sending``.
        Committing a group at once is what makes a backfill's commits cheap: the engine groups
        the batches acknowledged while its previous commit was being written.

        The quarantine's share (:mod:`aitems_sync.state.quarantine`): the open entries
        ``resolved`` and ``superseded`` (ids, from ``quarantine retry``) are closed so; then,
        commit by commit, the open entries of the keys a commit delivered (or found current)
        are closed ``superseded`` and its rejected rows stored.

        ``fenced``: write only while ``run_id`` holds the dataset's lease, checked in this same
        transaction (the lease row locked, so a takeover waits for the commit or comes first);
        LeaseLostError, and nothing written, when another run owns the dataset now.
        """
        dataset_id = self._known_id(dataset)
        now = self._clock()
        batch_ids = [c.batch_id for c in commits if c.batch_id is not None]
        entries = list(chain.from_iterable(c.ledger for c in commits))
        moving = [c for c in commits if c.mark is not None]
        rejected = [[records.quarantine_row(e, self._known_id(e.dataset), now, run_id)
                     for e in c.quarantine] for c in commits]
        journal = [{"dataset_id": dataset_id, "run_id": run_id, "status": "sending",
                    "rows": s.rows, "first": mark_to_json(s.first), "last": mark_to_json(s.last),
                    "created_at": now, "updated_at": now} for s in sending]
        what = (f"commit {_batches(batch_ids)} of dataset {dataset!r} (run {run_id})"
                if commits else f"journal a batch of dataset {dataset!r}")
        with self._write(what) as conn:
            if fenced:
                self._hold_lease(conn, dataset_id, dataset, run_id)
            if batch_ids and self._set_status(
                conn, dataset_id, batch_ids, "committed", now
            ) != len(batch_ids):
                raise StateError(
                    f"{_batches(batch_ids)} of dataset {dataset!r} is not in the journal (was "
                    "the dataset reset while this run was sending?); nothing was committed, so "
                    "its rows are read again on the next run"
                )
            if failed:
                self._set_status(conn, dataset_id, failed, "failed", now, only_sending=True)
            if entries:
                self._ledger_log.append(conn, dataset_id, entries)
            if moving:
                assert moving[-1].mark is not None
                if moving[-1].boundary is None:
                    self._boundaries.pop(dataset_id, None)
                    self._put_mark(conn, dataset_id, moving[-1].mark)
                else:
                    self._put_mark_and_boundary(conn, dataset_id, moving[-1].mark, moving)
            quarantine_share.close(conn, resolved, "resolved", run_id, now)
            quarantine_share.close(conn, superseded, "superseded", run_id, now)
            if commits:
                quarantine_share.commit_share(conn, dataset_id, run_id, commits, rejected,
                                              self._open_keys, now)
            return [self._insert_sending(conn, row) for row in journal]

    def _hold_lease(self, conn: sa.Connection, dataset_id: int, dataset: str, owner: str) -> None:
        """The fence: raise LeaseLostError unless ``owner`` holds the dataset's lease now."""
        holder = conn.execute(self._statements.lease_owner,
                              {"dataset_id": dataset_id}).scalar_one_or_none()
        if holder != owner:
            taken = "was released" if holder is None else f"is held by run {holder} now"
            raise LeaseLostError(
                f"run {owner} no longer holds the lease on dataset {dataset!r} (it {taken}): "
                "this run stalled past its lease, so another run may have taken the dataset "
                "over; nothing more was committed, and the next run reads again what this one "
                "did not commit"
            )

    def _insert_sending(self, conn: sa.Connection, row: dict[str, Any]) -> int:
        inserted = conn.execute(self._statements.journal, row).inserted_primary_key
        assert inserted is not None
        return int(inserted[0])

    def _set_status(self, conn: sa.Connection, dataset_id: int, ids: Sequence[int], status: str,
                    now: datetime, *, only_sending: bool = False) -> int:
        stmt = self._statements.set_status_of_sending if only_sending else (
            self._statements.set_status)
        changed = 0
        for chunk in connect.chunks(ids):
            params = {"in_dataset": dataset_id, "ids": chunk, "new_status": status, "now": now}
            changed += conn.execute(stmt, params).rowcount
        return changed

    def unfinished_batches(self, dataset: str) -> list[BatchRecord]:
        """The dataset's batches that may or may not have reached AiTEMS and no run that
        completed has reported: ``sending`` (left by a dead run) or ``ambiguous`` (found by a
        run that did not complete either)."""
        return self.batches(dataset, status=("sending", "ambiguous"), limit=None,
                            oldest_first=True)

    # -- batches that landed late -------------------------------------------------------------

    def note_late(self, dataset: str, run_id: str, *, first: Mark | None,
                  key_hashes: Sequence[int]) -> None:
        """Record a batch that may have reached AiTEMS after ``run_id`` lost the dataset's
        lease. Not fenced: it only asks the next run to send those keys again."""
        row = {"dataset_id": self._known_id(dataset), "run_id": run_id,
               "first": mark_to_json(first), "keys": dumps(list(key_hashes)),
               "created_at": self._clock()}
        with self._write(f"record a late batch of dataset {dataset!r}") as conn:
            conn.execute(sa.insert(tables.late_batches), row)

    def late_batches(self, dataset: str) -> list[LateBatch]:
        """The dataset's batches that may have landed late, oldest first."""
        dataset_id = self._dataset_id(dataset)
        if dataset_id is None:
            return []
        late = tables.late_batches
        query = sa.select(late).where(late.c.dataset_id == dataset_id).order_by(late.c.id)
        with self._read(f"read the late batches of dataset {dataset!r}") as conn:
            return [LateBatch(row.id, row.run_id, mark_from_json(row.first),
                              tuple(loads(row.keys))) for row in conn.execute(query)]

    def forget(self, dataset: str, run_id: str, key_hashes: Sequence[int]) -> None:
        """Delete the keys' ledger entries (every level and the log), while ``run_id`` holds
        the dataset's lease: the next time they are read they are sent."""
        dataset_id = self._known_id(dataset)
        with self._write(f"forget {len(key_hashes)} keys of dataset {dataset!r}") as conn:
            self._hold_lease(conn, dataset_id, dataset, run_id)
            for table in (tables.ledger, tables.ledger_recent, tables.ledger_log):
                for chunk in connect.chunks(key_hashes):
                    conn.execute(sa.delete(table).where(table.c.dataset_id == dataset_id,
                                                        table.c.key_hash.in_(chunk)))

    def drop_late(self, dataset: str, ids: Sequence[int]) -> None:
        """Forget late batches whose keys a run has sent again."""
        late = tables.late_batches
        with self._write(f"drop late batches of dataset {dataset!r}") as conn:
            for chunk in connect.chunks(ids):
                conn.execute(sa.delete(late).where(late.c.id.in_(chunk)))

    def mark_ambiguous(self, dataset: str, batch_ids: Sequence[int]) -> None:
        """Turn ``sending`` batches into ``ambiguous`` (found unfinished by a later run)."""
        dataset_id = self._dataset_id(dataset)
        if dataset_id is None or not batch_ids:
            return
        with self._write(f"mark batches of dataset {dataset!r} ambiguous") as conn:
            self._set_status(conn, dataset_id, batch_ids, "ambiguous", self._clock(),
                             only_sending=True)

    def batches(self, dataset: str | None = None, *, status: str | Sequence[str] | None = None,
                limit: int | None = 100, oldest_first: bool = False) -> list[BatchRecord]:
        """Journalled batches, newest first, optionally of one dataset and some statuses."""
        batch_id = tables.batches.c.batch_id
        order = batch_id.asc() if oldest_first else batch_id.desc()
        query = sa.select(tables.batches, tables.datasets.c.name).join(tables.datasets)
        query = query.order_by(order).limit(limit)
        if dataset is not None:
            query = query.where(tables.datasets.c.name == dataset)
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            query = query.where(tables.batches.c.status.in_(statuses))
        with self._read("list journalled batches") as conn:
            return [records.batch_record(row) for row in conn.execute(query)]

    # -- quarantine -------------------------------------------------------------------------

    def add_quarantine(self, entries: Sequence[QuarantineEntry]) -> None:
        """Store rejected rows (outside any batch commit)."""
        if not entries:
            return
        now = self._clock()
        rows = [records.quarantine_row(e, self._known_id(e.dataset), now) for e in entries]
        for row in rows:
            self._open_keys.forget(row["dataset_id"])
        with self._write(f"quarantine {len(rows)} rows") as conn:
            conn.execute(sa.insert(tables.quarantine), rows)

    def quarantined(self, dataset: str | None = None, *, limit: int | None = None,
                    ids: Sequence[int] | None = None,
                    states: Sequence[str] | None = ("open",)) -> list[QuarantineRecord]:
        """Quarantine entries, oldest first, with their raw values decoded: the open ones
        (``states`` None: whatever their state), optionally of a dataset or by id."""
        query = sa.select(tables.quarantine, tables.datasets.c.name).join(tables.datasets)
        query = self._quarantine_filter(query.order_by(tables.quarantine.c.id).limit(limit),
                                        dataset, states)
        if ids is not None:
            query = query.where(tables.quarantine.c.id.in_(list(ids)))
        with self._read("list quarantined rows") as conn:
            return [records.quarantine_record(row) for row in conn.execute(query)]

    def quarantine_listing(self, dataset: str | None = None, *, limit: int | None = None,
                           states: Sequence[str] | None = ("open",)) -> QuarantineListing:
        """The first ``limit`` entries (see :meth:`quarantined`) and how many there are."""
        return QuarantineListing(self.quarantined(dataset, limit=limit, states=states),
                                 self.quarantine_count(dataset, states=states), limit)

    def quarantine_count(self, dataset: str | None = None, *,
                         states: Sequence[str] | None = ("open",)) -> int:
        """The number of open quarantine entries (``states`` None: of every state), of one
        dataset or all."""
        query = sa.select(sa.func.count()).select_from(tables.quarantine.join(tables.datasets))
        query = self._quarantine_filter(query, dataset, states)
        with self._read("count quarantined rows") as conn:
            return int(conn.execute(query).scalar_one())

    @staticmethod
    def _quarantine_filter(query: Any, dataset: str | None,
                           states: Sequence[str] | None) -> Any:
        if dataset is not None:
            query = query.where(tables.datasets.c.name == dataset)
        if states is not None:
            query = query.where(tables.quarantine.c.status.in_(list(states)))
        return query

    def open_quarantine_keys(self, dataset: str) -> set[int] | None:
        """The key hashes of the dataset's open quarantine entries (those that have one), or
        None when there are too many to hold (``state.quarantine.WATCH_LIMIT``)."""
        dataset_id = self._dataset_id(dataset)
        if dataset_id is None:
            return set()
        with self._read(f"read the quarantined keys of dataset {dataset!r}") as conn:
            return quarantine_share.open_keys(conn, dataset_id, self._open_keys.limit)

    def drop_quarantine(self, ids: Sequence[int]) -> int:
        """Delete quarantined rows by id; returns how many were deleted."""
        dropped = 0
        with self._write(f"drop {len(ids)} quarantined rows") as conn:
            for chunk in connect.chunks(ids):
                stmt = sa.delete(tables.quarantine).where(tables.quarantine.c.id.in_(chunk))
                dropped += conn.execute(stmt).rowcount
        return dropped

    # -- leases -----------------------------------------------------------------------------

    def acquire_lease(self, dataset: str, *, owner: str, host: str, pid: int, ttl: float,
                      process: str | None = None, take_from: str | None = None) -> None:
        """Take the dataset's lease for ``ttl`` seconds, or raise LockHeldError.

        Taken when nobody holds it, when its holder let it expire, when ``owner`` already
        holds it, or when ``take_from`` (a run judged gone: ``sync.liveness``) still holds it.
        Race-free between processes: each step is a conditional write whose row count says who
        won, never a read followed by a write. ``process``: the holder's process token.
        """
        dataset_id = self._known_id(dataset)
        for _attempt in range(5):
            now = self._clock()
            row = {"dataset_id": dataset_id, "owner": owner, "host": host, "pid": pid,
                   "process": process, "acquired_at": now,
                   "expires_at": now + timedelta(seconds=ttl)}
            with self._write(f"take the lease on dataset {dataset!r}") as conn:
                if self._take_lease(conn, row, now, take_from):
                    log.debug("took the lease on dataset %r as %s", dataset, owner)
                    return
            holder = self.lease_holder(dataset)
            # The holder may have released or let it lapse since: then try again.
            if holder is not None and holder.expires_at >= now:
                raise LockHeldError(records.lease_held_message(holder))
        raise StateError(f"the lease on dataset {dataset!r} keeps changing hands; run again")

    def _take_lease(self, conn: sa.Connection, row: dict[str, Any], now: datetime,
                    take_from: str | None) -> bool:
        leases = tables.leases
        free = sa.or_(leases.c.expires_at < now, leases.c.owner == row["owner"])
        if take_from is not None:
            free = sa.or_(free, leases.c.owner == take_from)
        takeover = (
            sa.update(leases)
            .where(leases.c.dataset_id == row["dataset_id"])
            .where(free)
            .values({k: v for k, v in row.items() if k != "dataset_id"})
        )
        if conn.execute(takeover).rowcount == 1:
            return True
        fresh = connect.insert_ignore(self._dialect, leases, ["dataset_id"])
        return bool(conn.execute(fresh, row).rowcount == 1)

    def renew_lease(self, dataset: str, *, owner: str, ttl: float) -> bool:
        """Extend our lease by ``ttl`` seconds from now; False if we no longer hold it."""
        dataset_id = self._dataset_id(dataset)
        if dataset_id is None:
            return False
        stmt = (
            sa.update(tables.leases)
            .where(tables.leases.c.dataset_id == dataset_id, tables.leases.c.owner == owner)
            .values(expires_at=self._clock() + timedelta(seconds=ttl))
        )
        with self._write(f"renew the lease on dataset {dataset!r}") as conn:
            return bool(conn.execute(stmt).rowcount == 1)

    def release_lease(self, dataset: str, *, owner: str) -> None:
        """Give the lease back (does nothing if another owner holds it now)."""
        dataset_id = self._dataset_id(dataset)
        if dataset_id is None:
            return
        stmt = sa.delete(tables.leases).where(tables.leases.c.dataset_id == dataset_id,
                                         tables.leases.c.owner == owner)
        with self._write(f"release the lease on dataset {dataset!r}") as conn:
            conn.execute(stmt)

    def lease_holder(self, dataset: str) -> LeaseHolder | None:
        """Who holds the dataset's lease (possibly expired), or None."""
        query = sa.select(tables.leases, tables.datasets.c.name).join(tables.datasets)
        query = query.where(tables.datasets.c.name == dataset)
        with self._read(f"read the lease on dataset {dataset!r}") as conn:
            row = conn.execute(query).one_or_none()
        return None if row is None else records.lease_holder(row)
