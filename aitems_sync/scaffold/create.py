"""``init``'s I/O: read the database's tables, have the pure modules beside this one choose and
draft, then write the starter spec and the emulator seed (refusing to overwrite either unless
told to)."""

from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from aitems_sync.errors import UsageError
from aitems_sync.redact import register_url
from aitems_sync.scaffold.catalog import Catalog, Table, inspect_catalog
from aitems_sync.scaffold.choose import DATASET_TYPES, Choice, pick_tables
from aitems_sync.scaffold.draft import DatasetDraft, draft_dataset
from aitems_sync.scaffold.names import local_ids, source_name, source_url, spec_name
from aitems_sync.scaffold.render import render_seed, render_spec
from aitems_sync.source.extract import Source
from aitems_sync.spec.model import DatasetType, SourceConfig

log = logging.getLogger(__name__)

#: Tables listed at most in a message that lists them.
LISTED = 30


@dataclass(frozen=True)
class InitReport:
    """What ``init`` wrote and decided, and what a person must still do."""

    spec: Path
    seed: Path
    source: str  # the URL with its secrets masked
    datasets: tuple[DatasetDraft, ...]
    picked: Mapping[str, str]  # dataset name -> why its table was taken
    notes: tuple[str, ...] = ()
    commands: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": str(self.spec), "seed": str(self.seed), "source": self.source,
            "datasets": [{
                "name": d.name, "type": d.type, "table": d.table,
                "picked": self.picked.get(d.name, "named on the command line"),
                "cursor": d.cursor.column, "cursor_reason": d.cursor.why,
                "cursor_advice": d.cursor.advice or None, "key": list(d.key) or None,
                "lookback": d.lookback,
                "fields": [{"name": f.name, "column": f.column, "type": list(f.types),
                            "categorical": f.categorical} for f in d.fields],
                "left_out": list(d.left_out), "todo": list(d.todo),
            } for d in self.datasets],
            "notes": list(self.notes), "commands": list(self.commands),
        }


def create_starter(
    url: str, *, output: Path, seed: Path | None = None,
    tables: Mapping[DatasetType, str] | None = None, schema: str | None = None,
    url_variable: str | None = None, force: bool = False,
) -> InitReport:
    """Inspect the database at ``url`` and write a starter spec to ``output`` and an emulator
    seed to ``seed`` (default: ``emulator-seed.yaml`` beside it).

    ``tables`` names the table of each dataset type wanted; without it the tables are picked
    by their names. Raises UsageError (exit 2) for a file that exists without ``force``, an
    unknown table or nothing to pick, SourceError when the database cannot be read.
    """
    register_url(url)  # no message may show its password
    seed = seed if seed is not None else output.with_name("emulator-seed.yaml")
    _refuse_to_overwrite([output, seed], force)
    catalog = _read(url, schema)
    picks, notes = _choose(catalog, tables or {})
    drafts = _drafts(catalog, picks)
    name = source_name(url)
    written = source_url(url, name, variable_name=url_variable,
                         spec_dir=str(output.resolve().parent), cwd=os.getcwd())
    local = local_ids(name, [d.name for d in drafts])
    commands = (f"aitems-sync emulator --seed {shlex.quote(str(seed))}",
                f"aitems-sync --config {shlex.quote(str(output))} validate --connect",
                f"aitems-sync --config {shlex.quote(str(output))} run")
    spec_text = render_spec(catalog, drafts, name, written, local, commands)
    seed_text = render_seed(drafts, local, output.name, commands[0])
    _write(output, spec_text, force)
    _write(seed, seed_text, force)
    if written.note:
        notes.insert(0, f"export {written.variable}='...' (the URL given to init): "
                        f"{written.note}")
    return InitReport(spec=output, seed=seed, source=written.shown, datasets=tuple(drafts),
                      picked={d.name: picks[d.type].why for d in drafts},
                      notes=tuple(notes), commands=commands)


