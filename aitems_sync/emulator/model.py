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
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from aitems_sync.emulator.content import Content, Document, Journal, Received, Snapshot
from aitems_sync.emulator.objects import (
    ENABLE,
    FAILED,
    ID_ALPHABET,
    INGESTING,
    NAME_RE,
    NAME_RULE,
    PROCESSING,
    RUNNING,
    SERVICE_NAME_RE,
    SERVICE_TYPES,
    STOPPED,
    SUCCEEDED,
    TERMS,
    WAITING,
    IngestJob,
    check_description,
    check_name,
    dataset_problems,
    format_date,
    page,
    refuse_while_scheduled,
    require_interval,
    require_object,
    train_problem,
)
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
        self._contents: dict[str, Content] = {}
        self._trains: dict[str, list[Document]] = {}  # per service, in creation order

    # -- schemas -------------------------------------------------------------------------------

    def create_schema(self, body: Any) -> Document:
        """``POST /schemas``: check name, type and fields (all problems at once) and store."""
        body = require_object(body, "create schema")
        problems: list[Problem] = []
        check_name(problems, body.get("name"), NAME_RE, NAME_RULE)
        dataset_type = body.get("datasetType")
        if dataset_type not in DATASET_TYPES:
            problems.append(Problem(None, "datasetType",
                                    "datasetType must be user, item or interaction"))
        check_description(problems, body.get("description", ""))
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
        offset, limit = page(query)
        wanted = query.get("datasetType")
        with self._lock:
            found = [s for s in self._schemas.values() if wanted in (None, s["datasetType"])]
            chosen = copy.deepcopy(found[offset : offset + limit])
        return {"schemas": chosen, "offset": offset, "limit": limit}

    @staticmethod
    def default_schema(query: Mapping[str, str]) -> Document:
        """``GET /schemas/default?datasetType=``: the required fields of a dataset type."""
        dataset_type = query.get("datasetType")
        if dataset_type not in DATASET_TYPES:
            raise Rejection(400, "datasetType must be user, item or interaction")
        return {"datasetType": dataset_type, "fields": required_fields(dataset_type)}

    # -- datasets ------------------------------------------------------------------------------

    def create_dataset(
        self, body: Any, dataset_id: str | None = None, *, ingest: bool = False,
        unread: str | None = None,
    ) -> Document:
        """``POST /datasets``: a dataset of a type, following an existing schema of that type.
        Without ``ingest`` its ``statusReason`` is ``unread`` (why no file was read).

        With ``ingest`` the dataset starts ``waiting`` for its file (see `begin_ingest`);
        otherwise it is ``enable`` at once and its ``osInfo`` is only stored.
        """
        body = require_object(body, "create dataset")
        with self._lock:
            problems = dataset_problems(body, self._schemas)
            if problems:
                raise Rejection(400, f"the dataset is invalid: {problems[0].message}", problems)
            now = format_date(self._clock())
            dataset: Document = {
                "datasetId": dataset_id or self._new_id(self._datasets), "type": body["type"],
                "name": body["name"], "description": body.get("description", ""),
                "schemaName": body["schemaName"], "status": WAITING if ingest else ENABLE,
                "statusReason": None if ingest else unread, "osInfo": dict(body["osInfo"]),
                "connectedServices": [],
                "createdDate": now, "updatedDate": now,
            }
            self._datasets[dataset["datasetId"]] = dataset
            self._save("dataset", dataset["datasetId"], dataset)
            return copy.deepcopy(dataset)

    def modify_dataset(self, dataset_id: str, body: Any, *, ingest: bool = False,
                       unread: str | None = None) -> Document:
        """``POST /datasets/{datasetId}``: the body as for create; name, description and osInfo
        change, type and schema stay. With ``ingest`` the file is read again (``waiting``)."""
        body = require_object(body, "modify dataset")
        with self._lock:
            dataset = self._find(self._datasets, dataset_id, "dataset")
            if dataset["status"] in INGESTING:
                raise Rejection(400, f"dataset {dataset_id} is {dataset['status']}: wait until it "
                                "is enable or failed before modifying it")
            problems = dataset_problems(body, self._schemas)
            if (body.get("type"), body.get("schemaName")) != (dataset["type"],
                                                              dataset["schemaName"]):
                problems.append(Problem(None, "schemaName", "a dataset keeps its type and schema; "
                                        "create a new dataset for another schema"))
            if problems:
                raise Rejection(400, f"the dataset is invalid: {problems[0].message}", problems)
            dataset.update(name=body["name"], description=body.get("description", ""),
                           osInfo=dict(body["osInfo"]), status=WAITING if ingest else ENABLE,
                           statusReason=None if ingest else unread,
                           updatedDate=format_date(self._clock()))
            for service in self._services.values():
                for attached in service["datasets"]:
                    if attached["datasetId"] == dataset_id and attached["name"] != body["name"]:
                        attached["name"] = body["name"]
                        self._save("service", service["serviceId"], service)
            self._save("dataset", dataset_id, dataset)
            return copy.deepcopy(dataset)

    def begin_ingest(self, dataset_id: str) -> IngestJob | None:
        """A ``waiting`` dataset moves to ``processing``: what to read, or None if it is not
        waiting (any more)."""
        with self._lock:
            dataset = self._datasets.get(dataset_id)
            if dataset is None or dataset["status"] != WAITING:
                return None
            dataset.update(status=PROCESSING, updatedDate=format_date(self._clock()))
            self._save("dataset", dataset_id, dataset)
            return IngestJob(dataset_id, dataset["type"],
                             copy.deepcopy(self._schemas[dataset["schemaName"]]),
                             dict(dataset["osInfo"]))

    def finish_ingest(
        self, dataset_id: str, rows: list[Document] | None, reason: str | None = None
    ) -> None:
        """A ``processing`` dataset ends ``enable`` holding ``rows``, or (rows None) ``failed``
        with ``reason`` in ``statusReason``."""
        with self._lock:
            dataset = self._datasets.get(dataset_id)
            if dataset is None or dataset["status"] != PROCESSING:
                return
            if rows is None:
                dataset.update(status=FAILED, statusReason=reason)
            else:
                key = KEY_FIELD.get(dataset["type"])
                content = self._contents.setdefault(dataset_id, Content())
                content.load(rows, key, self._record)
                if self._journal is not None:
                    self._journal.record_load(dataset_id, key, rows, content.received_at_load,
                                              self._record)
                dataset.update(status=ENABLE, statusReason=None)
            dataset["updatedDate"] = format_date(self._clock())
            self._save("dataset", dataset_id, dataset)

    def get_dataset(self, dataset_id: str) -> Document:
        """``GET /datasets/{datasetId}``."""
        with self._lock:
            return copy.deepcopy(self._find(self._datasets, dataset_id, "dataset"))

    def list_datasets(self, query: Mapping[str, str]) -> Document:
        """``GET /datasets?offset=&limit=``."""
        offset, limit = page(query)
        with self._lock:
            found = copy.deepcopy(list(self._datasets.values())[offset : offset + limit])
        return {"datasets": found, "offset": offset, "limit": limit}

    # -- services ------------------------------------------------------------------------------

    def create_service(self, body: Any, service_id: str | None = None) -> Document:
        """``POST /services``: a batch (default) or interval service without datasets yet."""
        body = require_object(body, "create service")
        problems: list[Problem] = []
        check_name(problems, body.get("name"), SERVICE_NAME_RE,
                   "3 to 20 letters, digits, '_' or '-', starting with a letter or '_'")
        check_description(problems, body.get("description", ""))
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
                "hpConfig": body.get("hpConfig", {"is_enabled": False}), "term": None,
                "schedule": STOPPED if service_type == "interval" else None,
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
        offset, limit = page(query)
        with self._lock:
            found = copy.deepcopy(list(self._services.values())[offset : offset + limit])
        return {"services": found, "offset": offset, "limit": limit}

    def attach_datasets(self, service_id: str, body: Any) -> Document:
        """``POST /services/{serviceId}/datasets``: one dataset of each type replaces the set."""
        ids = require_object(body, "attach datasets").get("datasetIds")
        with self._lock:
            service = self._find(self._services, service_id, "service")
            refuse_while_scheduled(service, self._trains.get(service_id, []))
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

    # -- interval services: term, schedule, trains ---------------------------------------------

    def set_interval(self, service_id: str, body: Any) -> Document:
        """``PUT /services/{serviceId}/interval`` ``{term}``: interval services, when stopped."""
        term = require_object(body, "set interval").get("term")
        with self._lock:
            service = self._find(self._services, service_id, "service")
            require_interval(service, "interval")
            if not isinstance(term, str) or term not in TERMS:
                raise Rejection(400, "term must be hour1, hour3, hour6 or hour12")
            if service["schedule"] == RUNNING:
                raise Rejection(400, f"service {service_id}'s schedule is running: stop it "
                                "before changing its interval")
            service.update(term=term, updatedDate=format_date(self._clock()))
            self._save("service", service_id, service)
            return copy.deepcopy(service)

    def set_schedule(self, service_id: str, action: str | None) -> tuple[Document, bool]:
        """``PUT /services/{serviceId}/schedule?action=start|stop``: the service, and whether
        a schedule started (starting a running one, or stopping a stopped one, changes nothing)."""
        with self._lock:
            service = self._find(self._services, service_id, "service")
            require_interval(service, "schedule")
            if action not in ("start", "stop"):
                raise Rejection(400, "action must be start or stop")
            wanted = RUNNING if action == "start" else STOPPED
            if service["schedule"] == wanted:
                return copy.deepcopy(service), False
            if action == "start" and service["term"] is None:
                raise Rejection(400, f"service {service_id} has no interval: set one with "
                                f"PUT /services/{service_id}/interval first")
            if action == "start" and not service["datasets"]:
                raise Rejection(400, f"service {service_id} has no datasets: attach them with "
                                f"POST /services/{service_id}/datasets first")
            service.update(schedule=wanted, updatedDate=format_date(self._clock()))
            self._save("service", service_id, service)
            return copy.deepcopy(service), action == "start"

    def term_hours(self, service_id: str) -> int:
        """The length of a service's term in hours (0 if it has none)."""
        with self._lock:
            service = self._services.get(service_id)
            return TERMS.get(service["term"], 0) if service and service.get("term") else 0

    def start_train(self, service_id: str) -> str | None:
        """A new ``running`` train of a scheduled service; its ID, or None if the schedule is
        no longer running."""
        with self._lock:
            service = self._services.get(service_id)
            if service is None or service.get("schedule") != RUNNING:
                return None
            trains = self._trains.setdefault(service_id, [])
            train: Document = {
                "trainId": self._new_id({t["trainId"] for ts in self._trains.values() for t in ts}),
                "serviceId": service_id, "term": service["term"], "status": RUNNING,
                "statusReason": None, "createdDate": format_date(self._clock()),
                "finishedDate": None,
            }
            trains.append(train)
            self._save("train", train["trainId"], train)
            return str(train["trainId"])

    def finish_train(self, service_id: str, train_id: str) -> None:
        """A running train ends: ``succeeded`` if each attached dataset is ``enable`` and holds
        rows, otherwise ``failed`` with the first reason."""
        with self._lock:
            train = next((t for t in self._trains.get(service_id, [])
                          if t["trainId"] == train_id and t["status"] == RUNNING), None)
            service = self._services.get(service_id)
            if train is None or service is None:
                return
            reason = train_problem(service, self._datasets, self._row_count)
            train.update(status=FAILED if reason else SUCCEEDED, statusReason=reason,
                         finishedDate=format_date(self._clock()))
            self._save("train", train_id, train)

    def list_trains(self, service_id: str, query: Mapping[str, str]) -> Document:
        """``GET /services/{serviceId}/trains?isRecent=&offset=&limit=``: newest first;
        ``isRecent=true`` keeps only the newest."""
        offset, limit = page(query)
        recent = query.get("isRecent", "false").lower()
        if recent not in ("true", "false"):
            raise Rejection(400, "isRecent must be true or false")
        with self._lock:
            self._find(self._services, service_id, "service")
            trains = list(reversed(self._trains.get(service_id, [])))
            if recent == "true":
                trains = trains[:1]
            chosen = copy.deepcopy(trains[offset : offset + limit])
        return {"trains": chosen, "offset": offset, "limit": limit}

    def recover(self) -> list[str]:
        """At start-up, after `restore`: ingests and trains the last process left unfinished
        fail (nothing resumes them), and the IDs of services whose schedule runs are returned,
        so that their trains can go on."""
        with self._lock:
            now = format_date(self._clock())
            for dataset in self._datasets.values():
                if dataset["status"] in INGESTING:
                    dataset.update(status=FAILED, updatedDate=now, statusReason=(
                        "the emulator stopped during the ingest; modify the dataset "
                        f"(POST /datasets/{dataset['datasetId']}) to read the file again"))
                    self._save("dataset", dataset["datasetId"], dataset)
            for trains in self._trains.values():
                for train in trains:
                    if train["status"] == RUNNING:
                        train.update(status=FAILED, finishedDate=now,
                                     statusReason="the emulator stopped while it ran")
                        self._save("train", train["trainId"], train)
            return [s for s, service in self._services.items()
                    if service.get("schedule") == RUNNING]

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
            content = self._contents.setdefault(target.dataset_id, Content())
            first_position = content.rows_received
            content.add(rows, key, self._record)
            if self._journal is not None:
                self._journal.record_upload(target.dataset_id, key, rows, first_position,
                                            self._record)

    def received(self, dataset_id: str) -> Received:
        """What a dataset received so far (copies, safe to keep)."""
        with self._lock:
            dataset = self._find(self._datasets, dataset_id, "dataset")
            content = self._contents.get(dataset_id, Content())
            key = KEY_FIELD.get(dataset["type"])
            return Received(dataset_id, content.uploads, content.rows_received,
                            content.current_rows(key), list(content.deliveries),
                            content.rows_loaded)

    def summary(self) -> dict[str, dict[str, int]]:
        """Counts per dataset: ``{datasetId: {uploads, rowsReceived, rows}}``."""
        with self._lock:
            out = {}
            for dataset_id, dataset in self._datasets.items():
                content = self._contents.get(dataset_id, Content())
                out[dataset_id] = {"uploads": content.uploads,
                                   "rowsReceived": content.rows_received,
                                   "rows": content.row_count(KEY_FIELD.get(dataset["type"]))}
            return out

    def close(self) -> None:
        """Stop writing through to the journal (before it closes; late background work is
        then kept in memory only)."""
        with self._lock:
            self._journal = None

    def reset_data(self) -> None:
        """Forget every received and loaded row and count; schemas, datasets, services and
        trains stay."""
        with self._lock:
            self._contents.clear()
            if self._journal is not None:
                self._journal.reset_data()

    def restore(self, snapshot: Snapshot) -> None:
        """Load what a journal kept (at start-up, before serving)."""
        with self._lock:
            for kind, document in snapshot.objects:
                self._restore_object(kind, document)
            for dataset_id in {*snapshot.counts, *snapshot.loads}:
                dataset = self._datasets.get(dataset_id)
                if dataset is None:
                    continue
                key = KEY_FIELD.get(dataset["type"])
                uploads, rows_received = snapshot.counts.get(dataset_id, (0, 0))
                rows_loaded, received_at = snapshot.loads.get(dataset_id, (0, 0))
                content = self._contents.setdefault(dataset_id, Content(
                    uploads, rows_received, rows_loaded=rows_loaded, received_at_load=received_at))
                content.deliveries = snapshot.deliveries.get(dataset_id, [])
                content.loaded = snapshot.loaded.get(dataset_id, [])
                if key is not None:
                    rows = snapshot.rows.get(dataset_id, [])
                    content.by_key = {row[key]: row for row in rows}

    def _restore_object(self, kind: str, document: Document) -> None:
        if kind == "schema":
            self._add_schema(document)
        elif kind == "train":
            self._trains.setdefault(document["serviceId"], []).append(document)
        elif kind == "dataset":
            document.setdefault("statusReason", None)  # a file from before ingests
            self._datasets[document["datasetId"]] = document
        else:
            document.setdefault("term", None)  # a file from before interval schedules
            document.setdefault("schedule", STOPPED if document["type"] == "interval" else None)
            self._services[document["serviceId"]] = document

    # -- helpers -------------------------------------------------------------------------------

    def has(self, kind: str, object_id: str) -> bool:
        """Whether a schema (by name), dataset or service (by ID) exists."""
        tables = {"schema": self._schemas, "dataset": self._datasets, "service": self._services}
        with self._lock:
            return object_id in tables[kind]

    def _row_count(self, dataset_id: str) -> int:
        content = self._contents.get(dataset_id, Content())
        return content.row_count(KEY_FIELD.get(self._datasets[dataset_id]["type"]))

    def _find(self, table: dict[str, Document], object_id: str, what: str) -> Document:
        found = table.get(object_id)
        if found is None:
            raise Rejection(404, f"{what} {object_id} does not exist")
        return found

    def _new_id(self, taken: Mapping[str, Any] | set[str]) -> str:
        while True:
            new = "".join(self._rng.choice(ID_ALPHABET) for _ in range(11))
            if new not in taken:
                return new

    def _save(self, kind: str, object_id: str, document: Document) -> None:
        if self._journal is not None:
            self._journal.save_object(kind, object_id, document)
