"""The emulator's rules for schema fields and upload rows, and the error answer they produce.

Pure functions. A schema compiles once into a `RowChecker` (per field: the Python types orjson
yields for the allowed JSON types, and the integer range), so checking an upload is a tight loop.
Problems name the row index, the field and the expected and actual JSON types, and never echo a
row's values: the messages may end up in logs.

JSON typing (the project's reading of the AiTEMS types): ``string`` is a JSON string; ``int`` an
integer in the signed 32-bit range; ``long`` an integer in the signed 64-bit range; ``float`` and
``double`` any JSON number; ``boolean`` true or false (never an integer, and no integer is a
boolean); ``null`` null.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import orjson

DATASET_TYPES = ("user", "item", "interaction")
FIELD_TYPES = ("string", "int", "long", "float", "double", "boolean", "null")
#: Required fields per dataset type, with their one allowed type (never null).
REQUIRED: dict[str, tuple[tuple[str, str], ...]] = {
    "user": (("USER_ID", "string"),),
    "item": (("ITEM_ID", "string"),),
    "interaction": (("USER_ID", "string"), ("ITEM_ID", "string"), ("TIMESTAMP", "long")),
}
#: The key user and item rows are upserted by, unique within one upload. Interactions append.
KEY_FIELD = {"user": "USER_ID", "item": "ITEM_ID"}
MAX_PROBLEMS = 100

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "int": (int,), "long": (int,), "float": (int, float),
    "double": (int, float), "boolean": (bool,), "null": (type(None),),
}
_JSON_NAMES: dict[type, str] = {
    str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null",
    dict: "object", list: "array",
}

#: HTTP status -> (gateway errorCode, message), as the NCP API gateway answers.
ERROR_CODES: dict[int, tuple[str, str]] = {
    400: ("100", "Bad Request Exception"),
    401: ("200", "Authentication Failed"),
    403: ("230", "Forbidden"),
    404: ("300", "Not Found Exception"),
    413: ("430", "Request Entity Too Large"),
    429: ("420", "Rate Limited"),
    500: ("900", "Unexpected Error"),
    503: ("500", "Endpoint Error"),
    504: ("510", "Endpoint Timeout"),
}


def error_body(status: int, details: str) -> dict[str, Any]:
    """The gateway-style error body ``{"error": {errorCode, message, details}}``."""
    code, message = ERROR_CODES.get(status, (str(status), "Error"))
    return {"error": {"errorCode": code, "message": message, "details": details}}


def json_type(value: Any) -> str:
    """The JSON type name of a value orjson produced (``integer`` for ints)."""
    return _JSON_NAMES.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request: the row index and field it is about, if any."""

    row: int | None
    field: str | None
    message: str

    def to_json(self) -> dict[str, Any]:
        """The problem as it appears in a 400 body."""
        return {"row": self.row, "field": self.field, "message": self.message}


class Rejection(Exception):
    """An error answer of the emulated API: status, summary and the problems behind it.

    Internal to the emulator: it never leaves the HTTP layer, which turns it into a response.
    """

    def __init__(self, status: int, details: str, problems: Sequence[Problem] = ()) -> None:
        super().__init__(details)
        self.status = status
        self.details = details
        self.problems = tuple(problems)

    def body(self) -> dict[str, Any]:
        """The JSON answer: the gateway error object plus ``problems`` when there are some."""
        body = error_body(self.status, self.details)
        if self.problems:
            body["problems"] = [p.to_json() for p in self.problems]
        return body


def required_fields(dataset_type: str) -> list[dict[str, Any]]:
    """The required schema fields of a dataset type, as schema field objects."""
    return [{"name": name, "type": [kind]} for name, kind in REQUIRED[dataset_type]]


