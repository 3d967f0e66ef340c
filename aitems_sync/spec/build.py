"""Turn validated spec data into the frozen Spec, checking what a JSON Schema cannot express.

The checks: every dataset's source is defined; ``fields`` holds the fields AiTEMS requires for
the dataset type, with their type and never null; no field is defined twice; ``key`` names
fields; the cursor appears in the query; durations, sizes, ``max_invalid``, time zones and URLs
parse; ``json_schema`` is a valid Draft 2020-12 schema. Problems go to the Document; the Spec
built alongside is only returned to callers when there are none.

Defaults (also in the descriptions of ``spec.schema.json``):

===============================  ================================================
``aitems.endpoint``              ``https://aitems.apigw.ntruss.com/api/v1``
``aitems.timeout``               ``30s`` (read timeout of one request)
``aitems.connect_timeout``       ``10s``
``aitems.batch``                 ``max_rows: 1000, max_bytes: 4MB, in_flight: 4``
``aitems.retry``                 ``attempts: 8, backoff: 0.5s, max_backoff: 60s,
                                 max_elapsed: 10m``
``state``                        ``sqlite:///state/aitems-sync.db`` (next to the spec)
``sources.*.timezone``           ``UTC``
``sources.*.read_timeout``       ``30m`` (a query's wait for its next rows)
``datasets.*.source``            the only source, when exactly one is defined
``datasets.*.key``               ``[USER_ID]`` / ``[ITEM_ID]`` / the whole row (interaction)
``datasets.*.lookback``          ``0``
``datasets.*.json_schema``       none
``datasets.*.on_invalid``        ``quarantine``
``datasets.*.max_invalid``       ``{share: 1%, floor: 10}``
``datasets.*.fields[*]``         ``categorical: false``
``metrics``                      ``pushgateway: null`` (no push), ``job: aitems-sync``
``object_storage``               none (for bootstrap); KR endpoint, ``prefix: aitems-sync/``
``service``                      none (apply manages no service); ``type: interval``,
                                 ``cycle: 6h``, ``schedule: true``, ``description: ""``
``datasets.*.schema_name``       the ``dataset_name``
``datasets.*.description``       empty
===============================  ================================================

``aitems.access_key`` and ``secret_key`` have no default; ``aitems.service_id`` is required
unless ``service.name`` is given, and each dataset needs ``dataset_id`` or ``dataset_name``.
A relative sqlite path in ``state`` or a source ``url`` (``sqlite:///state/x.db``) is made
absolute against the spec file's folder; ``sqlite://``, ``:memory:`` and ``file:`` URIs are
left as written. A trailing ``/`` of ``aitems.endpoint`` is dropped.

jsonschema is imported only to check a ``json_schema``: every run loads the spec, and the
import adds start-up time that a spec without one need not pay.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from aitems_sync import redact
from aitems_sync.spec.document import Document, KeyPath, dotted
from aitems_sync.spec.model import (
    DEFAULT_ENDPOINT,
    DEFAULT_INVALID_LIMIT,
    DEFAULT_KEYS,
    DEFAULT_STATE_URL,
    REQUIRED_FIELDS,
    AitemsConfig,
    BatchPolicy,
    DatasetSpec,
    DatasetType,
    Field,
    FieldType,
    InvalidLimit,
    MetricsConfig,
    ObjectStorageConfig,
    OnInvalid,
    RetryPolicy,
    ServiceConfig,
    SourceConfig,
    Spec,
    duration_seconds,
    invalid_limit,
    size_bytes,
)
from aitems_sync.spec.refs import (
    MissingSchemaFile,
    RefError,
    embed_file_refs,
    read_schema_file,
)

T = TypeVar("T")
_BATCH, _RETRY, _AITEMS = BatchPolicy(), RetryPolicy(), AitemsConfig("", "", "")
_URL_HINT = "write it like sqlite:///state/aitems-sync.db or postgresql+psycopg://user@host/db"


def build_spec(data: Any, doc: Document, path: Path) -> Spec:
    """The Spec for ``data`` (already checked against the schema); problems go to ``doc``."""
    root = _map(data)
    source_names = list(_map(root.get("sources")))
    sources = {
        name: _source(doc, name, _map(body), ("sources", name))
        for name, body in _map(root.get("sources")).items()
    }
    datasets = {
        name: _dataset(doc, name, _map(body), ("datasets", name), source_names)
        for name, body in _map(root.get("datasets")).items()
    }
    db_url = _db_url(doc.folder)
    spec = Spec(
        path=path,
        aitems=_aitems(doc, _map(root.get("aitems")), ("aitems",)),
        state_url=_get(doc, root, (), "state", db_url(DEFAULT_STATE_URL), db_url),
        sources=MappingProxyType(sources),
        datasets=MappingProxyType(datasets),
        metrics=_metrics(doc, _map(root.get("metrics")), ("metrics",)),
        object_storage=_object_storage(doc, root.get("object_storage"), ("object_storage",)),
        service=_service(doc, root.get("service"), ("service",)),
        lines=MappingProxyType(dict(doc.lines)),
    )
    _check_unique_names(doc, datasets)
    if ("service_id" not in _map(root.get("aitems")) and "service" not in root
            and not doc.bad(("aitems",))):
        doc.add(("aitems", "service_id"), "missing required key 'service_id' (or name the "
                "service in a service section, service.name, to find it by name)")
    _register_secrets(spec)
    return spec


def _register_secrets(spec: Spec) -> None:
    """Mask the spec's credentials in everything shown from now on (:mod:`aitems_sync.redact`):
    the AiTEMS keys, and the passwords and secret parameters of its URLs."""
    redact.register([spec.aitems.access_key, spec.aitems.secret_key])
    urls = [spec.aitems.endpoint, spec.state_url, spec.metrics.pushgateway,
            spec.object_storage.endpoint if spec.object_storage else None,
            *(source.url for source in spec.sources.values())]
    for url in urls:
        redact.register_url(url)


def _map(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _get(
    doc: Document,
    mapping: Mapping[str, Any],
    path: KeyPath,
    key: str,
    default: T,
    convert: Callable[[Any], T],
) -> T:
    """``convert(mapping[key])``, or ``default`` when it is absent or already reported.

    ``convert`` raises ValueError(reason[, suggestion]) with a reason such as ``is not a size;
    write ...`` that does not repeat the value; the suggestion is shown only for a value that
    cannot be a secret.
    """
    key_path = (*path, key)
    if key not in mapping or mapping[key] is None or doc.bad(key_path):
        return default
    value = mapping[key]
    try:
        return convert(value)
    except ValueError as error:
        hint = error.args[1] if len(error.args) > 1 and not doc.is_tainted(key_path) else ""
        doc.add(key_path, f"{doc.show(key_path, value)} {error.args[0]}{hint}")
        return default


def _count(low: int, high: int | None = None) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        number = int(value)  # an int, or a string of digits (the schema checked which)
        if number < low or (high is not None and number > high):
            bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise ValueError(f"is out of range; it must be {bounds}")
        return number

    return convert


#: The longest duration a spec may give a timeout or a backoff (30 days): past it, the socket
#: and thread calls that take them overflow.
MAX_SECONDS = 30 * 86_400.0
#: The longest lookback (366 days).
MAX_LOOKBACK = timedelta(days=366)


def _seconds(minimum: float = 0.0) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        seconds = duration_seconds(value)
        if seconds < minimum or (minimum > 0 and seconds == 0):
            raise ValueError("must be more than 0")
        if seconds > MAX_SECONDS:
            raise ValueError("must be at most 30d")
        return seconds

    return convert


def _http_url(value: Any) -> str:
    hint = "is not an http(s) URL such as https://aitems.apigw.ntruss.com/api/v1"
    parts = urlsplit(str(value))
    try:
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:
        raise ValueError(hint) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(hint)
    if parts.query or parts.fragment or str(value).rstrip().endswith(("?", "#")):
        # Request paths are appended to it: a query would end up in the middle of every URL.
        raise ValueError("has a query string or a fragment (?... or #...), which no request "
                         "path can follow; remove it: write it like "
                         "https://aitems.apigw.ntruss.com/api/v1")
    if not re.fullmatch(r"[A-Za-z0-9._\-]+|\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:.]+", parts.hostname):
        raise ValueError("has a host name that cannot be one (a space, or a character a host "
                         "name does not have); write it like https://aitems.apigw.ntruss.com/api/v1")
    return str(value).rstrip("/")


def _db_url(folder: Path) -> Callable[[Any], str]:
    """A SQLAlchemy URL, with a relative sqlite path made absolute against ``folder``."""

    def convert(value: Any) -> str:
        try:
            url = make_url(str(value))
        except (ArgumentError, ValueError):
            raise ValueError(f"is not a SQLAlchemy URL; {_URL_HINT}") from None
        database = url.database
        if (
            url.get_backend_name() != "sqlite"
            or not database
            or database == ":memory:"
            or database.startswith("file:")
            or os.path.isabs(database)
        ):
            return str(value)
        absolute = os.path.normpath(folder / database)
        return url.set(database=absolute).render_as_string(hide_password=False)

    return convert


def _timezone(value: Any) -> str:
    name = str(value)
    if name == "UTC":  # needs no tz database, which slim images may lack
        return name
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        import difflib

        close = difflib.get_close_matches(name, sorted(available_timezones()), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError("is not an IANA time zone such as UTC or Asia/Seoul", hint) from None
    return name


def _aitems(doc: Document, m: dict[str, Any], p: KeyPath) -> AitemsConfig:
    batch, retry = _map(m.get("batch")), _map(m.get("retry"))
    bp, rp = (*p, "batch"), (*p, "retry")
    backoff = _get(doc, retry, rp, "backoff", _RETRY.backoff, _seconds())
    max_backoff = _get(doc, retry, rp, "max_backoff", _RETRY.max_backoff, _seconds())
    if max_backoff < backoff:
        doc.add((*rp, "max_backoff"), "must not be less than backoff")
    return AitemsConfig(
        service_id=_get(doc, m, p, "service_id", "", str),
        access_key=_get(doc, m, p, "access_key", "", str),
        secret_key=_get(doc, m, p, "secret_key", "", str),
        endpoint=_get(doc, m, p, "endpoint", DEFAULT_ENDPOINT, _http_url),
        timeout=_get(doc, m, p, "timeout", _AITEMS.timeout, _seconds(1e-9)),
        connect_timeout=_get(doc, m, p, "connect_timeout", _AITEMS.connect_timeout, _seconds(1e-9)),
        batch=BatchPolicy(
            max_rows=_get(doc, batch, bp, "max_rows", _BATCH.max_rows, _count(1)),
            max_bytes=_get(doc, batch, bp, "max_bytes", _BATCH.max_bytes, _size),
            in_flight=_get(doc, batch, bp, "in_flight", _BATCH.in_flight, _count(1, 64)),
        ),
        retry=RetryPolicy(
            attempts=_get(doc, retry, rp, "attempts", _RETRY.attempts, _count(1)),
            backoff=backoff,
            max_backoff=max_backoff,
            max_elapsed=_get(doc, retry, rp, "max_elapsed", _RETRY.max_elapsed, _seconds()),
        ),
    )


def _size(value: Any) -> int:
    size = size_bytes(value)
    if size < 1:
        raise ValueError("must be at least 1 byte")
    return size


def _source(doc: Document, name: str, m: dict[str, Any], p: KeyPath) -> SourceConfig:
    return SourceConfig(
        name=name,
        url=_get(doc, m, p, "url", "", _db_url(doc.folder)),
        timezone=_get(doc, m, p, "timezone", "UTC", _timezone),
        read_timeout=_get(doc, m, p, "read_timeout", SourceConfig.read_timeout, _seconds(1e-9)),
    )


def _metrics(doc: Document, m: dict[str, Any], p: KeyPath) -> MetricsConfig:
    return MetricsConfig(
        pushgateway=_get(doc, m, p, "pushgateway", None, _http_url),
        job=_get(doc, m, p, "job", MetricsConfig.job, str),
    )


def _object_storage(doc: Document, value: Any, p: KeyPath) -> ObjectStorageConfig | None:
    if not isinstance(value, dict):
        return None
    return ObjectStorageConfig(
        bucket=_get(doc, value, p, "bucket", "", str),
        endpoint=_get(doc, value, p, "endpoint", ObjectStorageConfig.endpoint, _http_url),
        region=_get(doc, value, p, "region", ObjectStorageConfig.region, str),
        prefix=_get(doc, value, p, "prefix", ObjectStorageConfig.prefix, str),
    )


def _check_unique_names(doc: Document, datasets: Mapping[str, DatasetSpec]) -> None:
    """Two datasets may not share an AiTEMS dataset name or schema name."""
    for attribute, key in (("dataset_name", "dataset_name"), ("schema_base", "schema_name")):
        first: dict[str, str] = {}
        for name, dataset in datasets.items():
            value = getattr(dataset, attribute)
            if value is None:
                continue
            if value in first:
                doc.add(("datasets", name, key), f"{value!r} is also datasets.{first[value]}'s "
                        f"{key}; each dataset needs its own")
            first.setdefault(value, name)


def _service(doc: Document, value: Any, p: KeyPath) -> ServiceConfig | None:
    if not isinstance(value, dict):
        return None
    defaults = ServiceConfig("")
    return ServiceConfig(
        name=_get(doc, value, p, "name", "", str),
        type=_get(doc, value, p, "type", defaults.type, str),  # type: ignore[arg-type]
        cycle=_get(doc, value, p, "cycle", defaults.cycle, str),
        schedule=_get(doc, value, p, "schedule", defaults.schedule, bool),
        description=_get(doc, value, p, "description", "", str),
    )


def _dataset(
    doc: Document, name: str, m: dict[str, Any], p: KeyPath, source_names: list[str]
) -> DatasetSpec:
    kind = m.get("type") if not doc.bad((*p, "type")) else None
    fields = _fields(doc, m.get("fields"), (*p, "fields"))
    if kind in REQUIRED_FIELDS and not doc.bad((*p, "fields")):
        _check_required(doc, str(kind), fields, (*p, "fields"))
    query = _get(doc, m, p, "query", "", str)
    cursor = _get(doc, m, p, "cursor", "", str)
    if query and cursor:
        _check_cursor(doc, query, cursor, (*p, "cursor"))
    if "dataset_id" not in m and "dataset_name" not in m:
        doc.add((*p, "dataset_id"), "missing required key 'dataset_id' (or give dataset_name "
                "to find the AiTEMS dataset by name, or have bootstrap create it)")
    return DatasetSpec(
        name=name,
        type=cast(DatasetType, kind),
        dataset_id=_get(doc, m, p, "dataset_id", "", str),
        source=_source_name(doc, m, p, source_names),
        query=query,
        cursor=cursor,
        fields=tuple(f for _, f in fields),
        key=_key(doc, m, p, str(kind)),
        lookback=_get(doc, m, p, "lookback", timedelta(0), _lookback),
        json_schema=_get(doc, m, p, "json_schema", None, lambda v: _json_schema(doc, v, p)),
        on_invalid=cast(OnInvalid, _get(doc, m, p, "on_invalid", "quarantine", str)),
        max_invalid=DEFAULT_INVALID_LIMIT if _reported_below(doc, (*p, "max_invalid")) else
        _get(doc, m, p, "max_invalid", DEFAULT_INVALID_LIMIT, _max_invalid),
        dataset_name=_get(doc, m, p, "dataset_name", None, str),
        schema_name=_get(doc, m, p, "schema_name", None, str),
        description=_get(doc, m, p, "description", "", str),
    )


def _reported_below(doc: Document, path: KeyPath) -> bool:
    """Whether a problem was reported at ``path`` or inside it (a mapping's own key)."""
    prefix = dotted(path)
    return any(q.key == prefix or q.key.startswith(prefix + ".") for q in doc.problems)


def _max_invalid(value: Any) -> InvalidLimit:
    """``50``, ``"1%"``, or ``{share: "1%", floor: 10}`` (the schema checked the form)."""
    if not isinstance(value, dict):
        return invalid_limit(value)
    share = invalid_limit(value["share"])
    if share.ratio is None:
        raise ValueError("share must be a share such as 1%, with its floor a count")
    floor = invalid_limit(value.get("floor", 0))
    return InvalidLimit(ratio=share.ratio, floor=floor.count or 0)


def _lookback(value: Any) -> timedelta:
    seconds = duration_seconds(value)
    if seconds > MAX_LOOKBACK.total_seconds():
        raise ValueError("must be at most 366d")
    return timedelta(seconds=seconds)


def _fields(doc: Document, raw: Any, p: KeyPath) -> list[tuple[int, Field]]:
    """Each well-formed field with its index; duplicates and null-only types reported."""
    if not isinstance(raw, list) or doc.bad(p):
        return []
    out: list[tuple[int, Field]] = []
    first: dict[str, int] = {}
    for i, item in enumerate(raw):
        name = _map(item).get("name")
        if not isinstance(name, str) or doc.bad((*p, i)) or doc.bad((*p, i, "name")):
            continue
        if name in first:
            shown = doc.show((*p, i, "name"), name)
            message = f"field {shown} is defined twice (first as fields[{first[name]}])"
            doc.add((*p, i, "name"), message)
            continue
        first[name] = i
        raw_types = item.get("type")
        types = () if doc.bad((*p, i, "type")) else _types(raw_types)
        if types == ("null",):
            doc.add((*p, i, "type"), 'needs a type besides "null", e.g. [string, "null"]')
        categorical = item.get("categorical") is True
        out.append((i, Field(name=name, types=types, categorical=categorical)))
    return out


def _types(raw: Any) -> tuple[FieldType, ...]:
    listed = raw if isinstance(raw, list) else [raw]
    return tuple(cast(FieldType, t) for t in listed)


def _check_required(
    doc: Document, kind: str, fields: list[tuple[int, Field]], p: KeyPath
) -> None:
    a_kind = {"user": "a user", "item": "an item"}.get(kind, f"an {kind}")
    by_name = {f.name: (i, f) for i, f in fields}
    for name, wanted in REQUIRED_FIELDS[kind].items():
        if name not in by_name:
            near = [n for n in by_name if n.lower() == name.lower()]
            case = f" (field names are case-sensitive: found {near[0]})" if near else ""
            doc.add(
                p,
                f"{a_kind} dataset needs the field {name}; add "
                f"{{name: {name}, type: {wanted}}}{case}",
                mark=False,
            )
            continue
        i, found = by_name[name]
        if doc.bad((*p, i, "type")):
            continue
        if wanted not in found.types:
            doc.add((*p, i, "type"), f"{name} must have type {wanted} in {a_kind} dataset")
        elif found.nullable:
            doc.add(
                (*p, i, "type"),
                f'{name} is required by AiTEMS and can never be null; remove "null" from its type',
            )


def _check_cursor(doc: Document, query: str, cursor: str, p: KeyPath) -> None:
    # A word match is all that can be checked without a database; `validate --connect` checks
    # the query's real result columns.
    if not re.search(rf"(?<![\w$]){re.escape(cursor)}(?![\w$])", query, re.IGNORECASE):
        doc.add(
            p,
            f"{doc.show(p, cursor)} does not appear in the query; the cursor must be a column "
            "of the query's result: add it to the SELECT list",
        )


def _source_name(doc: Document, m: dict[str, Any], p: KeyPath, names: list[str]) -> str:
    if "source" not in m:
        if len(names) == 1:
            return names[0]
        if names:
            doc.add((*p, "source"), f"missing key 'source': name one of {', '.join(names)}")
        return ""
    name = _get(doc, m, p, "source", "", str)
    if name and names and name not in names:
        hint = doc.suggest((*p, "source"), name, names)
        doc.add(
            (*p, "source"),
            f"{doc.show((*p, 'source'), name)} is not a source defined under sources "
            f"({', '.join(names)}){hint}",
        )
    return name


def _key(doc: Document, m: dict[str, Any], p: KeyPath, kind: str) -> tuple[str, ...]:
    """The dataset's key: on an interaction dataset any result columns (checked against the
    query by `validate --connect` and the run), on user and item datasets their identity."""
    raw = m.get("key")
    if raw is None or doc.bad((*p, "key")) or not isinstance(raw, list):
        return DEFAULT_KEYS.get(kind, ())
    identity = DEFAULT_KEYS.get(kind, ())
    if kind in ("user", "item") and tuple(raw) != identity:
        doc.add((*p, "key"),
                f"the key of a {kind} dataset is {identity[0]}, the identity AiTEMS upserts by "
                f"(the versions of one {identity[0]} must reach AiTEMS in order, and the ledger "
                f"follows them by it): write key: [{identity[0]}], or leave key out", mark=False)
    return tuple(str(n) for n in raw)


def _json_schema(doc: Document, value: Any, p: KeyPath) -> Mapping[str, Any] | None:
    """The user's extra schema, inline or read from a JSON or YAML file; None on a problem."""
    path = (*p, "json_schema")
    where, folder = "json_schema", doc.folder
    loaded: Any = value
    if isinstance(value, str):
        file = doc.folder / value
        shown = str(file) if not doc.is_tainted(path) else "the json_schema file"
        where, folder = f"the json_schema file {shown}", file.parent
        try:
            loaded = read_schema_file(file)
        except MissingSchemaFile:
            raise ValueError(f"names a file that does not exist: {shown} (a relative path "
                             "resolves against the spec file's folder)") from None
        except RefError as error:
            detail = str(error) if not doc.is_tainted(path) else "it cannot be read"
            raise ValueError(f"names a file that cannot be used: {detail}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"is not a JSON Schema: {where} must hold a mapping")
    try:
        loaded = embed_file_refs(loaded, folder)
    except RefError as error:
        raise ValueError(f"has a $ref that cannot be used: {error}") from None
    from jsonschema import Draft202012Validator  # here: see the module docstring
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(loaded)
    except SchemaError as error:
        at = "/".join(str(part) for part in error.absolute_path) or "the top"
        detail = error.message if not doc.is_tainted(path) else "a keyword has a wrong value"
        raise ValueError(f"is not a valid JSON Schema (Draft 2020-12) at {at}: {detail}") from None
    return MappingProxyType(copy.deepcopy(loaded))
