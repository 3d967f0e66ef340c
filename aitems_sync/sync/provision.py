"""``apply``'s plan: what AiTEMS must change to match the spec (pure; no I/O).

The plan compares the spec with what AiTEMS holds (:class:`Current`, read by
:mod:`aitems_sync.sync.apply`) and lists changes the way Terraform does:

- ``+``   create a schema (a dataset's fields, under its ``schema_name``) or the service;
- ``~``   update the service in place: the datasets attached, the cycle, the schedule;
- ``-/+`` replace a dataset whose fields changed: AiTEMS cannot edit a schema's fields, so a new
  schema (``<schema_name>_2``, ``_3``...) and a new dataset loaded by a fresh bootstrap take its
  place, and the old dataset is detached and kept (nothing is deleted);
- ``!``   a difference apply will not change (a service of another type, a replacement of a
  dataset pinned by ``dataset_id``): the plan fails with the reason.

A dataset that does not exist yet is listed as waiting for ``bootstrap``: apply provisions, it
does not load data, except in a replacement (which needs ``--allow-replace``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aitems_sync.aitems.schemas import remote_fields, shown_type
from aitems_sync.spec.model import DatasetSpec, Field, ServiceConfig, Spec

Resource = dict[str, Any]

CREATE, UPDATE, REPLACE, REFUSED, BOOTSTRAP = "+", "~", "-/+", "!", "..."
#: An AiTEMS name's length limit (schemas and datasets: 3 to 20 characters).
NAME_MAX = 20


@dataclass(frozen=True)
class Current:
    """What AiTEMS holds for the spec: its service, and per spec dataset its AiTEMS dataset
    (None: not created) and that dataset's schema; the schemas of each dataset type."""

    service: Resource | None
    datasets: Mapping[str, Resource | None]
    schemas: Mapping[str, Sequence[Resource]]  # dataset type -> every schema of that type
    #: Per spec dataset, detached datasets of its name (what a killed replacement left).
    leftovers: Mapping[str, Sequence[Resource]] = field(default_factory=dict)
    everything: Sequence[Resource] = ()  # every AiTEMS dataset of the account


@dataclass(frozen=True)
class Change:
    symbol: str  # CREATE, UPDATE, REPLACE, REFUSED or BOOTSTRAP
    kind: str  # "schema", "service" or "dataset"
    name: str  # the AiTEMS name (or the spec dataset's name for a dataset)
    details: tuple[str, ...] = ()
    # For a schema to create: its type and fields (AiTEMS form); for a replacement: the new
    # schema's name and the detached dataset to load into ("" for a new one).
    dataset_type: str = ""
    fields: tuple[Resource, ...] = ()
    dataset: str = ""  # the spec dataset it is about
    reuse_dataset_id: str = ""
    schema: str = ""  # the schema to create (or, for a replacement, to load into)

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.symbol, "kind": self.kind, "name": self.name,
                "details": list(self.details), **({"dataset": self.dataset} if self.dataset
                                                  else {})}


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    attach: tuple[str, ...] | None = None  # dataset ids to attach (user, item, interaction)
    term: str | None = None  # the cycle to set
    schedule: str | None = None  # "start" or "stop" at the end
    stop_first: bool = False  # the schedule runs and must be stopped for the changes

    @property
    def empty(self) -> bool:
        return not self.changes

    @property
    def refused(self) -> list[Change]:
        return [c for c in self.changes if c.symbol == REFUSED]

    @property
    def replacements(self) -> list[Change]:
        return [c for c in self.changes if c.symbol == REPLACE]

    def to_dict(self) -> dict[str, Any]:
        return {"changes": [c.to_dict() for c in self.changes], "empty": self.empty}


def aitems_fields(fields: Sequence[Field]) -> tuple[Resource, ...]:
    """The spec's fields as AiTEMS takes them: ``{name, type: [...], categorical?}``."""
    return tuple({"name": f.name, "type": list(f.types), **({"categorical": True}
                                                            if f.categorical else {})}
                 for f in fields)


