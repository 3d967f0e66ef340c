"""The quick spec verdict (spec_verdict.py) against jsonschema's Draft 2020-12 verdict of record.

A valid spec is loaded without jsonschema on this verdict's word alone, so it must never accept
what jsonschema refuses: checked on the broken-spec corpus, on edge cases of the shipped schema,
on spec documents Hypothesis mutates, and on small schemas built from every keyword it knows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from aitems_sync.errors import SpecError
from aitems_sync.spec.document import Document
from aitems_sync.spec.load import read_document
from aitems_sync.spec.model import spec_schema
from aitems_sync.spec.verdict import UnsupportedSchema, compile_verdict, equal

SPECS = Path(__file__).parent / "specs"
CORPUS_ENV = {"NCP_ACCESS_KEY": "AK-corpus", "NCP_SECRET_KEY": "SK-corpus-secret-value"}
SCHEMA = spec_schema()
QUICK = compile_verdict(SCHEMA)
ORACLE = Draft202012Validator(SCHEMA)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VALID_SPEC = """\
version: 1
aitems:
  endpoint: http://127.0.0.1:8787/api/v1
  service_id: svc
  access_key: ak
  secret_key: sk
  timeout: 1m
  batch: {max_rows: 500, max_bytes: 1MiB, in_flight: 64}
  retry: {attempts: 3, backoff: 0.5, max_elapsed: 1h30m}
state: sqlite:///state/aitems-sync.db
sources:
  shop: {url: "sqlite:///shop.db", timezone: Asia/Seoul}
datasets:
  users:
    type: user
    dataset_id: dsusers0001
    source: shop
    query: SELECT id AS USER_ID, age AS AGE, updated_at FROM customers
    cursor: updated_at
    key: [USER_ID]
    lookback: 10m
    fields:
      - {name: USER_ID, type: string}
      - {name: AGE, type: [int, "null"], categorical: false}
    json_schema: {properties: {AGE: {minimum: 0}}}
    on_invalid: fail
    max_invalid: 1.5%
