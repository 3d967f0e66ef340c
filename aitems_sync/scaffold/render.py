"""The text of the starter spec and of the emulator seed, from the drafts. Pure.

The spec is written line by line, not dumped, so that every choice carries its comment; the
seed is plain data (the same fields, in the same order, as each dataset's schema).
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from typing import Any

import yaml

from aitems_sync.scaffold.catalog import Catalog
from aitems_sync.scaffold.draft import DatasetDraft, FieldDraft
from aitems_sync.scaffold.names import (
    EMULATOR_ACCESS_KEY,
    EMULATOR_ENDPOINT,
    EMULATOR_SECRET_KEY,
    Local,
    SourceUrl,
)

WIDTH = 100
DATASET_TYPES = ("user", "item", "interaction")


def comment(text: str, indent: int) -> list[str]:
    """``text`` as YAML comment lines at ``indent``, wrapped to the width."""
    pad = " " * indent
    return textwrap.wrap(text, WIDTH - indent - 2, initial_indent=f"{pad}# ",
                         subsequent_indent=f"{pad}# ", break_on_hyphens=False,
                         break_long_words=False)


def scalar(value: str) -> str:
    """A YAML string, plain when YAML reads it back as the same string, else quoted."""
    try:
        plain = yaml.safe_load(f"k: {value}")
    except yaml.YAMLError:
        plain = None
    if isinstance(plain, dict) and plain.get("k") == value and "#" not in value:
        return value
    return json.dumps(value, ensure_ascii=False)


def type_text(types: Sequence[str]) -> str:
    if len(types) == 1:
        return types[0]
    return "[" + ", ".join('"null"' if t == "null" else t for t in types) + "]"


def render_spec(catalog: Catalog, drafts: Sequence[DatasetDraft], source_name: str,
                source: SourceUrl, local: Local, commands: Sequence[str]) -> str:
    """The starter spec: a header saying how to run it, then aitems, state, the source and
    each dataset."""
    tables = ", ".join(d.table for d in drafts)
    lines = [
        *comment(f"A starter spec written by `aitems-sync init` from the tables {tables} of "
                 f"{source.shown}. Lines marked \"decide:\" are choices to check, and "
                 "\"todo:\" what to do before it runs; docs/spec.md (\"Starting a spec\") "
                 "says how columns became fields.", 0),
        "#",
        *comment("Each value falls back to the local AiTEMS emulator that the seed written "
                 "with this file starts, so this runs as it is:", 0),
        *(f"#   {command}" for command in commands),
        *comment("For AiTEMS itself, set AITEMS_ENDPOINT, AITEMS_SERVICE_ID, NCP_ACCESS_KEY "
                 "and NCP_SECRET_KEY (or write ${file:/path} for the secret key) and "
                 + ", ".join(local.variables[d.name] for d in drafts) + ".", 0),
        "version: 1",
        "",
        "aitems:",
        f"  endpoint: ${{AITEMS_ENDPOINT:-{EMULATOR_ENDPOINT}}}",
        f"  service_id: ${{AITEMS_SERVICE_ID:-{local.service_id}}}",
        f"  access_key: ${{NCP_ACCESS_KEY:-{EMULATOR_ACCESS_KEY}}}",
        f"  secret_key: ${{NCP_SECRET_KEY:-{EMULATOR_SECRET_KEY}}}",
        "",
        *comment("The state store (marks, ledger, quarantine), next to this file; on "
                 "Kubernetes, a PostgreSQL URL.", 0),
        "state: sqlite:///state/aitems-sync.db",
        "",
        "sources:",
        f"  {source_name}:",
        *(comment(f"todo: {source.note}", 4) if source.note else []),
        f"    url: {scalar(source.value)}",
        *(comment("decide: the time zone the database's times without zone are in",
                  4) if any(d.naive_times for d in drafts) else []),
        "    timezone: UTC",
        "",
        "datasets:",
    ]
    for index, draft in enumerate(drafts):
        lines += ([""] if index else []) + _dataset(catalog, draft, local)
    return "\n".join(lines) + "\n"


def _dataset(catalog: Catalog, draft: DatasetDraft, local: Local) -> list[str]:
    lines = [*comment(f"The {draft.type} dataset, from table {draft.table}.", 2)]
    lines += [line for todo in draft.todo for line in comment(f"todo: {todo}", 2)]
    lines += [
        f"  {draft.name}:",
        f"    type: {draft.type}",
        f"    dataset_id: ${{{local.variables[draft.name]}:-{local.dataset_ids[draft.name]}}}",
        *_query(catalog, draft),
    ]
    cursor = draft.cursor
    if cursor.column is not None:
        lines += comment(f"cursor {cursor.column}: {cursor.why}.", 4)
        if cursor.advice:
            lines += comment(f"decide: {cursor.advice}.", 4)
    else:
        lines += comment(f"todo: {cursor.why}: {cursor.advice}.", 4)
    lines.append(f"    cursor: {scalar(draft.cursor_name)}")
    if draft.lookback:
        lines += comment("Re-read this window behind the mark for rows committed late: at "
                         "least your longest write transaction.", 4)
        lines.append(f"    lookback: {draft.lookback}")
    if draft.key_why:
        lines += comment(f"key: {draft.key_why}.", 4)
        if draft.key:
            lines.append("    key: [" + ", ".join(scalar(k) for k in draft.key) + "]")
    lines.append("    fields:")
    for field in draft.fields:
        lines += _field(field)
    lines += [line for left in draft.left_out for line in comment(left, 4)]
    return lines


def _query(catalog: Catalog, draft: DatasetDraft) -> list[str]:
    parts = [f"{catalog.preparer.quote(f.column)} AS {catalog.alias(f.name)}"
             for f in draft.fields if f.column is not None]
    parts += [catalog.preparer.quote(column) + (
        "" if result == column else f" AS {catalog.alias(result)}")
        for column, result in draft.extra]
    columns = [f"  {part}," for part in parts or ["*"]]
    columns[-1] = columns[-1].rstrip(",")
    query = ["SELECT", *columns, f"FROM {catalog.from_clause(draft.table)}"]
    text = "\n".join(query).replace("$", "$$")  # a literal $ in the spec is written $$
    if all(line.isprintable() for line in text.splitlines()):
        return ["    query: |", *(f"      {line}" for line in text.splitlines())]
    return [f"    query: {json.dumps(text, ensure_ascii=False)}"]


def _field(field: FieldDraft) -> list[str]:
    line = f"      - {{name: {scalar(field.name)}, type: {type_text(field.types)}"
    line += ", categorical: true}" if field.categorical else "}"
    if not field.comment:
        return [line]
    if len(line) + len(field.comment) + 3 <= WIDTH:
        return [f"{line}  # {field.comment}"]
    return [*comment(field.comment, 6), line]


def render_seed(drafts: Sequence[DatasetDraft], local: Local, spec_file: str,
                command: str) -> str:
    """The emulator seed: its key pair, a schema and a dataset per spec dataset, and the
    service (with the datasets attached when there is one of each type, as AiTEMS wants)."""
    seed: dict[str, Any] = {
        "keys": [{"access_key": EMULATOR_ACCESS_KEY, "secret_key": EMULATOR_SECRET_KEY}],
        "schemas": [{"name": local.aitems_names[d.name], "datasetType": d.type,
                     "fields": [_schema_field(f) for f in d.fields]} for d in drafts],
        "datasets": [{"datasetId": local.dataset_ids[d.name], "type": d.type,
                      "name": local.aitems_names[d.name],
                      "schemaName": local.aitems_names[d.name],
                      "osInfo": {"region": "KR", "bucket": "local",
                                 "key": f"{local.aitems_names[d.name]}.csv"}}
                     for d in drafts],
        "services": [{"serviceId": local.service_id, "name": local.service_name,
                      "type": "interval"}],
    }
    if sorted(d.type for d in drafts) == sorted(DATASET_TYPES):
        seed["services"][0]["datasets"] = [local.dataset_ids[d.name] for d in drafts]
    head = [*comment(f"Seed for the local AiTEMS emulator, written by `aitems-sync init` "
                     f"with {spec_file}, whose values fall back to its key pair, service and "
                     "dataset IDs. Start it with:", 0), f"#   {command}"]
    body = yaml.safe_dump(seed, sort_keys=False, default_flow_style=None, width=WIDTH,
                          allow_unicode=True)
    return "\n".join(head) + "\n" + body


def _schema_field(field: FieldDraft) -> dict[str, Any]:
    found: dict[str, Any] = {"name": field.name, "type": list(field.types)}
    if field.categorical:
        found["categorical"] = True
    return found
