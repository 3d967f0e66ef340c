"""Differential tests: the Shaper's typed checks against jsonschema, the verdict of record.

Hypothesis draws field lists (types, unions, nullable, required fields of the dataset type), rows
of awkward values and user json_schemas built from the keywords the fast path trusts, and checks
that the fast verdicts equal jsonschema's Draft 2020-12 verdict plus JSON representability (the
value survives an orjson round trip unchanged).
"""

from __future__ import annotations

from datetime import UTC
from decimal import Decimal
from typing import Any

import fastjsonschema
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from aitems_sync.rows.schema import FAST_KEYWORDS, _fast_definition, fast_ineligible
from aitems_sync.rows.shape import Shaper, combined_schema
from aitems_sync.spec.model import REQUIRED_FIELDS, DatasetSpec, Field, FieldType

TYPES: list[FieldType] = ["string", "int", "long", "float", "double", "boolean", "null"]
NAMES = ["USER_ID", "ITEM_ID", "TIMESTAMP", "AGE", "SCORE", "NOTE"]
SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

EDGE_INTS = [
    0, 1, -1, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**53, 2**63 - 1, 2**63, -(2**63),
    -(2**63) - 1, 2**64 - 1, 2**64, 10**30, -(10**30), 10**400,
]  # fmt: skip
EDGE_FLOATS = [
    0.0, -0.0, 1.0, 1.5, -2.0, 2.0**31, 2.0**31 - 1, 2.0**63, 1e300, -1e300, 5e-324,
    float("nan"), float("inf"), float("-inf"),
]  # fmt: skip
EDGE_TEXT = ["", "a", "abc\n", "é", "한국어", "\ud800", "12", "$", "true", "2024-05-01"]

json_values = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(EDGE_INTS),
    st.integers(),
    st.sampled_from(EDGE_FLOATS),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(EDGE_TEXT),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)

raw_values = st.one_of(
    json_values,
    st.decimals(allow_nan=True, allow_infinity=True),
    st.sampled_from([Decimal("1.5"), Decimal("7.00"), Decimal("1E+2"), Decimal("sNaN")]),
    st.datetimes(timezones=st.none() | st.just(UTC)),
    st.dates(),
    st.times(),
    st.uuids(),
    st.binary(max_size=4),
    st.from_regex(r"[+-]?[0-9]{1,25}", fullmatch=True),
    st.from_regex(r"[+-]?[0-9]{0,4}\.[0-9]{1,4}(e[+-]?[0-9]{1,3})?", fullmatch=True),
    st.sampled_from(["T", "f", "0", "1", "yes", "2024-05-01T09:00:00+09:00", "nan", "inf"]),
)


@st.composite
def datasets(draw: st.DrawFn) -> DatasetSpec:
    kind = draw(st.sampled_from(["user", "item", "interaction"]))
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=5, unique=True))
    fields = []
    for name in names:
        union = draw(st.lists(st.sampled_from(TYPES), min_size=1, max_size=3, unique=True))
        fields.append(Field(name, tuple(union)))
    return DatasetSpec(
        name="ds",
        type=kind,  # type: ignore[arg-type]
        dataset_id="d",
        source="s",
        query="select 1",
        cursor="c",
        fields=tuple(fields),
        key=(),
    )


def representable(value: Any) -> bool:
    """orjson writes the value and reads the same value, of the same type, back."""
    try:
        back = orjson.loads(orjson.dumps(value))
    except (orjson.JSONEncodeError, TypeError):
        return False
    return type(back) is type(value) and back == value


def oracle(spec: DatasetSpec, values: tuple[Any, ...]) -> bool:
    row = dict(zip(spec.field_names, values, strict=True))
    valid = Draft202012Validator(combined_schema(spec)).is_valid(row)
    return valid and all(representable(v) for v in values)


