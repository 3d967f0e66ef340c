"""Read a spec file: YAML with line numbers, interpolation, then the spec's JSON Schema.

``load_spec`` (re-exported by ``aitems_sync.spec.model``) reads the file, interpolates every string
value, validates the result against ``spec.schema.json`` and hands it to
``aitems_sync.spec.build`` for the checks a schema cannot express and the frozen objects. Every
problem found on the way is collected; they are raised together in one SpecError, each with
file, line and dotted key (``datasets.users.cursor``).

Interpolation, in string values only (never in keys), before validation:

==================  ==============================================================
``${VAR}``          the environment variable; a problem if it is not set
``${VAR:-default}`` the variable, or ``default`` when it is unset or empty
``${file:PATH}``    the file's content without trailing newlines (a mounted secret);
                    a relative PATH resolves against the spec file's folder
``$$``              a literal ``$`` (so a PostgreSQL ``$$`` body is written ``$$$$``)
==================  ==============================================================

An interpolated value stays a string: numbers such as ``max_rows`` also accept a string of
digits for that reason. Defaults are not interpolated again, and neither is a value read from
the environment or a file. Messages never repeat a value that came from the environment or a
file, nor any URL or key: they may be secrets.

jsonschema is imported only for a spec that ``aitems_sync.spec.verdict``'s quick check of the
schema refuses: its errors are what the messages are made of, but importing it is a noticeable
part of every run's start-up, and a valid spec needs only the verdict.
"""

from __future__ import annotations

import difflib
import functools
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from aitems_sync import redact
from aitems_sync.errors import SpecError, SpecProblem
from aitems_sync.spec.build import build_spec
from aitems_sync.spec.document import Document, KeyPath
from aitems_sync.spec.files import MAX_FILE_BYTES, NotASmallFile, read_small_file
from aitems_sync.spec.model import Spec, spec_schema
from aitems_sync.spec.verdict import UnsupportedSchema, Verdict, compile_verdict

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator, ValidationError

log = logging.getLogger(__name__)

_STR_TAG = "tag:yaml.org,2002:str"
_REFERENCE = re.compile(r"\$(?:(\$)|\{([^{}]*)\}|(\{))")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HOW_TO_REFER = "write ${NAME}, ${NAME:-default}, ${file:PATH}, or $$ for a literal $"
_JSON_TYPES = {
    "object": "a mapping", "array": "a list", "string": "a string", "integer": "a whole number",
    "number": "a number", "boolean": "true or false", "null": "null",
}


def load_spec(path: Path | str, env: Mapping[str, str] | None = None, *,
              unused: Sequence[KeyPath] = ()) -> Spec:
    """Load, interpolate and validate the spec at ``path``; ``env`` defaults to os.environ.

    Raises SpecError with every problem found. Defaults are listed in ``aitems_sync.spec.build``.
    ``unused``: sections (key paths such as ``("aitems",)``) the caller will not use: a value
    there that comes from a variable that is not set (or a file that cannot be read) is left
    empty instead of being a problem, so that ``history`` needs no AiTEMS keys. Every other
    problem is still one.
    """
    absolute = Path(os.path.abspath(path))
    doc = Document(file=str(path), folder=absolute.parent, unused=tuple(unused))
    data = read_document(absolute, doc, os.environ if env is None else env)
    quick = _quick_verdict()
    if quick is None or not quick(data):  # jsonschema judges, and says why
        for error in _validator().iter_errors(data):
            schema_problem(doc, error)
    spec = build_spec(data, doc, absolute)
    if doc.problems:
        raise SpecError(sorted(doc.problems, key=lambda p: p.line or 0))
    log.debug("loaded spec %s: datasets %s", absolute, ", ".join(spec.datasets))
    return spec


def read_document(path: Path, doc: Document, env: Mapping[str, str]) -> Any:
    """The file's data with strings interpolated; raises SpecError if it is not readable YAML."""
    text = _read_text(path, doc.file)
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as error:  # a NUL byte or another control character
        raise SpecError([_reader_problem(doc.file, text, error)]) from None
    try:
        root = loader.get_single_node()
        if root is None:
            raise SpecError([SpecProblem(doc.file, None, "", "the spec is empty")])
        return _Reader(loader, doc, env).value(root, ())
    except yaml.MarkedYAMLError as error:
        raise SpecError([_yaml_problem(doc.file, error)]) from None
    except yaml.YAMLError as error:
        raise SpecError([SpecProblem(doc.file, None, "", f"not valid YAML: {error}")]) from None
    except RecursionError:
        raise SpecError([SpecProblem(
            doc.file, None, "", "the spec nests lists or mappings too deeply to be read (a "
            "spec needs a few levels); look for a run of unclosed [ or {")]) from None
    finally:
        loader.dispose()


def _reader_problem(file: str, text: str, error: yaml.reader.ReaderError) -> SpecProblem:
    """Where the character YAML refuses is, and which it is."""
    before = text[:error.position]
    line, column = before.count("\n") + 1, len(before) - before.rfind("\n")
    return SpecProblem(file, line, "", f"column {column}: the character U+{error.character:04X} "
                       "is not allowed in YAML (a NUL byte or another control character); "
                       "remove it")


