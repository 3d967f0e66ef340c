"""Shaping and validation: the coercion table, the generated schema, column mapping, explain."""

from __future__ import annotations

import calendar
import enum
import logging
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from jsonschema import Draft202012Validator

from aitems_sync.errors import SpecError
from aitems_sync.rows.shape import RowError, Shaper, combined_schema, generated_schema
from aitems_sync.spec.model import DatasetSpec, Field, FieldType

SEOUL = ZoneInfo("Asia/Seoul")
NEW_YORK = ZoneInfo("America/New_York")
MISSING = object()  # "the value is left as it was"


def dataset(
    *fields: Field, type: str = "user", json_schema: dict[str, Any] | None = None
) -> DatasetSpec:
    return DatasetSpec(
        name="users",
        type=type,  # type: ignore[arg-type]
        dataset_id="d",
        source="s",
        query="select 1",
        cursor="updated_at",
        fields=fields,
        key=(),
        json_schema=json_schema,
    )


def shaper_for(
    types: tuple[FieldType, ...], tz: Any = UTC, json_schema: dict[str, Any] | None = None
) -> Shaper:
    spec = dataset(Field("USER_ID", ("string",)), Field("V", types), json_schema=json_schema)
    return Shaper(spec, ["USER_ID", "V"], tz)


