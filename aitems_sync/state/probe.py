"""The state URL checked without creating, migrating or writing anything (``validate --connect``,
and the start of every command that opens the store).

``url_problem`` is what no database can change: the URL's form, its scheme, the driver. ``probe``
then looks at the store itself: a SQLite file that exists is a store of a version this code
knows, one that does not can be created; a server database answers and holds a store of a known
version or none yet. Both return the reason for the operator, with what to do.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from aitems_sync.drivers import install_hint
from aitems_sync.errors import StateError
from aitems_sync.redact import url_for_display
from aitems_sync.state.connect import _DIALECT_MODULES, _is_sqlite_file, create_engine, reason
from aitems_sync.state.tables import LATEST_VERSION, schema_version

_EXAMPLES = ("sqlite:///state/aitems-sync.db, postgresql+psycopg://user@host/db or "
             "mysql+pymysql://user@host/db")


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot name a state store whatever its database holds, or None."""
    try:
        parsed = make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        return f"is not a SQLAlchemy URL; write it like {_EXAMPLES}"
    backend = parsed.get_backend_name()
    if backend not in _DIALECT_MODULES:
        return (f"names the database {backend!r}, which the state store cannot use: it keeps "
                f"its state in SQLite, PostgreSQL or MySQL/MariaDB; write it like {_EXAMPLES}")
    try:
        dialect = parsed.get_dialect()
    except sa.exc.NoSuchModuleError:
        return (f"names the driver {parsed.drivername!r}, which SQLAlchemy does not know; "
                f"write it like {_EXAMPLES}")
    try:
        dialect.import_dbapi()
    except ImportError as error:
        return (f"needs the driver {parsed.drivername!r}, whose Python module "
                f"{error.name or 'it imports'} is not installed: {install_hint(parsed)}")
    return None


def probe(url: str) -> str:
    """What the store at ``url`` is, for a line of ``validate``; StateError says what is wrong.

    Nothing is created or written: a missing SQLite file is only checked to be creatable.
    """
    problem = url_problem(url)
    if problem is not None:
        raise StateError(f"the state URL {problem}")
    parsed = make_url(url)
    display = url_for_display(url)
    if _is_sqlite_file(parsed):
        path = Path(parsed.database or "")
        if not path.exists():
            _check_creatable(path, display)
            return f"state store {display}: a new store will be created there"
        if path.stat().st_size == 0:
            raise StateError(f"the state store {display} is an empty file (0 bytes), not an "
                             "aitems-sync store; restore it from a backup, or delete it to "
                             "start afresh (every row is then sent again)")
    return _version_line(parsed, display)


def _check_creatable(path: Path, display: str) -> None:
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise StateError(f"the state store {display} cannot be created: {folder} is not a "
                         "folder this user may write in; make it writable, or point `state:` "
                         "at a path that is")


def _version_line(parsed: URL, display: str) -> str:
    engine = create_engine(parsed)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(schema_version.name):
                tables = sa.inspect(conn).get_table_names()
                if tables and _is_sqlite_file(parsed):
                    raise StateError(
                        f"the state store {display} is an existing database that is not an "
                        "aitems-sync store (it has no schema_version table): point `state:` "
                        "at the store's file, or at a path where none exists yet")
                return f"state store {display}: reachable; the first run creates its tables"
            found = conn.execute(sa.select(schema_version.c.version)).scalar_one_or_none() or 0
    except (sa.exc.SQLAlchemyError, OSError, sqlite3.Error) as exc:
        raise StateError(f"cannot open the state store {display}: {reason(exc)}; check the URL, "
                         "that the database is reachable, and that its user may create "
                         "tables") from exc
    finally:
        engine.dispose()
    if found > LATEST_VERSION:
        raise StateError(
            f"the state store {display} has schema version {found}, but this aitems-sync only "
            f"knows versions up to {LATEST_VERSION}; upgrade aitems-sync, or point `state:` at "
            "another store")
    if found < LATEST_VERSION:
        return (f"state store {display}: schema version {found}; the next run migrates it to "
                f"{LATEST_VERSION}")
    return f"state store {display}: schema version {found} (current)"
