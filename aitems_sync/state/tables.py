"""The state store's tables, its schema version and the forward migrations that build them.

Portable SQLAlchemy Core: the same tables on SQLite, PostgreSQL and MySQL/MariaDB. JSON lives in
Text columns (written with orjson), timestamps are UTC (:class:`UtcDateTime`), and datasets are
referred to by a small integer id so the ledger, the hottest table, stays narrow. On MySQL and
MariaDB the tables are utf8mb4 with a binary collation and JSON is LONGTEXT, so text compares
and fits as it does on the other two.

The ledger is a ``WITHOUT ROWID`` table on SQLite keyed by (dataset id, 64-bit key hash). It has
no index on ``position``: every ledger write would pay for it, a large slowdown measured on
SQLite (docs/perf-history.md), while pruning only concerns
interaction ledgers, which stay small (the lookback window) and are scanned through the primary
key's ``dataset_id`` prefix. Nor does it carry a foreign key, which would cost a lookup per row
written; dataset rows are never deleted, so the reference cannot dangle.

Batch commits do not write the ledger itself but append to ``ledger_log`` (version 3), in the same
transaction as the mark: appends fill pages in order, where upserting random 64-bit keys into a
large B-tree dirties one leaf page per entry and writes each whole to the WAL, so a large
ledger took about a page of writes per entry. The log is merged into the ledger
in one sorted pass once it holds enough entries (:meth:`StateStore.merge_ledger`); until then a
key's newest log entry (highest ``seq``) overrides its ledger entry.

The log is merged into ``ledger_recent`` (version 5), a second ledger level of the same shape,
which is merged into ``ledger`` only once it holds :data:`aitems_sync.state.store.RECENT_LIMIT`
keys: a merge rewrites about one page per entry it brings into a B-tree larger than the merge, so
a log's worth of random keys merged into a large ledger rewrote a large share of its pages, where
merging them into the small level rewrites that level's few pages, and the large ledger is
rewritten once per 2,000,000 keys instead of once per 50,000. A key's ``ledger_recent`` entry
overrides its ``ledger`` entry; its log entry overrides both.

Each dataset row names the hash its ledger's key and payload hashes are made with
(``row_hash``, version 4): datasets registered since then use XXH3, cheaper per row than
the BLAKE2b of earlier versions, which the datasets registered before keep, since their ledgers
hold BLAKE2b hashes (:data:`aitems_sync.sync.batches.ROW_HASH`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from aitems_sync.errors import StateError

log = logging.getLogger(__name__)


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """An aware datetime stored as naive UTC (portable and comparable); read back aware UTC."""

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):  # the MySQL dialect loads only for MySQL
            from sqlalchemy.dialects.mysql import DATETIME

            return dialect.type_descriptor(DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime(timezone=False))

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            # A naive timestamp here is a bug: we cannot know which zone it meant.
            raise ValueError("state store timestamps must be timezone-aware")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # SQLite without declared types, defensive
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)


metadata = sa.MetaData()


def _dataset_fk() -> sa.ForeignKey:
    return sa.ForeignKey("datasets.id")


_NAME = sa.String(255)
class _JsonText(sa.types.TypeDecorator[str]):
    """JSON as text. MySQL's TEXT holds 64 KiB; a quarantined row or a run summary can be
    longer, so there it is LONGTEXT."""

    impl = sa.Text
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            from sqlalchemy.dialects.mysql import LONGTEXT

            return dialect.type_descriptor(LONGTEXT())
        return dialect.type_descriptor(sa.Text())


_JSON = _JsonText()
# MySQL compares text by the table's collation, and the usual defaults (utf8mb4_general_ci,
# latin1_swedish_ci) ignore case and accents: datasets `users` and `Users` would share one
# state, and latin1 cannot store most quarantined text. Binary utf8mb4 compares like SQLite.
# (The mariadb:// dialect reads only its own prefix.) They are added by _create, on MySQL and
# MariaDB only, not passed to sa.Table: SQLAlchemy imports its MySQL dialect to check a `mysql_*`
# keyword (an import on every run's start-up), for SQLite and PostgreSQL stores too.
_MYSQL_TABLE: dict[str, Any] = {
    f"{dialect}_{option}": value
    for dialect in ("mysql", "mariadb")
    for option, value in (("charset", "utf8mb4"), ("collate", "utf8mb4_bin"))
}

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("version", sa.Integer, nullable=False),
)

datasets = sa.Table(
    "datasets",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", _NAME, nullable=False, unique=True),
    # Written when the dataset is registered (rows.encode.ROW_HASH); the default is what the
    # datasets of a store older than version 4 had.
    sa.Column("row_hash", sa.String(16), nullable=False, server_default="blake2b-64"),
    # The AiTEMS service and dataset the marks and ledger were delivered to (version 6): NULL
    # until a run binds them, and again after `state reset`.
    sa.Column("aitems_service_id", sa.String(128), nullable=True),
    sa.Column("aitems_dataset_id", sa.String(128), nullable=True),
    # The key its ledger and boundary identify rows by (version 7), a JSON list of column names
    # ([]: the whole row): NULL until a run records it, and again after `state reset`.
    sa.Column("identity", sa.String(1024), nullable=True),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("started_at", UtcDateTime, nullable=False, index=True),
    sa.Column("finished_at", UtcDateTime, nullable=True),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("host", _NAME, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("datasets", _JSON, nullable=False),
    sa.Column("summary", _JSON, nullable=False),
)

marks = sa.Table(
    "marks",
    metadata,
    sa.Column("dataset_id", sa.Integer, _dataset_fk(), primary_key=True, autoincrement=False),
    sa.Column("cursor", _JSON, nullable=False),
    sa.Column("key", _JSON, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    # Version 7: the rows at the mark's cursor value that were handled (delivered, skipped or
    # quarantined), as a JSON list of [identity hash, content hash] while they are a few (the
    # usual one, written with the mark at no cost), or "table" when they are in ``boundary``;
    # NULL for a mark written before (or by `state set`), after which an interaction dataset
    # reads strictly after (cursor, key).
    sa.Column("boundary", sa.Text, nullable=True),
)

# The mark's boundary when it is too large to keep in the marks row (version 7): the identity and
# content hashes of the rows a dataset handled at its mark's cursor value. A run reads that
# cursor value again, and skips these, so a row committed later with the same value is read
# whatever its key. It holds as many entries as rows share one cursor value.
boundary = sa.Table(
    "boundary",
    metadata,
    sa.Column("dataset_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("key_hash", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("payload_hash", sa.BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

def _ledger_level(name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("dataset_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("key_hash", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("payload_hash", sa.BigInteger, nullable=False),
        sa.Column("position", sa.Double, nullable=True),
        sqlite_with_rowid=False,
    )


ledger = _ledger_level("ledger")
# The second level: what the log's merges brought since the dataset's last merge into ``ledger``.
ledger_recent = _ledger_level("ledger_recent")

ledger_log = sa.Table(
    "ledger_log",
    metadata,
    # A rowid alias on SQLite (appends go to the end of the B-tree); an identity elsewhere.
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("dataset_id", sa.Integer, nullable=False),
    sa.Column("key_hash", sa.BigInteger, nullable=False),
    sa.Column("payload_hash", sa.BigInteger, nullable=False),
    sa.Column("position", sa.Double, nullable=True),
    # A dataset's entries in append order; no index by key, which would cost what the log saves.
    sa.Index("ix_ledger_log_dataset_seq", "dataset_id", "seq"),
)

# Batches that may have reached AiTEMS after their run lost its lease (version 7): a stalled
# run's request that left, or landed, only after another run took the dataset over, and may
# have put older versions of its keys over newer ones. The next run forgets those keys' ledger
# entries and reads again from ``first``, so their newest versions are sent again.
late_batches = sa.Table(
    "late_batches",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("dataset_id", sa.Integer, _dataset_fk(), nullable=False, index=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("first", _JSON, nullable=True),  # the batch's first row's mark
    sa.Column("keys", _JSON, nullable=False),  # its key hashes, a JSON list
    sa.Column("created_at", UtcDateTime, nullable=False),
)

# A first load AiTEMS was asked to read (version 8): from the moment bootstrap points the AiTEMS
# dataset at its file until the state store has taken the snapshot (StateStore.adopt). While a
# row is here AiTEMS may hold the file's rows and the dataset's mark does not know it: runs
# refuse the dataset, and the next bootstrap finishes the hand-over or gives it up.
handovers = sa.Table(
    "handovers",
    metadata,
    sa.Column("dataset_id", sa.Integer, _dataset_fk(), primary_key=True, autoincrement=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("aitems_dataset_id", sa.String(128), nullable=False),
    sa.Column("object_key", sa.String(1024), nullable=False),
    sa.Column("snapshot", _JSON, nullable=False),  # mark, boundary and identity, JSON
    sa.Column("created_at", UtcDateTime, nullable=False),
)

#: A journalled batch's outcome: ``sending`` until it commits (``committed``) or its answer
#: proves nothing unacknowledged was stored (``failed``); ``ambiguous`` once a later run found it
#: ``sending`` (its run died with it on the wire), until a run that completes has reported it
#: (``reported``).
BATCH_STATUSES = ("sending", "committed", "failed", "ambiguous", "reported")

batches = sa.Table(
    "batches",
    metadata,
    # AUTOINCREMENT on SQLite: ids never go back, even after `state reset` deletes the newest.
    sa.Column("batch_id", sa.Integer, primary_key=True),
    sa.Column("dataset_id", sa.Integer, _dataset_fk(), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("first", _JSON, nullable=True),
    sa.Column("last", _JSON, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    # Version 7 adds `failed` (the answer proved nothing unacknowledged was stored) and
    # `reported` (ambiguous, and reported by a run that completed).
    sa.CheckConstraint(f"status IN ({', '.join(map(repr, BATCH_STATUSES))})",
                       name="batch_status"),
    sa.Index("ix_batches_dataset_status", "dataset_id", "status"),
    sqlite_autoincrement=True,
)

quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("dataset_id", sa.Integer, _dataset_fk(), nullable=False, index=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("key", _JSON, nullable=False),
    sa.Column("raw", _JSON, nullable=False),
    sa.Column("errors", _JSON, nullable=False),
    sa.Column("origin", sa.String(16), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    # Version 2: the ledger's payload hash for the row's key when it was rejected (None: the
    # key had never been delivered). `quarantine retry` sends the row only if the ledger still
    # holds that value: otherwise a later version of the key was delivered since.
    sa.Column("ledger_hash", sa.BigInteger, nullable=True),
    # Version 10: the hash of the row's key as the dataset's ledger writes it (NULL: no key
    # identifies the row across versions, a whole-row interaction that failed validation, or
    # an entry from before version 10), and the entry's state (QUARANTINE_STATES): a commit
    # that delivers a later version of an open entry's key marks it `superseded` in the same
    # transaction, and `quarantine retry` marks what it sent `resolved`; closed entries are
    # kept for audit, with when and by which run they were closed. No CHECK on `status`:
    # SQLite cannot add one to an existing table without rebuilding it, and two places write
    # the column (records.quarantine_row and state.quarantine).
    sa.Column("key_hash", sa.BigInteger, nullable=True),
    sa.Column("status", sa.String(16), nullable=False, server_default="open"),
    sa.Column("resolved_at", UtcDateTime, nullable=True),
    sa.Column("resolved_by", sa.String(64), nullable=True),
    sa.CheckConstraint("origin IN ('local', 'server')", name="quarantine_origin"),
    # A commit looks up the open entries of the keys it delivers; `list` counts a dataset's
    # open entries.
    sa.Index("ix_quarantine_dataset_status_key", "dataset_id", "status", "key_hash"),
)

#: A quarantine entry's states: ``open`` until a later version of its key is delivered
#: (``superseded``) or ``quarantine retry`` sends it (``resolved``).
QUARANTINE_STATES = ("open", "superseded", "resolved")

leases = sa.Table(
    "leases",
    metadata,
    sa.Column("dataset_id", sa.Integer, _dataset_fk(), primary_key=True, autoincrement=False),
    sa.Column("owner", _NAME, nullable=False),
    sa.Column("host", _NAME, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("acquired_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    # Version 9: the holder's process token (boot id, pid namespace, start time; None where
    # they cannot be read), so that a run on its host can tell that it is gone
    # (sync/liveness.py).
    sa.Column("process", _NAME, nullable=True),
)

_VERSION_1_TABLES = (datasets, runs, marks, ledger, batches, quarantine, leases)


def _create_version_1(conn: sa.Connection) -> None:
    # These are the current definitions: a fresh store gets version 2's columns here already,
    # and each later step adds its columns only where they are missing, so a fresh store built
    # by 1 then 2 equals an upgraded one.
    _create(conn, _VERSION_1_TABLES)


def _create(conn: sa.Connection, tables: Sequence[sa.Table]) -> None:
    """Create the missing ``tables``; on MySQL and MariaDB as utf8mb4 with a binary collation."""
    if conn.dialect.name in ("mysql", "mariadb"):
        for table in tables:
            table.dialect_kwargs.update(_MYSQL_TABLE)  # the same every time: idempotent
    metadata.create_all(conn, tables=list(tables))


def _add_quarantine_ledger_hash(conn: sa.Connection) -> None:
    columns = {c["name"] for c in sa.inspect(conn).get_columns("quarantine")}
    if "ledger_hash" not in columns:
        conn.execute(sa.text("ALTER TABLE quarantine ADD COLUMN ledger_hash BIGINT"))


def _add_ledger_log(conn: sa.Connection) -> None:
    _create(conn, (ledger_log,))


def _add_dataset_row_hash(conn: sa.Connection) -> None:
    columns = {c["name"] for c in sa.inspect(conn).get_columns("datasets")}
    if "row_hash" not in columns:
        conn.execute(sa.text("ALTER TABLE datasets ADD COLUMN row_hash VARCHAR(16) NOT NULL "
                             "DEFAULT 'blake2b-64'"))


def _add_ledger_recent(conn: sa.Connection) -> None:
    _create(conn, (ledger_recent,))


def _add_dataset_binding(conn: sa.Connection) -> None:
    columns = {c["name"] for c in sa.inspect(conn).get_columns("datasets")}
    for name in ("aitems_service_id", "aitems_dataset_id"):
        if name not in columns:
            conn.execute(sa.text(f"ALTER TABLE datasets ADD COLUMN {name} VARCHAR(128)"))


def _add_boundary(conn: sa.Connection) -> None:
    _create(conn, (boundary, late_batches))
    _widen_batch_statuses(conn)
    columns = {c["name"] for c in sa.inspect(conn).get_columns("datasets")}
    if "identity" not in columns:
        conn.execute(sa.text("ALTER TABLE datasets ADD COLUMN identity VARCHAR(1024)"))
    columns = {c["name"] for c in sa.inspect(conn).get_columns("marks")}
    if "boundary" not in columns:
        conn.execute(sa.text("ALTER TABLE marks ADD COLUMN boundary TEXT"))


def _add_handovers(conn: sa.Connection) -> None:
    _create(conn, (handovers,))


def _add_lease_process(conn: sa.Connection) -> None:
    columns = {c["name"] for c in sa.inspect(conn).get_columns("leases")}
    if "process" not in columns:
        conn.execute(sa.text("ALTER TABLE leases ADD COLUMN process VARCHAR(255)"))


def _add_quarantine_status(conn: sa.Connection) -> None:
    columns = {c["name"] for c in sa.inspect(conn).get_columns("quarantine")}
    for column in (quarantine.c.key_hash, quarantine.c.status, quarantine.c.resolved_at,
                   quarantine.c.resolved_by):
        if column.name not in columns:
            kind = column.type.compile(dialect=conn.dialect)
            extra = " NOT NULL DEFAULT 'open'" if column.name == "status" else ""
            conn.execute(sa.text(f"ALTER TABLE quarantine ADD COLUMN {column.name} "
                                 f"{kind}{extra}"))
    for index in quarantine.indexes:
        index.create(conn, checkfirst=True)


def _widen_batch_statuses(conn: sa.Connection) -> None:
    """Let the journal hold every status of :data:`BATCH_STATUSES`. SQLite cannot change a
    table's constraint: the table is rebuilt (its AUTOINCREMENT counter carried over)."""
    check = f"status IN ({', '.join(map(repr, BATCH_STATUSES))})"
    if conn.dialect.name != "sqlite":
        found = {c["name"]: str(c["sqltext"])
                 for c in sa.inspect(conn).get_check_constraints("batches")}
        if "failed" in found.get("batch_status", ""):
            return  # created with the current definition, or a step run before
        if "batch_status" in found:
            conn.execute(sa.text("ALTER TABLE batches DROP CONSTRAINT batch_status"))
        conn.execute(sa.text(f"ALTER TABLE batches ADD CONSTRAINT batch_status CHECK ({check})"))
        return
    table_sql = conn.execute(sa.text("SELECT sql FROM sqlite_master WHERE name = 'batches'"))
    if "'failed'" in table_sql.scalar_one():
        return  # created with the current definition
    seq = conn.execute(sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'batches'"))
    counter = seq.scalar_one_or_none()
    conn.execute(sa.text("DROP INDEX IF EXISTS ix_batches_dataset_status"))
    conn.execute(sa.text("ALTER TABLE batches RENAME TO batches_before_7"))
    _create(conn, (batches,))
    names = ", ".join(c.name for c in batches.columns)
    conn.execute(sa.text(f"INSERT INTO batches ({names}) SELECT {names} FROM batches_before_7"))
    conn.execute(sa.text("DROP TABLE batches_before_7"))
    if counter is not None:
        conn.execute(sa.text("UPDATE sqlite_sequence SET seq = max(seq, :n) "
                             "WHERE name = 'batches'"), {"n": counter})


# MySQL commits each DDL statement at once: a step that fails half-way stays half done there.
# Steps must be able to run again over their own partial work (create_all checks first).
Migration = Callable[[sa.Connection], None]

MIGRATIONS: list[tuple[int, Migration]] = [
    (1, _create_version_1),
    (2, _add_quarantine_ledger_hash),
    (3, _add_ledger_log),
    (4, _add_dataset_row_hash),
    (5, _add_ledger_recent),
    (6, _add_dataset_binding),
    (7, _add_boundary),
    (8, _add_handovers),
    (9, _add_lease_process),
    (10, _add_quarantine_status),
]

LATEST_VERSION = MIGRATIONS[-1][0]


def migrate(conn: sa.Connection, display_url: str, *, existing: bool = False) -> int:
    """Bring the store's schema up to :data:`LATEST_VERSION` inside the caller's transaction.

    Returns the version found before migrating (0 for an empty store). Refuses a store written
    by a newer aitems-sync, which this code could damage, and, when ``existing`` (a SQLite file
    that was there before), a database that is not an aitems-sync store.
    """
    _serialize_migrations(conn)
    stored_version(conn, display_url, existing=existing)  # refuses what must not be touched
    _create(conn, (schema_version,))
    found = conn.execute(sa.select(schema_version.c.version)).scalar_one_or_none()
    current = found or 0
    for version, step in MIGRATIONS:
        if version > current:
            if current:  # a new store is announced once, by its creator
                log.info("migrating the state store %s to schema version %d", display_url,
                         version)
            step(conn)
    if found is None:
        conn.execute(sa.insert(schema_version).values(id=1, version=LATEST_VERSION))
    elif current < LATEST_VERSION:
        conn.execute(sa.update(schema_version).values(version=LATEST_VERSION))
    return current


def stored_version(conn: sa.Connection, display_url: str, *, existing: bool = False
                   ) -> int | None:
    """The store's schema version, None when the database holds no store yet; read only.

    StateError for a version newer than this code knows, which it could damage, and, when
    ``existing`` (a SQLite file that was there before), for a database that is not a store.
    """
    if not sa.inspect(conn).has_table(schema_version.name):
        if existing:
            raise StateError(
                f"the state store {display_url} is an existing database that is not an "
                "aitems-sync state store (it has no schema_version table): point `state:` at "
                "the store's file, or at a path where none exists yet to start a new store"
            )
        return None
    found = conn.execute(sa.select(schema_version.c.version)).scalar_one_or_none()
    if found is not None and found > LATEST_VERSION:
        raise StateError(
            f"the state store {display_url} has schema version {found}, but this aitems-sync "
            f"only knows versions up to {LATEST_VERSION}; upgrade aitems-sync, or point "
            "`state:` at another store"
        )
    return None if found is None else int(found)


def _serialize_migrations(conn: sa.Connection) -> None:
    """Make two processes opening a new store at once take turns (SQLite: BEGIN IMMEDIATE).

    MySQL/MariaDB take turns in :func:`migration_lock` instead, around the whole transaction.
    """
    if conn.dialect.name == "postgresql":
        # Released at commit; the number is arbitrary but fixed ("aitems" in ASCII).
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(97105116101109115)"))


MIGRATION_LOCK_TIMEOUT_SECONDS = 30


@contextmanager
def migration_lock(conn: sa.Connection, display_url: str) -> Iterator[None]:
    """On MySQL/MariaDB, hold a named lock while the block migrates and commits; else nothing.

    Their DDL commits implicitly, so no lock that ends with a transaction can cover a migration:
    a session lock (``GET_LOCK``, one name per database) is taken before the migration's
    transaction begins and released only after it committed, so the next process finds the
    tables and the version row. Call outside any transaction on ``conn``.
    """
    if conn.dialect.name not in ("mysql", "mariadb"):
        yield
        return
    name = sa.func.concat("aitems_sync_migrate_", sa.func.md5(sa.func.database()))
    got = conn.execute(sa.select(sa.func.get_lock(name, MIGRATION_LOCK_TIMEOUT_SECONDS))).scalar()
    conn.commit()  # end the implicit transaction; the session lock stays
    if got != 1:
        raise StateError(
            f"waited {MIGRATION_LOCK_TIMEOUT_SECONDS} s for another process to finish creating "
            f"or migrating the state store {display_url}; run again, or look for a stuck process"
        )
    try:
        yield
    finally:
        try:
            conn.execute(sa.select(sa.func.release_lock(name)))
            conn.commit()
        except sa.exc.SQLAlchemyError:
            # A broken connection released the lock with its session.
            log.debug("releasing the migration lock failed", exc_info=True)
