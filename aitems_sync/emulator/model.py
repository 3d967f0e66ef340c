"""The emulator's in-memory AiTEMS: schemas, datasets, services, and what each dataset received.

No sockets here: ``handler.py`` turns HTTP requests into calls on `Model` and a `Rejection`
into an error answer. Row checking lives in ``rows.py``. Where the AiTEMS docs are silent the
model follows the project's choices (listed in docs/emulator.md): schema names are unique,
upload rows of user and item datasets are upserted by ``USER_ID`` / ``ITEM_ID`` (first-insertion
order is kept), interaction rows are appended, and one bad row rejects the whole upload.

Shapes that are ours, not documented: a service's ``datasets`` is a list of
``{datasetId, type, name}``; a dataset's ``connectedServices`` a list of ``{serviceId, name}``;
lists answer ``{<things>: [...], offset, limit}``; dates are UTC without a zone.
"""

from __future__ import annotations

import copy
import random
import re
import string
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Protocol

from aitems_sync.emulator.rows import (
    DATASET_TYPES,
    KEY_FIELD,
    Problem,
    Rejection,
    RowChecker,
    UploadTarget,
    check_schema_fields,
    compile_checker,
    required_fields,
)

NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{2,19}")
SERVICE_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{2,19}")
SEEDED_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
SERVICE_TYPES = ("batch", "interval")
MAX_DESCRIPTION = 100
_ID_ALPHABET = string.ascii_lowercase + string.digits

Document = dict[str, Any]


def format_date(seconds: float) -> str:
    """An AiTEMS-style date, ``2022-04-04T16:03:47.087`` (UTC, no zone)."""
    ms = int(seconds * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}"


@dataclass(frozen=True)
class Received:
    """What one dataset received: counts, current content, and every accepted row as sent."""

    dataset_id: str
    uploads: int
    rows_received: int
    rows: list[dict[str, Any]]
    deliveries: list[dict[str, Any]]


@dataclass
class Snapshot:
    """Everything a journal holds, for `Model.restore` (objects in creation order per kind)."""

    objects: list[tuple[str, Document]] = field(default_factory=list)
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    rows: dict[str, list[Document]] = field(default_factory=dict)
    deliveries: dict[str, list[Document]] = field(default_factory=dict)


class Journal(Protocol):
    """Where the model writes its changes through to, if persistence is on."""

    def save_object(self, kind: str, object_id: str, document: Mapping[str, Any]) -> None: ...

    def record_upload(
        self, dataset_id: str, key: str | None, rows: Sequence[Document], first_position: int,
        record: bool,
    ) -> None: ...

    def reset_data(self) -> None: ...


@dataclass
class _Content:
    uploads: int = 0
    rows_received: int = 0
    by_key: dict[Any, Document] = field(default_factory=dict)
    deliveries: list[Document] = field(default_factory=list)
    keys: set[Any] = field(default_factory=set)  # record=False: only the upserted keys

    def add(self, rows: list[Document], key: str | None, record: bool) -> None:
        self.uploads += 1
        self.rows_received += len(rows)
        if record:
            self.deliveries.extend(rows)
            if key is not None:
                by_key = self.by_key
                for row in rows:
                    by_key[row[key]] = row  # an existing key keeps its first position
        elif key is not None:
            self.keys.update(map(itemgetter(key), rows))

    def current_rows(self, key: str | None) -> list[Document]:
        return list(self.by_key.values()) if key is not None else list(self.deliveries)

    def row_count(self, key: str | None) -> int:
        if key is None:
            return self.rows_received
        return len(self.by_key) if self.by_key else len(self.keys)


def _check_name(problems: list[Problem], name: Any, pattern: re.Pattern[str], rule: str) -> None:
    if not isinstance(name, str) or not pattern.fullmatch(name):
        problems.append(Problem(None, "name", f"name must be {rule}"))


def _check_description(problems: list[Problem], description: Any) -> None:
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        problems.append(Problem(None, "description", "description must be 0 to 100 characters"))


_NAME_RULE = "3 to 20 letters, digits, '_' or '-', starting with a letter"


def _page(query: Mapping[str, str]) -> tuple[int, int]:
    try:
        offset, limit = int(query.get("offset", "0")), int(query.get("limit", "1000"))
    except ValueError:
        offset = limit = -1
    if offset < 0 or limit < 0:
        raise Rejection(400, "offset and limit must be non-negative integers")
    return offset, limit


