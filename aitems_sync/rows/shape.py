"""Shaping and validation of rows: result columns to typed field values, and the verdict on them.

The hot path is ``Shaper.shape``: one function generated per dataset and result columns (like
fastjsonschema generates its validators), with exact-type checks inline and the coercion table
(``coerce.py``) called only for values that are not already of their field's type. Its
verdict is proven by tests to equal jsonschema's on the combined schema (``schema.py``) plus
one rule of ours, JSON representability: a value must be one orjson writes as the same JSON value,
so NaN and infinities (orjson writes null), integers outside [-2**63, 2**64-1], strings holding
lone surrogates and non-JSON Python types (Decimal, ...) are invalid. ``explain`` is the slow path
that says why a row was rejected.

jsonschema is imported when ``explain`` is first called (rejected rows are rare), not when a
Shaper is built: the import is a noticeable part of every run's start-up.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from typing import TYPE_CHECKING, Any

from aitems_sync.errors import SpecError, SpecProblem
from aitems_sync.rows.coerce import NO_RULE, Converter, Failed, converters
from aitems_sync.rows.schema import (
    INT_RANGE,
    LONG_RANGE,
    combined_schema,
    compile_user_schema,
    effective_types,
    generated_schema,
)
from aitems_sync.spec.columns import ColumnMatchError, match_column
from aitems_sync.spec.model import DatasetSpec, FieldType
from aitems_sync.undecodable import Undecodable

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

__all__ = ["RowError", "Shaper", "combined_schema", "generated_schema"]

JSON_INT_RANGE = (-(2**63), 2**64 - 1)  # what orjson writes; beyond it raises


@dataclass(frozen=True)
class RowError:
    """One problem of a row: the JSON path (``$.AGE``, ``$`` for the row) and a message."""

    path: str
    message: str


def _range_test(bounds: tuple[int, int]) -> str:
    return f"{bounds[0]} <= {{v}} <= {bounds[1]}"


# Exact Python type of each field type, as an inline test on ``{v}``. A value passing it is valid
# and is what coercion produces.
_CANONICAL: dict[FieldType, str] = {
    "string": "(type({v}) is str and ({v}.isascii() or _utf8({v})))",
    "int": f"(type({{v}}) is int and {_range_test(INT_RANGE)})",
    "long": f"(type({{v}}) is int and {_range_test(LONG_RANGE)})",
    "float": "(type({v}) is float and {v} - {v} == 0.0)",  # false for NaN and infinities
    "double": "(type({v}) is float and {v} - {v} == 0.0)",
    "boolean": "(type({v}) is bool)",
    "null": "({v} is None)",
}

# Valid for the field type: jsonschema's verdict (1.0 is an integer, an integer is a number)
# joined with JSON representability.
_INTEGRAL_FLOAT = "(type({{v}}) is float and {{v}}.is_integer() and {})"
_VALID: dict[FieldType, str] = {
    **_CANONICAL,
    "int": f"({_CANONICAL['int']} or {_INTEGRAL_FLOAT.format(_range_test(INT_RANGE))})",
    "long": f"({_CANONICAL['long']} or {_INTEGRAL_FLOAT.format(_range_test(LONG_RANGE))})",
    "float": f"({_CANONICAL['float']} or (type({{v}}) is int and {_range_test(JSON_INT_RANGE)}))",
    "double": f"({_CANONICAL['float']} or (type({{v}}) is int and {_range_test(JSON_INT_RANGE)}))",
}


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _union(table: dict[FieldType, str], types: Sequence[FieldType], var: str) -> str:
    if not types:
        return "False"
    return "(" + " or ".join(table[t].format(v=var) for t in types) + ")"


_GLOBALS: dict[str, Any] = {"_utf8": _utf8}


def _predicate(expression: str) -> Callable[[Any], bool]:
    namespace: dict[str, Any] = {}
    exec(f"def test(v):\n    return {expression}\n", dict(_GLOBALS), namespace)
    test: Callable[[Any], bool] = namespace["test"]
    return test


ShapeFunction = Callable[[Sequence[Any]], tuple[Any, ...] | None]
VerdictFunction = Callable[[tuple[Any, ...]], bool]


class _Unset:
    pass


_UNSET = _Unset()


def _union_coercer(
    types: Sequence[FieldType], convert: dict[FieldType, Converter]
) -> Callable[[Any], Any]:
    """Coerce to a union: keep a value already of a listed type; else the first conversion, in
    the listed order, that yields a value of its type; else the first conversion that yields a
    value at all (validation then says what is wrong with it, e.g. its range); else the value."""
    targets = [t for t in types if t != "null"]
    if len(targets) == 1:
        return _single_coercer(convert[targets[0]])
    canonical = [_predicate(_CANONICAL[t].format(v="v")) for t in targets]
    pairs = list(zip([convert[t] for t in targets], canonical, strict=True))

    def coerce(value: Any) -> Any:
        if value is None:
            return None
        for test in canonical:
            if test(value):
                return value
        produced: Any = _UNSET
        for conv, test in pairs:
            result = conv(value)
            if result is NO_RULE or type(result) is Failed:
                continue
            if test(result):
                return result
            if produced is _UNSET:
                produced = result
        return value if produced is _UNSET else produced

    return coerce


def _single_coercer(convert: Converter) -> Callable[[Any], Any]:
    """``_union_coercer`` for one non-null type, faster: a converter returns a value already of
    its type unchanged, so the union's first pass is not needed."""

    def coerce(value: Any) -> Any:
        if value is None:
            return None
        result = convert(value)
        return value if result is NO_RULE or type(result) is Failed else result

    return coerce