def same_fields(spec: Sequence[Field], schema: Resource) -> bool:
    """Whether a schema holds exactly the spec's fields: names, order, types, categorical."""
    try:
        theirs = remote_fields(schema)
    except ValueError:
        return False
    return [(f.name, sorted(f.types), f.categorical) for f in spec] == \
        [(f.name, sorted(f.types), f.categorical) for f in theirs]


def field_changes(spec: Sequence[Field], schema: Resource) -> list[str]:
    """The schema's fields against the spec's, as a diff (``-`` AiTEMS, ``+`` the spec)."""
    import difflib

    def lines(fields: Sequence[Field]) -> list[str]:
        return [f"{f.name}: {shown_type(f)}{' (categorical)' if f.categorical else ''}"
                for f in fields]

    try:
        theirs = lines(remote_fields(schema))
    except ValueError:
        theirs = ["(unreadable fields)"]
    return [line for line in difflib.ndiff(theirs, lines(spec))
            if not line.startswith("?") and not line.startswith("  ")]


def schema_versions(base: str, schemas: Sequence[Resource]) -> list[Resource]:
    """The schemas named ``base`` or ``base_N`` (a replacement's), oldest version first."""
    stem = base[: NAME_MAX - 4]
    pattern = re.compile(rf"(?:{re.escape(base)}|{re.escape(stem)}_([2-9]|[1-9][0-9]{{1,2}}))")

    def version(schema: Resource) -> int:
        match = pattern.fullmatch(str(schema.get("name")))
        return -1 if match is None else int(match.group(1) or 1)

    return sorted((s for s in schemas if version(s) > 0), key=version)


def matching_schema(dataset: DatasetSpec, schemas: Sequence[Resource]) -> Resource | None:
    """The newest of the dataset's schema versions that holds exactly its fields."""
    base = dataset.schema_base
    found = [s for s in schema_versions(base, schemas) if same_fields(dataset.fields, s)] \
        if base else []
    return found[-1] if found else None


def next_schema_name(base: str, schemas: Sequence[Resource]) -> str:
    """The name of a new version of ``base``: ``base`` itself if free, else ``base_2``..."""
    taken = {str(s.get("name")) for s in schemas}
    if base not in taken:
        return base
    stem = base[: NAME_MAX - 4]
    return next(f"{stem}_{n}" for n in range(2, 1000) if f"{stem}_{n}" not in taken)


def make_plan(spec: Spec, current: Current, *, allow_replace: bool) -> Plan:
    """The changes that make AiTEMS match the spec (see the module docstring)."""
    plan = Plan()
    new_schemas: dict[str, list[Resource]] = {}
    ids: dict[str, str | None] = {}  # per type: the dataset to attach (None: not there yet)
    waiting: list[Change] = []  # datasets bootstrap is to create, listed last
    by_type: dict[str, list[str]] = {}
    for dataset in spec.datasets.values():
        by_type.setdefault(dataset.type, []).append(dataset.name)
    for dataset in spec.datasets.values():
        schemas = [*current.schemas.get(dataset.type, ()), *new_schemas.get(dataset.type, ())]
        change = _dataset_change(dataset, current, schemas, allow_replace)
        remote = current.datasets.get(dataset.name)
        if remote is None:
            waiting.append(Change(BOOTSTRAP, "dataset", dataset.name, (
                f"AiTEMS dataset {dataset.dataset_name or dataset.dataset_id} does not exist: "
                f"`aitems-sync bootstrap {dataset.name}` creates it from its first full load",),
                dataset=dataset.name))
        ids[dataset.type] = None if change is not None and change.symbol != REFUSED else (
            str(remote["datasetId"]) if remote else None)
        if change is None:
            continue
        plan.changes.append(change)
        if change.symbol in (CREATE, REPLACE):
            new_schemas.setdefault(dataset.type, []).append({"name": change.schema})
    if spec.service is not None or current.service is not None:
        twice = {kind: names for kind, names in by_type.items() if len(names) > 1}
        if twice:
            kind, names = next(iter(twice.items()))
            plan.changes.append(Change(REFUSED, "service", _service_name(spec, current), (
                f"datasets {' and '.join(names)} are both {kind} datasets, and a service takes "
                "one dataset of each type: keep one in this spec (another spec may feed "
                "another service)",)))
        else:
            _service_changes(spec, current, ids, plan)
    plan.changes.extend(waiting)
    return plan


