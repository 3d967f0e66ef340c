"""The user docs stay true to the repository: every spec key documented, every relative link alive.

These tests read files only (no aitems_sync import), so they hold whatever the code is doing.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPEC_SCHEMA = ROOT / "aitems_sync" / "spec" / "spec.schema.json"
SPEC_DOC = ROOT / "docs" / "spec.md"

#: Subschemas that describe the value at the same place as their parent.
_SAME_PLACE = ("allOf", "anyOf", "oneOf", "not", "if", "then", "else")
#: Keys whose subschema describes something else than a property (the names themselves).
_NOT_PROPERTIES = ("propertyNames",)


# --- the spec schema's keys ------------------------------------------------------------------


def schema_keys(schema: Mapping[str, Any]) -> dict[str, list[str]]:
    """Every property name of ``schema`` with the dotted paths it appears at.

    The walk follows ``properties``, ``patternProperties`` and ``additionalProperties``
    (``*`` in a path), ``items`` and ``prefixItems`` (``[]``), the ``allOf``/``anyOf``/``oneOf``
    branches and local ``$ref`` (``#/...``, once per branch, so a cycle ends). Then each entry
    of ``$defs`` and ``definitions`` that no ``$ref`` reached is walked from ``$defs.NAME``.
    """
    found: dict[str, list[str]] = {}
    reached: set[str] = set()
    walks = [(schema, "")]
    for defs in ("$defs", "definitions"):
        walks += [(sub, f"{defs}.{name}") for name, sub in _mapping(schema.get(defs)).items()]
    for node, start in walks:
        pointer = "#/" + start.replace(".", "/", 1)
        if start and pointer in reached:
            continue
        for path, name in _walk(schema, node, start, frozenset({pointer}), reached):
            paths = found.setdefault(name, [])
            if path not in paths:
                paths.append(path)
    return found


def _walk(
    root: Mapping[str, Any], node: Any, path: str, seen: frozenset[str], reached: set[str]
) -> Iterator[tuple[str, str]]:
    """(dotted path, property name) for each property under ``node`` found at ``path``;
    ``seen``: the refs followed on the way here; ``reached``: every ref followed so far."""
    if not isinstance(node, Mapping):
        return
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#") and ref not in seen:
        reached.add(ref)
        yield from _walk(root, _resolve(root, ref), path, seen | {ref}, reached)
    for name, sub in _mapping(node.get("properties")).items():
        child = f"{path}.{name}" if path else name
        yield child, name
        yield from _walk(root, sub, child, seen, reached)
    star = f"{path}.*" if path else "*"
    for sub in _mapping(node.get("patternProperties")).values():
        yield from _walk(root, sub, star, seen, reached)
    if isinstance(node.get("additionalProperties"), Mapping):
        yield from _walk(root, node["additionalProperties"], star, seen, reached)
    items = node.get("items")
    for sub in [*(items if isinstance(items, list) else [items]), *_list(node.get("prefixItems"))]:
        yield from _walk(root, sub, f"{path}[]", seen, reached)
    for keyword in _SAME_PLACE:
        value = node.get(keyword)
        for sub in value if isinstance(value, list) else [value]:
            yield from _walk(root, sub, path, seen, reached)


def _resolve(root: Mapping[str, Any], ref: str) -> Any:
    """The subschema a local ``$ref`` (a JSON pointer after ``#``) points at; None if absent."""
    node: Any = root
    for part in ref.removeprefix("#").split("/")[1:]:
        part = unquote(part).replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def documented_names(markdown: str) -> set[str]:
    """Names written as inline code, alone (`max_rows`) or as a segment of a dotted path
    (`aitems.batch.max_rows`, `datasets.<name>.fields[].type`)."""
    names: set[str] = set()
    for span in _code_spans(_without_fences(markdown)):
        text = span.strip()
        if not re.fullmatch(r"[\w$<>*\[\]-]+(?:\.[\w$<>*\[\]-]+)*", text):
            continue
        for segment in text.split("."):
            names.add(re.sub(r"\[[^\]]*\]$", "", segment))
    return names


def missing_keys(schema: Mapping[str, Any], markdown: str) -> dict[str, list[str]]:
    """The schema's property names the Markdown does not mention as code, with their paths."""
    documented = documented_names(markdown)
    return {name: paths for name, paths in schema_keys(schema).items() if name not in documented}


def _load_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path} does not hold a JSON object"
    return data


def test_every_key_of_the_spec_schema_is_in_docs_spec_md() -> None:
    schema = _load_json(SPEC_SCHEMA)
    keys = schema_keys(schema)
    assert {"version", "max_rows", "categorical", "json_schema"} <= set(keys)  # the walk works
    missing = missing_keys(schema, SPEC_DOC.read_text(encoding="utf-8"))
    listed = "\n".join(f"  `{name}` (at {', '.join(at)})" for name, at in sorted(missing.items()))
    assert not missing, f"docs/spec.md does not mention these spec keys as `code`:\n{listed}"


_MADE_UP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "top": {"type": "string"},
        "things": {"type": "object", "additionalProperties": {"$ref": "#/$defs/thing"}},
        "either": {"anyOf": [{"properties": {"left": {}}}, {"properties": {"right": {}}}]},
    },
    "patternProperties": {"^x-": {"properties": {"extension": {}}}},
    "$defs": {
        "thing": {
            "properties": {
                "parts": {"type": "array", "items": {"$ref": "#/$defs/part"}},
                "again": {"$ref": "#/$defs/thing"},  # a cycle: the walk must end
            }
        },
        "part": {"allOf": [{"properties": {"undocumented_knob": {"type": "integer"}}}]},
        "unreached": {"properties": {"orphan": {}}},
    },
}


