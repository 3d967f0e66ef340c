"""The emulator reads a dataset file as a stream: the same records and rows however the text or
the bytes are chunked, equal to Python's ``csv`` module's reading, with quoted line breaks that
straddle chunk boundaries, and never by reading the stream whole.

(Reading a file end to end, from moto's S3 through the emulator's API, is in
tests/test_emulator_lifecycle.py.)
"""

from __future__ import annotations

import csv
import gzip
import io
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aitems_sync.emulator.csvfile import CHUNK_BYTES, FileRejected, read_rows
from aitems_sync.emulator.csvtokens import NotCsv, Record, records

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SCHEMA = {"name": "events", "fields": [{"name": "USER_ID", "type": ["string"]},
                                       {"name": "NOTE", "type": ["string", "null"]},
                                       {"name": "N", "type": ["long", "null"]}]}
HEADER = "USER_ID,NOTE,N\r\n"

Field = tuple[str, bool]

bare = st.text(alphabet="ab é한\t;'", max_size=6)
quoted = st.text(alphabet='ab,"\r\n é', max_size=8)
field = st.one_of(st.tuples(bare, st.just(False)), st.tuples(quoted, st.just(True)))
line_end = st.sampled_from(["\n", "\r\n"])


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, list[Record]]:
    """A random RFC 4180 document and the records it holds (each field's text and quoting)."""
    rows = draw(st.lists(st.lists(field, min_size=1, max_size=5), max_size=8))
    text, expected, line = "", [], 1
    for number, row in enumerate(rows):
        text += ",".join(f'"{t.replace(chr(34), 2 * chr(34))}"' if q else t for t, q in row)
        blank = row == [("", False)]
        if number < len(rows) - 1 or blank or draw(st.booleans()):
            text += draw(line_end)
        expected.append((line, [] if blank else row))
        line += 1 + sum(t.count("\n") for t, q in row if q)
    return text, expected


def chunked(text: str, data: st.DataObject) -> list[str]:
    """The text cut at random places (some chunks empty)."""
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=12)))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


def outcome(chunks: list[str]) -> tuple[list[Record], str | None]:
    """The records read before any error, and the error."""
    read: list[Record] = []
    try:
        for record in records(chunks):
            read.append(record)
    except NotCsv as error:
        return read, str(error)
    return read, None


@SETTINGS
@given(documents(), st.data())
def test_a_document_reads_the_same_in_any_chunks_and_as_pythons_csv_reads_it(
    document: tuple[str, list[Record]], data: st.DataObject
) -> None:
    text, expected = document
    chunks = chunked(text, data)

    assert list(records([text])) == expected
    assert list(records(chunks)) == expected
    assert [[t for t, _ in fields] for _, fields in expected] == list(
        csv.reader(io.StringIO(text, newline="")))


@SETTINGS
@given(st.text(alphabet='a,"\r\n', max_size=40), st.data())
def test_any_text_gives_the_same_records_and_first_error_in_any_chunks(
    text: str, data: st.DataObject
) -> None:
    """Also where quotes are out of place: the cut after a line break outside quotes never
    changes what the records before an error are, nor the error's line."""
    assert outcome(chunked(text, data)) == outcome([text])


@pytest.mark.parametrize(("text", "error"), [
    ('a,b"c\n', "line 1: not valid CSV"),
    ('a\n"b\nc"d\n', "line 3: not valid CSV"),  # after the quoted line break
    ('a\n"unclosed\n', "line 2: not valid CSV"),
])
def test_a_quote_out_of_place_names_its_line_in_any_chunks(text: str, error: str) -> None:
    for size in (1, 2, 3, len(text)):
        chunks = [text[i:i + size] for i in range(0, len(text), size)]
        with pytest.raises(NotCsv, match=error):
            list(records(chunks))


def render(rows: list[tuple[str, str | None, int | None]]) -> str:
    """A file as bootstrap writes it: text quoted, null empty, numbers bare."""
    def quote(text: str | None) -> str:
        return "" if text is None else '"' + text.replace('"', '""') + '"'

    return HEADER + "".join(f"{quote(u)},{quote(note)},{'' if n is None else n}\r\n"
                            for u, note, n in rows)


