"""The row contract: the JSON Schema generated from a dataset's fields, and the user's json_schema.

``generated_schema`` is the verdict of record for the field types (the typed checks in
``shape.py`` are proven equal to it by tests); ``combined_schema`` adds the user's optional
``json_schema``. ``compile_user_schema`` turns that user schema into a fast verdict: fastjsonschema
where every keyword is one we have shown to behave exactly as jsonschema's Draft 2020-12
(``FAST_KEYWORDS``), jsonschema itself otherwise. See docs/coercion.md.

jsonschema and fastjsonschema are imported only for a dataset that has a ``json_schema``: the
generated schema is judged by ``shape.py``'s typed checks, and importing jsonschema is a
noticeable part of a run's start-up.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aitems_sync.errors import SpecError, SpecProblem
from aitems_sync.spec.model import REQUIRED_FIELDS, DatasetSpec, Field, FieldType

logger = logging.getLogger(__name__)

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"

INT_RANGE = (-(2**31), 2**31 - 1)
LONG_RANGE = (-(2**63), 2**63 - 1)

#: Keywords fastjsonschema evaluates exactly as jsonschema does on a row of JSON scalars (tested
#: by tests/test_shape_differential.py), so it may give the verdict for a user schema using only
#: these. Annotations are listed too: neither validator asserts them (formats are annotations in
#: Draft 2020-12 and fastjsonschema is compiled with use_formats=False). ``pattern`` is rewritten
#: first (see ``_python_dollar``).
FAST_KEYWORDS = frozenset(
    {
        "type", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
        "minLength", "maxLength", "pattern", "required", "properties", "allOf", "anyOf", "oneOf",
        "not", "if", "then", "else", "format", "$id", "$comment", "$defs", "definitions",
        "title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly",
    }
)  # fmt: skip

#: Keywords either validator acts on. A keyword in neither set is ignored by both, so harmless;
#: one here but not in FAST_KEYWORDS (``$ref``, ``multipleOf``, ``dependentRequired``,
#: ``additionalProperties``, ``unevaluatedProperties``...) sends the schema to jsonschema.
KNOWN_KEYWORDS = FAST_KEYWORDS | frozenset(
    {
        "$schema", "$ref", "$anchor", "$dynamicRef", "$dynamicAnchor", "$vocabulary",
        "$recursiveRef", "$recursiveAnchor", "dependentSchemas", "prefixItems", "items",
        "additionalItems", "contains", "patternProperties", "additionalProperties",
        "propertyNames", "unevaluatedItems", "unevaluatedProperties", "multipleOf", "maxItems",
        "minItems", "uniqueItems", "maxContains", "minContains", "maxProperties",
        "minProperties", "dependentRequired", "dependencies", "contentEncoding",
        "contentMediaType", "contentSchema",
    }
)  # fmt: skip

_SUBSCHEMA = frozenset({"not", "if", "then", "else"})
_SUBSCHEMA_LIST = frozenset({"allOf", "anyOf", "oneOf"})
_SUBSCHEMA_MAP = frozenset({"properties"})
_NOT_WALKED = frozenset({"enum", "const", "default", "examples", "$defs", "definitions"})

_JSON_TYPE: Mapping[FieldType, str] = {
    "string": "string",
    "int": "integer",
    "long": "integer",
    "float": "number",
    "double": "number",
    "boolean": "boolean",
    "null": "null",
}


def effective_types(dataset: DatasetSpec, field: Field) -> tuple[FieldType, ...]:
    """The field's union as validated: a required field of the dataset type is never null."""
    if field.name in REQUIRED_FIELDS.get(dataset.type, {}):
        return tuple(t for t in field.types if t != "null")
    return field.types