class Shaper:
    """Compiled once per dataset and per query's result columns.

    ``shape(row)`` is the hot path: the row's values coerced to the fields in schema order, or
    None when the row is invalid (exactly when ``explain(row)`` is not empty).
    ``is_valid(values)`` judges values already coerced: jsonschema's verdict on the combined
    schema for ``as_dict(values)``, and every value representable in JSON.
    Both are functions generated for this dataset and these columns.
    """

    def __init__(self, dataset: DatasetSpec, columns: Sequence[str], timezone: tzinfo) -> None:
        """Map each field to a result column and compile the shaping function.

        Raises SpecError naming the dataset, the field and the query's columns when a field has
        no column or several (case-insensitively), or when the json_schema is not a schema.
        """
        self.dataset = dataset
        self.field_names: tuple[str, ...] = dataset.field_names
        self.field_index: tuple[int, ...] = _map_columns(dataset, columns)
        self.types: tuple[tuple[FieldType, ...], ...] = tuple(
            effective_types(dataset, f) for f in dataset.fields
        )
        self._convert = dict(converters(timezone))
        self._coercers = tuple(_union_coercer(t, self._convert) for t in self.types)
        self._valid = tuple(_predicate(_union(_VALID, t, "v")) for t in self.types)
        self._user = compile_user_schema(dataset)
        self._explainer: Draft202012Validator | None = None  # built by the first explain()
        self.shape: ShapeFunction
        self.is_valid: VerdictFunction
        self.shape, self.is_valid = self._compile()

    def _compile(self) -> tuple[ShapeFunction, VerdictFunction]:
        names = [f"v{k}" for k in range(len(self.types))]
        user = "u(dict(zip(N, values)))" if self._user is not None else "True"
        shape = ["def shape(row):"]
        for k, (index, types) in enumerate(zip(self.field_index, self.types, strict=True)):
            var = names[k]
            shape += [
                f"    {var} = row[{index}]",
                f"    if not {_union(_CANONICAL, types, var)}:",
                f"        {var} = c{k}({var})",
                f"        if not {_union(_VALID, types, var)}:",
                "            return None",
            ]
        shape += [f"    values = ({''.join(n + ', ' for n in names)})"]
        shape += [f"    return values if {user} else None"]
        checks = [_union(_VALID, t, n) for t, n in zip(self.types, names, strict=True)]
        is_valid = [
            "def is_valid(values):",
            f"    ({''.join(n + ', ' for n in names)}) = values",
            f"    return {' and '.join([*checks, user])}",
        ]
        namespace: dict[str, Any] = {
            **_GLOBALS,
            "N": self.field_names,
            "u": self._user,
            **{f"c{k}": c for k, c in enumerate(self._coercers)},
        }
        exec("\n".join(shape + is_valid), namespace)  # source built from field types only
        return namespace["shape"], namespace["is_valid"]

    def _explain_schema(self) -> Draft202012Validator:
        """jsonschema's validator of the combined schema, built on first use."""
        if self._explainer is None:
            from jsonschema import Draft202012Validator  # here: see the module docstring

            self._explainer = Draft202012Validator(combined_schema(self.dataset))
        return self._explainer

    def coerce(self, row: Sequence[Any]) -> tuple[Any, ...]:
        """The row's values coerced to their fields, in schema order. Never raises; a value that
        cannot be coerced is left as it is (validation then rejects it)."""
        return tuple(c(row[i]) for c, i in zip(self._coercers, self.field_index, strict=True))

    def as_dict(self, values: tuple[Any, ...]) -> dict[str, Any]:
        """The row object AiTEMS receives, keys in schema order."""
        return dict(zip(self.field_names, values, strict=True))

    def explain(self, row: Sequence[Any]) -> list[RowError]:
        """Every error of a raw row, in field order: coercion failures, values JSON cannot hold,
        and jsonschema's errors on the combined schema. Empty exactly when ``shape`` accepts."""
        values = self.coerce(row)
        by_field: list[list[RowError]] = [[] for _ in values]
        doc = self.as_dict(values)
        judged_here: set[int] = set()
        for k, value in enumerate(values):
            if self._valid[k](value):
                continue
            path = json_path(self.field_names[k])
            note = self._coercion_note(k, row[self.field_index[k]])
            if note:
                by_field[k].append(RowError(path, note))
            problem = unrepresentable(value)
            if problem is not None:
                by_field[k].append(RowError(path, problem))
                doc[self.field_names[k]] = None  # jsonschema may not cope with it; judged here
                judged_here.add(k)
        row_errors: list[RowError] = []
        position = {name: k for k, name in enumerate(self.field_names)}
        for error in self._explain_schema().iter_errors(doc):
            head = error.absolute_path[0] if error.absolute_path else None
            field = position.get(head) if isinstance(head, str) else None
            if field is None:
                row_errors.append(RowError(error.json_path, error.message))
            elif field not in judged_here:
                by_field[field].append(RowError(error.json_path, error.message))
        for k, value in enumerate(values):
            if not by_field[k] and not self._valid[k](value):  # a safety net: never silent
                by_field[k].append(
                    RowError(
                        json_path(self.field_names[k]),
                        f"{short_repr(value)} is not a valid {' or '.join(self.types[k])} value",
                    )
                )
        return [e for errors in by_field for e in errors] + row_errors

    def _coercion_note(self, k: int, raw: Any) -> str | None:
        if raw is None:
            return None
        targets = [t for t in self.types[k] if t != "null"]
        reasons: list[str] = []
        for t in targets:
            result = self._convert[t](raw)
            if result is NO_RULE:
                continue
            if not isinstance(result, Failed):
                return None  # a conversion worked; validation explains what is wrong with it
            reasons.append(f"{t}: {result.reason}" if len(targets) > 1 else result.reason)
        if not reasons:
            return None
        return f"cannot coerce {short_repr(raw)} to {' or '.join(targets)}: {'; '.join(reasons)}"


