"""Connecting to the state store's database: SQLite file and pragmas, pools, dialect upserts.

SQLite needs care to be a safe multi-threaded, multi-process store:

- the file is created by us with mode 0600 before SQLite opens it (it holds quarantined rows);
  SQLite gives its ``-wal`` and ``-shm`` files the same mode;
- WAL lets readers run beside the one writer; ``busy_timeout`` makes a writer wait (10 s) for
  another instead of failing at once; foreign keys are checked;
- write transactions start with ``BEGIN IMMEDIATE``: a deferred transaction that reads and then
  writes can fail with "database is locked" without ever waiting, when another connection wrote
  in between. Reads keep a plain ``BEGIN`` so they never queue behind a writer;
- the WAL is checkpointed every 10,000 pages (~40 MB) rather than SQLite's 1,000: merging the
  ledger's log rewrites many of the ledger's B-tree pages, and checkpointing them 10 times less
  often made (then direct) ledger commits much faster (measured: benchmarks/README.md). SQLite
  checkpoints the rest when the last connection closes;
- each connection's page cache is 512 KiB rather than 2,000: the ledger is read at random by
  key hash, and the smaller cache measured as fast, for less memory in a backfill;
- ``synchronous`` stays at SQLite's FULL: ``NORMAL`` was only slightly faster per commit and can
  lose the last acknowledged commits on a power cut, which would send those rows again.

Server databases get a connect timeout (10 s unless the URL sets one) and a pre-ping, since a
long run's pooled connection may have been dropped. MySQL/MariaDB (tested on MariaDB) use
``ON DUPLICATE KEY UPDATE`` and ``INSERT IGNORE``, READ COMMITTED (see
:func:`_create_server_engine`) and a utf8mb4 connection.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

from aitems_sync.errors import StateError
from aitems_sync.redact import url_for_display
from aitems_sync.state.records import KEY_HASH, PAYLOAD_HASH, POSITION
from aitems_sync.state.tables import (
    LATEST_VERSION,
    ledger,
    ledger_log,
    ledger_recent,
    migrate,
    migration_lock,
    stored_version,
)
from aitems_sync.state.values import dumps

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 10_000

# Bound parameters per IN list where the dialect offers neither arrays nor JSON tables (SQLite's
# historical limit is 999).
CHUNK = 900

# Execution option that marks a connection as a writer (SQLite: BEGIN IMMEDIATE).
WRITE_OPTION = "aitems_sync_write"


def open_engine(url: str) -> tuple[sa.Engine, str]:
    """Connect to the store at ``url`` and migrate it; the engine and the URL to display.

    The displayed URL never holds the password. Failures raise StateError.
    """
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        raise StateError(
            "the state store URL is not a SQLAlchemy URL; write it like "
            "sqlite:///state/aitems-sync.db or postgresql+psycopg://user@host/db"
        ) from None
    display = url_for_display(url)
    _insert_module(parsed.get_backend_name())  # refuse an unsupported database before DDL
    existing = _existing_sqlite_file(parsed, display)
    engine: sa.Engine | None = None
    created = False
    try:
        if _is_sqlite_file(parsed) and not existing:
            _create_sqlite_store(parsed, display)
            existing = created = True
        engine = create_engine(parsed)
        writer = engine.execution_options(**{WRITE_OPTION: True})
        with writer.connect() as conn, migration_lock(conn, display), conn.begin():
            found = migrate(conn, display, existing=existing)
    except (sa.exc.SQLAlchemyError, OSError, ImportError) as exc:
        if engine is not None:
            engine.dispose()
        raise StateError(
            f"cannot open the state store {display}: {reason(exc)}; check the URL, that "
            "the database is reachable, and that its user may create tables"
        ) from exc
    except StateError:
        if engine is not None:
            engine.dispose()
        raise
    if created or found == 0:
        log.info("created the state store %s (schema version %d)", display, LATEST_VERSION)
    log.debug("opened the state store %s (schema version %d found)", display, found)
    return engine, display


def open_reader(url: str) -> tuple[sa.Engine | None, str]:
    """Connect to the store at ``url`` to read it as it is (``plan``): nothing is created,
    migrated or written. The engine is None when there is no store there yet; a store of
    another schema version than this code's, or a database that is not a store, is a
    StateError saying what to do. The displayed URL never holds the password.
    """
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        raise StateError("the state store URL is not a SQLAlchemy URL") from None
    display = url_for_display(url)
    _insert_module(parsed.get_backend_name())
    sqlite_file = _is_sqlite_file(parsed)
    if parsed.get_backend_name() == "sqlite" and _is_memory(parsed.database):
        return None, display  # a new database in memory each time: always empty
    if sqlite_file and not _stored_sqlite_file(parsed, display):
        return None, display
    engine = create_engine(parsed, read_only=True)
    try:
        with engine.connect() as conn:
            found = stored_version(conn, display, existing=sqlite_file)
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        engine.dispose()
        raise StateError(f"cannot open the state store {display}: {reason(exc)}; check the "
                         "URL and that the database is reachable") from exc
    except StateError:
        engine.dispose()
        raise
    if found == LATEST_VERSION:
        return engine, display
    engine.dispose()
    if found is None:
        return None, display
    raise StateError(
        f"the state store {display} has schema version {found}, older than this "
        f"aitems-sync's {LATEST_VERSION}: plan reads a store as it is and never migrates one, "
        "and this version cannot read the older schema. Let this version migrate it first: "
        "`aitems-sync state show` does, and sends nothing (as does the next `run`)"
    )


def empty_store() -> sa.Engine:
    """A new store in memory at the current schema version, for reading a store that does not
    exist yet as empty."""
    engine = create_engine(make_url("sqlite://"))
    writer = engine.execution_options(**{WRITE_OPTION: True})
    with writer.connect() as conn, conn.begin():
        migrate(conn, "(in memory)")
    return engine


def _existing_sqlite_file(url: URL, display: str) -> bool:
    """Whether the store is a SQLite file that exists already; StateError if it is empty.

    An empty file is never taken for a new store: a store truncated by a full disk, a bad copy
    or a mistaken ``> file`` would have every row sent again. Only a missing file is created.
    """
    if not _is_sqlite_file(url) or not _stored_sqlite_file(url, display):
        return False
    _make_private(Path(url.database or ""))
    return True


def _stored_sqlite_file(url: URL, display: str) -> bool:
    """Whether the SQLite file of ``url`` exists; StateError if it is empty (see above)."""
    path = Path(url.database or "")
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    except OSError as error:
        raise StateError(f"cannot open the state store {display}: {error}") from None
    if size == 0:
        raise StateError(
            f"the state store {display} is an empty file (0 bytes), not an aitems-sync store: "
            "a store that lost its content would have every row sent again. Restore the file "
            "from a backup; to start afresh on purpose (every row is then sent again), delete "
            "it, and the next run creates a new store"
        )
    return True


def _make_private(path: Path) -> None:
    """Let only the owner read an existing store (its quarantine holds source rows) and its WAL
    and shared-memory files, which SQLite creates with the database file's mode: 0600, as a new
    store is made. A file this user may not change keeps its mode (logged)."""
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if file.stat().st_mode & 0o077:
                file.chmod(0o600)
        except FileNotFoundError:
            continue
        except OSError as error:
            log.warning("could not make %s private (mode 0600): %s", file, error.strerror)


def _is_sqlite_file(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and not _is_memory(url.database) and not (
        url.database or "").startswith("file:")


def _create_sqlite_store(url: URL, display: str) -> None:
    """Create a new SQLite store at the URL's path whole or not at all: built under a temporary
    name, then linked into place (a process that lost the race keeps the winner's). A store
    file is thus never found half made, and an empty one is always refused."""
    path = Path(url.database or "")
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.new")
    _create_private_file(temporary)
    try:
        engine = create_engine(url.set(database=str(temporary)))
        try:
            writer = engine.execution_options(**{WRITE_OPTION: True})
            with writer.connect() as conn, conn.begin():
                migrate(conn, display)
        finally:
            engine.dispose()
        _link_into_place(temporary, path)
    finally:
        for leftover in (temporary, Path(f"{temporary}-wal"), Path(f"{temporary}-shm")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def _link_into_place(temporary: Path, path: Path) -> None:
    """Give the finished store its name, unless another process gave it one first."""
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass  # another process created the store first: it is as good as ours
    except OSError:  # a file system without hard links: a rename, after a last look
        if not path.exists():
            os.rename(temporary, path)


def create_engine(url: URL, *, read_only: bool = False) -> sa.Engine:
    """An engine for the store at ``url``; for SQLite, the file is created first (0600).

    ``read_only`` (SQLite): the file must exist, and is neither switched to WAL nor written
    (``PRAGMA query_only``)."""
    if url.get_backend_name() != "sqlite":
        return _create_server_engine(url)
    memory = _is_memory(url.database)
    if not memory and not read_only and not (url.database or "").startswith("file:"):
        _create_private_file(Path(url.database or ""))
    options: dict[str, Any] = {"hide_parameters": True}
    if memory:
        # One shared connection, or every pooled connection would see its own empty database.
        options.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    engine = sa.create_engine(url, **options)
    event.listen(engine, "connect", _sqlite_on_read if read_only else _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _create_server_engine(url: URL) -> sa.Engine:
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = 10
    options: dict[str, Any] = {}
    if url.get_backend_name() in ("mysql", "mariadb"):
        # InnoDB's default REPEATABLE READ takes gap locks on a missing row: two runs racing
        # for a new lease (UPDATE finds nothing, then INSERT) deadlocked each other. READ
        # COMMITTED, PostgreSQL's default, takes none; every write here is one short transaction.
        options["isolation_level"] = "READ COMMITTED"
        if url.get_driver_name() in ("pymysql", "mysqldb") and "charset" not in url.query:
            connect_args["charset"] = "utf8mb4"  # quarantined rows and names are any Unicode
    # Parameters stay out of error messages: they can hold quarantined row values.
    return sa.create_engine(
        url, hide_parameters=True, pool_pre_ping=True, connect_args=connect_args, **options
    )


def _is_memory(database: str | None) -> bool:
    return not database or database == ":memory:" or "mode=memory" in database


def _create_private_file(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.close(fd)


WAL_AUTOCHECKPOINT_PAGES = 10_000
#: Each connection's page cache (SQLite's default is 2,000 KiB). The ledger's pages are read at
#: random, by key hash, so a cache holds few of them again either way: at 512 KiB a backfill
#: ran as fast and peaked lower, the pool's connections each holding less (measured:
#: docs/perf-history.md).
PAGE_CACHE_KIB = 512


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # Take BEGIN away from the sqlite3 module; _sqlite_on_begin emits the right one.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        _enable_wal(cursor)
        cursor.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA cache_size = -{PAGE_CACHE_KIB}")
    finally:
        cursor.close()


def _sqlite_on_read(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute(f"PRAGMA cache_size = -{PAGE_CACHE_KIB}")
        cursor.execute("PRAGMA query_only = ON")
    finally:
        cursor.close()


def _enable_wal(cursor: Any) -> None:
    """Switch the file to WAL (a no-op once it is).

    Two processes opening a new store at once both try to switch it; SQLite answers one of them
    "database is locked" at once, without waiting in its busy handler (both holding a shared
    lock and wanting an exclusive one would deadlock), so that one tries again.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _sqlite_on_begin(conn: sa.Connection) -> None:
    immediate = conn.get_execution_options().get(WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


#: SQLAlchemy's dialect module per state-store database; imported on use (each import adds to
#: start-up, and a run needs one).
_DIALECT_MODULES = {"sqlite": "sqlite", "postgresql": "postgresql", "mysql": "mysql",
                    "mariadb": "mysql"}


def _insert_module(dialect_name: str) -> Any:
    try:
        name = _DIALECT_MODULES[dialect_name]
    except KeyError:
        raise StateError(
            f"the state store cannot use {dialect_name} yet; use SQLite, PostgreSQL or MySQL"
        ) from None
    return importlib.import_module(f"sqlalchemy.dialects.{name}")


def _is_mysql(module: Any) -> bool:
    return bool(module.__name__ == "sqlalchemy.dialects.mysql")


def upsert(
    dialect_name: str, table: sa.Table, index: Sequence[str], update: Sequence[str]
) -> sa.Insert:
    """INSERT that updates ``update`` columns when a row with the same ``index`` exists."""
    module = _insert_module(dialect_name)
    stmt = module.insert(table)
    if _is_mysql(module):
        return stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in update})  # type: ignore[no-any-return]
    return stmt.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=list(index), set_={c: stmt.excluded[c] for c in update}
    )


