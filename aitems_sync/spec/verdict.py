"""A quick yes/no from the spec's JSON Schema, so that a valid spec never imports jsonschema.

Every run validates its spec against ``spec.schema.json``, and importing jsonschema (with
referencing, attrs, rpds and its bundled metaschemas) costs more of each run's start-up than
the rest of loading the spec. A valid spec needs no messages, only the verdict; the
loader asks jsonschema, for its detailed errors, only when the verdict here is no.

``compile_verdict`` turns a schema into a predicate equal to jsonschema's Draft 2020-12
``is_valid`` for the keywords the spec schema uses (each below mirrors jsonschema's own
keyword: type-guarded, ``equal`` that keeps ``true`` apart from ``1``, ``$ref`` applied
together with its sibling keywords). Any other keyword raises UnsupportedSchema and the caller
keeps jsonschema as the judge. A predicate that refused too much would only cost the import;
accepting too much would let a broken spec through, so tests/test_spec_verdict.py holds it to
jsonschema's verdict on the broken-spec corpus and on generated documents.

Not fastjsonschema: compiling the spec schema with it is paid again on every run, and its
draft-07 ``$ref`` ignores sibling keywords (``{"$ref": "#/$defs/count", "maximum": 64}``
would accept ``in_flight: 100``).
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Verdict = Callable[[Any], bool]
_Builder = Callable[["_Compiler", Any, Mapping[str, Any]], Verdict]

#: Keywords that never fail a value (annotations, and ``$defs`` reached only through ``$ref``).
_IGNORED = frozenset({
    "$schema", "$comment", "$defs", "title", "description", "default", "examples",
    "deprecated", "readOnly", "writeOnly",
})  # fmt: skip


class UnsupportedSchema(ValueError):
    """The schema uses a keyword or reference that ``compile_verdict`` does not evaluate."""


def compile_verdict(schema: Any) -> Verdict:
    """A predicate equal to jsonschema's Draft 2020-12 verdict on ``schema``.

    Raises UnsupportedSchema when the schema uses anything this module does not evaluate.
    """
    return _Compiler(schema).compile(schema, root=True)


# -- jsonschema's type checks and equality (Draft 2020-12) -------------------------------------


def _is_integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Number) and not isinstance(value, bool)


_TYPES: dict[str, Verdict] = {
    "array": lambda v: isinstance(v, list),
    "boolean": lambda v: isinstance(v, bool),
    "integer": _is_integer,
    "null": lambda v: v is None,
    "number": _is_number,
    "object": lambda v: isinstance(v, dict),
    "string": lambda v: isinstance(v, str),
}

_TRUE, _FALSE = object(), object()


def _unbool(value: Any) -> Any:
    """``true`` and ``false`` as values no number equals (JSON keeps them apart from 1 and 0)."""
    return _TRUE if value is True else _FALSE if value is False else value


def equal(one: Any, two: Any) -> bool:
    """JSON equality: ``true`` is not ``1``, ``1.0`` is ``1``, and so on inside lists and maps."""
    if one is two:
        return True
    if isinstance(one, str) or isinstance(two, str):
        return bool(one == two)
    if isinstance(one, Sequence) and isinstance(two, Sequence):
        return len(one) == len(two) and all(equal(a, b) for a, b in zip(one, two, strict=True))
    if isinstance(one, Mapping) and isinstance(two, Mapping):
        return len(one) == len(two) and all(k in two and equal(v, two[k]) for k, v in one.items())
    return bool(_unbool(one) == _unbool(two))


def _unique(items: list[Any]) -> bool:
    # Every pair: at least as strict as jsonschema's sort-then-compare-neighbours.
    seen: list[Any] = []
    for item in map(_unbool, items):
        if any(equal(other, item) for other in seen):
            return False
        seen.append(item)
    return True


# -- keywords ------------------------------------------------------------------------------------


def _type(_: _Compiler, value: Any, __: Mapping[str, Any]) -> Verdict:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(n in _TYPES for n in names):
        raise UnsupportedSchema(f"type {value!r}")
    tests = [_TYPES[n] for n in names]
    return lambda v: any(test(v) for test in tests)


def _const(_: _Compiler, value: Any, __: Mapping[str, Any]) -> Verdict:
    return lambda v: equal(v, value)


def _enum(_: _Compiler, value: Any, __: Mapping[str, Any]) -> Verdict:
    if not isinstance(value, list):
        raise UnsupportedSchema("enum is not a list")
    return lambda v: any(equal(each, v) for each in value)


def _pattern(_: _Compiler, value: Any, __: Mapping[str, Any]) -> Verdict:
    search = re.compile(value).search
    return lambda v: not isinstance(v, str) or search(v) is not None


def _minimum(_: _Compiler, value: Any, __: Mapping[str, Any]) -> Verdict:
    return lambda v: not _is_number(v) or not v < value


def _maximum(_: _Compiler, value: Any, __: Mapping[str, Any]) -> Verdict:
    return lambda v: not _is_number(v) or not v > value


def _min_length(_: _Compiler, value: Any, __: Mapping[str, Any]) -> Verdict:
    return lambda v: not isinstance(v, str) or len(v) >= value


def _min_items(_: _Compiler, value: Any, __: Mapping[str, Any]) -> Verdict:
    return lambda v: not isinstance(v, list) or len(v) >= value


def _min_properties(_: _Compiler, value: Any, __: Mapping[str, Any]) -> Verdict:
    return lambda v: not isinstance(v, dict) or len(v) >= value


def _unique_items(_: _Compiler, value: Any, __: Mapping[str, Any]) -> Verdict:
    return lambda v: not value or not isinstance(v, list) or _unique(v)


def _required(_: _Compiler, value: Any, __: Mapping[str, Any]) -> Verdict:
    return lambda v: not isinstance(v, dict) or all(key in v for key in value)


def _properties(compiler: _Compiler, value: Any, __: Mapping[str, Any]) -> Verdict:
    checks = [(key, compiler.compile(sub)) for key, sub in value.items()]
    return lambda v: (
        not isinstance(v, dict) or all(check(v[key]) for key, check in checks if key in v)
    )


def _additional_properties(compiler: _Compiler, value: Any, schema: Mapping[str, Any]) -> Verdict:
    if "patternProperties" in schema:
        raise UnsupportedSchema("patternProperties")
    known = frozenset(schema.get("properties", {}))
    check = compiler.compile(value)
    return lambda v: (
        not isinstance(v, dict) or all(check(item) for key, item in v.items() if key not in known)
    )


def _property_names(compiler: _Compiler, value: Any, __: Mapping[str, Any]) -> Verdict:
    check = compiler.compile(value)
    return lambda v: not isinstance(v, dict) or all(check(key) for key in v)


def _items(compiler: _Compiler, value: Any, schema: Mapping[str, Any]) -> Verdict:
    if "prefixItems" in schema:
        raise UnsupportedSchema("prefixItems")
    check = compiler.compile(value)
    return lambda v: not isinstance(v, list) or all(check(item) for item in v)


def _any_of(compiler: _Compiler, value: Any, __: Mapping[str, Any]) -> Verdict:
    checks = [compiler.compile(sub) for sub in value]
    return lambda v: any(check(v) for check in checks)


def _ref(compiler: _Compiler, value: Any, __: Mapping[str, Any]) -> Verdict:
    return compiler.ref(value)


_KEYWORDS: dict[str, _Builder] = {
    "type": _type, "const": _const, "enum": _enum, "pattern": _pattern, "minimum": _minimum,
    "maximum": _maximum, "minLength": _min_length, "minItems": _min_items,
    "minProperties": _min_properties, "uniqueItems": _unique_items, "required": _required,
    "properties": _properties, "additionalProperties": _additional_properties,
    "propertyNames": _property_names, "items": _items, "anyOf": _any_of, "$ref": _ref,
}  # fmt: skip


class _Compiler:
    """Compiles each subschema once; ``$ref`` targets by pointer, so cycles terminate."""

    def __init__(self, root: Any) -> None:
        self.root = root
        self.targets: dict[str, Verdict] = {}

    def compile(self, schema: Any, *, root: bool = False) -> Verdict:
        if schema is True or schema is False:
            return (lambda _: True) if schema else (lambda _: False)
        if not isinstance(schema, dict):
            raise UnsupportedSchema(f"a subschema is a {type(schema).__name__}")
        checks: list[Verdict] = []
        for key, value in schema.items():
            if key in _IGNORED or (root and key == "$id"):
                continue
            build = _KEYWORDS.get(key)
            if build is None:  # $id below the root changes what references mean, too
                raise UnsupportedSchema(f"keyword {key!r}")
            checks.append(build(self, value, schema))
        return lambda v: all(check(v) for check in checks)

    def ref(self, pointer: Any) -> Verdict:
        """The target of a reference within the document (``#/$defs/name``)."""
        if not isinstance(pointer, str) or pointer[:2] not in ("#", "#/") or "%" in pointer:
            raise UnsupportedSchema(f"$ref {pointer!r}")
        if pointer not in self.targets:
            self.targets[pointer] = lambda _: False  # replaced below; a cycle calls through
            self.targets[pointer] = self.compile(self._resolve(pointer))
        targets = self.targets
        return lambda v: targets[pointer](v)

    def _resolve(self, pointer: str) -> Any:
        node = self.root
        for part in pointer[1:].split("/")[1:]:
            name = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and name in node:
                node = node[name]
            elif isinstance(node, list) and name.isdigit() and int(name) < len(node):
                node = node[int(name)]
            else:
                raise UnsupportedSchema(f"$ref {pointer!r} points nowhere")
        return node
