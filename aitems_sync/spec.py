"""The sync spec: load, interpolate and validate the YAML into frozen, typed objects.

After ``load_spec`` returns there are no raw dicts in the engine: everything is one of the
frozen dataclasses below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

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


@dataclass(frozen=True)
class InvalidLimit:
    """``max_invalid``: a count (``50``) or a share of the rows read (``1%`` -> 0.01)."""

    count: int | None = None
    ratio: float | None = None

    def exceeded(self, invalid: int, read: int) -> bool:
        if self.count is not None and invalid > self.count:
            return True
        return self.ratio is not None and read > 0 and invalid / read > self.ratio


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    type: DatasetType
    dataset_id: str
    source: str
    query: str
    cursor: str
    fields: tuple[Field, ...]
    key: tuple[str, ...]  # field names; empty = the whole row (interaction default)
    lookback: timedelta = timedelta(0)
    json_schema: Mapping[str, Any] | None = None  # user's extra constraints, already loaded
    on_invalid: OnInvalid = "quarantine"
    max_invalid: InvalidLimit = InvalidLimit(ratio=0.01)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def key_fields(self) -> tuple[str, ...]:
        """The fields that identify a row: the key, or every field for a whole-row key."""
        return self.key or self.field_names


@dataclass(frozen=True)
class MetricsConfig:
    pushgateway: str | None = None
    job: str = "aitems-sync"


@dataclass(frozen=True)
class Spec:
    path: Path  # the spec file; relative paths in it resolve against path.parent
    aitems: AitemsConfig
    state_url: str
    sources: Mapping[str, SourceConfig]
    datasets: Mapping[str, DatasetSpec]
    metrics: MetricsConfig = MetricsConfig()
    version: int = 1