def field_schema(types: Sequence[FieldType]) -> dict[str, Any] | bool:
    """The schema of one field whose value must match one of ``types``.

    A number type subsumes the integer types and ``long`` subsumes ``int``, so at most one range
    is left; ``minimum``/``maximum`` only apply to numbers, so one object with a ``type`` list
    says exactly "one of the listed types" and gives jsonschema's clearest messages.
    """
    wanted = set(types)
    if wanted & {"float", "double"}:
        wanted -= {"int", "long"}
    if "long" in wanted:
        wanted.discard("int")
    json_types = list(dict.fromkeys(_JSON_TYPE[t] for t in types if t in wanted))
    if not json_types:
        return False  # an empty union (a required field typed only "null") admits nothing
    schema: dict[str, Any] = {"type": json_types[0] if len(json_types) == 1 else json_types}
    bounds = LONG_RANGE if "long" in wanted else INT_RANGE if "int" in wanted else None
    if bounds is not None:
        schema["minimum"], schema["maximum"] = bounds
    return schema


def generated_schema(dataset: DatasetSpec) -> dict[str, Any]:
    """Draft 2020-12 JSON Schema for one shaped row of ``dataset``.

    Every field key is present (nullable fields may hold null), no other key is allowed.
    """
    return {
        "$schema": DRAFT_2020_12,
        "type": "object",
        "properties": {f.name: field_schema(effective_types(dataset, f)) for f in dataset.fields},
        "required": list(dataset.field_names),
        "additionalProperties": False,
    }


def user_schema(dataset: DatasetSpec) -> dict[str, Any] | None:
    """The user's json_schema as embedded in the combined schema, or None.

    It gets an ``$id`` when it has none, so that its own ``#/$defs/...`` references resolve
    against itself rather than against the combined document.
    """
    if dataset.json_schema is None:
        return None
    schema = copy.deepcopy(dict(dataset.json_schema))
    schema.setdefault("$id", f"urn:aitems-sync:dataset:{dataset.name}:json_schema")
    return schema


def combined_schema(dataset: DatasetSpec) -> dict[str, Any]:
    """``{"allOf": [generated, user json_schema]}`` when the dataset has one, else the generated."""
    generated = generated_schema(dataset)
    user = user_schema(dataset)
    if user is None:
        return generated
    return {"$schema": DRAFT_2020_12, "allOf": [generated, user]}


def check_user_schema(dataset: DatasetSpec) -> None:
    """Raise SpecError when the dataset's json_schema is not a valid JSON Schema."""
    user = user_schema(dataset)
    if user is None:
        return
    from jsonschema import Draft202012Validator  # here: see the module docstring
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    try:
        validator_for(user, default=Draft202012Validator).check_schema(user)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise SpecError(
            [
                SpecProblem(
                    file="<json_schema>",
                    line=None,
                    key=f"datasets.{dataset.name}.json_schema",
                    message=f"not a valid JSON Schema at {where}: {exc.message}",
                )
            ]
        ) from None


RowVerdict = Callable[[dict[str, Any]], bool]


def compile_user_schema(dataset: DatasetSpec) -> RowVerdict | None:
    """A verdict on a row dict equal to jsonschema's on the user's json_schema; None without one.

    Call only on rows that already pass the generated schema (all values are JSON scalars).
    fastjsonschema decides when ``fast_eligible`` proves it equivalent; its rejections are still
    confirmed by jsonschema, which costs little because invalid rows are rare.
    """
    user = user_schema(dataset)
    if user is None:
        return None
    check_user_schema(dataset)
    import fastjsonschema  # here: see the module docstring
    from jsonschema import Draft202012Validator
    from jsonschema.validators import validator_for

    slow = validator_for(user, default=Draft202012Validator)(user)
    reason = fast_ineligible(user)
    if reason is None:
        try:
            fast = fastjsonschema.compile(
                _fast_definition(user), use_default=False, use_formats=False
            )
        except Exception as exc:  # any compile failure means: use jsonschema
            reason = f"fastjsonschema cannot compile it ({type(exc).__name__})"
        else:
            return _confirmed(fast, slow.is_valid)
    logger.warning(
        "dataset %s: json_schema is checked by jsonschema on every row (slower): %s",
        dataset.name,
        reason,
    )
    return slow.is_valid


