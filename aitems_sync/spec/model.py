"""The sync spec: load, interpolate and validate the YAML into frozen, typed objects.

After ``load_spec`` returns there are no raw dicts in the engine: everything is one of the
frozen dataclasses below. This module also parses the values written as text (durations, sizes,
``max_invalid``) and ships the spec's JSON Schema; the loader itself is ``aitems_sync.spec.load``.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from aitems_sync.errors import SpecProblem
from aitems_sync.spec.document import KeyPath, dotted

DatasetType = Literal["user", "item", "interaction"]
FieldType = Literal["string", "int", "long", "float", "double", "boolean", "null"]
OnInvalid = Literal["quarantine", "fail"]

DEFAULT_ENDPOINT = "https://aitems.apigw.ntruss.com/api/v1"
DEFAULT_STATE_URL = "sqlite:///state/aitems-sync.db"

#: Fields AiTEMS requires per dataset type (never null), with their field type.
REQUIRED_FIELDS: Mapping[str, Mapping[str, FieldType]] = {
    "user": {"USER_ID": "string"},
    "item": {"ITEM_ID": "string"},
    "interaction": {"USER_ID": "string", "ITEM_ID": "string", "TIMESTAMP": "long"},
}

#: The default key per dataset type; an empty tuple means "the whole row".
DEFAULT_KEYS: Mapping[str, tuple[str, ...]] = {
    "user": ("USER_ID",),
    "item": ("ITEM_ID",),
    "interaction": (),
}


@dataclass(frozen=True)
class Field:
    """One AiTEMS schema field. ``types`` is the union, e.g. ``("int", "null")``."""

    name: str
    types: tuple[FieldType, ...]
    categorical: bool = False

    @property
    def nullable(self) -> bool:
        return "null" in self.types


@dataclass(frozen=True)
class BatchPolicy:
    max_rows: int = 1000
    max_bytes: int = 4_000_000
    in_flight: int = 4


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8
    backoff: float = 0.5  # seconds, the first wait's upper bound
    max_backoff: float = 60.0  # seconds, cap on one wait
    max_elapsed: float = 600.0  # seconds, cap on all waits for one request


@dataclass(frozen=True)
class AitemsConfig:
    service_id: str
    access_key: str
    secret_key: str = field(repr=False)
    endpoint: str = DEFAULT_ENDPOINT
    timeout: float = 30.0  # read timeout, seconds
    connect_timeout: float = 10.0
    batch: BatchPolicy = BatchPolicy()
    retry: RetryPolicy = RetryPolicy()


@dataclass(frozen=True)
class SourceConfig:
    name: str
    url: str = field(repr=False)  # may hold a password
    timezone: str = "UTC"  # the zone naive datetimes are read in
    # Seconds a query may wait for its next rows before the dataset fails (source/watchdog.py).
    read_timeout: float = 1800.0


@dataclass(frozen=True)
class InvalidLimit:
    """``max_invalid``: a count (``50``), or a share of the rows read (``1%`` -> 0.01) with a
    floor (``{share: 1%, floor: 10}``: never fewer than 10 rows are allowed, so one bad row in
    a small delta does not fail the dataset). The dataset fails when it has more invalid rows
    than allowed."""

    count: int | None = None
    ratio: float | None = None
    floor: int = 0  # with a ratio: the fewest invalid rows allowed

    def allowed(self, read: int) -> float:
        """How many invalid rows may be found among ``read`` rows."""
        if self.count is not None:
            return self.count
        return max(self.floor, (self.ratio or 0.0) * read)

    def exceeded(self, invalid: int, read: int) -> bool:
        return invalid > self.allowed(read)


#: The default ``max_invalid``: 1% of the rows read, and never fewer than 10 rows.
DEFAULT_INVALID_LIMIT = InvalidLimit(ratio=0.01, floor=10)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    type: DatasetType
    dataset_id: str
    source: str
    query: str
    cursor: str
    fields: tuple[Field, ...]
    # Result columns that identify a row (USER_ID / ITEM_ID on user and item datasets; on an
    # interaction dataset any columns, fields or not); empty: the whole row (interactions).
    key: tuple[str, ...]
    lookback: timedelta = timedelta(0)
    json_schema: Mapping[str, Any] | None = None  # user's extra constraints, already loaded
    on_invalid: OnInvalid = "quarantine"
    max_invalid: InvalidLimit = DEFAULT_INVALID_LIMIT
    # The AiTEMS names apply and bootstrap create it under; with dataset_id "" the dataset is
    # found by dataset_name (aitems_sync.sync.resolve).
    dataset_name: str | None = None
    schema_name: str | None = None  # the base name; default: dataset_name
    description: str = ""

    @property
    def schema_base(self) -> str | None:
        """The schema's name as the spec gives it (replacements add ``_2``, ``_3``...)."""
        return self.schema_name or self.dataset_name

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def key_fields(self) -> tuple[str, ...]:
        """The columns that identify a row and order it after its cursor: the key, or every
        field for a whole-row key."""
        return self.key or self.field_names


