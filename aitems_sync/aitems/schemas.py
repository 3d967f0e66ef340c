"""The spec's fields against a dataset's AiTEMS schema: a pure comparison, and a diff to read.

AiTEMS takes a row only when its fields are the schema's, in the schema's order, each value of
one of the field's types (aitems-api.md). So a spec whose ``fields`` differ from the schema gets
every batch refused; these functions find that before anything is sent.

A spec field *matches* its AiTEMS field when every value the spec lets through is one AiTEMS
accepts: each of the spec's types is accepted by the AiTEMS type union (``ACCEPTED_BY``: an
``int`` is also a ``long``, a ``float`` or a ``double``; a ``long`` also a ``float`` or a
``double``; ``float`` and ``double`` are both any JSON number), and the spec allows null only
where AiTEMS does. A narrower spec type is fine (``string`` where AiTEMS has ``[string, null]``).
``categorical`` is not compared: it does not change what an upload may hold.

A ``long`` where AiTEMS has only ``int`` is a warning, not a mismatch: values within the signed
32-bit range are accepted, and AiTEMS refuses the others one by one (the run quarantines them).
Every other difference would have every row refused.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import yaml

from aitems_sync.spec.model import Field, FieldType

_TYPES: tuple[FieldType, ...] = ("string", "int", "long", "float", "double", "boolean", "null")

#: For each spec field type, the AiTEMS field types that accept all its values.
ACCEPTED_BY: Mapping[str, frozenset[str]] = {
    "string": frozenset({"string"}),
    "int": frozenset({"int", "long", "float", "double"}),
    "long": frozenset({"long", "int", "float", "double"}),  # int: a warning, see above
    "float": frozenset({"float", "double"}),
    "double": frozenset({"float", "double"}),
    "boolean": frozenset({"boolean"}),
    "null": frozenset({"null"}),
}


@dataclass(frozen=True)
class FieldProblem:
    """One difference between the spec's fields and the AiTEMS schema.

    ``index`` is the spec field it is about (its place in ``fields``), or None when it is
    about the list as a whole (a field the spec lacks, the order).
    """

    index: int | None
    message: str
    #: Only some rows may be refused (a narrower integer range): the dataset may still run.
    warning: bool = False


def remote_fields(schema: Mapping[str, Any]) -> tuple[Field, ...]:
    """The fields of a schema object as AiTEMS returns it (``{name, type: [...], categorical?}``).

    Raises ValueError when the answer does not hold a list of such fields.
    """
    raw = schema.get("fields")
    if not isinstance(raw, list):
        raise ValueError("the schema holds no list of fields")
    fields = []
    for item in raw:
        name = item.get("name") if isinstance(item, dict) else None
        types = item.get("type") if isinstance(item, dict) else None
        types = [types] if isinstance(types, str) else types
        if (not isinstance(name, str) or not isinstance(types, list)
                or not all(t in _TYPES for t in types)):
            raise ValueError("a field of the schema is not {name, type: [...]}")
        fields.append(Field(name, tuple(cast(FieldType, t) for t in types),
                            bool(item.get("categorical"))))
    return tuple(fields)


def shown_type(field: Field) -> str:
    """A field's type as the spec writes it: ``string``, or ``[int, "null"]``."""
    if len(field.types) == 1:
        return field.types[0]
    return "[" + ", ".join('"null"' if t == "null" else t for t in field.types) + "]"


def compare_fields(spec: Sequence[Field], remote: Sequence[Field]) -> list[FieldProblem]:
    """Every way the spec's fields differ from the AiTEMS schema's: names, types and
    nullability, then the order of the names both have. Empty when uploads would fit."""
    problems: list[FieldProblem] = []
    theirs = {f.name: f for f in remote}
    ours = {f.name for f in spec}
    for index, field in enumerate(spec):
        other = theirs.get(field.name)
        if other is None:
            problems.append(FieldProblem(index, _not_in_aitems(field, remote)))
            continue
        problem = type_problem(field, other)
        if problem:
            problems.append(FieldProblem(index, problem))
        elif "long" in field.types and not {"long", "float", "double"} & set(other.types):
            problems.append(FieldProblem(index, (
                f"field {field.name} is a long in the spec but {shown_type(other)} in AiTEMS, "
                "which refuses values outside the signed 32-bit range: those rows will be "
                "quarantined as refused; write type int to have them quarantined before they "
                "are sent"), warning=True))
    for field in remote:
        if field.name not in ours:
            problems.append(FieldProblem(None, _missing(field)))
    order = order_problem(spec, remote)
    if order is not None:
        problems.append(order)
    return problems


