"""Read rows from a SQL source incrementally: after a high-water mark, ordered, streamed.

The user's query is wrapped as a subquery ``src``; the incremental predicate and
``ORDER BY cursor, key`` are added around it with SQLAlchemy Core, so identifiers are quoted
for the dialect and the mark is always a bound parameter, never text in the SQL.

Rows whose cursor is NULL are never extracted (they cannot be ordered after a mark): make the
cursor column NOT NULL, or ``COALESCE`` it in the query. ``extract(count_null_cursors=True)``
counts them, so that they are reported rather than skipped silently. Among rows with the same
cursor value, NULL key values sort first on every dialect.

Every wait on the database (probe, counts, the query, each fetch) is bounded by the source's
``read_timeout`` (:mod:`aitems_sync.source.watchdog`).

MySQL/MariaDB: rows stream through PyMySQL's unbuffered cursor, with a long
``net_write_timeout`` so that a pause for slow uploads does not cut the stream; an extraction
closed early drops its connection rather than read the rest. Keys compare by their column's
collation, so two rows whose cursor and key are equal under it (keys differing only in case
under a ``_ci`` collation) cannot be told apart at a batch boundary: write
``key_col COLLATE utf8mb4_bin`` in the query for such keys. ``TIMESTAMP`` values come back in
the session time zone (the server's by default), which the source's ``timezone`` must name.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from decimal import Decimal
from types import TracebackType
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.sql.expression import UnaryExpression
from sqlalchemy.sql.operators import custom_op
from sqlalchemy.types import NullType

from aitems_sync.drivers import install_hint
from aitems_sync.errors import QueryError, SourceError
from aitems_sync.redact import url_for_display
from aitems_sync.source.decode import fetch_part, tolerate_pg_values
from aitems_sync.source.lookback import CursorValue, lookback_start
from aitems_sync.source.watchdog import IdleConnections, Watch, Watchdog
from aitems_sync.spec.columns import ColumnMatchError, match_column
from aitems_sync.spec.model import SourceConfig

log = logging.getLogger(__name__)

__all__ = ["CursorValue", "Extraction", "MarkLike", "Source", "lookback_start"]


VALIDATE_HINT = "run `aitems-sync validate --connect` to check every query against its source"
#: Where SQLite on Unix puts temporary files (a sort's spill) without SQLITE_TMPDIR.
TEMP_DIRS = "TMPDIR, else /var/tmp, /usr/tmp, /tmp, or the current directory"
#: Rows after a mark from which a read may be worth sorting (Source.extract): below it the
#: read is a delta, and the counts that would tell (a pass over an index) are not made.
SORT_AFTER_ROWS = 500_000
CONNECT_TIMEOUT_SECONDS = 10
# The connect argument that bounds connecting (seconds), per driver: nothing waits forever.
_CONNECT_TIMEOUT_ARGS = {
    "psycopg": "connect_timeout",
    "psycopg2": "connect_timeout",
    "pg8000": "timeout",
    "pymysql": "connect_timeout",
    "mysqldb": "connect_timeout",
}
# MySQL drops a streaming connection whose client has not read for net_write_timeout seconds
# (default 60). Uploads hold the reader back that long: one request may retry for 10 minutes
# (RetryPolicy.max_elapsed) plus its timeouts. A dead client still closes its socket at once.
MYSQL_NET_WRITE_TIMEOUT_SECONDS = 3600
# Dialects that sort NULL last in ascending order; the others (SQLite, MySQL, SQL Server) sort
# it first already and MySQL has no NULLS FIRST syntax.
_NULLS_LAST_DIALECTS = ("postgresql", "oracle")


class MarkLike(Protocol):
    """The high-water mark: cursor value and key values of the last acknowledged row."""

    @property
    def cursor(self) -> CursorValue: ...

    @property
    def key(self) -> tuple[Any, ...]: ...


class Source:
    """One source database: a lazily created SQLAlchemy engine and the queries run on it."""

    def __init__(self, config: SourceConfig, *, engine: sa.Engine | None = None,
                 sort_after_rows: int = SORT_AFTER_ROWS) -> None:
        self.name = config.name
        self.config = config
        self._url = config.url
        self._sort_after_rows = sort_after_rows
        try:
            self.timezone: tzinfo = ZoneInfo(config.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise SourceError(
                f"source {self.name!r}: unknown timezone {config.timezone!r}; "
                "use an IANA name such as UTC or Asia/Seoul"
            ) from exc
        self._engine = engine
        self._owns_engine = engine is None
        self._watchdog = Watchdog(self.name, config.read_timeout)
        self._idle = IdleConnections()

    @property
    def engine(self) -> sa.Engine:
        """The source's engine, created on first use."""
        if self._engine is None:
            self._engine = _create_engine(self.name, self._url)
            self._idle.follow(self._engine)
        return self._engine

    @property
    def shareable(self) -> bool:
        """Whether another process can read this source from its url alone: the source made
        its own engine, and the database is not a SQLite database in memory."""
        if not self._owns_engine:
            return False
        try:
            url = sa.make_url(self._url)
        except sa.exc.ArgumentError:
            return False
        memory = url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"
        return not (url.get_backend_name() == "sqlite" and memory)

    def connect_check(self) -> None:
        """Open a connection and give it back: SourceError says why the source is out of reach."""
        with self._connect():
            pass

    def columns(self, query: str, *, hint: str = VALIDATE_HINT) -> list[str]:
        """The query's result column names as the driver reports them, without reading rows.

        ``hint`` ends the message of a query that fails: what the operator should do. A query
        the database refuses itself (syntax, unknown table or column: :func:`query_mistake`)
        raises QueryError, which running again cannot fix.
        """
        probe = sa.text(f"SELECT * FROM ({_wrap(query)}) AS src WHERE 1 = 0")
        with self._connect() as conn, self._watched(conn) as watch:
            try:
                with watch:
                    return list(conn.execute(probe).keys())
            except sa.exc.StatementError as exc:
                error = self._query_error(exc, watch, hint)
                if not watch.fired and query_mistake(exc):
                    detail = _scrub(_first_line(exc.orig), self._url)
                    error = QueryError(f"source {self.name!r}: the database refused the query: "
                                       f"{detail}; {hint}")
                raise error from exc

    def rows_by_key(self, query: str, *, cursor: str, key: Sequence[str],
                    keys: Sequence[Sequence[Any]]) -> KeyedRows:
        """The query's rows whose key columns equal one of ``keys`` (each a tuple of key
        values as a read returned them), ordered by cursor then key: what the source holds for
        those keys now (``quarantine retry``). The values are bound, a statement per
        :data:`KEYS_PER_READ` keys; a NULL key value matches NULL."""
        names = self.columns(query)
        cursor_index = self._match("cursor", cursor, names)
        key_indices = [self._match("key", k, names) for k in key]
        dialect = self.engine.dialect.name
        per_read = max(1, KEYS_PER_READ // max(1, len(key_indices)))
        rows: list[tuple[Any, ...]] = []
        with self._connect() as conn, self._watched(conn) as watch:
            for start in range(0, len(keys), per_read):
                statement = key_statement(query, names, cursor_index, key_indices,
                                          keys[start:start + per_read], dialect)
                try:
                    with watch:
                        rows.extend(tuple(row) for row in conn.execute(statement))
                except sa.exc.StatementError as exc:
                    raise self._query_error(exc, watch) from exc
        return KeyedRows(names, cursor_index, key_indices, rows)

    def cursor_summary(self, query: str, names: Sequence[str], cursor_index: int,
                       *, hint: str = VALIDATE_HINT) -> tuple[int, Any]:
        """How many rows of the query have a NULL cursor, and the greatest cursor value (None
        without rows): one pass over the query's rows."""
        src = sa.text(_wrap(query)).columns(*[sa.column(n) for n in names]).subquery("src")
        cursor = src.c[names[cursor_index]]
        statement = sa.select(sa.func.count() - sa.func.count(cursor), sa.func.max(cursor))
        with self._connect() as conn, self._watched(conn) as watch:
            try:
                with watch:
                    nulls, greatest = conn.execute(statement).one()
            except sa.exc.StatementError as exc:
                raise self._query_error(exc, watch, hint) from exc
        return int(nulls or 0), greatest

    def extract(
        self,
        query: str,
        *,
        cursor: str,
        key: Sequence[str],
        mark: MarkLike | None,
        lookback: timedelta = timedelta(0),
        chunk_rows: int = 5000,
        sort: bool | None = None,
        inclusive: bool = False,
        count_null_cursors: bool = False,
    ) -> Extraction:
        """Start streaming the rows after ``mark`` (or all rows), ordered by cursor then key.

        With ``inclusive`` every row whose cursor equals the mark's is read again, whatever its
        key (the caller's ledger skips those already delivered): a row committed later with the
        mark's cursor value and a key that sorts before the mark's is read, not lost.

        With a ``lookback`` the rows from ``lookback_start(mark.cursor, lookback)`` on are read
        again; the caller's ledger skips those already delivered. Close the result (or use it
        as a context manager) to release the connection early. The first chunk holds at most
        :data:`FIRST_CHUNK_ROWS` rows, so that a consumer's first batch is cut (and its upload
        under way) while the rest is read.

        From SQLite, a read of most of a table that its plan would walk through an index
        lacking columns is sorted by SQLite instead (:func:`walks_an_index`). ``sort`` None
        does that for a read of all rows, and for a read after a mark that counts show to be
        most of the table (:func:`sorting_pays`: a first load resumed after a crash or a
        deadline); True does it after a mark without counting (the caller knows it is most of
        the table); False never sorts (the caller wants the first rows at once). The sort
        comes before the first row (a long wait on a large table) and spills about the rows'
        size to SQLite's temporary directory (``SQLITE_TMPDIR``).

        With ``count_null_cursors`` the rows whose cursor is NULL (never read) are counted
        first, in one statement on the same connection: ``Extraction.null_cursors``.
        """
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be at least 1")
        names = self.columns(query)
        cursor_index = self._match("cursor", cursor, names)
        key_indices = [self._match("key", k, names) for k in key]
        dialect = self.engine.dialect.name

        def statement_after(after: MarkLike | None, sorted_: bool = False) -> sa.Select[Any]:
            return extraction_statement(query, names, cursor_index, key_indices, after, lookback,
                                        dialect, sort=sorted_, inclusive=inclusive)

        try:
            statement = statement_after(mark)
        except SourceError as exc:
            raise SourceError(f"source {self.name!r}: {exc.message}") from exc
        conn = self._connect()
        watch = self._watch(conn)
        nulls = None
        try:
            with watch:
                _prepare_stream(conn)
                if count_null_cursors:
                    counted = null_cursor_statement(query, names, cursor_index)
                    nulls = int(conn.execute(counted).scalar_one())
                if dialect == "sqlite" and self._sorts(conn, statement_after, mark, sort):
                    statement = statement_after(mark, sorted_=True)
                    log.debug("source %s: SQLite sorts the table, read in storage order "
                              "(walking the cursor's index would read it at random)", self.name,
                              extra={"event": "sorted_read", "source": self.name})
                if conn.dialect.supports_server_side_cursors:
                    conn = conn.execution_options(stream_results=True, yield_per=chunk_rows)
                result = conn.execute(statement)
        except sa.exc.StatementError as exc:
            conn.close()
            watch.release()
            raise self._query_error(exc, watch) from exc
        except BaseException:
            conn.close()
            watch.release()
            raise
        log.debug("source %s: extracting after mark=%s, lookback=%s", self.name, mark, lookback)
        return Extraction(names, cursor_index, key_indices, conn, result, self, chunk_rows,
                          watch, nulls)

    def _sorts(
        self,
        conn: sa.Connection,
        statement_after: Callable[[MarkLike | None], sa.Select[Any]],
        mark: MarkLike | None,
        sort: bool | None,
    ) -> bool:
        """Whether SQLite should sort this read rather than walk an index (see ``extract``)."""
        if sort is False or not walks_an_index(_plan(conn, statement_after(None))):
            return False
        if mark is None or sort:
            return True
        limit = self._sort_after_rows
        after = _count(conn, statement_after(mark), limit=limit)
        if after < limit:
            return False  # a delta: a short range of the index
        return sorting_pays(_count(conn, statement_after(mark)),
                            _count(conn, statement_after(None)), limit)

    def close(self) -> None:
        """Dispose of the engine this source created (an engine passed in belongs to the caller)."""
        self._watchdog.close()
        if self._engine is not None and self._owns_engine:
            self._engine.dispose()
            self._engine = None

    def _watch(self, conn: sa.Connection) -> Watch:
        """Bound every wait on ``conn`` by the source's read_timeout (release it after)."""
        return self._watchdog.watch(conn.connection.dbapi_connection)

    @contextmanager
    def _watched(self, conn: sa.Connection) -> Iterator[Watch]:
        watch = self._watch(conn)
        try:
            yield watch
        finally:
            watch.release()

    def _connect(self) -> sa.Connection:
        engine = self.engine
        # The pool pings an idle connection before handing it out: a frozen server would hold
        # that ping for ever. Past read_timeout the idle connections are ended, and the pool
        # connects anew (bounded by the connect timeout).
        watch = self._watchdog.watch_idle(self._idle.connections)
        try:
            with watch:
                return engine.connect()
        except sa.exc.DBAPIError as exc:
            if watch.fired:
                raise self.timeout_error() from exc
            where = _safe_url(self._url)
            detail = _scrub(_first_line(exc.orig), self._url)
            raise SourceError(
                f"source {self.name!r}: cannot connect to {where}: {detail}; check that the "
                "server is running and reachable, the host, port, database name and "
                "credentials in the url, and the network/firewall"
            ) from exc
        finally:
            watch.release()

    def _query_error(self, exc: sa.exc.StatementError, watch: Watch | None = None,
                     hint: str = VALIDATE_HINT) -> SourceError:
        if watch is not None and watch.fired:
            return self.timeout_error()
        detail = _scrub(_first_line(exc.orig), self._url)
        if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
            return SourceError(
                f"source {self.name!r}: lost the connection during a query: {detail}; "
                "run again once the database is reachable"
            )
        if getattr(exc.orig, "sqlite_errorname", None) == "SQLITE_FULL":
            return SourceError(
                f"source {self.name!r}: the query failed: {detail}; a read sorts in SQLite's "
                "temporary directory (a first load sorts the whole table there, about the "
                "rows' size): free space there or set SQLITE_TMPDIR to a disk with room "
                f"(SQLite's default: {TEMP_DIRS}), then run again"
            )
        return SourceError(f"source {self.name!r}: the query failed: {detail}; {hint}")

    def timeout_error(self) -> SourceError:
        """The error of a query the watchdog ended: the source did not answer in time."""
        seconds = _duration(self.config.read_timeout)
        return SourceError(
            f"source {self.name!r}: no answer for {seconds} while reading rows "
            f"(sources.{self.name}.read_timeout): the database server or the network to it "
            "stopped answering, and the query was ended; nothing after the last batch "
            "delivered was committed. Check the server and the network, then run again (raise "
            "read_timeout if a query of this source can take that long before its first rows)"
        )

    def _match(self, role: str, wanted: str, names: Sequence[str]) -> int:
        try:
            return match_column(wanted, names)
        except ColumnMatchError as exc:
            raise SourceError(
                f"source {self.name!r}: the dataset's {role} {wanted!r} does not match the "
                f"query's result columns: {exc}; fix `{role}` or the query's column aliases"
            ) from exc


@dataclass(eq=False)
class Extraction:
    """A running extraction: column layout, and the rows in chunks of up to ``chunk_rows``."""

    columns: list[str]
    cursor_index: int
    key_indices: list[int]
    chunks: Iterator[Sequence[Sequence[Any]]] = field(init=False, repr=False)
    _conn: sa.Connection = field(repr=False)
    _result: sa.CursorResult[Any] = field(repr=False)
    _source: Source = field(repr=False)
    _chunk_rows: int = field(repr=False)
    _watch: Watch = field(repr=False)
    #: Rows whose cursor is NULL, never read (counted with ``count_null_cursors``, else None).
    null_cursors: int | None = None

    def __post_init__(self) -> None:
        # finalize also runs when an extraction is dropped without close(): the connection
        # goes back to the pool either way. Nothing here refers back to self (no cycle).
        self._finalizer = weakref.finalize(self, _release, self._conn, self._result,
                                           self._watch)
        self.chunks = _chunks(self._result, self._chunk_rows, self._source, self._finalizer,
                              self._watch)

    def close(self) -> None:
        """Stop the query (if still running) and release the connection; safe to call twice."""
        self._finalizer()

    def __enter__(self) -> Extraction:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def extraction_statement(
    query: str,
    names: Sequence[str],
    cursor_index: int,
    key_indices: Sequence[int],
    mark: MarkLike | None,
    lookback: timedelta,
    dialect: str,
    *,
    sort: bool = False,
    inclusive: bool = False,
) -> sa.Select[Any]:
    """The SELECT around the user's query: incremental predicate and ``ORDER BY cursor, key``.

    After a mark the predicate is ``(cursor, key) > mark``, or with ``inclusive``
    ``cursor >= mark.cursor``; with a lookback, ``cursor >=`` the mark moved back by it.

    With ``sort`` (SQLite) the cursor and key are written as ``+column`` in the order and the
    predicate, which no index serves: SQLite then reads the table in its storage order, keeps
    the rows after the mark, and sorts them (see :func:`walks_an_index`).
    """
    src = sa.text(_wrap(query)).columns(*[sa.column(n) for n in names]).subquery("src")
    cur: sa.ColumnElement[Any] = src.c[names[cursor_index]]
    keys: list[sa.ColumnElement[Any]] = [src.c[names[i]] for i in key_indices]
    if sort:
        cur, keys = _unindexed(cur), [_unindexed(k) for k in keys]
    ordered_keys = keys if dialect not in _NULLS_LAST_DIALECTS else [k.nulls_first() for k in keys]
    statement = sa.select(src).order_by(cur, *ordered_keys)
    if mark is None:
        return statement.where(cur.is_not(None))
    if lookback > timedelta(0):
        start = lookback_start(mark.cursor, lookback)
        return statement.where(cur >= _bind("mark_start", start, dialect))
    if inclusive:  # the mark's key plays no part
        return statement.where(cur >= _bind("mark_cursor", mark.cursor, dialect))
    _check_mark_key(mark, keys)
    return statement.where(_after(cur, keys, mark, dialect))


#: Key values bound in one read by key (``Source.rows_by_key``): within every driver's limit on
#: parameters (SQLite's older builds allow 999).
KEYS_PER_READ = 500


@dataclass(frozen=True)
class KeyedRows:
    """Rows read by key (``Source.rows_by_key``), in cursor then key order, with the layout of
    the query's columns."""

    columns: list[str]
    cursor_index: int
    key_indices: list[int]
    rows: list[tuple[Any, ...]]


def key_statement(query: str, names: Sequence[str], cursor_index: int,
                  key_indices: Sequence[int], keys: Sequence[Sequence[Any]],
                  dialect: str) -> sa.Select[Any]:
    """The SELECT around the user's query of the rows whose key equals one of ``keys``,
    ordered like an extraction; every value a bound parameter."""
    src = sa.text(_wrap(query)).columns(*[sa.column(n) for n in names]).subquery("src")
    cur: sa.ColumnElement[Any] = src.c[names[cursor_index]]
    columns: list[sa.ColumnElement[Any]] = [src.c[names[i]] for i in key_indices]
    matches = []
    for n, values in enumerate(keys):
        binds = [(c, v, _bind(f"key_{n}_{i}", v, dialect))
                 for i, (c, v) in enumerate(zip(columns, values, strict=True))]
        matches.append(sa.and_(*[_equal(c, v, b) for c, v, b in binds]))
    ordered = columns if dialect not in _NULLS_LAST_DIALECTS else [
        c.nulls_first() for c in columns]
    return sa.select(src).where(sa.or_(*matches)).order_by(cur, *ordered)


def null_cursor_statement(query: str, names: Sequence[str], cursor_index: int
                          ) -> sa.Select[Any]:
    """``SELECT count(*)`` of the query's rows whose cursor is NULL: the rows no extraction
    reads. One statement, which the database answers from the cursor's index where it has one
    (SQLite also folds it to nothing on a NOT NULL column); without one it scans as a delta
    query on that cursor does anyway."""
    src = sa.text(_wrap(query)).columns(*[sa.column(n) for n in names]).subquery("src")
    return sa.select(sa.func.count()).select_from(src).where(src.c[names[cursor_index]].is_(None))


#: MySQL/MariaDB errors of the query itself: ambiguous column, unknown column, syntax, unknown
#: table, unknown function.
_MYSQL_QUERY_ERRORS = frozenset({1052, 1054, 1064, 1146, 1305})


def query_mistake(exc: sa.exc.StatementError) -> bool:
    """Whether the database refused the statement itself (syntax, an unknown table or column),
    which running again cannot fix, rather than failed to run it (connection, lock, disk).

    PostgreSQL and MySQL drivers raise ProgrammingError for the former (PyMySQL some of them as
    OperationalError, told by their code); SQLite gives every such error its generic code
    SQLITE_ERROR, and the others codes of their own (BUSY, LOCKED, IOERR, FULL...).
    """
    orig = exc.orig
    if isinstance(exc, sa.exc.ProgrammingError):
        return True
    if getattr(orig, "sqlite_errorname", None) == "SQLITE_ERROR":
        return True
    args: tuple[Any, ...] = getattr(orig, "args", ())
    return (type(orig).__module__.startswith("pymysql") and bool(args)
            and args[0] in _MYSQL_QUERY_ERRORS)


def walks_an_index(plan: Sequence[str]) -> bool:
    """Whether SQLite's query plan (the ``detail`` of each ``EXPLAIN QUERY PLAN`` row) reads a
    table in the order of an index that does not hold all its columns: ``SCAN t USING INDEX i``,
    or ``SEARCH t USING INDEX i (c>?)``, the range a full read's ``cursor IS NOT NULL`` makes of
    a nullable cursor's index.

    That is how SQLite serves ``ORDER BY cursor, key`` from an index on them, and for a read of
    the whole table it is the slow way: each row costs a random read of the table (a ``pread``
    each), where reading the table in storage order and sorting it measured clearly faster, the
    more so the larger the table (benchmarks/README.md). It is asked of the full read's plan,
    and only for a read of most
    of the table (a delta reads a short range of the index); a covering index and a rowid
    cursor (``SCAN t``) are left alone.
    """
    return any(step.startswith(("SCAN ", "SEARCH ")) and " USING INDEX " in step
               for step in plan)


def sorting_pays(after: int, rows: int, at_least: int = SORT_AFTER_ROWS) -> bool:
    """Whether SQLite should sort the whole table (``rows`` rows) to read the ``after`` rows
    after a mark, rather than walk the cursor's index from the mark.

    Walking costs a random read of the table per row read, dearer as the table grows; sorting
    costs less per row, but for every row of the table, read or not (measured:
    benchmarks/README.md): it pays once half the table or more is left, and only for reads
    large enough to matter.
    """
    return after >= at_least and 2 * after >= rows


def _count(conn: sa.Connection, statement: sa.Select[Any], *, limit: int | None = None) -> int:
    """How many rows the extraction statement reads (at most ``limit``), without the rows'
    columns: SQLite counts the entries of the cursor's index, not the table's rows."""
    one: sa.ColumnElement[Any] = sa.literal_column("1")
    rows = statement.with_only_columns(one, maintain_column_froms=True).order_by(None)
    counted = sa.select(sa.func.count()).select_from(rows.limit(limit).subquery())
    return int(conn.execute(counted).scalar_one())


def _plan(conn: sa.Connection, statement: sa.Select[Any]) -> list[str]:
    compiled = statement.compile(dialect=conn.dialect)
    params = tuple(compiled.params[name] for name in compiled.positiontup or ())
    rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", params)
    return [str(row[-1]) for row in rows]


def _unindexed(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """``+column``: the same values, order and collation, but no index serves it (SQLite)."""
    return UnaryExpression(column, operator=custom_op("+"))


def _after(
    cur: sa.ColumnElement[Any], keys: Sequence[sa.ColumnElement[Any]], mark: MarkLike, dialect: str
) -> sa.ColumnElement[bool]:
    """``(cursor, k1..kn) > (mark)`` written out, after ``cursor >= mark`` for the index.

    Keys order with NULL first, and a NULL in the mark becomes ``IS [NOT] NULL``: a whole-row
    key may hold nullable fields, and ``k > NULL`` would silently drop rows.
    """
    c = _bind("mark_cursor", mark.cursor, dialect)
    if not keys:
        return cur > c
    values = enumerate(zip(keys, mark.key, strict=True))
    pairs = [(k, v, _bind(f"mark_key_{i}", v, dialect)) for i, (k, v) in values]
    # (c, k1, k2) > (C, K1, K2)  <=>  c > C OR (c = C AND (k1 > K1 OR (k1 = K1 AND k2 > K2)))
    column, value, bound = pairs[-1]
    tail = _greater(column, value, bound)
    for column, value, bound in reversed(pairs[:-1]):
        tail = sa.or_(_greater(column, value, bound), sa.and_(_equal(column, value, bound), tail))
    return sa.and_(cur >= c, sa.or_(cur > c, sa.and_(cur == c, tail)))


def _check_mark_key(mark: MarkLike, keys: Sequence[sa.ColumnElement[Any]]) -> None:
    if len(mark.key) != len(keys):
        raise SourceError(
            f"the stored mark has {len(mark.key)} key values but the dataset's key has "
            f"{len(keys)}: the key changed since the last run; run `aitems-sync state reset` "
            "for the dataset, which sends every row again"
        )


def _greater(
    column: sa.ColumnElement[Any], value: Any, bound: sa.BindParameter[Any]
) -> sa.ColumnElement[bool]:
    # NULL sorts first: everything but NULL is greater than NULL, and nothing is below NULL.
    return column.is_not(None) if value is None else column > bound


def _equal(
    column: sa.ColumnElement[Any], value: Any, bound: sa.BindParameter[Any]
) -> sa.ColumnElement[bool]:
    return column.is_(None) if value is None else column == bound


def _bind(name: str, value: Any, dialect: str) -> sa.BindParameter[Any]:
    # NullType: no SQLAlchemy cast (psycopg would get ``::INTEGER`` for an epoch-ms int, or
    # ``::VARCHAR`` against an enum or uuid key); the driver types the value itself.
    return sa.bindparam(name, _adapt(value, dialect), type_=NullType())


def _adapt(value: Any, dialect: str) -> Any:
    """Values the sqlite3 module cannot bind, in the form SQLite stores them as."""
    if dialect != "sqlite":
        return value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    return value


def _wrap(query: str) -> str:
    # Newlines keep a trailing ``-- comment`` from swallowing the closing parenthesis; escaped
    # colons keep text() from reading ``:name`` in the user's SQL as a bind parameter.
    body = query.strip().rstrip(";").rstrip()
    return "\n" + body.replace(":", "\\:") + "\n"


def _chunks(
    result: sa.CursorResult[Any], size: int, source: Source, release: weakref.finalize[Any, Any],
    watch: Watch,
) -> Iterator[Sequence[Sequence[Any]]]:
    try:
        for part in _parts(result, size, watch):
            yield part
            del part  # not kept while the next one is read (the caller holds it if it needs it)
            if not release.alive:  # closed while the caller held this chunk: stop quietly
                return
    except sa.exc.StatementError as exc:
        raise source._query_error(exc, watch) from exc
    finally:
        release()


#: Rows in an extraction's first chunk at most (see Source.extract).
FIRST_CHUNK_ROWS = 1000


def _parts(result: sa.CursorResult[Any], size: int, watch: Watch) -> Iterator[Sequence[Any]]:
    """The result's rows in lists of up to ``size`` (the first one up to FIRST_CHUNK_ROWS),
    each fetch armed on the ``watch`` (a wait for rows, bounded by read_timeout).

    Where the driver has no server-side cursor (SQLite), its own cursor already reads lazily,
    step by step: the rows come straight from it as plain tuples (:func:`fetch_part`, which
    keeps a row with undecodable text). SQLAlchemy's
    rows would add nothing here (the wrapped query's columns have no result processors) but
    their cost: the sqlite3 cursor yields rows much faster than ``partitions`` does
    (benchmarks/bench_parts.py), and that cost was a large share of the reading thread in a
    backfill.
    """
    first = min(size, FIRST_CHUNK_ROWS)
    if result.context.dialect.supports_server_side_cursors:
        with watch:
            part = result.fetchmany(first)
        if not part:
            return
        yield part
        parts = result.partitions(size)
        while True:
            with watch:
                part = next(parts, [])
            if not part:
                return
            yield part
            del part  # see _chunks
    cursor, errors = result.cursor, result.context.dialect.loaded_dbapi.Error
    while True:
        try:
            with watch:
                part = fetch_part(cursor, first)
        except errors as exc:
            raise sa.exc.DBAPIError.instance(None, None, exc, errors) from exc
        if not part:
            return
        yield part
        del part  # see _chunks
        first = size


def _release(conn: sa.Connection, result: sa.CursorResult[Any], watch: Watch) -> None:
    try:
        if watch.fired:  # the watchdog shut its socket: nothing can be read or closed on it
            conn.invalidate()
        else:
            _drop_unread_rows(conn, result)
            result.close()
    except sa.exc.SQLAlchemyError:
        log.debug("closing an extraction's result failed", exc_info=True)
    finally:
        try:
            conn.close()
        except sa.exc.SQLAlchemyError:
            log.debug("closing an extraction's connection failed", exc_info=True)
        watch.release()


def _prepare_stream(conn: sa.Connection) -> None:
    """Session settings a long, slowly read stream needs (MySQL/MariaDB only)."""
    if conn.dialect.name in ("mysql", "mariadb"):
        conn.exec_driver_sql(f"SET SESSION net_write_timeout = {MYSQL_NET_WRITE_TIMEOUT_SECONDS}")


def _drop_unread_rows(conn: sa.Connection, result: sa.CursorResult[Any]) -> None:
    """Give up a MySQL stream that still has rows without reading them all first.

    PyMySQL's unbuffered cursor (``stream_results``) can only be closed by reading the rest of
    the result: abandoning a large result after the first chunk meant reading all of it, minutes
    on a large table (a failed dataset, SIGTERM). Dropping the connection instead makes the
    server stop the query; the result is then marked finished, as PyMySQL itself does when the
    server sends an error.
    """
    pending: Any = getattr(getattr(result, "cursor", None), "_result", None)
    if getattr(pending, "unbuffered_active", False) is not True:
        return  # not PyMySQL, not streaming, or read to the end
    log.debug("dropping the connection of an unfinished MySQL stream instead of draining it")
    conn.invalidate()
    pending.unbuffered_active = False


def _create_engine(name: str, url: str) -> sa.Engine:
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise SourceError(
            f"source {name!r}: the url is not a SQLAlchemy URL; write it as "
            "dialect+driver://user:password@host:port/database (e.g. postgresql+psycopg://...)"
        ) from exc
    try:
        connect_args: dict[str, Any] = {}
        timeout_arg = _CONNECT_TIMEOUT_ARGS.get(parsed.get_driver_name())
        if timeout_arg is not None and timeout_arg not in parsed.query:
            connect_args[timeout_arg] = CONNECT_TIMEOUT_SECONDS
        if parsed.get_driver_name() in ("pymysql", "mysqldb") and "charset" not in parsed.query:
            # MySQL's older clients default to latin1 (or 3-byte utf8): 4-byte text would
            # come back as '?'. utf8mb4 carries any text the server holds.
            connect_args["charset"] = "utf8mb4"
        engine = sa.create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
    except ImportError as exc:
        raise SourceError(
            f"source {name!r}: cannot use {_safe_url(url)}: its driver is not installed "
            f"({_scrub(_first_line(exc), url)}); {install_hint(parsed)}"
        ) from exc
    except sa.exc.ArgumentError as exc:
        raise SourceError(
            f"source {name!r}: cannot use {_safe_url(url)}: {_scrub(_first_line(exc), url)}; "
            "check the dialect and its driver (postgresql+psycopg:// or mysql+pymysql://, "
            "installed by pip install 'aitems-sync[postgres]' or 'aitems-sync[mysql]')"
        ) from exc
    if parsed.get_backend_name() == "sqlite":
        sa.event.listen(engine, "connect", _heed_signals)
    if parsed.get_driver_name() == "psycopg":
        sa.event.listen(engine, "connect", tolerate_pg_values)
    return engine


#: SQLite virtual-machine steps between two calls of a source connection's progress handler:
#: often enough that a signal waits only a moment, rarely enough that a full read's sort barely
#: notices the calls.
SIGNAL_CHECK_STEPS = 100_000


def _heed_signals(dbapi_conn: Any, _record: Any) -> None:
    """Let the main thread run a signal's handler within one long SQLite statement.

    CPython runs signal handlers on the main thread between bytecodes; a statement that works
    long before its first row (a full read's sort of a large table) kept SIGTERM waiting that
    long. The progress handler is a Python call, in which a pending handler runs. It does not
    stop the statement (a run stops between rows, as it always does), unless the handler raises
    (Python's own for SIGINT, outside a run): SQLite then ends the statement as interrupted.
    """
    dbapi_conn.set_progress_handler(_go_on, SIGNAL_CHECK_STEPS)


def _go_on() -> int:
    return 0


def _duration(seconds: float) -> str:
    """Seconds as the spec writes durations: ``90s``, ``30m``, ``1h``."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _safe_url(url: str) -> str:
    return url_for_display(url)


def _scrub(message: str, url: str) -> str:
    """Remove the URL's password from a driver message, in case the driver echoed it."""
    try:
        password = sa.make_url(url).password
    except sa.exc.ArgumentError:
        return message
    return message.replace(str(password), "***") if password else message


def _first_line(exc: BaseException | None) -> str:
    text = str(exc).strip() if exc is not None else ""
    return text.splitlines()[0] if text else type(exc).__name__