def _dataset_change(dataset: DatasetSpec, current: Current, schemas: Sequence[Resource],
                    allow_replace: bool) -> Change | None:
    remote = current.datasets.get(dataset.name)
    if remote is None:
        if matching_schema(dataset, schemas) is not None or not dataset.schema_base:
            return None
        name = next_schema_name(dataset.schema_base, schemas)
        return Change(CREATE, "schema", name, tuple(
            f"+ {f.name}: {shown_type(f)}{' (categorical)' if f.categorical else ''}"
            for f in dataset.fields), dataset.type, aitems_fields(dataset.fields), dataset.name,
            schema=name)
    schema = next((s for s in schemas if s.get("name") == remote.get("schemaName")), None)
    if schema is not None and same_fields(dataset.fields, schema):
        return None
    diff = tuple(field_changes(dataset.fields, schema or {}))
    if not dataset.dataset_name:
        return Change(REFUSED, "dataset", dataset.name, (
            f"its fields differ from AiTEMS schema {remote.get('schemaName')}, and a field "
            "change replaces the dataset: dataset_id pins it, so give it a dataset_name "
            "instead to let apply replace it", *diff), dataset=dataset.name)
    if not allow_replace:
        return Change(REFUSED, "dataset", dataset.name, (
            f"its fields differ from AiTEMS schema {remote.get('schemaName')}: AiTEMS cannot "
            "edit a schema's fields, so the dataset must be replaced (new schema, new dataset "
            "from a fresh bootstrap, re-attached, its state reset); run apply with "
            "--allow-replace", *diff), dataset=dataset.name)
    base = dataset.schema_base or ""
    reuse = next((d for d in current.leftovers.get(dataset.name, ())
                  if any(s.get("name") == d.get("schemaName") and same_fields(dataset.fields, s)
                         for s in schemas)), None)
    existing = matching_schema(dataset, schemas)  # made by an apply that stopped after it
    name = str(reuse["schemaName"]) if reuse else str(existing["name"]) if existing else \
        next_schema_name(base, schemas)
    return Change(REPLACE, "dataset", dataset.name, (
        f"schema {remote.get('schemaName')} -> {name}", *diff,
        f"AiTEMS dataset {remote.get('datasetId')} is detached and kept"), dataset.type,
        aitems_fields(dataset.fields) if reuse is None and existing is None else (),
        dataset.name, str(reuse["datasetId"]) if reuse else "", name)


def _service_name(spec: Spec, current: Current) -> str:
    return spec.service.name if spec.service else str((current.service or {}).get(
        "name") or spec.aitems.service_id)