TYPED: dict[FieldType, st.SearchStrategy[Any]] = {
    "string": st.text(max_size=4) | st.sampled_from(["\ud800", "a\udfff", "\udc80b"]),
    "int": st.integers(-(2**31) - 2, 2**31 + 1) | st.sampled_from([2.0**31 - 1, -(2.0**31)]),
    "long": st.integers(-(2**63) - 2, 2**63 + 1) | st.sampled_from([2.0**63, -(2.0**63)]),
    "float": st.floats(),
    "double": st.integers(-(2**64), 2**65),
    "boolean": st.booleans(),
    "null": st.none(),
}


def field_values(field: Field) -> st.SearchStrategy[Any]:
    """Mostly values near the field's own types (so that many rows are valid), some anything."""
    return st.one_of(*[TYPED[t] for t in field.types], json_values)


@SETTINGS
@given(spec=datasets(), data=st.data())
def test_is_valid_equals_jsonschema_and_representability(
    spec: DatasetSpec, data: st.DataObject
) -> None:
    shaper = Shaper(spec, list(spec.field_names), UTC)
    rows = data.draw(st.lists(st.tuples(*[field_values(f) for f in spec.fields]), max_size=8))
    for values in rows:
        assert shaper.is_valid(values) == oracle(spec, values), values


@SETTINGS
@given(spec=datasets(), data=st.data())
def test_shape_accepts_exactly_the_rows_explain_finds_nothing_in(
    spec: DatasetSpec, data: st.DataObject
) -> None:
    columns = ["extra", *reversed(spec.field_names)]
    shaper = Shaper(spec, columns, UTC)
    rows = data.draw(st.lists(st.tuples(*[raw_values for _ in columns]), max_size=8))
    for row in rows:
        shaped = shaper.shape(row)
        errors = shaper.explain(row)
        assert (shaped is not None) == (errors == []), (row, errors)
        coerced = shaper.coerce(row)
        assert shaper.is_valid(coerced) == (shaped is not None)
        if shaped is not None:
            assert shaped == coerced
            assert oracle(spec, shaped)
            required = REQUIRED_FIELDS[spec.type]
            assert all(
                v is not None
                for n, v in zip(spec.field_names, shaped, strict=True)
                if n in required
            )


# User json_schemas built only from the keywords the fast path trusts.
PATTERNS = ["^a", "a$", "^[a-z]*$", "[$]", "^\\$", "b|^$", "^.{2}$", "x\\Z", "[^]$]", "(?i)^A$"]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([0, 1, -1, 2, 1.0, 0.5, -0.0, 2**31, "1", "a", "", "abc\n"]),
)
numbers = st.sampled_from([0, 1, -1, 0.5, 1.0, -2.5, 2**31, 10**20])
leaf_schemas = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["integer", "number", "string", "null"])}),
    st.builds(lambda k, n: {k: n}, st.sampled_from(["minimum", "maximum"]), numbers),
    st.builds(
        lambda k, n: {k: n}, st.sampled_from(["exclusiveMinimum", "exclusiveMaximum"]), numbers
    ),
    st.builds(lambda v: {"enum": v}, st.lists(SCALARS, min_size=1, max_size=4)),
    st.builds(lambda v: {"const": v}, SCALARS),
    st.builds(lambda p: {"pattern": p}, st.sampled_from(PATTERNS)),
    st.builds(lambda k, n: {k: n}, st.sampled_from(["minLength", "maxLength"]), st.integers(0, 3)),
    st.builds(lambda f: {"format": f}, st.sampled_from(["email", "date", "uuid"])),
    st.booleans(),
)
field_schemas = st.recursive(
    leaf_schemas,
    lambda inner: st.one_of(
        st.builds(lambda s: {"not": s}, inner),
        st.builds(lambda k, ss: {k: ss}, st.sampled_from(["allOf", "anyOf", "oneOf"]),
                  st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda i, t, e: {"if": i, "then": t, "else": e}, inner, inner, inner),
        st.builds(lambda a, b: {**a, **b} if isinstance(a, dict) and isinstance(b, dict) else a,
                  inner, inner),
    ),
    max_leaves=5,
)  # fmt: skip


