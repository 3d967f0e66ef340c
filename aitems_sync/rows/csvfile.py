"""Shaped rows as the CSV file AiTEMS creates a dataset from (``bootstrap``).

AiTEMS reads CSV or CSV.gz from Object Storage; the file's columns must match the schema's
fields in name, order and letter case. Everything else is undocumented, so this is the
project's format (docs/spec.md, "The bootstrap file"), and the emulator reads exactly this:

- a header row: the field names, in schema order;
- comma separated, CRLF line ends, UTF-8 without a BOM;
- RFC 4180 quoting: every text value is quoted (``"u1"``), a quote doubled inside it;
- null is an empty field with no quotes; an empty string is ``""``;
- numbers as Python writes them (``12``, ``0.5``, ``1e+300``), booleans ``true``/``false``.

Pure and fast: rows go through the C ``csv`` writer (``QUOTE_NONNUMERIC``), with null and
booleans mapped first only for the fields whose types allow them.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Sequence
from typing import Any

#: The bytes that end a CSV line (RFC 4180).
LINE_END = "\r\n"


class _Bare(float):
    """A value the csv writer leaves unquoted (it is a number to it) and writes as ``text``."""

    text = ""

    def __str__(self) -> str:
        return self.text

    __repr__ = __str__


class _Null(_Bare):
    text = ""


class _True(_Bare):
    text = "true"


class _False(_Bare):
    text = "false"


NULL, TRUE, FALSE = _Null(), _True(), _False()


def header(field_names: Sequence[str]) -> str:
    """The header line."""
    out = io.StringIO()
    csv.writer(out, lineterminator=LINE_END).writerow(field_names)
    return out.getvalue()


Mapper = Callable[[tuple[Any, ...]], tuple[Any, ...]]


def row_mapper(types: Sequence[Sequence[str]]) -> Mapper | None:
    """A function that readies a shaped row for the writer (null and booleans), compiled for
    the fields' types; None when no field can hold either (the rows go in as they are)."""
    parts: list[str] = []
    needed = False
    for k, kinds in enumerate(types):
        value = f"v[{k}]"
        if "boolean" in kinds:  # ``is``: 1 == True, and 1 stays 1 in a [long, boolean] field
            value = f"(T if {value} is True else F if {value} is False else N if {value} is None " \
                    f"else {value})"
            needed = True
        elif "null" in kinds:
            value = f"(N if {value} is None else {value})"
            needed = True
        parts.append(value)
    if not needed:
        return None
    namespace: dict[str, Any] = {"N": NULL, "T": TRUE, "F": FALSE}
    exec(f"def ready(v):\n    return ({', '.join(parts)},)\n", namespace)  # from positions only
    ready: Callable[[tuple[Any, ...]], tuple[Any, ...]] = namespace["ready"]
    return ready


class CsvEncoder:
    """Encodes batches of shaped rows (tuples in schema order) to CSV text."""

    def __init__(self, field_names: Sequence[str], types: Sequence[Sequence[str]]) -> None:
        self.header = header(field_names)
        self._ready = row_mapper(types)
        self._out = io.StringIO()
        self._writer = csv.writer(self._out, quoting=csv.QUOTE_NONNUMERIC, lineterminator=LINE_END)

    def encode(self, rows: Iterable[tuple[Any, ...]]) -> str:
        """The rows' lines."""
        self._out.seek(0)
        self._out.truncate()
        self._writer.writerows(rows if self._ready is None else map(self._ready, rows))
        return self._out.getvalue()
