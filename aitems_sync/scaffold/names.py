"""The names ``init`` gives things, decided purely: the source and its URL as the spec writes it
(never with a password), the datasets, their environment variables, and the IDs and names of
the local emulator's service, schemas and datasets that the spec falls back to."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath

import sqlalchemy as sa

from aitems_sync.redact import url_for_display, url_secrets

#: The emulator's key pair that the spec falls back to: not a secret, it opens only the
#: emulator that the seed starts.
EMULATOR_ACCESS_KEY = "emulator-access-key"
EMULATOR_SECRET_KEY = "emulator-secret-key"
EMULATOR_ENDPOINT = "http://127.0.0.1:8787/api/v1"
#: The AiTEMS rule for schema and dataset names: 3 to 20 letters, digits, '_' or '-',
#: starting with a letter.
AITEMS_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{2,19}")


@dataclass(frozen=True)
class SourceUrl:
    """How the spec writes the source URL: ``value`` (a ``${VAR...}`` reference), and a
    ``note`` when the person must set the variable before a run."""

    variable: str
    value: str
    shown: str  # the URL with its secrets masked, for messages and the spec's header
    note: str = ""


@dataclass(frozen=True)
class Local:
    """The IDs and names the spec falls back to and the seed creates, per spec dataset."""

    service_id: str
    service_name: str
    dataset_ids: Mapping[str, str]
    aitems_names: Mapping[str, str]
    variables: Mapping[str, str]  # each dataset's environment variable for its dataset_id


def spec_name(text: str, fallback: str) -> str:
    """A name the spec accepts for a source or a dataset: letters, digits, ``_`` and ``-``."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or fallback


def source_name(url: str) -> str:
    """The source's name: the database's name (a SQLite file's stem), else ``db``."""
    try:
        database = sa.make_url(url).database or ""
    except sa.exc.ArgumentError:
        database = ""
    return spec_name(PurePath(database).stem if database else "", "db")


def variable(name: str) -> str:
    """``shop`` -> ``SHOP``: a name as part of an environment variable's name."""
    return re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_") or "DB"


def source_url(url: str, name: str, *, variable_name: str | None, spec_dir: str,
               cwd: str) -> SourceUrl:
    """The source URL as the spec writes it: always through a variable (``--url-env``, else
    ``<SOURCE>_DATABASE_URL``); with the URL as its default when it holds no secret, so the
    spec runs as it is; without one when it does, and the note says to set the variable. A
    relative SQLite path is rewritten against the spec's folder, where the spec resolves it."""
    var = variable_name or f"{variable(name)}_DATABASE_URL"
    shown = url_for_display(url)
    if url_secrets(url):
        return SourceUrl(var, f"${{{var}}}", shown, f"the URL holds a password, so the spec "
                         f"reads it from {var}: set it before validate and run")
    written = _relative_sqlite(url, spec_dir, cwd)
    if "{" in written or "}" in written:
        return SourceUrl(var, f"${{{var}}}", shown, f"the URL holds braces, which a default "
                         f"cannot: set {var} before validate and run")
    return SourceUrl(var, f"${{{var}:-{written}}}", url_for_display(written))


def _relative_sqlite(url: str, spec_dir: str, cwd: str) -> str:
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        return url
    database = parsed.database
    if (parsed.get_backend_name() != "sqlite" or not database or database == ":memory:"
            or os.path.isabs(database) or parsed.query.get("uri") or database.startswith(
                "file:")):
        return url
    try:
        moved = os.path.relpath(os.path.join(cwd, database), spec_dir)
    except ValueError:  # another drive, on Windows: keep it absolute
        moved = os.path.join(cwd, database)
    return str(parsed.set(database=PurePath(moved).as_posix()).render_as_string(
        hide_password=False))


def aitems_name(text: str, taken: Sequence[str]) -> str:
    """A name AiTEMS accepts (see AITEMS_NAME), unique among ``taken``."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_-")
    if not name or not name[0].isalpha():
        name = f"d{name}"
    name = name[:20].ljust(3, "_")
    unique, n = name, 2
    while unique in taken:
        unique, n = f"{name[:20 - len(str(n)) - 1]}_{n}", n + 1
    return unique


def local_ids(source: str, datasets: Sequence[str]) -> Local:
    """The emulator's IDs and names for the service and each spec dataset."""
    ids: dict[str, str] = {}
    names: dict[str, str] = {}
    variables: dict[str, str] = {}
    for dataset in datasets:
        names[dataset] = aitems_name(dataset, list(names.values()))
        base = "ds" + re.sub(r"[^a-z0-9]", "", dataset.lower())[:20]
        unique, n = base, 2
        while unique in ids.values():
            unique, n = f"{base}{n}", n + 1
        ids[dataset] = unique
        var, n = f"AITEMS_{variable(dataset)}_DATASET_ID", 2
        while var in variables.values():
            var, n = f"AITEMS_{variable(dataset)}_{n}_DATASET_ID", n + 1
        variables[dataset] = var
    service = "svc" + re.sub(r"[^a-z0-9]", "", source.lower())[:20]
    return Local(service_id=service if len(service) > 3 else "svclocal",
                 service_name=aitems_name(source, []), dataset_ids=ids, aitems_names=names,
                 variables=variables)
