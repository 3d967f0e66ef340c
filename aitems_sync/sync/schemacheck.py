"""Each dataset's fields against its AiTEMS schema, fetched once per run (``run`` and
``validate --connect``).

A dataset's schema takes two GETs (the dataset names its schema; the schema holds the fields),
made the first time the dataset is checked and kept for the run; datasets sharing a schema
fetch it once. The comparison itself is :func:`aitems_sync.aitems.schemas.compare_fields`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Protocol

from aitems_sync.aitems.schemas import compare_fields, field_diff, remote_fields
from aitems_sync.errors import SpecProblem
from aitems_sync.spec.model import DatasetSpec, Field, Spec


class SchemaReader(Protocol):
    """The two calls the check needs from the AiTEMS client."""

    def get_dataset(self, dataset_id: str) -> dict[str, Any]: ...

    def get_schema(self, schema_name: str) -> dict[str, Any]: ...


class SchemaCheck:
    """The spec's datasets against AiTEMS, each dataset and schema fetched once (thread-safe)."""

    def __init__(self, reader: SchemaReader) -> None:
        self._reader = reader
        self._lock = threading.Lock()
        self._datasets: dict[str, dict[str, Any]] = {}
        self._schemas: dict[str, dict[str, Any]] = {}

    def dataset(self, dataset_id: str) -> dict[str, Any]:
        """The AiTEMS dataset object (ApiError when AiTEMS does not give it)."""
        with self._lock:
            if dataset_id not in self._datasets:
                self._datasets[dataset_id] = self._reader.get_dataset(dataset_id)
            return self._datasets[dataset_id]

    def schema(self, name: str) -> dict[str, Any]:
        """The AiTEMS schema object named ``name``."""
        with self._lock:
            if name not in self._schemas:
                self._schemas[name] = self._reader.get_schema(name)
            return self._schemas[name]

    def problems(self, spec: Spec, dataset: DatasetSpec
                 ) -> tuple[list[SpecProblem], list[SpecProblem]]:
        """Every way the dataset's type and fields differ from AiTEMS's, located in the spec:
        the problems (none when its uploads would fit) and the warnings."""
        remote = self.dataset(dataset.dataset_id)
        if remote.get("type") != dataset.type:
            return [spec.problem(
                ("datasets", dataset.name, "type"),
                f"AiTEMS dataset {dataset.dataset_id} is of type {remote.get('type')!r}, but "
                f"the spec says {dataset.type!r}: fix type or dataset_id")], []
        name = str(remote.get("schemaName", ""))
        try:
            theirs = remote_fields(self.schema(name))
        except ValueError as error:
            return [spec.problem(("datasets", dataset.name, "dataset_id"),
                                 f"AiTEMS schema {name!r} of dataset {dataset.dataset_id} cannot "
                                 f"be read ({error}); check the schema in the AiTEMS console")], []
        return field_problems(spec, dataset, name, theirs)


def field_problems(spec: Spec, dataset: DatasetSpec, schema_name: str, remote: Sequence[Field]
                   ) -> tuple[list[SpecProblem], list[SpecProblem]]:
    """The differences of the dataset's fields from the AiTEMS schema's, each at the spec line
    of the field it is about, then the whole diff at ``fields``; and the warnings (pure)."""
    where = ("datasets", dataset.name, "fields")
    found = compare_fields(dataset.fields, remote)
    located = [(p.warning, spec.problem(where if p.index is None else (*where, p.index),
                                        f"dataset {dataset.name}: {p.message}")) for p in found]
    problems = [p for warning, p in located if not warning]
    warnings = [p for warning, p in located if warning]
    if problems:
        diff = "\n".join(f"      {line}" for line in field_diff(dataset.fields, remote))
        problems.append(spec.problem(
            where, f"dataset {dataset.name}: the fields differ from AiTEMS schema {schema_name} "
            f"of dataset {dataset.dataset_id} (- AiTEMS only, + the spec only); AiTEMS would "
            f"refuse every row. `aitems-sync schema pull {dataset.name}` prints the schema as "
            f"fields:\n{diff}"))
    return problems, warnings
