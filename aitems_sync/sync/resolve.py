"""Find the AiTEMS service and datasets a spec names rather than numbers.

A spec may give ``aitems.service_id`` and each ``dataset_id``, or name them (``service.name``,
``datasets.*.dataset_name``). Every command that talks to AiTEMS resolves the names first: one
``GET /services`` and one ``GET /datasets``, and only when something is named without an id. The
ids found are then used exactly like written ones (the state store binds marks to them, so a name
that later finds another dataset is refused until ``state reset``).

A name may be carried by several datasets: a replacement (``apply --allow-replace``) leaves the old
dataset behind, detached. The rule (`pick_dataset`): the datasets of the name and type; if several,
the one the state store binds the dataset's marks to, else the one attached to the service; if
that does not decide, a spec error listing their ids.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Protocol

from aitems_sync.errors import SpecError, SpecProblem
from aitems_sync.spec.model import AitemsConfig, DatasetSpec, Spec
from aitems_sync.state.store import StateStore

Resource = dict[str, Any]


class Directory(Protocol):
    """What resolving reads from AiTEMS."""

    def list_services(self) -> list[Resource]: ...

    def list_datasets(self) -> list[Resource]: ...


@dataclass(frozen=True)
class Found:
    """The AiTEMS service and datasets the spec refers to, None where there is none yet."""

    service: Resource | None
    datasets: Mapping[str, Resource | None]  # spec dataset name -> its AiTEMS dataset
    problems: tuple[SpecProblem, ...] = ()  # names that do not decide between several
    everything: tuple[Resource, ...] = ()  # every AiTEMS dataset of the account


def bound_ids(state: StateStore, datasets: Iterable[DatasetSpec]) -> dict[str, str]:
    """Per dataset named without an id, the AiTEMS dataset its marks are bound to, if any."""
    found = {}
    for dataset in datasets:
        binding = None if dataset.dataset_id else state.binding(dataset.name)
        if binding is not None:
            found[dataset.name] = binding[1]
    return found


def needs_lookup(spec: Spec, selected: Sequence[DatasetSpec] | None = None) -> bool:
    """Whether the spec names something (the service, or a selected dataset) without its id."""
    chosen = spec.datasets.values() if selected is None else selected
    return not spec.aitems.service_id or any(not d.dataset_id for d in chosen)


def pick_service(services: Sequence[Resource], name: str) -> list[Resource]:
    """The services called ``name``."""
    return [s for s in services if s.get("name") == name]


def pick_dataset(datasets: Sequence[Resource], dataset: DatasetSpec, service_id: str | None,
                 bound_id: str | None = None) -> list[Resource]:
    """The AiTEMS datasets ``dataset`` may refer to: by id if it gives one; else those of its
    name and type, narrowed to the one the state store is bound to (its marks belong to it),
    else to the one attached to the service, when there are several."""
    if dataset.dataset_id:
        return [d for d in datasets if d.get("datasetId") == dataset.dataset_id]
    named = [d for d in datasets
             if d.get("name") == dataset.dataset_name and d.get("type") == dataset.type]
    if len(named) > 1:
        bound = [d for d in named if bound_id and str(d.get("datasetId")) == bound_id]
        attached = [d for d in named if service_id and service_id in _services_of(d)]
        return bound or attached or named
    return named


def look_up(spec: Spec, api: Directory, names: Collection[str] | None = None,
            bound: Mapping[str, str] | None = None) -> Found:
    """What the spec's service and the datasets ``names`` (all when None) are at AiTEMS (None
    for those not created yet). ``bound``: per dataset, the AiTEMS dataset id the state store
    binds its marks to (it decides between datasets of one name). The service is listed only
    when it is named without an id, and the datasets only when one is named without an id."""
    chosen = [d for d in spec.datasets.values() if names is None or d.name in names]
    problems: list[SpecProblem] = []
    service: Resource | None = None
    if not spec.aitems.service_id and spec.service is not None:
        candidates = pick_service(api.list_services(), spec.service.name)
        if len(candidates) > 1:
            problems.append(_ambiguous(spec, ("service", "name"), "services",
                                       [str(c.get("serviceId")) for c in candidates],
                                       "aitems.service_id"))
        service = candidates[0] if len(candidates) == 1 else None
    service_id = spec.aitems.service_id or (str(service["serviceId"]) if service else None)
    everything = api.list_datasets() if any(not d.dataset_id for d in chosen) or (
        names is None and chosen) else []
    found: dict[str, Resource | None] = {}
    for dataset in chosen:
        candidates = pick_dataset(everything, dataset, service_id, (bound or {}).get(dataset.name))
        if len(candidates) > 1:
            problems.append(_ambiguous(spec, ("datasets", dataset.name, "dataset_name"),
                                       "datasets", [str(c.get("datasetId")) for c in candidates],
                                       f"datasets.{dataset.name}.dataset_id"))
        found[dataset.name] = candidates[0] if len(candidates) == 1 else None
    return Found(service, MappingProxyType(found), tuple(problems), tuple(everything))


def resolve(spec: Spec, api: Directory, selected: Sequence[DatasetSpec] | None = None, *,
            bound: Mapping[str, str] | None = None, service_needed: bool = True,
            datasets_needed: bool = True) -> Spec:
    """``spec`` with the service's and the ``selected`` datasets' ids filled in from AiTEMS
    (``bound`` as for :func:`look_up`).

    A name that finds nothing is a SpecError located at its key, saying how to create it, when
    the service or the datasets are ``needed``; otherwise its id stays empty (``status`` reports
    it missing, ``bootstrap`` creates the dataset). A name that finds several is always one."""
    if not needs_lookup(spec, selected):
        return spec
    names = {d.name for d in selected} if selected is not None else set(spec.datasets)
    found = look_up(spec, api, names, bound)
    problems = list(found.problems)
    aitems = spec.aitems
    if not aitems.service_id:
        if found.service is not None:
            aitems = replace(aitems, service_id=str(found.service["serviceId"]))
        elif service_needed and not found.problems:
            problems.append(spec.problem(("service", "name"), _no_service(spec)))
    datasets = dict(spec.datasets)
    for name in names:
        dataset, remote = spec.datasets[name], found.datasets[name]
        if dataset.dataset_id:
            continue
        if remote is not None:
            datasets[name] = replace(dataset, dataset_id=str(remote["datasetId"]))
        elif datasets_needed and not any(p.key.startswith(f"datasets.{name}.") for p in problems):
            problems.append(spec.problem(
                ("datasets", name, "dataset_name"),
                f"AiTEMS has no {dataset.type} dataset named {dataset.dataset_name!r}: create it "
                f"with `aitems-sync apply` (its schema) and `aitems-sync bootstrap {name}` (the "
                "dataset, from its first full load), or give its dataset_id"))
    if problems:
        raise SpecError(problems)
    return _with(spec, aitems, datasets)


def _with(spec: Spec, aitems: AitemsConfig, datasets: Mapping[str, DatasetSpec]) -> Spec:
    return replace(spec, aitems=aitems, datasets=MappingProxyType(dict(datasets)))


def _services_of(dataset: Resource) -> set[str]:
    connected = dataset.get("connectedServices") or []
    return {str(c.get("serviceId")) for c in connected if isinstance(c, dict)}


def _no_service(spec: Spec) -> str:
    name = spec.service.name if spec.service else ""
    return (f"AiTEMS has no service named {name!r}: create it with `aitems-sync apply`, or give "
            "aitems.service_id")


def _ambiguous(spec: Spec, key: tuple[str, ...], what: str, ids: Sequence[str],
               fix: str) -> SpecProblem:
    return spec.problem(key, f"{len(ids)} AiTEMS {what} carry this name ({', '.join(ids)}) and "
                        f"none is told apart by the service: set {fix} to the one meant")