def _read_text(path: Path, file: str) -> str:
    def fail(message: str) -> SpecError:
        return SpecError([SpecProblem(file, None, "", message)])

    try:
        return read_small_file(path, MAX_SPEC_BYTES).decode("utf-8-sig")
    except NotASmallFile as problem:
        raise fail(f"{problem}: a spec is a YAML file of at most {MAX_SPEC_BYTES // 1024} KiB"
                   ) from None
    except FileNotFoundError:
        raise fail(
            f"spec file not found (looked for {path}); pass --config PATH or set "
            "AITEMS_SYNC_CONFIG"
        ) from None
    except IsADirectoryError:
        raise fail("is a folder; pass the spec file with --config PATH") from None
    except OSError as error:
        raise fail(f"cannot read the spec file: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise fail(f"the spec is not UTF-8 text (byte {error.start})") from None


#: The largest spec file read; a spec is a few KiB.
MAX_SPEC_BYTES = 1024 * 1024
#: The most values a spec may hold once YAML aliases are expanded: an alias bomb (a few lines
#: that expand to billions of values) stops here.
MAX_VALUES = 100_000


def _yaml_problem(file: str, error: yaml.MarkedYAMLError) -> SpecProblem:
    mark = error.problem_mark or error.context_mark
    problem = error.problem or "not valid YAML"
    message = f"not valid YAML: {problem}"
    if error.context:
        opened = error.context_mark
        if opened is not None and mark is not None and opened.line != mark.line:
            message += f" ({error.context} started on line {opened.line + 1})"
        else:
            message += f" ({error.context})"
    if "'\\t'" in problem:
        message += "; indent with spaces: YAML does not allow tabs"
    elif "but got '{'" in problem:
        message += "; quote a value holding ${...} inside { } or [ ]"
    elif "expected ',' or" in problem:
        message += "; is a bracket left open?"
    return SpecProblem(file, mark.line + 1 if mark else None, "", message)


class _Reader:
    """Turns the composed YAML node tree into plain data, recording lines and interpolating."""

    def __init__(self, loader: yaml.SafeLoader, doc: Document, env: Mapping[str, str]) -> None:
        self.loader = loader
        self.doc = doc
        self.env = env
        self.open: set[int] = set()  # nodes being read: an alias to one of them is a cycle
        self.values = 0

    def value(self, node: Node, path: KeyPath) -> Any:
        self.values += 1
        if self.values > MAX_VALUES:
            raise SpecError([SpecProblem(
                self.doc.file, node.start_mark.line + 1, "",
                f"the spec holds more than {MAX_VALUES:,} values once its YAML aliases are "
                "expanded (an alias of an alias of ...); write the values out instead")])
        self.doc.lines.setdefault(path, node.start_mark.line + 1)
        if id(node) in self.open:
            self.doc.add(path, "a YAML alias refers to the collection that holds it")
            return None
        self.open.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self.mapping(node, path)
            if isinstance(node, SequenceNode):
                return [self.value(item, (*path, i)) for i, item in enumerate(node.value)]
            return self.scalar(node, path)
        finally:
            self.open.discard(id(node))

    def mapping(self, node: MappingNode, path: KeyPath) -> dict[str, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:  # before merging: a key overriding a merged one is fine
            key = str(key_node.value)
            if key in seen and key != "<<":
                line = key_node.start_mark.line + 1
                self.doc.add((*path, key), f"key {key!r} appears twice", line=line, mark=False)
            seen.add(key)
        self.loader.flatten_mapping(node)  # merge keys (<<: *anchor)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.doc.add(path, "a key must be a plain name, not a list or a mapping")
                continue
            key_path = (*path, str(key_node.value))
            self.doc.lines.setdefault(key_path, key_node.start_mark.line + 1)
            out[str(key_node.value)] = self.value(value_node, key_path)
        return out

    def scalar(self, node: Node, path: KeyPath) -> Any:
        if node.tag != _STR_TAG:
            try:
                return self.loader.construct_object(node)
            except yaml.constructor.ConstructorError as error:
                self.doc.add(path, f"cannot read this YAML value: {error.problem}")
                return None
        return self.interpolate(str(node.value), path)

    def interpolate(self, text: str, path: KeyPath) -> str:
        if "$" not in text:
            return text

        def replace(match: re.Match[str]) -> str:
            if match.group(1):
                return "$"
            if match.group(3):
                self.doc.add(path, f"an unclosed or nested '${{'; {_HOW_TO_REFER}")
                return match.group(0)
            self.doc.tainted.add(path)
            return self.resolve(match.group(2), path)

        return _REFERENCE.sub(replace, text)

    def resolve(self, reference: str, path: KeyPath) -> str:
        if reference.startswith("file:"):
            return self.read_file(reference.removeprefix("file:"), path)
        name, default_given, default = reference.partition(":-")
        if not _NAME.fullmatch(name):
            self.doc.add(path, f"'${{{reference}}}' is not a reference; {_HOW_TO_REFER}")
            return ""
        value = self.env.get(name)
        if value is None or (default_given and not value):
            if default_given:
                return default
            self.doc.add(
                path,
                f"environment variable {name} is not set (use ${{{name}:-default}} for a default)",
            )
            return ""
        return value

    def read_file(self, name: str, path: KeyPath) -> str:
        file = self.doc.folder / name  # an absolute name replaces the folder
        try:
            content = read_small_file(file, MAX_FILE_BYTES).decode("utf-8").rstrip("\r\n")
            redact.register([content])  # a mounted secret: never shown
            return content
        except NotASmallFile as problem:
            self.doc.add(path, f"{file} (from ${{file:{name}}}) {problem}; a ${{file:}} "
                         f"reference reads a regular file of at most {MAX_FILE_BYTES // 1024} KiB")
        except FileNotFoundError:
            self.doc.add(path, f"file {file} (from ${{file:{name}}}) does not exist")
        except OSError as error:
            self.doc.add(path, f"cannot read {file} (from ${{file:{name}}}): {error.strerror}")
        except UnicodeDecodeError:
            self.doc.add(path, f"{file} (from ${{file:{name}}}) is not UTF-8 text")
        return ""


@functools.cache
def _quick_verdict() -> Verdict | None:
    """jsonschema's verdict on the spec schema without jsonschema; None if it cannot be had."""
    try:
        return compile_verdict(spec_schema())
    except UnsupportedSchema as error:
        log.debug("the spec schema is checked by jsonschema alone: it uses %s", error)
        return None


@functools.cache
def _validator() -> Draft202012Validator:
    from jsonschema import Draft202012Validator  # here: see the module docstring

    return Draft202012Validator(spec_schema())


def schema_problem(doc: Document, error: ValidationError) -> None:
    """Turn one jsonschema error into a problem written for the operator."""
    path: KeyPath = tuple(error.absolute_path)
    keyword = error.validator
    schema: Any = error.schema
    instance: Any = error.instance
    expected: Any = error.validator_value
    if keyword in ("anyOf", "oneOf"):
        branch = _branch_error(error)
        if branch is not None:
            schema_problem(doc, branch)
            return
        types = [t for e in error.context or [] for t in _as_list(e.validator_value)]
        names = " or ".join(dict.fromkeys(_JSON_TYPES.get(t, t) for t in types))
        doc.add(path, f"must be {names} (got {_kind(error.instance)})")
        return
    if keyword == "additionalProperties" and error.validator_value is False:
        known = list(schema.get("properties", {}))
        for extra in instance:
            if extra not in known:
                doc.add((*path, extra), _unknown_key(extra, known))
        return
    if keyword == "required":
        for key in expected:
            if key not in instance:
                doc.add((*path, key), f"missing required key {key!r}")
        return
    if "propertyNames" in error.schema_path:  # a bad name: report it on its own line
        name_path = (*path, str(instance))
        doc.add(name_path, _message(doc, error, name_path), mark=False)
        return
    doc.add(path, _message(doc, error, path))


def _branch_error(error: ValidationError) -> ValidationError | None:
    """The error of the ``anyOf`` branch the value was most likely meant for.

    Branches refused for their type alone are the least relevant: a string meant as a field
    type should hear that it is not a known type, not that it is not a list. None when every
    branch refused the value's type.
    """
    relevant = [e for e in error.context or [] if e.validator != "type" or e.relative_path]
    return max(relevant, key=lambda e: len(e.relative_path)) if relevant else None


def _as_list(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _message(doc: Document, error: ValidationError, path: KeyPath) -> str:
    keyword = error.validator
    expected: Any = error.validator_value
    value: Any = error.instance
    schema: Any = error.schema
    title = schema.get("title") if isinstance(schema, dict) else None
    shown = doc.show(path, value)
    if keyword == "type":
        generic = " or ".join(_JSON_TYPES.get(t, t) for t in _as_list(expected))
        wanted = title if title and path else generic  # the root's title names the document
        return f"must be {wanted} (got {_kind(value)})"
    if keyword == "pattern":
        return f"{shown} is not {title or 'in the expected form'}"
    if keyword == "const":
        return f"must be {title or repr(expected)}"
    if keyword == "enum":
        hint = doc.suggest(path, value, [str(v) for v in expected])
        return f"{shown} is not one of: {', '.join(map(str, expected))}{hint}"
    simple = {
        "minimum": f"must be at least {expected}",
        "maximum": f"must be at most {expected}",
        "minLength": "must not be empty",
        "minProperties": "must have at least one entry",
        "minItems": f"must have at least {expected} item{'s' if expected != 1 else ''}",
        "uniqueItems": "must not list the same item twice",
    }
    return simple.get(str(keyword), f"is not valid (JSON Schema keyword {keyword!r})")


def _kind(value: object) -> str:
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "true/false"
    names = {dict: "a mapping", list: "a list", str: "a string", int: "a whole number"}
    return names.get(type(value), "a number" if isinstance(value, float) else type(value).__name__)


def _unknown_key(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"unknown key {key!r}; did you mean {close[0]!r}?"
    return f"unknown key {key!r}; the keys here are: {', '.join(known)}"