def _map_columns(dataset: DatasetSpec, columns: Sequence[str]) -> tuple[int, ...]:
    indices: list[int] = []
    problems: list[SpecProblem] = []
    listed = ", ".join(columns) if columns else "(none)"
    for name in dataset.field_names:
        try:
            indices.append(match_column(name, columns))
        except ColumnMatchError as exc:
            reason = str(exc)
            if "the query returns" not in reason:
                reason += f" (the query returns: {listed})"
            problems.append(
                SpecProblem(
                    file="<query>",
                    line=None,
                    key=f"datasets.{dataset.name}.fields",
                    message=f"dataset {dataset.name!r}, field {name!r}: {reason}; alias exactly "
                    f"one column of the query to it (... AS {name})",
                )
            )
    if problems:
        raise SpecError(problems)
    return tuple(indices)


_PLAIN_NAME = re.compile("^[a-zA-Z][a-zA-Z0-9_]*$")  # as jsonschema's ValidationError.json_path


def json_path(name: str) -> str:
    """The JSON path of a field, written as jsonschema writes it (``$.AGE``, ``$['a-b']``)."""
    if _PLAIN_NAME.match(name):
        return f"$.{name}"
    return "$['" + name.replace("\\", "\\\\").replace("'", "\\'") + "']"


def unrepresentable(value: Any) -> str | None:
    """Why orjson cannot write ``value`` as the same JSON value, or None when it can."""
    kind = type(value)
    if kind is Undecodable:
        return f"the source's driver could not read the value: {value.describe()}"
    if kind is float and value - value != 0.0:
        return f"{value!r} is not a finite number (JSON has no NaN or Infinity)"
    if kind is int and not JSON_INT_RANGE[0] <= value <= JSON_INT_RANGE[1]:
        return f"{short_repr(value)} is outside the range JSON encoding supports (64 bits)"
    if kind is str and not _utf8(value):
        return f"{short_repr(value)} is not valid Unicode (it holds a lone surrogate)"
    if kind not in (type(None), bool, int, float, str):
        return f"{short_repr(value)} is not a JSON value ({kind.__name__})"
    return None


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr`` for messages: cut to ``limit`` characters; safe for huge integers, odd objects."""
    if type(value) is int and value.bit_length() > 256:
        return f"<an integer of {value.bit_length()} bits>"
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the row's real problem
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