def insert_ignore(dialect_name: str, table: sa.Table, index: Sequence[str]) -> sa.Insert:
    """INSERT that does nothing (rowcount 0) when a row with the same ``index`` exists."""
    module = _insert_module(dialect_name)
    if _is_mysql(module):
        stmt = module.insert(table).prefix_with("IGNORE")
    else:
        stmt = module.insert(table).on_conflict_do_nothing(index_elements=list(index))
    # SQLAlchemy reports an INSERT's row count only when asked to.
    return stmt.execution_options(preserve_rowcount=True)  # type: ignore[no-any-return]


#: ``(key_hash, payload_hash, position)``: a LedgerEntry, or any tuple of those three.
LedgerRow = tuple[int, int, float | None]


class LedgerLog:
    """Appends to ``ledger_log``, merges it into ``ledger_recent`` and that into ``ledger`` (the
    levels: :mod:`aitems_sync.state.tables`), written for speed: the append is the one write
    whose size grows with a batch.

    Each dialect appends with ONE statement per commit, whatever the number of entries, so that
    the database does the work in a single call that releases the GIL: the engine commits on
    its own thread while the main thread shapes rows, and ``executemany`` would hand the GIL
    back and forth once per entry (on SQLite that was far slower beside a busy main thread
    than one statement). SQLite takes the entries as one JSON array
    through ``json_each``; PostgreSQL (psycopg) as arrays through ``unnest``; MySQL's driver
    turns ``executemany`` of an INSERT into one multi-row statement itself. Entries get their
    ``seq`` in the order given, so a key's last entry is its newest.

    The merge is one ``INSERT ... SELECT`` per dialect that keeps each key's newest entry: SQLite
    applies the log in (key, seq) order, so the last entry of a key wins and the B-tree's pages
    are visited once each, in order; PostgreSQL picks it with ``DISTINCT ON`` (one statement may
    not update a row twice); MySQL applies the log in ``seq`` order. The same statements, without
    the ``seq``, move ``ledger_recent`` (one entry per key) into ``ledger``.
    """

    COLUMNS = ("dataset_id", "key_hash", "payload_hash", "position")

    _SQLITE_APPEND = (
        "INSERT INTO ledger_log (dataset_id, key_hash, payload_hash, position) "
        "SELECT ?, json_extract(value, '$[0]'), json_extract(value, '$[1]'), "
        "json_extract(value, '$[2]') FROM json_each(?)"
    )
    _PG_APPEND = (
        "INSERT INTO ledger_log (dataset_id, key_hash, payload_hash, position) "
        "SELECT %(dataset_id)s, k, p, pos FROM unnest(%(keys)s::BIGINT[], "
        "%(payloads)s::BIGINT[], %(positions)s::DOUBLE PRECISION[]) "
        "WITH ORDINALITY AS entries(k, p, pos, n) ORDER BY n"
    )
    # Into ``ledger_recent``, the second level (state.tables): {target} is a table name.
    _MERGE: ClassVar[dict[str, str]] = {
        "sqlite": (
            "INSERT INTO {target} (dataset_id, key_hash, payload_hash, position) "
            "SELECT dataset_id, key_hash, payload_hash, position FROM {source} "
            "WHERE dataset_id = :dataset_id{through} ORDER BY key_hash{seq} "
            "ON CONFLICT (dataset_id, key_hash) DO UPDATE "
            "SET payload_hash = excluded.payload_hash, position = excluded.position"
        ),
        "postgresql": (
            "INSERT INTO {target} (dataset_id, key_hash, payload_hash, position) "
            "SELECT DISTINCT ON (key_hash) dataset_id, key_hash, payload_hash, position "
            "FROM {source} WHERE dataset_id = :dataset_id{through} "
            "ORDER BY key_hash{seq_desc} "
            "ON CONFLICT (dataset_id, key_hash) DO UPDATE "
            "SET payload_hash = excluded.payload_hash, position = excluded.position"
        ),
        "mysql": (
            "INSERT INTO {target} (dataset_id, key_hash, payload_hash, position) "
            "SELECT dataset_id, key_hash, payload_hash, position FROM {source} "
            "WHERE dataset_id = :dataset_id{through} ORDER BY {order} "
            "ON DUPLICATE KEY UPDATE payload_hash = VALUES(payload_hash), "
            "position = VALUES(position)"
        ),
    }

    def __init__(self, dialect: sa.Dialect) -> None:
        self._kind = ("arrays" if dialect.name == "postgresql" and dialect.driver == "psycopg"
                      else "json" if dialect.name == "sqlite" else "many")
        compiled = sa.insert(ledger_log).compile(dialect=dialect,
                                                 column_keys=list(self.COLUMNS))
        self._sql = compiled.string
        order = tuple(compiled.positiontup or ()) if compiled.positional else None
        self._order = None if order is None else [self.COLUMNS.index(name) for name in order]
        name = "mysql" if dialect.name == "mariadb" else dialect.name
        self._merge = sa.text(self._MERGE[name].format(
            target="ledger_recent", source="ledger_log", through=" AND seq <= :through",
            seq=", seq", seq_desc=", seq DESC", order="seq"))
        # A level holds each key once: its merge needs no order but the key's.
        self._merge_recent = sa.text(self._MERGE[name].format(
            target="ledger", source="ledger_recent", through="", seq="", seq_desc="",
            order="key_hash"))
        self._forget_recent = sa.delete(ledger_recent).where(
            ledger_recent.c.dataset_id == sa.bindparam("dataset_id"))
        self._last = sa.select(sa.func.max(ledger_log.c.seq)).where(
            ledger_log.c.dataset_id == sa.bindparam("dataset_id"))
        self._forget = sa.delete(ledger_log).where(
            ledger_log.c.dataset_id == sa.bindparam("dataset_id"),
            ledger_log.c.seq <= sa.bindparam("through"))

    def append(self, conn: sa.Connection, dataset_id: int, rows: Sequence[LedgerRow]) -> None:
        """Append the dataset's ``(key_hash, payload_hash, position)`` rows, in their order."""
        if self._kind == "arrays":
            self._append_arrays(conn, dataset_id, rows)
        elif self._kind == "json":
            # orjson writes a tuple subclass (a LedgerEntry) only through ``default``: one C
            # call per entry, where a re-packing loop cost three Python steps.
            entries = orjson.dumps(rows, default=tuple).decode()
            conn.exec_driver_sql(self._SQLITE_APPEND, (dataset_id, entries))
        else:
            self._append_many(conn, dataset_id, rows)

    def merge(self, conn: sa.Connection, dataset_id: int) -> int:
        """Move the dataset's logged entries into ``ledger_recent``, each key's newest winning;
        returns how many log entries were merged. Run inside the caller's transaction."""
        through = conn.execute(self._last, {"dataset_id": dataset_id}).scalar()
        if through is None:
            return 0
        params = {"dataset_id": dataset_id, "through": through}
        conn.execute(self._merge, params)
        return int(conn.execute(self._forget, params).rowcount)

    def merge_recent(self, conn: sa.Connection, dataset_id: int) -> int:
        """Move the dataset's ``ledger_recent`` into ``ledger`` (its entries win); returns how
        many keys moved. Run inside the caller's transaction."""
        params = {"dataset_id": dataset_id}
        conn.execute(self._merge_recent, params)
        return int(conn.execute(self._forget_recent, params).rowcount)

    def _append_many(self, conn: sa.Connection, dataset_id: int,
                     rows: Sequence[LedgerRow]) -> None:
        params: Sequence[Any]
        full = [(dataset_id, *row) for row in rows]
        if self._order is None:
            params = [dict(zip(self.COLUMNS, row, strict=True)) for row in full]
        elif self._order == [0, 1, 2, 3]:
            params = full
        else:
            params = [tuple(row[i] for i in self._order) for row in full]
        conn.exec_driver_sql(self._sql, params)

    def _append_arrays(self, conn: sa.Connection, dataset_id: int,
                       rows: Sequence[LedgerRow]) -> None:
        conn.exec_driver_sql(self._PG_APPEND, {
            "dataset_id": dataset_id,
            "keys": list(map(KEY_HASH, rows)),
            "payloads": list(map(PAYLOAD_HASH, rows)),
            "positions": list(map(POSITION, rows)),
        })