def test_the_schema_key_check_reports_a_key_the_doc_leaves_out() -> None:
    doc = textwrap.dedent("""
        `top`, `things.<name>.parts`, `either.left`, `right`, `x-foo.extension`, `again`, `orphan`.
        ```yaml
        undocumented_knob: 3   # a code block does not document the key
        ```
        Plain undocumented_knob is not code either.
        """)
    keys = schema_keys(_MADE_UP_SCHEMA)
    assert keys == {
        "top": ["top"],
        "things": ["things"],
        "either": ["either"],
        "left": ["either.left"],
        "right": ["either.right"],
        "parts": ["things.*.parts"],
        "undocumented_knob": ["things.*.parts[].undocumented_knob"],
        "again": ["things.*.again"],
        "extension": ["*.extension"],
        "orphan": ["$defs.unreached.orphan"],
    }
    assert missing_keys(_MADE_UP_SCHEMA, doc) == {
        "undocumented_knob": ["things.*.parts[].undocumented_knob"]
    }
    assert missing_keys(_MADE_UP_SCHEMA, doc + "`things.*.parts[].undocumented_knob`") == {}


# --- relative links ------------------------------------------------------------------------


def doc_files() -> list[Path]:
    """The Markdown files users read: README.md, docs/*.md, benchmarks/README.md, CHANGELOG.md."""
    candidates = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
                  ROOT / "benchmarks" / "README.md", ROOT / "CHANGELOG.md"]
    return [path for path in candidates if path.is_file()]


_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1[`~]*[ \t]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)", re.DOTALL)
_INLINE_LINK = re.compile(r"\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)")
_REFERENCE = re.compile(r"^ {0,3}\[(?!\^)[^\]]+\]:\s*(<[^>]*>|\S+)", re.MULTILINE)
_EXTERNAL = re.compile(r"^(?:https?:|mailto:)", re.IGNORECASE)


def _without_fences(markdown: str) -> str:
    return _FENCE.sub("", markdown)


def _code_spans(markdown: str) -> list[str]:
    return [match.group(2) for match in _CODE_SPAN.finditer(markdown)]


def link_targets(markdown: str) -> list[str]:
    """Targets of inline links and images ``[text](target)`` and of reference definitions
    ``[label]: target``, outside code blocks and code spans."""
    text = _CODE_SPAN.sub("code", _without_fences(markdown))
    found = [m.group(1) for m in _INLINE_LINK.finditer(text)]
    found += [m.group(1) for m in _REFERENCE.finditer(text)]
    return [target.removeprefix("<").removesuffix(">") for target in found]


def broken_links(path: Path) -> list[str]:
    """The relative link targets in ``path`` that name no file or folder of the repository."""
    broken: list[str] = []
    for target in link_targets(path.read_text(encoding="utf-8")):
        if _EXTERNAL.match(target) or target.startswith("#"):
            continue
        local = unquote(target.split("#", 1)[0].split("?", 1)[0])
        base = ROOT if local.startswith("/") else path.parent
        if not (base / local.lstrip("/")).exists() and target not in broken:
            broken.append(target)
    return broken


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


@pytest.mark.parametrize("path", doc_files(), ids=_ids(doc_files()))
def test_every_relative_link_in_readme_and_docs_resolves(path: Path) -> None:
    problems = [f"links to a missing file: {target}" for target in broken_links(path)]
    text = path.read_text(encoding="utf-8")
    problems += [
        f"mentions {word!r}: point at a file of this repository (or a real URL) instead"
        for word in ("../shared/", "<org>")
        if word in text
    ]
    assert not problems, f"{path.relative_to(ROOT)}:\n  " + "\n  ".join(problems)


def test_the_link_check_finds_links_and_skips_code_and_urls() -> None:
    markdown = (
        "See [the spec](docs/spec.md#interpolation), ![a picture](img/a.png \"title\"),\n"
        "[a site](https://example.com/x), [mail](mailto:a@example.com), [here](#top),\n"
        "`[not a link](code.md)` and [with `code`](<with space.md>).\n"
        "```\n[also not](fenced.md)\n```\n"
        "[ref]: ../README.md\n"
    )
    assert link_targets(markdown) == [
        "docs/spec.md#interpolation", "img/a.png", "https://example.com/x",
        "mailto:a@example.com", "#top", "with space.md", "../README.md",
    ]