def _require_object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Rejection(400, f"the body of {what} must be a JSON object")
    return body


class Model:
    """Thread-safe store of the emulated AiTEMS objects and of the rows uploads delivered."""

    def __init__(
        self, *, clock: Callable[[], float] = time.time, record: bool = True,
        journal: Journal | None = None, rng: random.Random | None = None,
    ) -> None:
        self._clock = clock
        self._record = record
        self._journal = journal
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._schemas: dict[str, Document] = {}
        self._checkers: dict[str, RowChecker] = {}
        self._datasets: dict[str, Document] = {}
        self._services: dict[str, Document] = {}
        self._contents: dict[str, _Content] = {}

    # -- schemas -------------------------------------------------------------------------------

    def create_schema(self, body: Any) -> Document:
        """``POST /schemas``: check name, type and fields (all problems at once) and store."""
        body = _require_object(body, "create schema")
        problems: list[Problem] = []
        _check_name(problems, body.get("name"), NAME_RE, _NAME_RULE)
        dataset_type = body.get("datasetType")
        if dataset_type not in DATASET_TYPES:
            problems.append(Problem(None, "datasetType",
                                    "datasetType must be user, item or interaction"))
        _check_description(problems, body.get("description", ""))
        fields = check_schema_fields(problems, dataset_type, body.get("fields"))
        with self._lock:
            if body.get("name") in self._schemas:
                problems.append(Problem(None, "name", "a schema with this name already exists"))
            if problems:
                raise Rejection(400, f"the schema is invalid: {problems[0].message}", problems)
            schema: Document = {
                "datasetType": dataset_type, "name": body["name"], "fields": fields,
                "description": body.get("description", ""),
                "createdDate": format_date(self._clock()),
            }
            self._add_schema(schema)
            self._save("schema", schema["name"], schema)
            return copy.deepcopy(schema)

    def _add_schema(self, schema: Document) -> None:
        self._schemas[schema["name"]] = schema
        self._checkers[schema["name"]] = compile_checker(schema)

    def get_schema(self, name: str) -> Document:
        """``GET /schemas/{schemaName}``."""
        with self._lock:
            return copy.deepcopy(self._find(self._schemas, name, "schema"))

    def list_schemas(self, query: Mapping[str, str]) -> Document:
        """``GET /schemas?datasetType=&offset=&limit=``."""
        offset, limit = _page(query)
        wanted = query.get("datasetType")
        with self._lock:
            found = [s for s in self._schemas.values() if wanted in (None, s["datasetType"])]
            page = copy.deepcopy(found[offset : offset + limit])
        return {"schemas": page, "offset": offset, "limit": limit}

    @staticmethod
    def default_schema(query: Mapping[str, str]) -> Document:
        """``GET /schemas/default?datasetType=``: the required fields of a dataset type."""
        dataset_type = query.get("datasetType")
        if dataset_type not in DATASET_TYPES:
            raise Rejection(400, "datasetType must be user, item or interaction")
        return {"datasetType": dataset_type, "fields": required_fields(dataset_type)}

    # -- datasets ------------------------------------------------------------------------------

    def create_dataset(self, body: Any, dataset_id: str | None = None) -> Document:
        """``POST /datasets``: a dataset of a type, following an existing schema of that type."""
        body = _require_object(body, "create dataset")
        problems: list[Problem] = []
        dataset_type = body.get("type")
        if dataset_type not in DATASET_TYPES:
            problems.append(Problem(None, "type", "type must be user, item or interaction"))
        _check_name(problems, body.get("name"), NAME_RE, _NAME_RULE)
        _check_description(problems, body.get("description", ""))
        os_info = body.get("osInfo")
        if not isinstance(os_info, dict) or not all(
            isinstance(os_info.get(k), str) and os_info[k] for k in ("region", "bucket", "key")
        ):
            problems.append(Problem(None, "osInfo", "osInfo must be {region, bucket, key} strings"))
        schema_name = body.get("schemaName")
        with self._lock:
            schema = self._schemas.get(schema_name) if isinstance(schema_name, str) else None
            if schema is None:
                problems.append(Problem(None, "schemaName", "schemaName names no schema"))
            elif schema["datasetType"] != dataset_type:
                problems.append(Problem(None, "schemaName", "the schema is for another type"))
            if problems:
                raise Rejection(400, f"the dataset is invalid: {problems[0].message}", problems)
            now = format_date(self._clock())
            dataset: Document = {
                "datasetId": dataset_id or self._new_id(self._datasets), "type": dataset_type,
                "name": body["name"], "description": body.get("description", ""),
                "schemaName": body["schemaName"], "status": "enable", "osInfo": dict(os_info),
                "connectedServices": [], "createdDate": now, "updatedDate": now,
            }
            self._datasets[dataset["datasetId"]] = dataset
            self._save("dataset", dataset["datasetId"], dataset)
            return copy.deepcopy(dataset)

    def get_dataset(self, dataset_id: str) -> Document:
        """``GET /datasets/{datasetId}``."""
        with self._lock:
            return copy.deepcopy(self._find(self._datasets, dataset_id, "dataset"))

    def list_datasets(self, query: Mapping[str, str]) -> Document:
        """``GET /datasets?offset=&limit=``."""
        offset, limit = _page(query)
        with self._lock:
            found = copy.deepcopy(list(self._datasets.values())[offset : offset + limit])
        return {"datasets": found, "offset": offset, "limit": limit}

    # -- services ------------------------------------------------------------------------------

    def create_service(self, body: Any, service_id: str | None = None) -> Document:
        """``POST /services``: a batch (default) or interval service without datasets yet."""
        body = _require_object(body, "create service")
        problems: list[Problem] = []
        _check_name(problems, body.get("name"), SERVICE_NAME_RE,
                    "3 to 20 letters, digits, '_' or '-', starting with a letter or '_'")
        _check_description(problems, body.get("description", ""))
        service_type = body.get("type", "batch")
        if service_type not in SERVICE_TYPES:
            problems.append(Problem(None, "type", "type must be batch or interval"))
        if problems:
            raise Rejection(400, f"the service is invalid: {problems[0].message}", problems)
        with self._lock:
            now = format_date(self._clock())
            service: Document = {
                "serviceId": service_id or self._new_id(self._services), "name": body["name"],
                "description": body.get("description", ""), "type": service_type,
                "status": "datasetRequired", "datasets": [],
                "hpConfig": body.get("hpConfig", {"is_enabled": False}),
                "createdDate": now, "updatedDate": now,
            }
            self._services[service["serviceId"]] = service
            self._save("service", service["serviceId"], service)
            return copy.deepcopy(service)

    def get_service(self, service_id: str) -> Document:
        """``GET /services/{serviceId}``."""
        with self._lock:
            return copy.deepcopy(self._find(self._services, service_id, "service"))

    def list_services(self, query: Mapping[str, str]) -> Document:
        """``GET /services?offset=&limit=``."""
        offset, limit = _page(query)
        with self._lock:
            found = copy.deepcopy(list(self._services.values())[offset : offset + limit])
        return {"services": found, "offset": offset, "limit": limit}

    def attach_datasets(self, service_id: str, body: Any) -> Document:
        """``POST /services/{serviceId}/datasets``: one dataset of each type replaces the set."""
        ids = _require_object(body, "attach datasets").get("datasetIds")
        with self._lock:
            service = self._find(self._services, service_id, "service")
            datasets = self._datasets_to_attach(ids)
            now = format_date(self._clock())
            touched = {d["datasetId"] for d in [*service["datasets"], *datasets]}
            for old in service["datasets"]:
                connected = self._datasets[old["datasetId"]]["connectedServices"]
                connected[:] = [c for c in connected if c["serviceId"] != service_id]
            for dataset in datasets:
                connection = {"serviceId": service_id, "name": service["name"]}
                dataset["connectedServices"].append(connection)
                dataset["updatedDate"] = now
            service["datasets"] = [
                {key: d[key] for key in ("datasetId", "type", "name")} for d in datasets
            ]
            service.update(status="learnable", updatedDate=now)
            for dataset_id in sorted(touched):
                self._save("dataset", dataset_id, self._datasets[dataset_id])
            self._save("service", service_id, service)
            return copy.deepcopy(service)

    def _datasets_to_attach(self, ids: Any) -> list[Document]:
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise Rejection(400, "datasetIds must be a list of three dataset IDs")
        problems = [Problem(None, "datasetIds", f"dataset {i} does not exist")
                    for i in ids if i not in self._datasets]
        if not problems and sorted(self._datasets[i]["type"] for i in ids) != sorted(DATASET_TYPES):
            problems.append(Problem(None, "datasetIds", "datasetIds must hold one user, one "
                                    "item and one interaction dataset"))
        if problems:
            raise Rejection(400, f"cannot attach the datasets: {problems[0].message}", problems)
        return [self._datasets[i] for i in ids]

    # -- uploads -------------------------------------------------------------------------------

    def upload_target(self, service_id: str, dataset_id: str) -> UploadTarget:
        """What an upload to this path must follow; 404 for an unknown service or dataset."""
        with self._lock:
            service = self._find(self._services, service_id, "service")
            dataset = self._find(self._datasets, dataset_id, "dataset")
            if all(d["datasetId"] != dataset_id for d in service["datasets"]):
                message = (f"dataset {dataset_id} is not attached to service {service_id}; "
                           f"attach it with POST /services/{service_id}/datasets")
                raise Rejection(400, message, [Problem(None, None, message)])
            return UploadTarget(dataset_id, dataset["type"], self._checkers[dataset["schemaName"]])

    def store(self, target: UploadTarget, rows: list[Document]) -> None:
        """Keep the rows of one accepted upload: upsert user/item rows by key, append the rest."""
        key = KEY_FIELD.get(target.dataset_type)
        with self._lock:
            content = self._contents.setdefault(target.dataset_id, _Content())
            first_position = content.rows_received
            content.add(rows, key, self._record)
            if self._journal is not None:
                self._journal.record_upload(target.dataset_id, key, rows, first_position,
                                            self._record)

    def received(self, dataset_id: str) -> Received:
        """What a dataset received so far (copies, safe to keep)."""
        with self._lock:
            dataset = self._find(self._datasets, dataset_id, "dataset")
            content = self._contents.get(dataset_id, _Content())
            key = KEY_FIELD.get(dataset["type"])
            return Received(dataset_id, content.uploads, content.rows_received,
                            content.current_rows(key), list(content.deliveries))

    def summary(self) -> dict[str, dict[str, int]]:
        """Counts per dataset: ``{datasetId: {uploads, rowsReceived, rows}}``."""
        with self._lock:
            out = {}
            for dataset_id, dataset in self._datasets.items():
                content = self._contents.get(dataset_id, _Content())
                out[dataset_id] = {"uploads": content.uploads,
                                   "rowsReceived": content.rows_received,
                                   "rows": content.row_count(KEY_FIELD.get(dataset["type"]))}
            return out

    def reset_data(self) -> None:
        """Forget every received row and count; schemas, datasets and services stay."""
        with self._lock:
            self._contents.clear()
            if self._journal is not None:
                self._journal.reset_data()

    def restore(self, snapshot: Snapshot) -> None:
        """Load what a journal kept (at start-up, before serving)."""
        with self._lock:
            tables = {"dataset": self._datasets, "service": self._services}
            for kind, document in snapshot.objects:
                if kind == "schema":
                    self._add_schema(document)
                else:
                    tables[kind][document[f"{kind}Id"]] = document
            for dataset_id, (uploads, rows_received) in snapshot.counts.items():
                dataset = self._datasets.get(dataset_id)
                if dataset is None:
                    continue
                key = KEY_FIELD.get(dataset["type"])
                content = self._contents.setdefault(dataset_id, _Content(uploads, rows_received))
                content.deliveries = snapshot.deliveries.get(dataset_id, [])
                if key is not None:
                    rows = snapshot.rows.get(dataset_id, [])
                    content.by_key = {row[key]: row for row in rows}

    # -- helpers -------------------------------------------------------------------------------

    def has(self, kind: str, object_id: str) -> bool:
        """Whether a schema (by name), dataset or service (by ID) exists."""
        tables = {"schema": self._schemas, "dataset": self._datasets, "service": self._services}
        with self._lock:
            return object_id in tables[kind]

    def _find(self, table: dict[str, Document], object_id: str, what: str) -> Document:
        found = table.get(object_id)
        if found is None:
            raise Rejection(404, f"{what} {object_id} does not exist")
        return found

    def _new_id(self, taken: Mapping[str, Any]) -> str:
        while True:
            new = "".join(self._rng.choice(_ID_ALPHABET) for _ in range(11))
            if new not in taken:
                return new

    def _save(self, kind: str, object_id: str, document: Document) -> None:
        if self._journal is not None:
            self._journal.save_object(kind, object_id, document)