def check_schema_fields(
    problems: list[Problem], dataset_type: Any, raw: Any
) -> list[dict[str, Any]]:
    """Check a schema's ``fields`` (appending to ``problems``); return them normalised."""
    if not isinstance(raw, list) or not raw:
        problems.append(Problem(None, "fields", "fields must be a non-empty list"))
        return []
    fields: list[dict[str, Any]] = []
    for index, item in enumerate(raw):
        field = _check_field(problems, f"fields[{index}]", item)
        if field is None:
            continue
        if any(f["name"] == field["name"] for f in fields):
            problems.append(Problem(None, f"fields[{index}].name",
                                    f"field {field['name']} appears twice"))
        fields.append(field)
    for name, kind in REQUIRED.get(dataset_type, ()):
        found = next((f for f in fields if f["name"] == name), None)
        if found is None or found["type"] != [kind]:
            problems.append(Problem(None, "fields", f"a {dataset_type} schema needs field {name} "
                                    f"of type [{kind}] (required, never null)"))
    return fields


def _check_field(problems: list[Problem], where: str, item: Any) -> dict[str, Any] | None:
    if not isinstance(item, dict):
        problems.append(Problem(None, where, f"{where} must be an object {{name, type}}"))
        return None
    before = len(problems)
    name, types, categorical = item.get("name"), item.get("type"), item.get("categorical", False)
    extra = sorted(set(item) - {"name", "type", "categorical"})
    if extra:
        problems.append(Problem(None, where, f"{where} has unknown keys: {', '.join(extra)}"))
    if not isinstance(name, str) or not name:
        problems.append(Problem(None, f"{where}.name", f"{where}.name must be a non-empty string"))
    if (not isinstance(types, list) or not types or len(set(map(str, types))) != len(types)
            or any(t not in FIELD_TYPES for t in types)):
        problems.append(Problem(None, f"{where}.type", f"{where}.type must be a list of distinct "
                                f"types from {', '.join(FIELD_TYPES)}"))
    if not isinstance(categorical, bool):
        problems.append(Problem(None, f"{where}.categorical",
                                f"{where}.categorical must be a boolean"))
    if len(problems) > before or not isinstance(types, list):
        return None
    field: dict[str, Any] = {"name": name, "type": list(types)}
    if categorical:  # AiTEMS omits categorical when false
        field["categorical"] = True
    return field


@dataclass(frozen=True)
class RowChecker:
    """A schema compiled for checking rows: names in order and per-field type tests."""

    schema_name: str
    names: list[str]
    #: per field: (name, allowed Python types, int bounds or None, expected types for messages)
    checks: tuple[tuple[str, frozenset[type], tuple[int, int] | None, str], ...]


@dataclass(frozen=True)
class UploadTarget:
    """What an upload to one dataset must follow."""

    dataset_id: str
    dataset_type: str
    checker: RowChecker


def compile_checker(schema: dict[str, Any]) -> RowChecker:
    """Precompute the per-field tests of a (valid) schema."""
    checks = []
    for field in schema["fields"]:
        types = field["type"]
        allowed = frozenset(t for kind in types for t in _PY_TYPES[kind])
        bounds: tuple[int, int] | None = None
        if "float" not in types and "double" not in types:
            bounds = INT64 if "long" in types else INT32 if "int" in types else None
        checks.append((field["name"], allowed, bounds, " or ".join(types)))
    return RowChecker(schema["name"], [f["name"] for f in schema["fields"]], tuple(checks))