def reason(exc: BaseException) -> str:
    """The driver's own words for a database error, on one line, without SQL or parameters."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first[:300]


def chunks(values: Sequence[int]) -> Iterator[list[int]]:
    """``values`` cut into lists of at most :data:`CHUNK` items."""
    for start in range(0, len(values), CHUNK):
        yield list(values[start : start + CHUNK])


#: The merged levels' entries for the keys of a JSON array, as one JSON array of ``[key_hash,
#: payload_hash]``, ``ledger_recent``'s entry over ``ledger``'s: one statement, so one snapshot
#: of both. The keys are parsed once and probed in order, ``ledger`` only where ``ledger_recent``
#: has no entry, which measured faster than a subquery per level.
_SQLITE_LOOKUP = (
    "SELECT json_group_array(json_array(k.value, coalesce(r.payload_hash, l.payload_hash))) "
    "FROM (SELECT DISTINCT value FROM json_each(?2) ORDER BY value) AS k "
    "LEFT JOIN ledger_recent AS r ON r.dataset_id = ?1 AND r.key_hash = k.value "
    "LEFT JOIN ledger AS l ON r.key_hash IS NULL AND l.dataset_id = ?1 AND l.key_hash = k.value "
    "WHERE r.key_hash IS NOT NULL OR l.key_hash IS NOT NULL"
)


def ledger_lookup(conn: sa.Connection, dataset_id: int,
                  key_hashes: Sequence[int]) -> dict[int, int]:
    """``key_hash -> payload_hash`` in the merged ledger (``ledger_recent``'s entry over
    ``ledger``'s) for the keys that are in it.

    Both levels are read by one statement (per chunk of keys, where the dialect needs chunks),
    which sees one snapshot: a merge of ``ledger_recent`` into ``ledger`` committed between two
    statements could hide a key from both."""
    dialect_name = conn.dialect.name
    if dialect_name == "sqlite":
        # The keys travel as one JSON text and the answer comes back as one: sqlite3 releases
        # the GIL for every row it steps, and beside busy threads each row then waits to get it
        # back (a lookup stepped row by row ran many times slower in a run than on its own).
        answer = conn.exec_driver_sql(
            _SQLITE_LOOKUP, (dataset_id, dumps(list(key_hashes)))).scalar_one()
        return dict(orjson.loads(answer))
    found: dict[int, int] = {}
    levels = (ledger, ledger_recent)
    for chunk in _key_lists(dialect_name, key_hashes):
        selects = [
            sa.select(table.c.key_hash, table.c.payload_hash, sa.literal(level).label("level"))
            .where(table.c.dataset_id == dataset_id, table.c.key_hash.in_(chunk))
            for level, table in enumerate(levels)
        ]
        union = sa.union_all(*selects).subquery()
        query = sa.select(union.c.key_hash, union.c.payload_hash).order_by(union.c.level)
        found.update((k, p) for k, p in conn.execute(query))
    return found


def log_lookup(conn: sa.Connection, dataset_id: int,
               key_hashes: Sequence[int]) -> dict[int, int]:
    """``key_hash -> payload_hash`` of the keys' newest entries in ``ledger_log``."""
    dialect_name = conn.dialect.name
    log_ = ledger_log
    found: dict[int, int] = {}
    for chunk in _key_lists(dialect_name, key_hashes):
        query = (sa.select(log_.c.key_hash, log_.c.payload_hash)
                 .where(log_.c.dataset_id == dataset_id, log_.c.key_hash.in_(chunk))
                 .order_by(log_.c.seq))
        found.update((k, p) for k, p in conn.execute(query))
    return found


def logged_entries(conn: sa.Connection, dataset_id: int) -> dict[int, int]:
    """``key_hash -> payload_hash`` of the dataset's log, each key's newest entry.

    Read from the driver's cursor, as plain tuples: a run reads up to the merge threshold
    (50,000 entries) at its start, and SQLAlchemy's row objects took about a third longer.
    """
    query = (sa.select(ledger_log.c.key_hash, ledger_log.c.payload_hash)
             .where(ledger_log.c.dataset_id == dataset_id).order_by(ledger_log.c.seq))
    result = conn.execute(query)
    try:
        return dict(result.cursor.fetchall())
    finally:
        result.close()


def _key_lists(dialect_name: str, key_hashes: Sequence[int]) -> Iterator[Any]:
    """The keys as what ``column.in_()`` takes: one subquery over a bound array or JSON text
    where the dialect offers one, else lists of at most :data:`CHUNK` values."""
    if dialect_name == "sqlite":
        keys = sa.func.json_each(dumps(list(key_hashes))).table_valued("value")
        yield sa.select(keys.c.value)
    elif dialect_name == "postgresql":
        # IN (SELECT unnest(...)) probes the primary key per key even before the table has
        # statistics; `= ANY(array)` scanned the whole dataset then, and measured slower.
        from sqlalchemy.dialects.postgresql import ARRAY

        array = sa.bindparam("keys", list(key_hashes), type_=ARRAY(sa.BigInteger))
        yield sa.select(sa.func.unnest(array))
    else:
        yield from chunks(key_hashes)