@dataclass(frozen=True)
class MetricsConfig:
    pushgateway: str | None = None
    job: str = "aitems-sync"


@dataclass(frozen=True)
class ObjectStorageConfig:
    """Where ``bootstrap`` writes first loads: NCP Object Storage, with the AiTEMS keys."""

    bucket: str
    endpoint: str = "https://kr.object.ncloudstorage.com"
    region: str = "kr-standard"
    prefix: str = "aitems-sync/"


#: The spec's ``service.cycle`` as AiTEMS's interval term.
CYCLE_TERMS: Mapping[str, str] = {"1h": "hour1", "3h": "hour3", "6h": "hour6", "12h": "hour12"}


@dataclass(frozen=True)
class ServiceConfig:
    """The AiTEMS service ``apply`` manages (the spec's optional ``service`` section)."""

    name: str
    type: Literal["interval", "batch"] = "interval"
    cycle: str = "6h"  # a key of CYCLE_TERMS
    schedule: bool = True  # whether an interval service's schedule runs
    description: str = ""

    @property
    def term(self) -> str | None:
        """The AiTEMS interval term, or None for a batch service."""
        return CYCLE_TERMS[self.cycle] if self.type == "interval" else None


@dataclass(frozen=True)
class Spec:
    path: Path  # the spec file; relative paths in it resolve against path.parent
    aitems: AitemsConfig
    state_url: str
    sources: Mapping[str, SourceConfig]
    datasets: Mapping[str, DatasetSpec]
    metrics: MetricsConfig = MetricsConfig()
    object_storage: ObjectStorageConfig | None = None  # None: bootstrap is not set up
    service: ServiceConfig | None = None  # None: apply manages no service
    version: int = 1
    #: The line of each key path written in the file, for problems found after loading.
    lines: Mapping[KeyPath, int] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False)

    def line(self, path: KeyPath) -> int | None:
        """The line of ``path``, or of its nearest ancestor written in the file."""
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path)

    def problem(self, path: KeyPath, message: str) -> SpecProblem:
        """A problem found after loading (against a source or AiTEMS), located like those
        found while loading: file, line and dotted key."""
        return SpecProblem(str(self.path), self.line(path), dotted(path), message)

    def locate(self, problem: SpecProblem) -> SpecProblem:
        """``problem``, found where the file was not at hand (a query's columns), located at
        the line of its dotted key (or of the nearest key above it) in this spec."""
        lines = {dotted(path): line for path, line in self.lines.items()}
        key = problem.key
        while key and key not in lines:
            parent = re.sub(r"(\.[^.\[\]]*|\[[0-9]+\])$", "", key)
            key = parent if parent != key else ""
        return SpecProblem(str(self.path), lines.get(key), problem.key, problem.message)


# --- Values written as text: durations, sizes, invalid-row limits ---------------------------------
# The spec's JSON Schema carries the same patterns (tests keep the two equal), so an editor using
# the schema flags exactly what the loader rejects.

DURATION_PATTERN = (
    r"^\s*(?:[0-9]+(?:\.[0-9]+)?|(?:[0-9]+(?:\.[0-9]+)?\s*(?:ms|s|m|h|d)\s*)+)\s*$"
)
SIZE_PATTERN = r"^\s*[0-9]+(?:\.[0-9]+)?\s*(?:[bB]|[kKmMgG][bB]|[kKmMgG]i[bB])?\s*$"
INVALID_LIMIT_PATTERN = r"^\s*[0-9]+(?:\.[0-9]+)?\s*%?\s*$"

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-z]*)\s*")
_SIZE_UNITS = {
    "": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9,
    "kib": 2**10, "mib": 2**20, "gib": 2**30,
}