def parse_upload(target: UploadTarget, body: bytes) -> list[dict[str, Any]]:
    """Parse and check an upload body against its dataset; the rows, or a 400 `Rejection`."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Rejection(400, "the body is not valid JSON",
                        [Problem(None, None, "the body is not valid JSON")]) from None
    if type(document) is not dict:
        message = f"the body must be a JSON object {{type, value}}, got {json_type(document)}"
        raise Rejection(400, message, [Problem(None, None, message)])
    problems = []
    kind = document.get("type")
    if kind != target.dataset_type:
        got = repr(kind[:20]) if isinstance(kind, str) else json_type(kind)
        problems.append(Problem(None, "type", f"type must be {target.dataset_type!r}, the type of "
                                f"dataset {target.dataset_id}, got {got}"))
    rows = document.get("value")
    if not isinstance(rows, list):
        problems.append(Problem(None, "value",
                                f"value must be an array of rows, got {json_type(rows)}"))
    elif not problems:
        problems = check_rows(target.checker, rows, KEY_FIELD.get(target.dataset_type))
    if problems:
        count = f"{len(problems)}{'+' if len(problems) >= MAX_PROBLEMS else ''}"
        raise Rejection(400, f"{count} problem(s) in the upload to dataset {target.dataset_id}; "
                        f"first: {problems[0].message}", problems)
    return rows  # type: ignore[return-value]


def check_rows(checker: RowChecker, rows: list[Any], key: str | None) -> list[Problem]:
    """Every problem of the rows (up to `MAX_PROBLEMS`); empty when all rows fit the schema."""
    return [] if all_fit(checker, rows, key) else row_problems(checker, rows, key)


def row_problems(checker: RowChecker, rows: list[Any], key: str | None) -> list[Problem]:
    """``check_rows`` row by row: every problem named, in row order."""
    problems: list[Problem] = []
    names, checks = checker.names, checker.checks
    for index, row in enumerate(rows):
        if type(row) is not dict:
            problems.append(Problem(index, None,
                                    f"row {index}: expected an object, got {json_type(row)}"))
        elif list(row) != names:
            problems.extend(_key_problems(checker, index, list(row)))
        else:
            for (name, allowed, bounds, expected), value in zip(checks, row.values(), strict=True):
                kind = type(value)
                if kind not in allowed:
                    problems.append(Problem(index, name, f"row {index}: field {name}: expected "
                                            f"{expected}, got {json_type(value)}"))
                elif bounds is not None and kind is int and not bounds[0] <= value <= bounds[1]:
                    width = "32" if bounds is INT32 else "64"
                    problems.append(Problem(index, name, f"row {index}: field {name}: integer "
                                            f"out of the signed {width}-bit range of {expected}"))
        if len(problems) >= MAX_PROBLEMS:
            return problems[:MAX_PROBLEMS]
    if not problems and key is not None:
        problems = _duplicate_keys(rows, key)
    return problems[:MAX_PROBLEMS]


def all_fit(checker: RowChecker, rows: list[Any], key: str | None) -> bool:
    """Whether every row fits, column by column in C loops (``map``, ``set``, ``min``): the
    verdict of :func:`row_problems`, which then only runs to name the problems of an upload
    that has some. Checking row by row was markedly slower, and the emulator shares the
    benchmarks' two cores with the runs it measures."""
    if not rows:
        return True
    if set(map(type, rows)) != {dict} or set(map(tuple, rows)) != {tuple(checker.names)}:
        return False
    for name, allowed, bounds, _expected in checker.checks:
        column = list(map(itemgetter(name), rows))
        kinds = set(map(type, column))
        if not kinds <= allowed:
            return False
        if bounds is not None and int in kinds:
            ints = column if kinds == {int} else [v for v in column if type(v) is int]
            if min(ints) < bounds[0] or max(ints) > bounds[1]:
                return False
    return key is None or len(set(map(itemgetter(key), rows))) == len(rows)


def _key_problems(checker: RowChecker, index: int, keys: list[Any]) -> list[Problem]:
    expected = set(checker.names)
    present = set(keys)
    problems = [Problem(index, name, f"row {index}: missing field {name}")
                for name in checker.names if name not in present]
    problems += [Problem(index, str(k)[:64], f"row {index}: unexpected field {str(k)[:64]!r} "
                         f"(not in schema {checker.schema_name})")
                 for k in keys if k not in expected]
    if not problems:
        problems.append(Problem(index, None, f"row {index}: fields out of schema order: expected "
                                f"{', '.join(checker.names)}; got {', '.join(keys)}"))
    return problems


def _duplicate_keys(rows: list[dict[str, Any]], key: str) -> list[Problem]:
    if len(set(map(itemgetter(key), rows))) == len(rows):
        return []
    first: dict[Any, int] = {}
    problems = []
    for index, row in enumerate(rows):
        seen = first.setdefault(row[key], index)
        if seen != index:
            problems.append(Problem(index, key, f"row {index}: {key} repeats the value of row "
                                    f"{seen}; {key} must be unique within one upload"))
    return problems