metrics: {pushgateway: null, job: nightly}
"""


def valid_spec() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(VALID_SPEC)
    return data


def test_the_shipped_schema_needs_no_jsonschema() -> None:
    assert QUICK(valid_spec())
    assert ORACLE.is_valid(valid_spec())


def corpus_documents() -> Iterator[tuple[str, Any]]:
    for path in sorted(SPECS.glob("*.yaml")):
        try:
            data = read_document(path, Document(str(path), path.parent), CORPUS_ENV)
        except SpecError:  # not YAML: never reaches the schema
            continue
        yield path.stem, data


@pytest.mark.parametrize(("name", "data"), list(corpus_documents()))
def test_verdict_on_the_broken_spec_corpus_is_jsonschemas(name: str, data: Any) -> None:
    assert QUICK(data) == ORACLE.is_valid(data)


def _with(path: str, value: Any) -> dict[str, Any]:
    """The valid spec with the value at the dotted ``path`` replaced (``-`` deletes it)."""
    data = valid_spec()
    *parents, last = path.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) else last
    if value == "-":
        del node[key]
    else:
        node[key] = value
    return data


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("aitems.batch.in_flight", 65),  # "maximum" next to "$ref": both apply
        ("aitems.batch.in_flight", 64.0),
        ("aitems.batch.in_flight", 0),
        ("aitems.batch.max_rows", 1000.0),  # an integral float is an integer
        ("aitems.batch.max_rows", 1000.5),
        ("aitems.batch.max_rows", True),  # true is not 1
        ("aitems.batch.max_rows", " 12 "),
        ("aitems.batch.max_bytes", "4 MiB"),
        ("aitems.batch.max_bytes", 0),
        ("version", True),
        ("version", 1.0),
        ("version", "1"),
        ("aitems.timeout", math.nan),
        ("aitems.timeout", -0.5),
        ("aitems.timeout", "10 minutes"),
        ("aitems.timeout", "10m\n"),  # "$" matches before a final newline
        ("aitems.endpoint", "https://"),
        ("aitems.endpoint", date(2024, 5, 1)),
        ("aitems.service_id", ""),
        ("aitems.service_id", b"svc"),
        ("aitems.secret_key", "-"),
        ("aitems.unknown", 1),
        ("state", ""),
        ("sources", {}),
        ("sources.shop", {"url": "sqlite://", "extra": 1}),
        ("sources.shop.url", None),
        ("datasets.users.type", "users"),
        ("datasets.users.key", ["USER_ID", "USER_ID"]),
        ("datasets.users.key", []),
        ("datasets.users.key", [1, True]),
        ("datasets.users.fields", []),
        ("datasets.users.fields.1.type", ["int", "int"]),
        ("datasets.users.fields.1.type", []),
        ("datasets.users.fields.1.type", "integer"),
        ("datasets.users.fields.1.categorical", 0),
        ("datasets.users.json_schema", ""),
        ("datasets.users.json_schema", "schemas/users.json"),
        ("datasets.users.json_schema", []),
        ("datasets.users.max_invalid", 50),
        ("datasets.users.max_invalid", -1),
        ("datasets.users.max_invalid", "1 %%"),
        ("datasets.users.on_invalid", "Fail"),
        ("metrics.pushgateway", "http://gw:9091"),
        ("metrics.pushgateway", "gw:9091"),
        ("metrics", None),
    ],
)
def test_verdict_on_edge_values_is_jsonschemas(path: str, value: Any) -> None:
    data = _with(path, value)
    assert QUICK(data) == ORACLE.is_valid(data)


def test_a_dataset_or_source_name_is_judged_by_its_pattern() -> None:
    for name in ("ok_name-1", "bad name", "bad\n", "abc\n", ""):
        data = valid_spec()
        data["datasets"][name] = data["datasets"].pop("users")
        assert QUICK(data) == ORACLE.is_valid(data), repr(name)


# -- Hypothesis: mutated spec documents ---------------------------------------------------------


def _schema_keys(node: Any) -> set[str]:
    if isinstance(node, dict):
        own = set(node.get("properties", {}))
        return own | {k for value in node.values() for k in _schema_keys(value)}
    if isinstance(node, list):
        return {k for value in node for k in _schema_keys(value)}
    return set()


KEYS = sorted(_schema_keys(SCHEMA))
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([0, 1, -1, 64, 65, 1.0, 1.5, -0.5, 2**70, math.nan, math.inf]),
    st.integers(),
    st.floats(),
    st.sampled_from([
        "", "x", "abc\n", "10m", "1h30m", " 5 ", "4MB", "4 MiB", "1%", "0.5 %", "http://h",
        "https://", "ftp://x", "user", "item", "interaction", "string", "int", "null",
        "quarantine", "fail", "USER_ID", "a b", "sqlite:///x.db",
    ]),
    st.text(max_size=6),
    st.dates(),
    st.binary(max_size=3),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


def _containers(node: Any, found: list[Any]) -> list[Any]:
    if isinstance(node, dict | list):
        found.append(node)
        for child in node.values() if isinstance(node, dict) else node:
            _containers(child, found)
    return found


@SETTINGS
@given(data=st.data())
def test_verdict_on_mutated_specs_is_jsonschemas(data: st.DataObject) -> None:
    document = valid_spec()
    for _ in range(data.draw(st.integers(1, 3))):
        node = data.draw(st.sampled_from(_containers(document, [])))
        if isinstance(node, list):
            if not node:
                node.append(data.draw(VALUES))
                continue
            index = data.draw(st.integers(0, len(node) - 1))
            if data.draw(st.booleans()):
                del node[index]
            else:
                node[index] = data.draw(VALUES)
        elif node and data.draw(st.booleans()):
            key = data.draw(st.sampled_from(sorted(node)))
            if data.draw(st.booleans()):
                del node[key]
            else:
                node[key] = data.draw(VALUES)
        else:
            node[data.draw(st.sampled_from(KEYS))] = data.draw(VALUES)
    assert QUICK(document) == ORACLE.is_valid(document), document


# -- Hypothesis: small schemas from every keyword the verdict knows ------------------------------

TYPES = ["array", "boolean", "integer", "null", "number", "object", "string"]
LEAVES = st.one_of(
    st.none(), st.booleans(), st.sampled_from([0, 1, 1.0, -1, 2, 1.5, math.nan]),
    st.sampled_from(["", "a", "b", "ab", "a\n", "1"]),
)  # fmt: skip
JSON = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), inner, max_size=3),
    max_leaves=6,
)


def _keywords(inner: st.SearchStrategy[Any], refer: bool = True) -> st.SearchStrategy[Any]:
    small = st.integers(0, 2)
    number = st.sampled_from([0, 1, 1.5, -1])
    options = [
        st.tuples(st.just("type"), st.sampled_from(TYPES) | st.lists(
            st.sampled_from(TYPES), min_size=1, max_size=3, unique=True)),
        st.tuples(st.just("const"), JSON),
        st.tuples(st.just("enum"), st.lists(JSON, max_size=3)),
        st.tuples(st.just("pattern"), st.sampled_from(["^a", "b$", "^[0-9]+$", "a|^$"])),
        st.tuples(st.just("minimum"), number),
        st.tuples(st.just("maximum"), number),
        st.tuples(st.just("minLength"), small),
        st.tuples(st.just("minItems"), small),
        st.tuples(st.just("minProperties"), small),
        st.tuples(st.just("uniqueItems"), st.booleans()),
        st.tuples(st.just("required"), st.lists(st.sampled_from("abc"), max_size=2, unique=True)),
        st.tuples(st.just("properties"), st.dictionaries(st.sampled_from("abc"), inner,
                                                          max_size=2)),
        st.tuples(st.just("additionalProperties"), inner),
        st.tuples(st.just("propertyNames"), inner),
        st.tuples(st.just("items"), inner),
        st.tuples(st.just("anyOf"), st.lists(inner, min_size=1, max_size=2)),
        st.tuples(st.just("title"), st.just("annotations change nothing")),
    ]
    if refer:
        options.append(st.tuples(st.just("$ref"), st.just("#/$defs/shared")))
    return st.lists(st.one_of(options), max_size=3).map(dict)


SCHEMAS: st.SearchStrategy[Any] = st.recursive(
    st.booleans() | st.just({}), _keywords, max_leaves=5
)
# What "#/$defs/shared" points at (without references of its own: no endless loop).
SHARED: st.SearchStrategy[Any] = st.recursive(
    st.booleans() | st.just({}), lambda i: _keywords(i, refer=False), max_leaves=3
)


@SETTINGS
@given(schema=SCHEMAS, shared=SHARED, values=st.lists(JSON, min_size=1, max_size=6))
def test_verdict_on_any_schema_of_known_keywords_is_jsonschemas(
    schema: Any, shared: Any, values: list[Any]
) -> None:
    root = {**schema, "$defs": {"shared": shared}} if isinstance(schema, dict) else schema
    quick, oracle = compile_verdict(root), Draft202012Validator(root)
    for value in values:
        assert quick(value) == oracle.is_valid(value), (root, value)


@pytest.mark.parametrize(
    "schema",
    [
        {"allOf": [{"type": "string"}]},
        {"patternProperties": {"^a": {}}, "additionalProperties": False},
        {"prefixItems": [{}], "items": False},
        {"properties": {"a": {"$id": "urn:other", "$ref": "#/$defs/x"}}},
        {"$ref": "#anchor"},
        {"$ref": "other.json#/$defs/x"},
        {"$ref": "#/$defs/missing"},
        {"type": "decimal"},
        {"items": [{"type": "string"}]},
    ],
)
def test_anything_else_leaves_the_verdict_to_jsonschema(schema: dict[str, Any]) -> None:
    with pytest.raises(UnsupportedSchema):
        compile_verdict(schema)


def test_references_may_be_recursive() -> None:
    tree = {"$defs": {"node": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
            "$ref": "#/$defs/node"}
    verdict = compile_verdict(tree)

    assert verdict([[], [[]]])
    assert not verdict([[], [1]])


@pytest.mark.parametrize(
    ("one", "two", "same"),
    [(1, 1.0, True), (1, True, False), (0, False, False), ([1], [True], False),
     ({"a": 1}, {"a": 1.0}, True), ("1", 1, False), (math.nan, float("nan"), False)],
)
def test_equal_is_json_equality(one: Any, two: Any, same: bool) -> None:
    assert equal(one, two) is same
    assert Draft202012Validator({"const": one}).is_valid(two) is same