def type_problem(spec: Field, remote: Field) -> str | None:
    """Why values of the spec field's type may be refused by the AiTEMS field, or None."""
    refused = [t for t in spec.types if t != "null" and not ACCEPTED_BY[t] & set(remote.types)]
    if refused:
        return (f"field {spec.name} has type {shown_type(spec)} in the spec but "
                f"{shown_type(remote)} in AiTEMS, which refuses {' and '.join(refused)} values; "
                f"write type: {shown_type(remote)} and make the query return such values")
    if spec.nullable and not remote.nullable:
        return (f"field {spec.name} may be null in the spec, but AiTEMS requires it (type "
                f"{shown_type(remote)}, never null): remove \"null\" from its type, so that a "
                "row with a NULL is quarantined instead of refused by AiTEMS")
    return None


def order_problem(spec: Sequence[Field], remote: Sequence[Field]) -> FieldProblem | None:
    """The first spec field out of the schema's order (of the names both have), or None."""
    names = {f.name for f in remote}
    ranks = {f.name: i for i, f in enumerate(remote)}
    common = [(i, f.name) for i, f in enumerate(spec) if f.name in names]
    wanted = sorted(common, key=lambda item: ranks[item[1]])
    for (index, name), (_, expected) in zip(common, wanted, strict=True):
        if name != expected:
            order = ", ".join(n for _, n in wanted)
            return FieldProblem(index, f"field {name} is out of the AiTEMS schema's order, "
                                f"which is {order}: AiTEMS takes rows whose fields follow it; "
                                "list the fields in that order")
    return None


def _not_in_aitems(field: Field, remote: Sequence[Field]) -> str:
    near = [f.name for f in remote if f.name.lower() == field.name.lower()]
    if near:
        return (f"field {field.name} is not in the AiTEMS schema, which has {near[0]} "
                "(names are case-sensitive): rename it")
    return (f"field {field.name} is not in the AiTEMS schema, which refuses rows holding it: "
            "remove it from fields (AiTEMS schema fields cannot be added to; a new field "
            "needs a new schema and dataset)")


def _missing(field: Field) -> str:
    if field.nullable:
        return (f"the AiTEMS schema has the field {field.name} (type {shown_type(field)}), "
                f"which the spec lacks: add {{name: {field.name}, type: {shown_type(field)}}} "
                f"in the schema's order (select NULL AS {field.name} when there is no value)")
    return (f"the AiTEMS schema requires the field {field.name} (type {shown_type(field)}, "
            f"never null), which the spec lacks: add {{name: {field.name}, type: "
            f"{shown_type(field)}}} in the schema's order and return it from the query")


def field_diff(spec: Sequence[Field], remote: Sequence[Field]) -> list[str]:
    """The two field lists as a diff a person reads: ``-`` AiTEMS only, ``+`` the spec only,
    two spaces for a field both have alike (name, type, place)."""
    theirs = [f"{f.name}: {shown_type(f)}" for f in remote]
    ours = [f"{f.name}: {shown_type(f)}" for f in spec]
    return [line for line in difflib.ndiff(theirs, ours) if not line.startswith("?")]


@dataclass(frozen=True)
class PulledSchema:
    """A dataset's AiTEMS schema in the spec's terms (``schema pull``): each field as the
    spec's ``fields`` writes it (one type alone, several as a list, ``categorical`` only when
    true), so that either rendering can be pasted into a spec."""

    dataset_id: str
    schema_name: str
    dataset_type: str
    fields: tuple[dict[str, Any], ...]

    @classmethod
    def of(cls, dataset_id: str, schema: Mapping[str, Any]) -> PulledSchema:
        """From AiTEMS's schema document (``GET /schemas/{name}``) of the dataset."""
        fields = []
        for field in schema.get("fields", []):
            types = field.get("type", [])
            entry: dict[str, Any] = {"name": field["name"],
                                     "type": types[0] if len(types) == 1 else list(types)}
            if field.get("categorical"):
                entry["categorical"] = True
            fields.append(entry)
        return cls(dataset_id, str(schema.get("name")), str(schema.get("datasetType")),
                   tuple(fields))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly data (``schema pull --json``)."""
        return {"dataset_id": self.dataset_id, "schema": self.schema_name,
                "dataset_type": self.dataset_type, "fields": list(self.fields)}

    def fields_yaml(self) -> str:
        """The spec's ``fields:`` YAML, after a comment naming the schema and dataset."""
        header = (f"# schema {self.schema_name} of AiTEMS dataset {self.dataset_id} "
                  f"({self.dataset_type})\n")
        return header + yaml.safe_dump({"fields": list(self.fields)}, sort_keys=False,
                                       default_flow_style=None)
