"""Files another engine exported to Object Storage (``bootstrap --from``): the one file under a
URL, and its header line, read without reading the file.

- ``s3://BUCKET/PATH`` names an object (``PATH`` itself) or a folder (the objects under
  ``PATH/``, at any depth). AiTEMS reads ``.csv`` and ``.csv.gz`` objects only; the others are
  left out, and so are objects under a name that starts with ``_`` or ``.`` (Hadoop's and
  Spark's convention for markers and unfinished output: ``_SUCCESS``, ``_temporary/``,
  ``.crc`` files). Exactly one data file must remain: whether AiTEMS reads several files
  under one path is undocumented, and a file it skipped would be rows lost without a trace.
- The header is read by ranged GETs of CHUNK_BYTES (a ``.gz`` file inflated as it arrives),
  stopping at the first line end: a few kilobytes of a file of any size.
"""

from __future__ import annotations

import codecs
import csv
import itertools
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aitems_sync.errors import ExportError, UsageError
from aitems_sync.objectstorage.upload import storage_error

#: The object keys AiTEMS reads (compared case-insensitively).
DATA_SUFFIXES = (".csv", ".csv.gz")
#: Bytes fetched per ranged GET while looking for the header's line end.
CHUNK_BYTES = 64 * 1024
#: The longest header line read: a schema's field names take far less.
MAX_HEADER_BYTES = 1024 * 1024
#: The first bytes of gzip data.
GZIP_MAGIC = b"\x1f\x8b"
#: Data files named in a message about several.
SHOWN = 5


@dataclass(frozen=True)
class ExportLocation:
    """Where ``--from`` points: a bucket, and an object key or a folder in it."""

    bucket: str
    path: str  # '' for the whole bucket

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.path}"

    def holds(self, key: str) -> str | None:
        """The part of ``key`` below the location ('' for the object it names), or None when
        the key is not under it (``exports/users`` does not hold ``exports/users2/a.csv``)."""
        if key == self.path:
            return ""
        folder = self.path if not self.path or self.path.endswith("/") else self.path + "/"
        return key[len(folder):] if key.startswith(folder) else None


@dataclass(frozen=True)
class ExportFile:
    """The one data file found: AiTEMS is pointed at exactly this object."""

    bucket: str
    key: str
    size: int

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def gzipped(self) -> bool:
        return self.key.lower().endswith(".gz")


def parse_export_url(text: str) -> ExportLocation:
    """``s3://BUCKET[/PATH]`` as an ExportLocation; UsageError, with the form, otherwise."""
    rest = text.strip()
    if not rest.startswith("s3://"):
        raise UsageError(f"--from {text!r}: give the export as s3://BUCKET/PATH (the bucket, "
                         "then the folder or the file the export wrote)")
    bucket, _, path = rest.removeprefix("s3://").partition("/")
    if not bucket or any(c in bucket for c in " ?#"):
        raise UsageError(f"--from {text!r}: no bucket name; give s3://BUCKET/PATH")
    return ExportLocation(bucket, path)


def is_data_key(key: str) -> bool:
    """Whether AiTEMS reads an object of this key (``.csv`` or ``.csv.gz``)."""
    return key.lower().endswith(DATA_SUFFIXES)


def is_hidden(relative: str) -> bool:
    """Whether a key below the location has a part that starts with ``_`` or ``.`` (markers and
    unfinished output, by Hadoop's and Spark's convention)."""
    return any(part[:1] in ("_", ".") for part in relative.split("/"))


def find_export(client: Any, location: ExportLocation) -> ExportFile:
    """The one data file at ``location``; ExportError when there is none or several (naming
    what was found and what was left out), ObjectStorageError when the listing fails."""
    found: list[ExportFile] = []
    left_out: list[str] = []
    for item in _objects(client, location):
        key = str(item["Key"])
        relative = location.holds(key)
        if relative is None:
            continue
        if is_data_key(key) and not is_hidden(relative):
            found.append(ExportFile(location.bucket, key, int(item.get("Size", 0))))
        elif not key.endswith("/"):  # a folder marker is nothing
            left_out.append(relative or key)
    if len(found) == 1:
        return found[0]
    if not found:
        raise ExportError(f"no .csv or .csv.gz file at {location.url} (AiTEMS reads only "
                          f"those){_left_out(left_out)}: check the URL, and that the export "
                          "has finished")
    shown = ", ".join(f.url for f in found[:SHOWN]) + (", ..." if len(found) > SHOWN else "")
    raise ExportError(
        f"{len(found)} .csv or .csv.gz files at {location.url} ({shown}): bootstrap --from "
        "registers exactly one file per dataset (whether AiTEMS reads several files under one "
        "path is undocumented, and a file it skipped would be rows lost without a trace). "
        "Write the export as one file (Spark: coalesce(1); a warehouse: its single-file "
        "option), or, if only one of them is the export, name that file in --from")