def utc_epoch(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return calendar.timegm((year, month, day, hour, minute, 0, 0, 0, 0))


class Colour(enum.StrEnum):
    RED = "red"


class Size(enum.IntEnum):
    BIG = 3


# (field types, raw value, coerced value or MISSING when left as is, valid)
COERCIONS: list[tuple[tuple[FieldType, ...], Any, Any, bool]] = [
    # string
    (("string",), "abc", "abc", True),
    (("string",), "", "", True),
    (("string",), 42, "42", True),
    (("string",), -7, "-7", True),
    (("string",), Decimal("1.50"), "1.50", True),
    (("string",), Decimal("1E+2"), "100", True),
    (("string",), Decimal("NaN"), MISSING, False),
    (("string",), 3.0, "3", True),
    (("string",), 1.5, "1.5", True),
    (("string",), 1e20, "1e+20", True),
    (("string",), float("nan"), MISSING, False),
    (("string",), uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001", True),
    (("string",), datetime(2024, 5, 1, 12, 30), "2024-05-01T12:30:00", True),
    (("string",), datetime(2024, 5, 1, 12, 30, tzinfo=SEOUL), "2024-05-01T12:30:00+09:00", True),
    (("string",), date(2024, 5, 1), "2024-05-01", True),
    (("string",), time(12, 30, 1), "12:30:01", True),
    (("string",), b"caf\xc3\xa9", "café", True),
    (("string",), bytearray(b"ab"), "ab", True),
    (("string",), memoryview(b"ab"), "ab", True),
    (("string",), b"\xff", MISSING, False),
    (("string",), True, MISSING, False),
    (("string",), Colour.RED, "red", True),
    (("string",), [1], MISSING, False),
    (("string",), "\ud800", MISSING, False),
    # int
    (("int",), 5, 5, True),
    (("int",), 2**31 - 1, 2**31 - 1, True),
    (("int",), -(2**31), -(2**31), True),
    (("int",), 2**31, 2**31, False),
    (("int",), -(2**31) - 1, -(2**31) - 1, False),
    (("int",), True, MISSING, False),
    (("int",), Size.BIG, 3, True),
    (("int",), 3.0, 3, True),
    (("int",), 1.5, MISSING, False),
    (("int",), float("inf"), MISSING, False),
    (("int",), Decimal("7.00"), 7, True),
    (("int",), Decimal("1.5"), MISSING, False),
    (("int",), "42", 42, True),
    (("int",), "-42", -42, True),
    (("int",), "+7", 7, True),
    (("int",), " 42", MISSING, False),
    (("int",), "4_2", MISSING, False),
    (("int",), "١٢", MISSING, False),
    (("int",), "abc", MISSING, False),
    (("int",), "9" * 5000, MISSING, False),
    (("int",), datetime(2024, 5, 1), utc_epoch(2024, 5, 1), True),
    (("int",), datetime(1969, 12, 31, 23, 59, 59, 500000), -1, True),
    (("int",), datetime(2100, 1, 1), utc_epoch(2100, 1, 1), False),
    (("int",), "2024-05-01T00:00:00Z", utc_epoch(2024, 5, 1), True),
    (("int",), "2024-05-01", utc_epoch(2024, 5, 1), True),
    (("int",), time(1), MISSING, False),
    (("int",), 1e300, int(1e300), False),
    # long
    (("long",), 2**31, 2**31, True),
    (("long",), 2**63 - 1, 2**63 - 1, True),
    (("long",), -(2**63), -(2**63), True),
    (("long",), 2**63, 2**63, False),
    (("long",), datetime(2100, 1, 1), utc_epoch(2100, 1, 1), True),
    (("long",), datetime(2024, 5, 1, 9, tzinfo=SEOUL), utc_epoch(2024, 5, 1), True),
    (("long",), False, MISSING, False),
    # float and double
    (("float",), 1, 1.0, True),
    (("float",), 1.5, 1.5, True),
    (("double",), Decimal("1.25"), 1.25, True),
    (("double",), "1.5", 1.5, True),
    (("double",), "-2e3", -2000.0, True),
    (("double",), "abc", MISSING, False),
    (("double",), "nan", MISSING, False),
    (("double",), float("nan"), MISSING, False),
    (("double",), float("-inf"), MISSING, False),
    (("double",), Decimal("1e400"), float("inf"), False),
    (("double",), Decimal("sNaN"), MISSING, False),
    (("double",), 10**400, MISSING, False),
    (("double",), True, MISSING, False),
    (("float",), -0.0, -0.0, True),
    # boolean
    (("boolean",), True, True, True),
    (("boolean",), False, False, True),
    (("boolean",), 1, True, True),
    (("boolean",), 0, False, True),
    (("boolean",), 2, MISSING, False),
    (("boolean",), 1.0, MISSING, False),
    (("boolean",), "true", True, True),
    (("boolean",), "FALSE", False, True),
    (("boolean",), "t", True, True),
    (("boolean",), "F", False, True),
    (("boolean",), "1", True, True),
    (("boolean",), "0", False, True),
    (("boolean",), "yes", MISSING, False),
    (("boolean",), None, None, False),
    # null
    (("null",), None, None, True),
    (("null",), 0, MISSING, False),
    # unions: a value already of a listed type stays; else the listed order decides
    (("int", "null"), None, None, True),
    (("int", "null"), "7", 7, True),
    (("string", "int"), 5, 5, True),
    (("int", "string"), "42", "42", True),
    (("int", "string"), 2**40, "1099511627776", True),
    (("boolean", "int"), 1, 1, True),
    (("int", "boolean"), Decimal("1"), 1, True),
    (("boolean", "int"), Decimal("1"), 1, True),
    (("boolean", "string"), 1, True, True),
    (("string", "boolean"), 1, "1", True),
    (("int", "float"), 1.5, 1.5, True),
    (("float", "int"), 2, 2, True),
]


@pytest.mark.parametrize(("types", "raw", "expected", "valid"), COERCIONS)
def test_coercion_table(types: tuple[FieldType, ...], raw: Any, expected: Any, valid: bool) -> None:
    shaper = shaper_for(types)
    coerced = shaper.coerce(("u1", raw))[1]
    if expected is MISSING:
        assert coerced is raw
    else:
        assert type(coerced) is type(expected)
        assert repr(coerced) == repr(expected)
    shaped = shaper.shape(("u1", raw))
    assert (shaped is not None) == valid
    assert (shaper.explain(("u1", raw)) == []) == valid
    if valid:
        assert shaped == ("u1", coerced)


@pytest.mark.parametrize(
    ("tz", "raw", "expected"),
    [
        (SEOUL, datetime(2024, 5, 1, 9, 0), utc_epoch(2024, 5, 1)),
        (SEOUL, date(2024, 5, 1), utc_epoch(2024, 4, 30, 15)),
        (SEOUL, "2024-05-01T09:00:00", utc_epoch(2024, 5, 1)),
        (SEOUL, "2024-05-01", utc_epoch(2024, 4, 30, 15)),
        (SEOUL, datetime(2024, 5, 1, 0, 0, tzinfo=UTC), utc_epoch(2024, 5, 1)),
        (SEOUL, "2024-05-01T00:00:00+00:00", utc_epoch(2024, 5, 1)),
        (UTC, datetime(2024, 5, 1, 9, 0, tzinfo=SEOUL), utc_epoch(2024, 5, 1)),
        (timezone(timedelta(hours=-3)), datetime(2024, 5, 1), utc_epoch(2024, 5, 1, 3)),
        # Seoul kept daylight saving time in 1988: +10:00 that summer
        (SEOUL, datetime(1988, 7, 1, 10, 0), utc_epoch(1988, 7, 1)),
        # an ambiguous local time (clocks went back): fold=0, the earlier, EDT (-4)
        (NEW_YORK, datetime(2024, 11, 3, 1, 30), utc_epoch(2024, 11, 3, 5, 30)),
        (NEW_YORK, datetime(2024, 11, 3, 1, 30, fold=1), utc_epoch(2024, 11, 3, 6, 30)),
        # a skipped local time (clocks went forward): fold=0 reads it with the offset before
        (NEW_YORK, datetime(2024, 3, 10, 2, 30), utc_epoch(2024, 3, 10, 7, 30)),
    ],
)
def test_datetimes_become_epoch_seconds_in_the_source_timezone(
    tz: Any, raw: Any, expected: int
) -> None:
    shaper = shaper_for(("long",), tz=tz)
    assert shaper.shape(("u1", raw)) == ("u1", expected)


def test_generated_schema_is_a_valid_draft_2020_12_schema() -> None:
    spec = dataset(
        Field("USER_ID", ("string", "null")),
        Field("AGE", ("int", "null")),
        Field("SCORE", ("float",)),
        Field("BIG", ("long", "int")),
        Field("ANY_NUMBER", ("int", "double")),
        Field("VIP", ("boolean",)),
        Field("NOTHING", ("null",)),
    )
    schema = generated_schema(spec)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == ["USER_ID", "AGE", "SCORE", "BIG", "ANY_NUMBER", "VIP", "NOTHING"]
    assert schema["additionalProperties"] is False
    assert schema["properties"] == {
        "USER_ID": {"type": "string"},  # required by the user type: never null
        "AGE": {"type": ["integer", "null"], "minimum": -(2**31), "maximum": 2**31 - 1},
        "SCORE": {"type": "number"},
        "BIG": {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
        "ANY_NUMBER": {"type": "number"},
        "VIP": {"type": "boolean"},
        "NOTHING": {"type": "null"},
    }
    assert combined_schema(spec) == schema


def test_required_fields_are_never_null() -> None:
    spec = dataset(
        Field("USER_ID", ("string", "null")),
        Field("ITEM_ID", ("string", "null")),
        Field("TIMESTAMP", ("long", "null")),
        type="interaction",
    )
    shaper = Shaper(spec, ["USER_ID", "ITEM_ID", "TIMESTAMP"], UTC)
    assert shaper.shape(("u", "i", 1)) == ("u", "i", 1)
    assert shaper.shape((None, "i", 1)) is None
    assert shaper.explain((None, "i", None)) == [
        RowError("$.USER_ID", "None is not of type 'string'"),
        RowError("$.TIMESTAMP", "None is not of type 'integer'"),
    ]


def test_explain_lists_every_error_with_path_and_message() -> None:
    spec = dataset(
        Field("USER_ID", ("string",)),
        Field("AGE", ("int", "null")),
        Field("SCORE", ("float",)),
        Field("VIP", ("boolean",)),
        Field("NAME", ("string",)),
    )
    shaper = Shaper(spec, ["USER_ID", "AGE", "SCORE", "VIP", "NAME"], UTC)
    row = (None, "abc", float("nan"), 2, "ok")
    assert shaper.shape(row) is None
    assert shaper.explain(row) == [
        RowError("$.USER_ID", "None is not of type 'string'"),
        RowError(
            "$.AGE",
            "cannot coerce 'abc' to int: not an integer nor an ISO 8601 date or date-time",
        ),
        RowError("$.AGE", "'abc' is not of type 'integer', 'null'"),
        RowError("$.SCORE", "nan is not a finite number (JSON has no NaN or Infinity)"),
        RowError("$.VIP", "cannot coerce 2 to boolean: only 0 and 1 are read as booleans"),
        RowError("$.VIP", "2 is not of type 'boolean'"),
    ]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (2**31, "2147483648 is greater than the maximum of 2147483647"),
        (Decimal("1.5"), "cannot coerce Decimal('1.5') to int: not a whole number"),
        (True, "cannot coerce True to int: a boolean is not turned into a number"),
        (2**5000, "<an integer of 5001 bits> is outside the range JSON encoding supports"),
        (object, "<class 'object'> is not a JSON value (type)"),
    ],
)
def test_explain_says_why_a_value_is_rejected(raw: Any, message: str) -> None:
    errors = shaper_for(("int",)).explain(("u1", raw))
    assert errors and all(e.path == "$.V" for e in errors)
    assert any(e.message.startswith(message) for e in errors), errors


def test_output_is_in_schema_order_whatever_the_column_order() -> None:
    spec = dataset(Field("USER_ID", ("string",)), Field("AGE", ("int",)), Field("X", ("string",)))
    shaper = Shaper(spec, ["updated_at", "x", "age", "USER_ID"], UTC)
    assert shaper.field_index == (3, 2, 1)
    assert shaper.field_names == ("USER_ID", "AGE", "X")
    values = shaper.shape(("2024-01-01", "hello", "31", "u1"))
    assert values == ("u1", 31, "hello")
    assert list(shaper.as_dict(values)) == ["USER_ID", "AGE", "X"]


@pytest.mark.parametrize(
    ("columns", "index"),
    [
        (["USER_ID"], 0),
        (["user_id"], 0),  # PostgreSQL folds unquoted aliases to lower case
        (["id", "User_Id"], 1),
        (["user_id", "USER_ID"], 1),  # the exact name wins over a case-insensitive one
    ],
)
def test_columns_map_by_exact_name_then_case_insensitively(columns: list[str], index: int) -> None:
    shaper = Shaper(dataset(Field("USER_ID", ("string",))), columns, UTC)
    assert shaper.field_index == (index,)


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (["User_Id", "user_id", "AGE"], "columns case-insensitively: User_Id, user_id"),
        (["id", "age"], "no result column named 'USER_ID' (the query returns: id, age)"),
        ([], "no result column named 'USER_ID' (the query returns: (none))"),
    ],
)
def test_a_missing_or_ambiguous_column_is_a_spec_error(columns: list[str], expected: str) -> None:
    with pytest.raises(SpecError) as raised:
        Shaper(dataset(Field("USER_ID", ("string",))), columns, UTC)
    (problem,) = raised.value.problems
    assert problem.key == "datasets.users.fields"
    assert "dataset 'users', field 'USER_ID'" in problem.message
    assert expected in problem.message
    assert f"(the query returns: {', '.join(columns) or '(none)'})" in problem.message


