"""The spec's fields against an AiTEMS schema: the pure comparison and its diff."""

from __future__ import annotations

from typing import Any

import pytest

from aitems_sync.aitems.schemas import (
    compare_fields,
    field_diff,
    remote_fields,
    type_problem,
)
from aitems_sync.spec.model import Field


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

