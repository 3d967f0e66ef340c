"""The emulator's CSV tokenizer: RFC 4180 records from text that arrives in pieces.

Pure: pieces of text in, records out. `records` yields each record as soon as its end has
arrived and holds only the text after the last whole record, so memory follows the longest
record, not the file. Each field comes with whether it was quoted, which Python's ``csv``
reader drops and ``csvfile.py`` needs (``""`` is an empty string, an empty unquoted field
null, a quoted value text). A quote out of place raises `NotCsv`, naming the line.

How the pieces are cut: the text read so far is cut after its last line break outside quotes,
and each cut holds whole records, read field by field by one regular expression. A line break
is outside quotes when the ``"`` since the last cut are even in number: a field is either
unquoted (no quote) or quoted, and a quoted one holds its opening quote and pairs of quotes (an
odd count) until its closing quote. Up to the first error that is exactly where the regular
expression ends a record, and the text a cut leaves out is never looked at by the records before
it, so a file gives the same records, line numbers and first error however it is chunked
(tests/test_emulator_csv.py checks it against a one-shot reading and Python's ``csv``).
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterable, Iterator

#: A record: its first line (1-based) and its fields as (text, quoted).
Record = tuple[int, list[tuple[str, bool]]]

#: One field: quoted (``"..."`` with ``""`` for a quote; may hold commas and line breaks), or
#: bare (no quote, comma or line break).
_FIELD = re.compile(r'"([^"]*(?:""[^"]*)*)"|([^",\r\n]*)')


class NotCsv(ValueError):
    """The text is not RFC 4180 CSV: a quote inside an unquoted field, or an unclosed quote."""

    def __init__(self, line: int) -> None:
        super().__init__(f"line {line}: not valid CSV (a quote inside a field, or an unclosed "
                         "quote)")
        self.line = line


def records(chunks: Iterable[str]) -> Iterator[Record]:
    """Each record of the text the chunks make up, in order; a blank line is a record of no
    fields. `NotCsv` for a quote out of place (after the records before it)."""
    pending: list[str] = []
    line, quotes = 1, 0
    for chunk in chunks:
        cut = _last_break(chunk, quotes % 2)
        if cut < 0:
            pending.append(chunk)
            quotes += chunk.count('"')
            continue
        pending.append(chunk[:cut])
        line = yield from _whole_records("".join(pending), line)
        rest = chunk[cut:]
        pending, quotes = [rest], rest.count('"')
    yield from _whole_records("".join(pending), line)


def _last_break(chunk: str, odd: int) -> int:
    """Where the chunk's last line break outside quotes ends (-1: none), given whether an odd
    number of quotes came before the chunk. A ``\\r`` at the very end does not count: a ``\\n``
    may follow it in the next chunk."""
    quotes, end = chunk.count('"'), len(chunk)
    newline, ret = chunk.rfind("\n"), chunk.rfind("\r")  # each searched again once passed
    while (at := max(newline, ret)) >= 0:
        quotes -= chunk.count('"', at, end)
        if (odd + quotes) % 2 == 0 and (at == newline or at + 1 < len(chunk)):
            return at + 1
        end = at
        if at == newline:
            newline = chunk.rfind("\n", 0, at)
        else:
            ret = chunk.rfind("\r", 0, at)
    return -1


def _whole_records(text: str, line: int) -> Generator[Record, None, int]:
    """The records of ``text``, which starts a record, its first line being ``line``; returns
    the line the text after it starts."""
    pos, end = 0, len(text)
    while pos < end:
        first, record = line, []
        while True:
            match = _FIELD.match(text, pos)
            assert match is not None  # the bare alternative matches the empty string
            quoted = match.group(1) is not None
            value = match.group(1).replace('""', '"') if quoted else match.group(2)
            line += match.group(0).count("\n")
            record.append((value, quoted))
            pos = match.end()
            if pos >= end or text[pos] in "\r\n":
                break
            if text[pos] != ",":
                raise NotCsv(line)
            pos += 1
        if text.startswith("\r\n", pos):
            pos += 2
        elif pos < end:
            pos += 1
        line += 1
        yield first, [] if record == [("", False)] else record
    return line