def test_every_unmapped_field_is_reported_at_once() -> None:
    spec = dataset(Field("USER_ID", ("string",)), Field("AGE", ("int", "null")))
    with pytest.raises(SpecError) as raised:
        Shaper(spec, ["id"], UTC)
    assert [p.message.split(":")[0] for p in raised.value.problems] == [
        "dataset 'users', field 'USER_ID'",
        "dataset 'users', field 'AGE'",
    ]


def test_user_json_schema_rejects_and_explains() -> None:
    shaper = shaper_for(("int", "null"), json_schema={"properties": {"V": {"minimum": 0}}})
    assert shaper.shape(("u1", "5")) == ("u1", 5)
    assert shaper.shape(("u1", None)) == ("u1", None)
    assert shaper.shape(("u1", -1)) is None
    assert shaper.explain(("u1", -1)) == [RowError("$.V", "-1 is less than the minimum of 0")]
    assert combined_schema(shaper.dataset)["allOf"][1]["properties"] == {"V": {"minimum": 0}}


def test_user_json_schema_refs_resolve_against_the_user_schema() -> None:
    user = {"$defs": {"adult": {"minimum": 18}}, "properties": {"V": {"$ref": "#/$defs/adult"}}}
    shaper = shaper_for(("int",), json_schema=user)
    assert shaper.shape(("u1", 20)) == ("u1", 20)
    assert shaper.shape(("u1", 17)) is None
    assert shaper.explain(("u1", 17)) == [RowError("$.V", "17 is less than the minimum of 18")]
    combined = combined_schema(shaper.dataset)
    assert not Draft202012Validator(combined).is_valid({"USER_ID": "u1", "V": 17})