def _service_changes(spec: Spec, current: Current, ids: Mapping[str, str | None],
                     plan: Plan) -> None:
    """The service's changes: created, its datasets attached (the spec's of each type, the
    attached ones for types the spec does not feed), its cycle set, its schedule as the spec
    says. A service object without ``term`` or ``schedule`` (AiTEMS documents neither) leaves
    them unknown: apply then sets them whenever it changes the service, and cannot see drift
    in them alone."""
    wanted, service = spec.service, current.service
    name = _service_name(spec, current)
    if service is None:
        assert wanted is not None
        plan.changes.append(Change(CREATE, "service", wanted.name, (f"type {wanted.type}",)))
        service = {"type": wanted.type, "datasets": [], "term": None, "schedule": "stopped"}
    refused = _service_refusal(spec, current)
    if refused:
        plan.changes.append(Change(REFUSED, "service", name, (refused,)))
        return
    details: list[str] = []
    attached = _attached_by_type(service, current)
    want = {kind: ids.get(kind) or (None if kind in ids else attached.get(kind))
            for kind in ("user", "item", "interaction")}
    complete = all(want.values())
    missing = [kind for kind in want if kind not in ids and kind not in attached]
    if missing:
        plan.changes.append(Change(REFUSED, "service", name, (
            "a service takes one dataset of each type (user, item, interaction), and neither "
            f"the spec nor the service has a {' or '.join(missing)} dataset: add it to the "
            "spec (or attach one in the console)",)))
        return
    if complete and {str(i) for i in want.values()} != set(attached.values()):
        plan.attach = tuple(str(want[kind]) for kind in ("user", "item", "interaction"))
        details.append(f"datasets [{', '.join(attached.values()) or 'none'}] -> "
                       f"[{', '.join(plan.attach)}]")
    elif plan.replacements:
        details.append("datasets: the new ones attached in place of the replaced")
    _cycle_and_schedule(wanted, service, details, plan, complete)
    if current.service is None:
        plan.changes[-1] = Change(CREATE, "service", name, (*plan.changes[-1].details,
                                                               *details))
    elif details:
        plan.changes.append(Change(UPDATE, "service", name, tuple(details)))


def _service_refusal(spec: Spec, current: Current) -> str | None:
    """Why apply will not touch the service: its type or name differ from the spec's."""
    wanted, service = spec.service, current.service
    if wanted is None or service is None:
        return None
    if service.get("type") != wanted.type:
        return (f"AiTEMS service {service.get('serviceId')} is of type {service.get('type')!r}, "
                f"the spec says {wanted.type!r}: a service's type cannot change; give "
                "service.name a new service's name (apply creates it, and deletes nothing)")
    if service.get("name") not in (None, wanted.name):
        return (f"aitems.service_id {service.get('serviceId')} is the service named "
                f"{service.get('name')!r}, the spec's service.name says {wanted.name!r}: fix "
                "one of them")
    return None


def _attached_by_type(service: Resource, current: Current) -> dict[str, str]:
    """The service's attached datasets, by type."""
    known = {str(d.get("datasetId")): d
             for d in [*current.everything, *(r for r in current.datasets.values() if r)]}
    found: dict[str, str] = {}
    for entry in service.get("datasets") or []:
        if isinstance(entry, dict):
            dataset_id = str(entry.get("datasetId"))
            kind = entry.get("type") or known.get(dataset_id, {}).get("type")
            if kind:
                found[str(kind)] = dataset_id
    return found


def _cycle_and_schedule(wanted: ServiceConfig | None, service: Resource, details: list[str],
                        plan: Plan, complete: bool) -> None:
    changing = bool(plan.attach or plan.replacements)
    if wanted is not None and wanted.term:
        if "term" not in service:  # unknown: set whenever the service changes
            plan.term = wanted.term if changing else None
        elif service.get("term") != wanted.term:
            plan.term = wanted.term
            details.append(f"cycle {service.get('term') or 'none'} -> {wanted.term}")
    known = "schedule" in service
    running = service.get("schedule") == "running" if known else None
    if wanted is None:  # only a replacement: the schedule as it was
        want_running = bool(running)
    else:
        want_running = (wanted.type == "interval" and wanted.schedule
                        and (complete or changing or bool(service.get("datasets"))))
    if changing or plan.term:
        plan.stop_first = running is not False and (wanted is not None or bool(running))
        plan.schedule = "start" if want_running else None
        if plan.stop_first:
            details.append("schedule stopped for the changes"
                           + (", then started again" if want_running else ""))
        elif want_running:
            details.append("schedule started")
    elif known and want_running != running:
        plan.schedule = "start" if want_running else "stop"
        details.append(f"schedule {'running' if running else 'stopped'} -> "
                       f"{'running' if want_running else 'stopped'}")
