"""A json_schema's ``$ref``s to local files, read once when the spec loads and embedded.

A ``$ref`` is either within the document (``#/$defs/age``) or a path to a JSON or YAML file
relative to the file it is written in (``common.json``, ``defs/age.yaml#/$defs/age``). Each file
is read once, bounded like every file a spec names, and embedded under the schema's ``$defs``
with its ``file:`` URI as its ``$id``; the ``$ref`` is rewritten to that URI. So validation
never reads a file, and never fetches anything: a ``$ref`` with a scheme (``http:``,
``https:``, ``urn:``...) or an absolute path is a spec error.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from aitems_sync.spec.files import MAX_FILE_BYTES, NotASmallFile, read_small_file

#: Files one json_schema may refer to, all told.
MAX_SCHEMA_FILES = 32
#: Where the embedded files go under the schema's ``$defs``.
EMBEDDED = "aitems_sync_file"
_REF_KEYS = ("$ref", "$dynamicRef")


class RefError(ValueError):
    """A ``$ref`` that cannot be embedded: the message says which and why."""


class MissingSchemaFile(RefError):
    """The schema file does not exist."""


def read_schema_file(path: Path) -> dict[str, Any]:
    """A JSON or YAML schema file (by its suffix) holding a mapping; RefError otherwise."""
    try:
        text = read_small_file(path, MAX_FILE_BYTES).decode("utf-8")
        loaded = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except FileNotFoundError:
        raise MissingSchemaFile(f"{path} does not exist (a relative path resolves against the "
                                "folder of the file that names it)") from None
    except NotASmallFile as problem:
        raise RefError(f"{path} {problem}: a schema file is a regular file of at most "
                       f"{MAX_FILE_BYTES // 1024} KiB") from None
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as error:
        raise RefError(f"{path} is not readable JSON or YAML: {error}") from None
    if not isinstance(loaded, dict):
        raise RefError(f"{path} does not hold a JSON Schema (a mapping)")
    return loaded


def embed_file_refs(schema: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A copy of ``schema`` with the files its ``$ref``s name (relative to ``folder``, and from
    each file relative to its own folder) embedded; the schema itself when it names none.
    Raises RefError for a remote or absolute ``$ref``, a missing or unreadable file, or more
    than MAX_SCHEMA_FILES files."""
    embedded: dict[str, dict[str, Any]] = {}
    root: dict[str, Any] = _rewrite(copy.deepcopy(schema), folder.resolve(), embedded)
    if not embedded:
        return schema
    defs = root.setdefault("$defs", {})
    if not isinstance(defs, dict):
        raise RefError("$defs must be a mapping")
    for number, resource in enumerate(embedded.values()):
        defs[f"{EMBEDDED}_{number}"] = resource
    return root


def _rewrite(node: Any, folder: Path, embedded: dict[str, dict[str, Any]]) -> Any:
    """``node`` with each file ``$ref`` in it rewritten to the embedded file's URI."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key in _REF_KEYS and isinstance(value, str) and not value.startswith("#"):
                    item[key] = _embed(value, folder, embedded)
                else:
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
    return node


def _embed(ref: str, folder: Path, embedded: dict[str, dict[str, Any]]) -> str:
    """Embed the file ``ref`` names (once) and return the URI to refer to it by."""
    if urlsplit(ref).scheme or ref.startswith("/"):
        raise RefError(f"$ref {ref!r} is not a path relative to the spec: a json_schema is never "
                       "fetched from the network; copy the definitions into a file beside the "
                       "spec, or under $defs and refer to them as #/$defs/NAME")
    file_part, _, fragment = ref.partition("#")
    path = (folder / file_part).resolve()
    uri = path.as_uri()
    if uri not in embedded:
        if len(embedded) >= MAX_SCHEMA_FILES:
            raise RefError(f"refers to more than {MAX_SCHEMA_FILES} schema files")
        embedded[uri] = {}  # taken: a file that refers back to one being read finds it
        resource = _rewrite(read_schema_file(path), path.parent, embedded)
        resource["$id"] = uri
        embedded[uri] = resource
    return uri + (f"#{fragment}" if fragment else "")
