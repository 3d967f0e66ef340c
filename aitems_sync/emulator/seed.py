"""The emulator's seed file: read with the line of every entry and key, and applied to the model
with every problem reported once, at its file:line.

A seed (see examples/emulator-seed.yaml) lists key pairs, then schemas, datasets and services,
each created through the same checks as the API's calls. An entry that refers to one that was
refused (a dataset whose schema, a service whose dataset, is invalid) is skipped without a
problem of its own: the one mistake is reported once, where it is, not again at every entry
that depends on it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from aitems_sync.emulator.model import Model
from aitems_sync.emulator.objects import SEEDED_ID_RE
from aitems_sync.emulator.rows import Problem, Rejection
from aitems_sync.errors import UsageError

#: The sections created in order: (key, kind, the key of an entry's own name or id).
SECTIONS = (("schemas", "schema", "name"), ("datasets", "dataset", "datasetId"),
            ("services", "service", "serviceId"))
#: The key of each kind's entries that names what it depends on, and the kind it names.
_DEPENDS_ON = {"dataset": ("schemaName", "schema"), "service": ("datasets", "dataset")}
#: Problems of the API's calls that name a key the seed spells differently.
_SEED_KEYS = {"datasetIds": "datasets"}


class Seed(dict[str, Any]):
    """A seed file's content (a dict), with its path and the line of each entry and key."""

    def __init__(self, data: Mapping[str, Any], path: Path, lines: Mapping[str, int]) -> None:
        super().__init__(data)
        self.path = path
        self.lines = dict(lines)

    def where(self, key_path: str) -> str:
        """``FILE:LINE: `` of ``key_path`` (``schemas[0].fields[1].type``) or of the nearest
        enclosing key the file has."""
        probe = key_path
        while probe and probe not in self.lines:
            probe = probe[:max(probe.rfind("."), probe.rfind("["), 0)]
        return f"{self.path}:{self.lines.get(probe, 1)}: "


def load_seed(path: Path | str) -> Seed:
    """Read a seed file (YAML or JSON; see examples/emulator-seed.yaml); UsageError at its
    file:line when it cannot be read or is not a mapping."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = f"{mark.line + 1}:" if mark is not None else ""
        raise UsageError(f"cannot read the emulator seed: {path}:{line} {error.problem or error}"
                         "; it must be YAML or JSON (see examples/emulator-seed.yaml)") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise UsageError(f"cannot read the emulator seed {path}: {error}; it must be a YAML "
                         "or JSON text file (see examples/emulator-seed.yaml)") from error
    if data is None:
        return Seed({}, path, {})
    if not isinstance(data, dict):
        raise UsageError(f"the emulator seed {path}:1: must be a mapping with keys, schemas, "
                         "datasets and services")
    lines: dict[str, int] = {}
    _walk(node, "", lines)
    return Seed(data, path, lines)


def _walk(node: yaml.Node | None, path: str, lines: dict[str, int]) -> None:
    """Record the 1-based line of ``node`` and everything under it, by key path."""
    if node is None:
        return
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = f"{path}.{key.value}" if path else str(key.value)
            lines.setdefault(child, key.start_mark.line + 1)
            _walk(value, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, f"{path}[{index}]", lines)


def apply_seed(model: Model, seed: Mapping[str, Any]) -> dict[str, str]:
    """Create the seed's schemas, datasets and services (those that exist are kept as they are).

    Returns the seed's key pairs. Raises `UsageError` listing every problem of the seed, each
    once, at its file:line when the seed came from `load_seed`.
    """
    where: Callable[[str], str] = seed.where if isinstance(seed, Seed) else lambda _path: ""
    problems: list[str] = []
    keys = _seed_keys(seed.get("keys") or [], problems, where)
    refused: dict[str, set[str]] = {"schema": set(), "dataset": set()}
    for section, kind, id_key in SECTIONS:
        entries = seed.get(section) or []
        if not isinstance(entries, list):
            problems.append(f"{where(section)}{section} must be a list")
            continue
        for index, entry in enumerate(entries):
            at = f"{section}[{index}]"
            if _depends_on_refused(kind, entry, refused):
                _refuse(kind, id_key, entry, refused)
                continue
            try:
                _seed_one(model, kind, id_key, entry)
            except Rejection as rejection:
                _refuse(kind, id_key, entry, refused, model)
                located = [(p.field, p.message) for p in rejection.problems]
                for field, reason in located or [(None, rejection.details)]:
                    key = _SEED_KEYS.get(field or "", field)
                    problems.append(f"{where(f'{at}.{key}' if key else at)}{at}: {reason}")
    if problems:
        raise UsageError("the emulator seed is invalid:\n" + "\n".join(f"  {p}" for p in problems))
    return keys


def _depends_on_refused(kind: str, entry: Any, refused: Mapping[str, set[str]]) -> bool:
    """Whether the entry names a schema or dataset the seed failed to create."""
    if kind not in _DEPENDS_ON or not isinstance(entry, dict):
        return False
    key, other = _DEPENDS_ON[kind]
    named = entry.get(key)
    names = named if isinstance(named, list) else [named]
    return any(isinstance(n, str) and n in refused[other] for n in names)


def _refuse(kind: str, id_key: str, entry: Any, refused: dict[str, set[str]],
            model: Model | None = None) -> None:
    """Remember that the entry's schema or dataset was not created (unless one by that name
    exists anyway, which its dependents may use)."""
    name = entry.get(id_key) if isinstance(entry, dict) else None
    if kind in refused and isinstance(name, str) and not (model and model.has(kind, name)):
        refused[kind].add(name)


def _seed_keys(entries: Any, problems: list[str], where: Callable[[str], str]
               ) -> dict[str, str]:
    keys: dict[str, str] = {}
    for index, entry in enumerate(entries if isinstance(entries, list) else [None]):
        access = entry.get("access_key") if isinstance(entry, dict) else None
        secret = entry.get("secret_key") if isinstance(entry, dict) else None
        if isinstance(access, str) and isinstance(secret, str) and access and secret:
            keys[access] = secret
        else:
            at = f"keys[{index}]" if isinstance(entries, list) else "keys"
            problems.append(f"{where(at)}keys[{index}] must be {{access_key, secret_key}} "
                            "strings")
    return keys


def _seed_one(model: Model, kind: str, id_key: str, entry: Any) -> None:
    if not isinstance(entry, dict):
        raise Rejection(400, f"each {kind} must be a mapping")
    body = {k: v for k, v in entry.items() if k not in (id_key, "datasets") or kind == "schema"}
    fixed = entry.get(id_key)
    if kind != "schema" and fixed is not None and not (
        isinstance(fixed, str) and SEEDED_ID_RE.fullmatch(fixed)
    ):
        message = f"{id_key} must be letters, digits, '_' or '-'"
        raise Rejection(400, message, [Problem(None, id_key, message)])
    if isinstance(fixed, str) and model.has(kind, fixed):
        return  # kept from the --state file
    if kind == "schema":
        model.create_schema(body)
    elif kind == "dataset":
        model.create_dataset(body, dataset_id=fixed)
    else:
        service_id = model.create_service(body, service_id=fixed)["serviceId"]
        if entry.get("datasets"):
            model.attach_datasets(service_id, {"datasetIds": entry["datasets"]})