@st.composite
def user_schemas(draw: st.DrawFn, names: tuple[str, ...]) -> dict[str, Any]:
    chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=len(names), unique=True))
    schema: dict[str, Any] = {"properties": {n: draw(field_schemas) for n in chosen}}
    if draw(st.booleans()):
        schema = (
            {"not": schema} if draw(st.booleans()) else {"anyOf": [schema, {"required": ["X"]}]}
        )
    return schema


user_values = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([0, 1, -1, 2, 2**31, 10**20]),
    st.sampled_from([0.0, -0.0, 1.0, 0.5, -2.5, 1e300]),
    st.sampled_from(["", "a", "A", "aa", "abc", "abc\n", "a$", "$", "x\n", "1", "]", "b"]),
)


@st.composite
def rows_and_schema(draw: st.DrawFn) -> tuple[DatasetSpec, dict[str, Any], list[tuple[Any, ...]]]:
    names = ("USER_ID", "A", "B")
    user = draw(user_schemas(names))
    spec = DatasetSpec(
        name="ds",
        type="user",
        dataset_id="d",
        source="s",
        query="select 1",
        cursor="c",
        fields=(
            Field("USER_ID", ("string",)),
            Field("A", ("string", "int", "float", "boolean", "null")),
            Field("B", ("long", "string", "null")),
        ),
        key=(),
        json_schema=user,
    )
    rows = draw(st.lists(st.tuples(st.sampled_from(["a", "abc\n"]), user_values, user_values),
                         min_size=1, max_size=10))  # fmt: skip
    return spec, user, rows


@SETTINGS
@given(case=rows_and_schema())
def test_user_schema_verdict_equals_jsonschema(
    case: tuple[DatasetSpec, dict[str, Any], list[tuple[Any, ...]]],
) -> None:
    spec, user, rows = case
    assert fast_ineligible(user) is None  # the fast path is the one under test
    shaper = Shaper(spec, list(spec.field_names), UTC)
    for row in rows:
        assert shaper.is_valid(row) == oracle(spec, row), row
        assert (shaper.shape(row) is not None) == (shaper.explain(row) == [])


@SETTINGS
@given(case=rows_and_schema())
def test_fastjsonschema_alone_agrees_with_jsonschema_on_trusted_keywords(
    case: tuple[DatasetSpec, dict[str, Any], list[tuple[Any, ...]]],
) -> None:
    """No confirmation step here: both directions must agree, even under not/oneOf/if."""
    spec, user, rows = case
    fast = fastjsonschema.compile(_fast_definition(user), use_default=False, use_formats=False)
    slow = Draft202012Validator(user)
    for row in rows:
        doc = dict(zip(spec.field_names, row, strict=True))
        if not all(representable(v) for v in row):
            continue
        try:
            fast(doc)
            fast_ok = True
        except fastjsonschema.JsonSchemaValueException:
            fast_ok = False
        assert fast_ok == slow.is_valid(doc), (user, doc)


def test_every_trusted_keyword_is_covered_by_the_differential() -> None:
    exercised = {
        "type", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
        "minLength", "maxLength", "pattern", "properties", "allOf", "anyOf", "oneOf", "not",
        "if", "then", "else", "format", "required",
    }  # fmt: skip
    annotations = {"$id", "$comment", "$defs", "definitions", "title", "description"}
    annotations |= {"default", "examples", "deprecated", "readOnly", "writeOnly"}
    assert exercised | annotations == FAST_KEYWORDS


@SETTINGS
@given(value=raw_values)
def test_coercion_never_raises(value: Any) -> None:
    for types in (("string",), ("int",), ("long",), ("double",), ("boolean",), ("null",)):
        spec = DatasetSpec(
            name="ds", type="item", dataset_id="d", source="s", query="q", cursor="c",
            fields=(Field("V", types),), key=(),
        )  # fmt: skip
        shaper = Shaper(spec, ["V"], UTC)
        coerced = shaper.coerce((value,))
        assert (shaper.shape((value,)) is not None) == shaper.is_valid(coerced)
        assert isinstance(shaper.explain((value,)), list)
