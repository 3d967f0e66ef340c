"""The spec's fields against an AiTEMS schema: the pure comparison and its diff."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aitems_sync.aitems.schemas import (
    compare_fields,
    field_diff,
    remote_fields,
    type_problem,
)
from aitems_sync.spec.load import load_spec
from aitems_sync.spec.model import Field
from aitems_sync.sync.schemacheck import SchemaCheck
from tests.shop import write_spec


def fields(*written: str) -> tuple[Field, ...]:
    """``"AGE:int|null"`` -> Field("AGE", ("int", "null"))."""
    out = []
    for text in written:
        name, _, types = text.partition(":")
        out.append(Field(name, tuple(types.split("|"))))  # type: ignore[arg-type]
    return tuple(out)


SCHEMA = fields("USER_ID:string", "AGE:int|null", "GENDER:string|null")


def test_the_same_fields_match() -> None:
    assert compare_fields(SCHEMA, SCHEMA) == []


@pytest.mark.parametrize(("spec", "remote"), [
    ("int", "long"), ("int", "float"), ("int", "double"), ("long", "double"),
    ("float", "double"), ("double", "float"), ("string", "string|null"),
    ("int", "int|null"), ("int|null", "long|null"), ("string", "string|int"),
])
def test_a_spec_type_whose_values_aitems_accepts_matches(spec: str, remote: str) -> None:
    assert type_problem(fields(f"X:{spec}")[0], fields(f"X:{remote}")[0]) is None


@pytest.mark.parametrize(("spec", "remote", "fragment"), [
    ("string", "float", "refuses string values"),
    ("float", "long", "refuses float values"),
    ("boolean", "int", "refuses boolean values"),
    ("int", "boolean", "refuses int values"),
    ("string|int", "string", "refuses int values"),
    ("string|null", "string", 'remove "null" from its type'),
])
def test_a_spec_type_with_values_aitems_refuses_is_a_mismatch(
        spec: str, remote: str, fragment: str) -> None:
    problem = type_problem(fields(f"X:{spec}")[0], fields(f"X:{remote}")[0])

    assert problem is not None and fragment in problem


@pytest.mark.parametrize("remote", ["int", "int|null"])
def test_a_long_where_aitems_has_an_int_is_a_warning_as_some_values_fit(remote: str) -> None:
    [problem] = compare_fields(fields("X:long"), fields(f"X:{remote}"))

    assert problem.warning and problem.index == 0
    assert "refuses values outside the signed 32-bit range" in problem.message


def test_every_difference_is_found_at_once_with_the_spec_field_it_is_about() -> None:
    spec = fields("USER_ID:string", "GENDER:string|null", "AGE:string", "EXTRA:int")
    remote = fields("USER_ID:string", "AGE:float", "GENDER:string|null", "SCORE:long")

    found = [(p.index, p.message) for p in compare_fields(spec, remote)]

    assert not any(p.warning for p in compare_fields(spec, remote))
    assert [index for index, _ in found] == [2, 3, None, 1]
    assert "AGE has type string in the spec but float in AiTEMS" in found[0][1]
    assert "EXTRA is not in the AiTEMS schema" in found[1][1]
    assert "requires the field SCORE (type long, never null)" in found[2][1]
    assert "GENDER is out of the AiTEMS schema's order, which is USER_ID, AGE, GENDER" in \
        found[3][1]


def test_a_nullable_field_the_spec_lacks_is_named_with_what_to_add() -> None:
    [problem] = compare_fields(SCHEMA[:2], SCHEMA)

    assert problem.index is None
    assert 'add {name: GENDER, type: [string, "null"]}' in problem.message


def test_a_name_differing_only_in_case_says_names_are_case_sensitive() -> None:
    problems = compare_fields(fields("user_id:string"), fields("USER_ID:string"))

    assert "which has USER_ID (names are case-sensitive)" in problems[0].message


def test_the_diff_marks_what_only_aitems_has_and_what_only_the_spec_has() -> None:
    spec = fields("USER_ID:string", "AGE:string", "EXTRA:int")
    remote = fields("USER_ID:string", "AGE:float")

    assert field_diff(spec, remote) == [
        "  USER_ID: string", "- AGE: float", "+ AGE: string", "+ EXTRA: int"]


@pytest.mark.parametrize(("schema", "expected"), [
    ({"fields": [{"name": "USER_ID", "type": ["string"]},
                 {"name": "G", "type": ["string", "null"], "categorical": True}]},
     (Field("USER_ID", ("string",)), Field("G", ("string", "null"), True))),
    ({"fields": [{"name": "A", "type": "long"}]}, (Field("A", ("long",)),)),
])
def test_remote_fields_reads_the_schema_answer(schema: dict[str, Any],
                                               expected: tuple[Field, ...]) -> None:
    assert remote_fields(schema) == expected


@pytest.mark.parametrize("schema", [
    {}, {"fields": "x"}, {"fields": [{"name": "A"}]}, {"fields": [{"type": ["string"]}]},
    {"fields": [{"name": "A", "type": ["text"]}]}, {"fields": ["A"]},
])
def test_remote_fields_refuses_an_answer_that_is_no_schema(schema: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="schema"):
        remote_fields(schema)



class CountingReader:
    """A stand-in for the AiTEMS client's two GETs, counting them."""

    def __init__(self, schemas: dict[str, list[dict[str, Any]]]) -> None:
        self.schemas = schemas
        self.calls: list[str] = []

    def get_dataset(self, dataset_id: str) -> dict[str, Any]:
        self.calls.append(f"dataset {dataset_id}")
        kind = "user" if dataset_id.startswith("dsusers") else "interaction"
        return {"datasetId": dataset_id, "type": kind, "schemaName": f"schema_{kind}"}

    def get_schema(self, schema_name: str) -> dict[str, Any]:
        self.calls.append(f"schema {schema_name}")
        return {"name": schema_name, "fields": self.schemas[schema_name]}


def test_each_dataset_and_schema_is_fetched_once_per_check(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path / "sync.yaml", endpoint="http://127.0.0.1:9",
                                source_url="sqlite:///shop.db", state_url="sqlite:///s.db"))
    reader = CountingReader({
        "schema_user": [{"name": "USER_ID", "type": ["string"]},
                        {"name": "AGE", "type": ["long", "null"]}],
        "schema_interaction": [{"name": n, "type": [t]} for n, t in [
            ("USER_ID", "string"), ("ITEM_ID", "string"), ("TIMESTAMP", "long"),
            ("EVENT_TYPE", "string")]]})
    check = SchemaCheck(reader)

    users = [check.problems(spec, spec.datasets["users"]) for _ in range(3)]
    events = check.problems(spec, spec.datasets["events"])

    assert reader.calls == ["dataset dsusers0001", "schema schema_user",
                            "dataset dsevent0001", "schema schema_interaction"]
    assert events == ([], [])
    problems, warnings = users[0]
    assert warnings == []
    assert [p.key for p in problems] == ["datasets.users.fields[2]", "datasets.users.fields"]
    assert "field GENDER is not in the AiTEMS schema" in problems[0].message
    assert problems[0].line == spec.line(("datasets", "users", "fields", 2)) is not None
    assert problems[1].line == spec.line(("datasets", "users", "fields"))