def _confirmed(fast: Callable[[Any], Any], slow: RowVerdict) -> RowVerdict:
    def verdict(row: dict[str, Any]) -> bool:
        try:
            fast(row)
        except Exception:  # a rejection (or a fastjsonschema bug): ask jsonschema
            return slow(row)
        return True

    return verdict


def fast_ineligible(schema: Any, root: bool = True) -> str | None:
    """Why fastjsonschema may not judge ``schema`` (a reason for the log), or None if it may."""
    if isinstance(schema, bool):
        return None
    if not isinstance(schema, Mapping):
        return "a subschema is not an object"
    for key, value in schema.items():
        reason = _keyword_ineligible(key, value, root)
        if reason is not None:
            return reason
    return None


def _keyword_ineligible(key: str, value: Any, root: bool) -> str | None:
    if key == "$schema":
        return None if root and value == DRAFT_2020_12 else "it declares another $schema"
    if key not in KNOWN_KEYWORDS or key in _NOT_WALKED:
        return None
    if key not in FAST_KEYWORDS:
        return f"it uses {key!r}"
    if key == "pattern" and (not isinstance(value, str) or _python_dollar(value) is None):
        return "a pattern uses inline flags m or x"
    if key in _SUBSCHEMA:
        return fast_ineligible(value, root=False)
    if key in _SUBSCHEMA_LIST:
        if not isinstance(value, list):
            return f"{key} is not a list"
        return next((r for r in (fast_ineligible(s, False) for s in value) if r), None)
    if key in _SUBSCHEMA_MAP:
        if not isinstance(value, Mapping):
            return f"{key} is not an object"
        return next((r for r in (fast_ineligible(s, False) for s in value.values()) if r), None)
    return None


def _fast_definition(schema: Any) -> Any:
    """The schema as given to fastjsonschema: patterns rewritten, ``$schema`` dropped.

    fastjsonschema picks its draft from ``$schema`` and knows no 2020-12; without it, it uses its
    latest draft, whose semantics for FAST_KEYWORDS are the ones we test.
    """
    if isinstance(schema, list):
        return [_fast_definition(s) for s in schema]
    if not isinstance(schema, Mapping):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "$schema":
            continue
        if key == "pattern":
            out[key] = _python_dollar(value)
        elif key in _SUBSCHEMA | _SUBSCHEMA_LIST:
            out[key] = _fast_definition(value)
        elif key in _SUBSCHEMA_MAP:
            out[key] = {name: _fast_definition(s) for name, s in value.items()}
        else:
            out[key] = value
    return out


_FLAGS = re.compile(r"\(\?[aiLmsux-]+[:)]")


def _python_dollar(pattern: str) -> str | None:
    """``pattern`` with each ``$`` spelled so that fastjsonschema keeps Python's meaning of it.

    fastjsonschema turns every unescaped ``$`` into ``\\Z`` ("end of string"); in Python (and so in
    jsonschema) ``$`` also matches before a final newline. Anchors become ``(?=\\n?\\Z)``, the
    same thing without a ``$``, and a ``$`` inside a character class becomes ``\\$``. None when
    inline flags ``m`` or ``x`` change what ``$`` or the text means.
    """
    if any(set("mx") & set(match.group()) for match in _FLAGS.finditer(pattern)):
        return None
    out: list[str] = []
    i, in_class = 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = char != "]"
            out.append("\\$" if char == "$" else char)
        elif char == "[":
            start = i + 1 + (pattern[i + 1 : i + 2] == "^")
            start += pattern[start : start + 1] == "]"  # a "]" first in a class is literal
            out.append(pattern[i:start])
            i, in_class = start, True
            continue
        else:
            out.append("(?=\\n?\\Z)" if char == "$" else char)
        i += 1
    return "".join(out)
