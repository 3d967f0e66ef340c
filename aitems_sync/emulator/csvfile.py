"""The emulator's reading of a dataset file: CSV (or gzip CSV) checked against a schema.

Pure: a binary stream in, rows or a `FileRejected` out; where the bytes come from is
``objectstorage.py``'s business. The stream is read a chunk at a time, gunzipped and decoded on
the fly and tokenized as it comes (``csvtokens.py``), so the file is never held whole; the
first problem in file order is the one reported.

The format is the project's choice (AiTEMS documents only "csv or csv.gz, columns matching the
schema in name, order and case"): a header row naming the schema's fields in schema order with
their exact case, comma separated, RFC 4180 quoting, UTF-8 without a byte order mark, an empty
unquoted field for null and ``""`` for an empty string, gzip when the key ends in ``.gz``. A
quoted value is text in a field that takes strings (``"007"`` stays the string ``007`` in a
``[long, string]`` field); any other value is read as the first of its field's types (schema
order, ``null`` aside, ``string`` last) whose syntax it has: ``string`` any text;
``int``/``long`` ``-?[0-9]+`` in the signed 32/64-bit range; ``float``/``double`` a decimal
number (``-1.5``, ``2e3``); ``boolean`` ``true`` or ``false``. Quoting is read by the
emulator's own tokenizer (Python's ``csv`` reader drops it). Problems name the line and field,
never a value: the reason may end up in logs.
"""

from __future__ import annotations

import codecs
import gzip
import math
import re
import zlib
from collections.abc import Iterator
from typing import IO, Any, Protocol

from aitems_sync.emulator.csvtokens import NotCsv, Record, records
from aitems_sync.emulator.rows import INT32, INT64, KEY_FIELD, MAX_PROBLEMS

_INT_RE = re.compile(r"-?[0-9]+")
_FLOAT_RE = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_BOUNDS = {"int": INT32, "long": INT64}
#: Object keys the emulator reads (compared case-insensitively).
SUFFIXES = (".csv", ".csv.gz")
#: Bytes read from the stream at a time (of the gzip data's content, for a .gz file).
CHUNK_BYTES = 1024 * 1024


class FileRejected(Exception):
    """A dataset file the emulator refuses; ``reason`` is what the dataset's status shows."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_data_key(key: str) -> bool:
    """Whether an object key names a file the emulator reads (``.csv`` or ``.csv.gz``)."""
    return key.lower().endswith(SUFFIXES)


def read_rows(
    stream: IO[bytes], gzipped: bool, schema: dict[str, Any], dataset_type: str, *,
    chunk_bytes: int = CHUNK_BYTES,
) -> list[dict[str, Any]]:
    """Every row of the file as a dict in schema order, or `FileRejected` with the problems.

    The stream is read ``chunk_bytes`` at a time, up to the end or the 100th problem.
    """
    problems: list[str] = []
    rows: list[dict[str, Any]] = []
    try:
        for row in _rows(stream, gzipped, schema, problems, chunk_bytes):
            if row is not None:
                rows.append(row)
            if len(problems) >= MAX_PROBLEMS:
                break
    except NotCsv as error:
        raise FileRejected(str(error)) from None
    except (gzip.BadGzipFile, EOFError, zlib.error):
        raise FileRejected("the object is not gzip data, though its key ends in .gz") from None
    except UnicodeDecodeError as error:
        raise FileRejected(f"the file is not UTF-8 text (byte {error.start} of a chunk); "
                           "write it as UTF-8 without a byte order mark") from None
    key = KEY_FIELD.get(dataset_type)
    if not problems and key is not None:
        problems = _duplicates(rows, key)
    if problems:
        count = f"{len(problems)}{'+' if len(problems) >= MAX_PROBLEMS else ''}"
        raise FileRejected(f"{count} problem(s) in the file; first: {problems[0]}")
    return rows


def _rows(
    stream: IO[bytes], gzipped: bool, schema: dict[str, Any], problems: list[str],
    chunk_bytes: int,
) -> Iterator[dict[str, Any] | None]:
    raw = gzip.GzipFile(fileobj=stream, mode="rb") if gzipped else stream
    fields = schema["fields"]
    names = [f["name"] for f in fields]
    tokens = records(_text(raw, chunk_bytes))
    header = _header(tokens)
    if header[:1] and header[0].startswith(codecs.BOM_UTF8.decode()):
        raise FileRejected("the file starts with a byte order mark; write UTF-8 without one")
    if header != names:
        raise FileRejected(
            f"the header does not match schema {schema['name']} in name, order and case: "
            f"expected {','.join(names)}; got {','.join(h[:64] for h in header[:50])}")
    for line, record in tokens:
        yield _row(line, record, fields, problems)


class _Reads(Protocol):
    """What the text is read from: a binary file, a gzip file or an S3 object's body."""

    def read(self, size: int, /) -> bytes: ...


def _text(raw: _Reads, chunk_bytes: int) -> Iterator[str]:
    """The stream's UTF-8 text, a chunk at a time (a character cut by a chunk's end is
    decoded with the next); UnicodeDecodeError for bytes that are not UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    while data := raw.read(chunk_bytes):
        yield decoder.decode(data)
    yield decoder.decode(b"", final=True)


def _header(tokens: Iterator[Record]) -> list[str]:
    try:
        _, record = next(tokens)
    except StopIteration:
        raise FileRejected("the file is empty; it needs a header row naming the schema's "
                           "fields") from None
    return [text for text, _ in record]


def _row(
    line: int, record: list[tuple[str, bool]], fields: list[dict[str, Any]],
    problems: list[str],
) -> dict[str, Any] | None:
    if len(record) != len(fields):
        problems.append(f"line {line}: expected {len(fields)} values, got {len(record)}")
        return None
    row: dict[str, Any] = {}
    before = len(problems)
    for field, (text, quoted) in zip(fields, record, strict=True):
        row[field["name"]] = _value(line, field, text, quoted, problems)
    return row if len(problems) == before else None


def _value(line: int, field: dict[str, Any], text: str, quoted: bool,
           problems: list[str]) -> Any:
    types = field["type"]
    if quoted and "string" in types:
        return text
    if text == "" and not quoted:
        if "null" not in types:
            problems.append(f"line {line}: field {field['name']} is required and empty")
        return None
    # Bare text is a number or a boolean where the field takes one (bootstrap quotes text).
    for kind in sorted(types, key=lambda t: t == "string"):
        found, value = _parse(kind, text)
        if found:
            return value
    expected = " or ".join(t for t in types if t != "null")
    problems.append(f"line {line}: field {field['name']}: the value is not {expected}")
    return None


def _parse(kind: str, text: str) -> tuple[bool, Any]:
    if kind == "string":
        return True, text
    if kind in _BOUNDS:
        low, high = _BOUNDS[kind]
        return (True, int(text)) if _INT_RE.fullmatch(text) and low <= int(text) <= high else (
            False, None)
    if kind in ("float", "double"):
        number = float(text) if _FLOAT_RE.fullmatch(text) else math.inf
        return (True, number) if math.isfinite(number) else (False, None)
    if kind == "boolean" and text in ("true", "false"):
        return True, text == "true"
    return False, None


def _duplicates(rows: list[dict[str, Any]], key: str) -> list[str]:
    first: dict[Any, int] = {}
    problems = []
    for index, row in enumerate(rows):
        seen = first.setdefault(row[key], index)
        if seen != index:
            problems.append(f"data row {index + 1}: {key} repeats data row {seen + 1}; {key} "
                            "must be unique in the file")
            if len(problems) >= MAX_PROBLEMS:
                break
    return problems
