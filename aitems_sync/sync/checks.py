"""``validate --connect``: the spec against its sources and against AiTEMS, without a run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aitems_sync.aitems.client import AitemsClient
from aitems_sync.errors import SpecError, SpecProblem
from aitems_sync.rows.shape import Shaper
from aitems_sync.source.extract import Source
from aitems_sync.spec.model import Spec


@dataclass
class ValidationReport:
    """What ``validate`` checked, one line a check, for the operator."""

    spec: Spec
    checks: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """What ``validate --json`` prints: a spec that failed raises instead."""
        return {"valid": True, "checks": list(self.checks)}


def check_queries(spec: Spec, sources: Mapping[str, Source], result: ValidationReport) -> None:
    """Each query's columns against its dataset's fields and cursor (SpecError lists all)."""
    problems: list[SpecProblem] = []
    for dataset in spec.datasets.values():
        source = sources[dataset.source]
        columns = source.columns(dataset.query)
        try:
            Shaper(dataset, columns, source.timezone)
        except SpecError as error:
            problems.extend(error.problems)
            continue
        lowered = [c.lower() for c in columns]
        missing = [(f"datasets.{dataset.name}.{where}", name)
                   for where, name in [("cursor", dataset.cursor),
                                       *((f"key[{i}]", k) for i, k in enumerate(dataset.key))]
                   if name not in columns and lowered.count(name.lower()) != 1]
        if missing:
            problems.extend(SpecProblem(
                str(spec.path), None, where,
                f"{name!r} is not a result column of the query (it returns: {', '.join(columns)})",
            ) for where, name in missing)
            continue
        result.checks.append(f"dataset {dataset.name}: query columns match the fields")
    if problems:
        raise SpecError(problems)


def check_aitems(spec: Spec, result: ValidationReport) -> None:
    """The credentials, the service, and each dataset's type and attachment, against AiTEMS."""
    client = AitemsClient.from_config(spec.aitems)
    try:
        service = client.get_service(spec.aitems.service_id)
        attached = {str(d.get("datasetId", d)) if isinstance(d, dict) else str(d)
                    for d in service.get("datasets", [])}
        result.checks.append(f"AiTEMS: credentials accepted, service {spec.aitems.service_id} "
                             "found")
        problems = []
        for dataset in spec.datasets.values():
            remote = client.get_dataset(dataset.dataset_id)
            key = f"datasets.{dataset.name}.dataset_id"
            if remote.get("type") != dataset.type:
                problems.append(SpecProblem(
                    str(spec.path), None, key,
                    f"AiTEMS dataset {dataset.dataset_id} is of type {remote.get('type')!r}, "
                    f"the spec says {dataset.type!r}"))
            elif attached and dataset.dataset_id not in attached:
                problems.append(SpecProblem(
                    str(spec.path), None, key,
                    f"AiTEMS dataset {dataset.dataset_id} is not attached to service "
                    f"{spec.aitems.service_id}"))
            else:
                result.checks.append(f"dataset {dataset.name}: AiTEMS dataset "
                                     f"{dataset.dataset_id} ({dataset.type}) is attached")
        if problems:
            raise SpecError(problems)
    finally:
        client.close()
