"""The rules of the emulated objects, as pure functions: names, descriptions, paging, dataset
bodies, interval services and the verdict of a train. ``model.py`` applies them under its lock.
"""

from __future__ import annotations

import re
import string
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aitems_sync.emulator.content import Document
from aitems_sync.emulator.rows import DATASET_TYPES, Problem, Rejection

NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{2,19}")
SERVICE_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{2,19}")
SEEDED_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
SERVICE_TYPES = ("batch", "interval")
MAX_DESCRIPTION = 100
#: Dataset statuses: AiTEMS shows the first three; ``failed`` is the emulator's name for a bad file.
WAITING, PROCESSING, ENABLE, FAILED = "waiting", "processing", "enable", "failed"
INGESTING = (WAITING, PROCESSING)
#: Interval terms and their length in hours.
TERMS = {"hour1": 1, "hour3": 3, "hour6": 6, "hour12": 12}
#: Schedule states (running, stopped); a train is running, then succeeded or failed.
RUNNING, STOPPED, SUCCEEDED = "running", "stopped", "succeeded"
ID_ALPHABET = string.ascii_lowercase + string.digits


def format_date(seconds: float) -> str:
    """An AiTEMS-style date, ``2022-04-04T16:03:47.087`` (UTC, no zone)."""
    ms = int(seconds * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}"


@dataclass(frozen=True)
class IngestJob:
    """What an ingest reads and checks: the dataset, its schema and where its file is."""

    dataset_id: str
    dataset_type: str
    schema: Document
    os_info: dict[str, str]


def check_name(problems: list[Problem], name: Any, pattern: re.Pattern[str], rule: str) -> None:
    """Append a problem unless ``name`` is a string matching ``pattern``."""
    if not isinstance(name, str) or not pattern.fullmatch(name):
        problems.append(Problem(None, "name", f"name must be {rule}"))


def check_description(problems: list[Problem], description: Any) -> None:
    """Append a problem unless ``description`` is a string of at most 100 characters."""
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        problems.append(Problem(None, "description", "description must be 0 to 100 characters"))


NAME_RULE = "3 to 20 letters, digits, '_' or '-', starting with a letter"


def page(query: Mapping[str, str]) -> tuple[int, int]:
    """``offset`` and ``limit`` of a list call (0 and 1000 by default), or a 400."""
    try:
        offset, limit = int(query.get("offset", "0")), int(query.get("limit", "1000"))
    except ValueError:
        offset = limit = -1
    if offset < 0 or limit < 0:
        raise Rejection(400, "offset and limit must be non-negative integers")
    return offset, limit


def require_object(body: Any, what: str) -> dict[str, Any]:
    """The body as a JSON object, or a 400 naming the call."""
    if not isinstance(body, dict):
        raise Rejection(400, f"the body of {what} must be a JSON object")
    return body


def dataset_problems(body: Document, schemas: Mapping[str, Document]) -> list[Problem]:
    """Every problem of a create (or modify) dataset body."""
    problems: list[Problem] = []
    dataset_type = body.get("type")
    if dataset_type not in DATASET_TYPES:
        problems.append(Problem(None, "type", "type must be user, item or interaction"))
    check_name(problems, body.get("name"), NAME_RE, NAME_RULE)
    check_description(problems, body.get("description", ""))
    os_info = body.get("osInfo")
    if not isinstance(os_info, dict) or not all(
        isinstance(os_info.get(k), str) and os_info[k] for k in ("region", "bucket", "key")
    ):
        problems.append(Problem(None, "osInfo", "osInfo must be {region, bucket, key} strings"))
    schema_name = body.get("schemaName")
    schema = schemas.get(schema_name) if isinstance(schema_name, str) else None
    if schema is None:
        problems.append(Problem(None, "schemaName", "schemaName names no schema"))
    elif schema["datasetType"] != dataset_type:
        problems.append(Problem(None, "schemaName", "the schema is for another type"))
    return problems


def require_interval(service: Document, what: str) -> None:
    """A 400 unless the service is an interval service (``what``: interval or schedule)."""
    if service["type"] != "interval":
        raise Rejection(400, f"service {service['serviceId']} is a {service['type']} service; "
                        f"its {what} can be set on interval services only")


def refuse_while_scheduled(service: Document, trains: list[Document]) -> None:
    """The console's rule: no attaching while the schedule runs or a train is running."""
    service_id = service["serviceId"]
    if service.get("schedule") == RUNNING:
        raise Rejection(400, f"service {service_id}'s schedule is running: stop it "
                        f"(PUT /services/{service_id}/schedule?action=stop) before attaching "
                        "datasets")
    if any(t["status"] == RUNNING for t in trains):
        raise Rejection(400, f"service {service_id} is training: wait until its train ends "
                        "before attaching datasets")


def train_problem(
    service: Document, datasets: Mapping[str, Document], row_count: Callable[[str], int]
) -> str | None:
    """Why a train of the service fails (None: it succeeds): every attached dataset must be
    ``enable`` and hold rows."""
    if not service["datasets"]:
        return "the service has no datasets"
    for attached in service["datasets"]:
        dataset = datasets[attached["datasetId"]]
        if dataset["status"] != ENABLE:
            return f"dataset {dataset['datasetId']} is {dataset['status']}, not enable"
        if not row_count(dataset["datasetId"]):
            return f"dataset {dataset['datasetId']} holds no rows"
    return None