@pytest.mark.parametrize(
    ("pattern_schema", "value", "valid"),
    [
        ({"pattern": "^[a-z]+$"}, "abc", True),
        ({"pattern": "^[a-z]+$"}, "abc\n", True),  # Python's $ matches before a final newline
        ({"not": {"pattern": "^[a-z]+$"}}, "abc\n", False),
        ({"pattern": "^[$]+$"}, "$$", True),
        ({"pattern": "^a\\$"}, "a$", True),
        ({"not": {"pattern": "^[^]$]+$"}}, "x\n", False),
    ],
)
def test_user_patterns_follow_jsonschema(
    pattern_schema: dict[str, Any], value: str, valid: bool
) -> None:
    shaper = shaper_for(("string",), json_schema={"properties": {"V": pattern_schema}})
    combined = combined_schema(shaper.dataset)
    assert Draft202012Validator(combined).is_valid({"USER_ID": "u1", "V": value}) == valid
    assert (shaper.shape(("u1", value)) is not None) == valid


def test_a_user_schema_fastjsonschema_cannot_prove_falls_back_to_jsonschema(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        shaper = shaper_for(("float",), json_schema={"properties": {"V": {"multipleOf": 0.1}}})
    assert "checked by jsonschema on every row" in caplog.text
    assert "'multipleOf'" in caplog.text
    # 0.3 / 0.1 is 2.9999999999999996 in floats: jsonschema rejects it, fastjsonschema would not
    assert shaper.shape(("u1", 0.3)) is None
    assert shaper.shape(("u1", 0.5)) == ("u1", 0.5)


def test_an_invalid_user_schema_is_a_spec_error() -> None:
    with pytest.raises(SpecError) as raised:
        shaper_for(("int",), json_schema={"properties": {"V": {"minimum": "zero"}}})
    (problem,) = raised.value.problems
    assert problem.key == "datasets.users.json_schema"
    assert "'zero' is not of type 'number'" in problem.message


@pytest.mark.parametrize(
    ("types", "value", "valid"),
    [
        (("int",), 1.0, True),  # jsonschema: a float with no fraction is an integer
        (("int",), 2.0**31, False),
        (("float",), 7, True),  # an integer is a number
        (("float",), 2**64, False),  # ... but orjson cannot write one this big
        (("float",), float("nan"), False),  # jsonschema passes NaN; JSON cannot hold it
        (("float",), float("inf"), False),
        (("float",), Decimal("1.5"), False),  # not a JSON value: orjson would not write it
        (("string",), "\udc80", False),
        (("boolean",), 1, False),
        (("string", "null"), None, True),
    ],
)
def test_is_valid_judges_already_coerced_values(
    types: tuple[FieldType, ...], value: Any, valid: bool
) -> None:
    assert shaper_for(types).is_valid(("u1", value)) is valid


class BrokenZone(tzinfo):
    """A tzinfo whose offset lookup fails, as a buggy third-party zone might."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        raise RuntimeError("no offset")

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)

    def tzname(self, dt: datetime | None) -> str:
        return "broken"


def test_a_value_that_breaks_its_conversion_rejects_the_row_without_raising() -> None:
    shaper = shaper_for(("long",))
    raw = datetime(2024, 5, 1, tzinfo=BrokenZone())
    assert shaper.coerce(("u1", raw)) == ("u1", raw)
    assert shaper.shape(("u1", raw)) is None
    assert RowError("$.V", "cannot coerce") in [
        RowError(e.path, e.message[:13]) for e in shaper.explain(("u1", raw))
    ]