def as_dicts(rows: list[tuple[str, str | None, int | None]]) -> list[dict[str, Any]]:
    return [{"USER_ID": u, "NOTE": note, "N": n} for u, note, n in rows]


@SETTINGS
@given(st.lists(st.tuples(st.text(max_size=5),
                          st.none() | st.text(alphabet='a,"\r\né한😀', max_size=8),
                          st.none() | st.integers(-2**63, 2**63 - 1)), max_size=10),
       st.booleans(), st.integers(1, 64))
def test_a_file_reads_the_same_rows_in_any_chunk_size_gzipped_or_not(
    rows: list[tuple[str, str | None, int | None]], gzipped: bool, chunk_bytes: int
) -> None:
    """Chunks cut bytes anywhere: inside a multi-byte character, a quoted line break, a
    ``\\r\\n``."""
    data = render(rows).encode()
    data = gzip.compress(data) if gzipped else data

    read = read_rows(io.BytesIO(data), gzipped, SCHEMA, "interaction", chunk_bytes=chunk_bytes)

    assert read == as_dicts(rows)


class Reads(io.BytesIO):
    """A stream that remembers how much each read asked for."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.asked: list[int | None] = []

    def read(self, size: int | None = -1, /) -> bytes:
        self.asked.append(size)
        return super().read(size)


def big_file() -> tuple[list[tuple[str, str | None, int | None]], bytes]:
    """Rows with quoted line breaks and commas, more than three chunks of them, where each of
    the first three chunk boundaries cuts a quoted ``\r\n`` between its ``\r`` and ``\n``."""
    rows: list[tuple[str, str | None, int | None]] = []
    size = len(HEADER)
    for boundary in (CHUNK_BYTES, 2 * CHUNK_BYTES, 3 * CHUNK_BYTES):
        while size < boundary - 200:
            rows.append((f"u{len(rows)}", f'line one,\nline "two"\r\n{len(rows)}', len(rows)))
            size += len(render(rows[-1:])) - len(HEADER)
        # "USER_ID","a\r\nb", : the \r is the USER_ID's length and 5 bytes into the row.
        rows.append(("x" * (boundary - size - 6), "a\r\nb", None))
        size += len(render(rows[-1:])) - len(HEADER)
    rows.append(("last", None, -1))
    return rows, render(rows).encode()


def test_a_file_bigger_than_the_chunk_size_reads_a_chunk_at_a_time() -> None:
    rows, data = big_file()
    assert len(data) > 3 * CHUNK_BYTES
    for boundary in (CHUNK_BYTES, 2 * CHUNK_BYTES, 3 * CHUNK_BYTES):
        assert data[boundary - 3:boundary + 2] == b'"a\r\nb'  # a chunk ends with the \r

    for gzipped in (False, True):
        stream = Reads(gzip.compress(data) if gzipped else data)
        read = read_rows(stream, gzipped, SCHEMA, "interaction")

        assert read == as_dicts(rows)
        assert len(stream.asked) > 3 and all(
            isinstance(size, int) and 0 < size <= CHUNK_BYTES for size in stream.asked)


def test_an_error_after_quoted_line_breaks_names_the_same_line_in_any_chunk_size() -> None:
    rows, data = big_file()
    bad = data + b'"u1","x"y,1\r\n'

    reasons = set()
    for chunk_bytes in (7, 4096, CHUNK_BYTES, len(bad)):
        with pytest.raises(FileRejected) as rejected:
            read_rows(io.BytesIO(bad), False, SCHEMA, "interaction", chunk_bytes=chunk_bytes)
        reasons.add(rejected.value.reason)

    lines = 1 + len(rows) + sum(note.count("\n") for _, note, _ in rows if note)
    assert reasons == {f"line {lines + 1}: not valid CSV (a quote inside a field, or an "
                       "unclosed quote)"}