def _refuse_to_overwrite(paths: list[Path], force: bool) -> None:
    if paths[0].resolve() == paths[1].resolve():
        raise UsageError(f"the spec and the seed would both be {paths[0]}: give --seed "
                         "another path")
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        verb = "exists" if len(existing) == 1 else "exist"
        raise UsageError(f"{' and '.join(existing)} already {verb}: pass --force to overwrite, "
                         "or --output and --seed to write elsewhere")


def _read(url: str, schema: str | None) -> Catalog:
    _check_url(url)
    source = Source(SourceConfig(name="init", url=url))
    try:
        source.connect_check()
        return inspect_catalog(source.engine, schema)
    finally:
        source.close()


def _check_url(url: str) -> None:
    """A URL that does not parse is a usage error. SQLite creates a missing database file on
    connect: a mistyped path would be inspected as an empty database, and left behind."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise UsageError("the database URL is not a SQLAlchemy URL: write it as "
                         "dialect+driver://user:password@host:port/database (e.g. "
                         "postgresql+psycopg://..., or sqlite:///shop.db)") from None
    database = parsed.database
    if (parsed.get_backend_name() == "sqlite" and database and database != ":memory:"
            and not parsed.query.get("uri") and not Path(database).is_file()):
        raise UsageError(f"no SQLite database at {database}: check the path (three slashes "
                         "for a relative path, sqlite:///shop.db; four for an absolute one)")


def _choose(catalog: Catalog, tables: Mapping[DatasetType, str]
            ) -> tuple[dict[DatasetType, Choice], list[str]]:
    where = f" in schema {catalog.schema}" if catalog.schema else ""
    if not catalog.tables:
        raise UsageError(f"the database has no tables{where}: check the URL (and --schema)")
    guessed, notes = pick_tables(catalog)
    if tables:
        unknown = [t for t in tables.values() if t not in catalog.tables]
        if unknown:
            raise UsageError(f"no table {', '.join(unknown)}{where}; the database has "
                             f"{_listing(catalog)}")
        return {k: Choice(t, "named on the command line") for k, t in tables.items()}, []
    if not guessed:
        raise UsageError(f"no table is named like users, items or events{where}; name them "
                         "with --user TABLE, --item TABLE and --interaction TABLE (one or "
                         f"more). The database has {_listing(catalog)}")
    return guessed, notes


def _listing(catalog: Catalog) -> str:
    names = list(catalog.tables)
    shown = ", ".join(names[:LISTED])
    return f"{shown} and {len(names) - LISTED} more" if len(names) > LISTED else shown


def _drafts(catalog: Catalog, picks: Mapping[DatasetType, Choice]) -> list[DatasetDraft]:
    """A draft per picked type, in type order. An event table's user and item tables are the
    picked ones, else the ones guessed from the names."""
    guessed, _ = pick_tables(catalog)
    targets: dict[str, Table | None] = {}
    referred: tuple[DatasetType, ...] = ("user", "item")
    for kind in referred:
        choice = picks.get(kind) or guessed.get(kind)
        targets[kind] = catalog.tables.get(choice.name or "") if choice else None
    drafts: list[DatasetDraft] = []
    for kind in DATASET_TYPES:
        if kind not in picks or picks[kind].name is None:
            continue
        table = catalog.tables[str(picks[kind].name)]
        name, n = spec_name(table.name, kind), 2
        while name in {d.name for d in drafts}:
            name, n = f"{spec_name(table.name, kind)}_{n}", n + 1
        drafts.append(draft_dataset(catalog, table, kind, name, targets))
    return drafts


def _write(path: Path, text: str, force: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("w" if force else "x", encoding="utf-8") as file:
            file.write(text)
    except FileExistsError:
        raise UsageError(f"{path} already exists: pass --force to overwrite it") from None
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror or error}") from error
    log.debug("wrote %s", path)