def _objects(client: Any, location: ExportLocation) -> Iterator[dict[str, Any]]:
    try:
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=location.bucket, Prefix=location.path)
        for page in pages:
            yield from page.get("Contents", [])
    except Exception as error:  # botocore's errors, and the network's
        raise storage_error(f"could not list {location.url}", error) from error


def _left_out(keys: list[str]) -> str:
    if not keys:
        return ""
    names = ", ".join(keys[:SHOWN]) + (", ..." if len(keys) > SHOWN else "")
    unfinished = any(k.startswith("_temporary") for k in keys)
    return (f"; {len(keys)} other object(s) there were left out ({names})"
            + ("; a _temporary folder means the export is still writing, or failed"
               if unfinished else ""))


def read_header(client: Any, file: ExportFile) -> list[str]:
    """The column names of the file's first line (RFC 4180), read by ranged GETs that stop
    at its line end. ExportError when the file is empty, is not gzip though named ``.gz`` (or
    is though named ``.csv``), is not UTF-8, starts with a byte order mark, or has no line end
    in MAX_HEADER_BYTES."""
    if file.size == 0:
        raise ExportError(f"{file.url} is empty: AiTEMS needs a header row naming the fields")
    pieces = _ranges(client, file)
    first = next(pieces, b"")
    if not file.gzipped and first.startswith(GZIP_MAGIC):
        raise ExportError(f"{file.url} is gzip data, though its name ends in .csv: name it "
                          ".csv.gz (AiTEMS tells the two apart by the name)")
    raw = itertools.chain([first], pieces)
    line = _first_line(_inflate(raw, file) if file.gzipped else raw, file)
    if line.startswith(codecs.BOM_UTF8):
        raise ExportError(f"{file.url} starts with a byte order mark: AiTEMS compares the "
                          "header with the field names exactly; write the file as UTF-8 "
                          "without a BOM")
    try:
        text = line.decode("utf-8").removesuffix("\r")
        return next(csv.reader([text], strict=True))
    except UnicodeDecodeError:
        raise ExportError(f"the first line of {file.url} is not UTF-8 text; write the file "
                          "as UTF-8") from None
    except csv.Error as error:
        raise ExportError(f"the first line of {file.url} is not a CSV header ({error})") from None


def _ranges(client: Any, file: ExportFile) -> Iterator[bytes]:
    """The object's bytes, CHUNK_BYTES per GET, fetched only as they are consumed."""
    start = 0
    while start < file.size:
        end = min(start + CHUNK_BYTES, file.size) - 1
        try:
            body = client.get_object(Bucket=file.bucket, Key=file.key,
                                     Range=f"bytes={start}-{end}")["Body"]
            try:
                data = body.read()
            finally:
                body.close()
        except Exception as error:  # botocore's errors, and the network's
            raise storage_error(f"could not read the header of {file.url}", error) from error
        if not data:
            return
        yield data
        start += len(data)


def _inflate(pieces: Iterator[bytes], file: ExportFile) -> Iterator[bytes]:
    """gzip data inflated CHUNK_BYTES at a time (a small piece of a highly compressed file
    never becomes a large buffer); a file of several gzip members reads on across them."""
    inflater = zlib.decompressobj(31)
    for piece in pieces:
        data = piece
        while data:
            try:
                text = inflater.decompress(data, CHUNK_BYTES)
            except zlib.error:
                raise ExportError(f"{file.url} is not gzip data, though its name ends in "
                                  ".gz") from None
            yield text
            data = inflater.unconsumed_tail
            if inflater.eof:
                data, inflater = inflater.unused_data, zlib.decompressobj(31)


def _first_line(pieces: Iterator[bytes], file: ExportFile) -> bytes:
    """The bytes before the first line end (all of them when there is none)."""
    line = bytearray()
    for piece in pieces:
        end = piece.find(b"\n")
        line += piece if end < 0 else piece[:end]
        if end >= 0:
            break
        if len(line) > MAX_HEADER_BYTES:
            raise ExportError(f"no line end in the first {MAX_HEADER_BYTES // 1024} KiB of "
                              f"{file.url}: is it a CSV file?")
    return bytes(line)