_DURATION_HINT = "write it like 30s, 10m, 1h30m, 500ms or 2d (a bare number is seconds)"
_SIZE_HINT = "write it like 4MB (10^6 bytes), 4MiB (2^20 bytes), 512KB or a number of bytes"
_LIMIT_HINT = "write a share of the rows read such as 1% or 0.5%, or a count such as 50"


def _number(value: object, what: str, hint: str) -> float:
    """A plain number from YAML, refusing booleans (a bool is an int in Python) and NaN/inf."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"is not {what}; {hint}")
    if value < 0:
        raise ValueError(f"is negative; {hint}")
    return float(value)


def duration_seconds(text: str | int | float) -> float:
    """Like ``parse_duration`` but in seconds, and the ValueError does not repeat the value.

    The loader uses this form: a value interpolated from the environment may be a secret.
    """
    if not isinstance(text, str):
        return _number(text, "a duration", _DURATION_HINT)
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"is not a duration; {_DURATION_HINT}")
    if not _DURATION_PART.search(text):
        return float(text)
    return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))


def size_bytes(text: str | int) -> int:
    """Like ``parse_size``, but the ValueError does not repeat the value (see duration_seconds)."""
    if not isinstance(text, str):
        number = _number(text, "a size", _SIZE_HINT)
        if not number.is_integer():
            raise ValueError(f"is not a whole number of bytes; {_SIZE_HINT}")
        return int(number)
    match = _SIZE.fullmatch(text.lower())
    if not re.fullmatch(SIZE_PATTERN, text) or match is None:
        raise ValueError(f"is not a size; {_SIZE_HINT}")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


def invalid_limit(value: str | int | float) -> InvalidLimit:
    """Like ``parse_invalid_limit``, but the ValueError does not repeat the value."""
    if not isinstance(value, str):
        number = _number(value, "a count or a share", _LIMIT_HINT)
        if not number.is_integer():
            raise ValueError(f"is not a whole count; {_LIMIT_HINT}")
        return InvalidLimit(count=int(number))
    if not re.fullmatch(INVALID_LIMIT_PATTERN, value):
        raise ValueError(f"is not a count or a share; {_LIMIT_HINT}")
    text = value.strip()
    if not text.endswith("%"):
        return invalid_limit(float(text))
    percent = float(text[:-1])
    if percent > 100:
        raise ValueError(f"is over 100%; {_LIMIT_HINT}")
    return InvalidLimit(ratio=percent / 100)


def parse_duration(text: str | int | float) -> timedelta:
    """A duration: ``"10m"``, ``"30s"``, ``"1h30m"``, ``"500ms"``, ``"2d"``; a number is seconds.

    Units: ms, s, m (minutes), h, d. Raises ValueError for anything else or a negative number.
    """
    try:
        return timedelta(seconds=duration_seconds(text))
    except ValueError as error:
        raise ValueError(f"{text!r} {error}") from None


def parse_size(text: str | int) -> int:
    """A size in bytes: ``"4MB"`` (10^6), ``"4MiB"`` (2^20), ``"512KB"``, ``"100"``; int: bytes.

    Units, case-insensitive but for the ``i``: B, KB, MB, GB (powers of 1000) and KiB, MiB, GiB
    (powers of 1024). A fraction is rounded down to whole bytes. Raises ValueError otherwise.
    """
    try:
        return size_bytes(text)
    except ValueError as error:
        raise ValueError(f"{text!r} {error}") from None


def parse_invalid_limit(value: str | int | float) -> InvalidLimit:
    """``max_invalid``: ``"1%"`` -> ratio 0.01, ``50`` or ``"50"`` -> count 50, ``"0"`` -> count 0.

    A share is 0% to 100%; a count is a whole number. Raises ValueError otherwise.
    """
    try:
        return invalid_limit(value)
    except ValueError as error:
        raise ValueError(f"{value!r} {error}") from None


@functools.cache
def _schema_text() -> str:
    return resources.files("aitems_sync.spec").joinpath("spec.schema.json").read_text("utf-8")


def spec_schema() -> dict[str, Any]:
    """The spec's own JSON Schema (Draft 2020-12), as shipped in the package (a fresh copy)."""
    schema: dict[str, Any] = json.loads(_schema_text())
    return schema
