"""``status``: how the service and each dataset stand, at AiTEMS and in the state store.

One signed read of the service, its latest trains and each dataset, and a read of the state
store (the last run that synced each dataset, its mark, quarantine, unfinished batches and
lease). Nothing is written. The report alerts (exit 1) when a dataset is in a failed state or
unknown to AiTEMS, or when the service's latest train failed, so a CronJob or a CI step can
page on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from aitems_sync.errors import ApiError, NotFoundError
from aitems_sync.spec.model import DatasetSpec, Spec
from aitems_sync.state.records import RunRecord
from aitems_sync.state.store import StateStore
from aitems_sync.state.values import encode_value

#: How many of the service's latest trains the report shows.
TRAINS_SHOWN = 5
#: How many runs back the last sync of each dataset is looked for.
RUNS_SEARCHED = 200
#: AiTEMS statuses that alert (the emulator's ``failed``; AiTEMS's own are undocumented).
FAILED = frozenset({"failed", "fail", "error"})


class StatusApi(Protocol):
    """What ``status`` reads from AiTEMS."""

    def get_service(self, service_id: str) -> dict[str, Any]: ...

    def get_dataset(self, dataset_id: str) -> dict[str, Any]: ...

    def list_trains(self, service_id: str, *, recent: bool = False, offset: int = 0,
                    limit: int = 1000) -> list[dict[str, Any]]: ...


@dataclass
class LastRun:
    """The latest run that synced a dataset, and its share of it."""

    run_id: str
    run_status: str
    finished_at: str | None
    status: str | None  # the dataset's status in that run
    sent: int
    invalid: int
    ambiguous: int


@dataclass
class DatasetStatus:
    dataset: str
    dataset_id: str
    aitems_status: str | None = None
    status_reason: str | None = None
    schema_name: str | None = None
    last_run: LastRun | None = None
    mark: Any = None  # the cursor value, as JSON shows it
    quarantined: int = 0
    unfinished_batches: int = 0
    lease_owner: str | None = None
    pending_handover: str | None = None  # a bootstrap's unfinished hand-over: runs refuse it
    error: str | None = None  # AiTEMS could not tell

    @property
    def alert(self) -> bool:
        return (self.error is not None or self.pending_handover is not None
                or (self.aitems_status or "").lower() in FAILED)


@dataclass
class ServiceStatus:
    service_id: str
    name: str | None = None
    type: str | None = None
    status: str | None = None
    term: str | None = None
    schedule: str | None = None
    trains: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    #: The spec's service section wants the schedule running (an interval service).
    schedule_wanted: bool = False

    @property
    def alert(self) -> bool:
        latest = self.trains[0] if self.trains else {}
        return self.error is not None or str(latest.get("status", "")).lower() in FAILED


@dataclass
class StatusReport:
    service: ServiceStatus
    datasets: list[DatasetStatus]

    @property
    def alerts(self) -> list[str]:
        """What is wrong, one line each (empty when nothing is)."""
        found = []
        if self.service.error:
            found.append(f"service {self.service.service_id}: {self.service.error}")
        elif self.service.alert:
            latest = self.service.trains[0]
            reason = latest.get("statusReason") or "AiTEMS gives no reason"
            found.append(f"service {self.service.service_id}: the latest train "
                         f"{latest.get('trainId')} is {latest.get('status')}: {reason}")
        if self.service.schedule_wanted and self.service.schedule == "stopped":
            found.append(f"service {self.service.service_id}: its schedule is stopped, but the "
                         "spec says schedule: true (an apply that stopped, or a person): "
                         "`aitems-sync apply` starts it")
        for d in self.datasets:
            if d.pending_handover:
                found.append(f"dataset {d.dataset}: {d.pending_handover}; runs refuse the "
                             f"dataset until `aitems-sync bootstrap {d.dataset}` finishes it")
            if d.error:
                found.append(f"dataset {d.dataset}: {d.error}")
            elif (d.aitems_status or "").lower() in FAILED:
                found.append(f"dataset {d.dataset}: AiTEMS dataset {d.dataset_id} is "
                             f"{d.aitems_status}: {d.status_reason or 'AiTEMS gives no reason'}")
        return found

    @property
    def exit_code(self) -> int:
        return 1 if self.alerts else 0

    def to_dict(self) -> dict[str, Any]:
        return {"exit_code": self.exit_code, "alerts": self.alerts,
                "service": asdict(self.service),
                "datasets": [asdict(d) for d in self.datasets]}


def gather(spec: Spec, datasets: Sequence[DatasetSpec], *, api: StatusApi,
           state: StateStore) -> StatusReport:
    """The report for ``datasets``: AiTEMS's answers and the state store's records."""
    runs = state.runs(limit=RUNS_SEARCHED)
    service = service_status(spec.aitems.service_id, api)
    wanted = spec.service
    service.schedule_wanted = bool(wanted and wanted.type == "interval" and wanted.schedule)
    return StatusReport(service, [dataset_status(d, api, state, runs) for d in datasets])


def service_status(service_id: str, api: StatusApi) -> ServiceStatus:
    status = ServiceStatus(service_id)
    if not service_id:
        status.error = ("AiTEMS has no service of the spec's service.name: `aitems-sync apply` "
                        "creates it")
        return status
    try:
        service = api.get_service(service_id)
        status.name, status.type = service.get("name"), service.get("type")
        status.status, status.term = service.get("status"), service.get("term")
        status.schedule = service.get("schedule")
        status.trains = api.list_trains(service_id, recent=True, limit=TRAINS_SHOWN)
    except ApiError as error:
        status.error = error.message
    return status


def dataset_status(dataset: DatasetSpec, api: StatusApi, state: StateStore,
                   runs: Sequence[RunRecord]) -> DatasetStatus:
    status = DatasetStatus(dataset.name, dataset.dataset_id)
    try:
        if not dataset.dataset_id:
            raise NotFoundError(
                f"AiTEMS has no {dataset.type} dataset named {dataset.dataset_name!r}: "
                f"`aitems-sync bootstrap {dataset.name}` creates it")
        remote = api.get_dataset(dataset.dataset_id)
        status.aitems_status = remote.get("status")
        status.status_reason = remote.get("statusReason")
        status.schema_name = remote.get("schemaName")
    except ApiError as error:
        status.error = error.message
    status.last_run = last_run(dataset.name, runs)
    mark = state.get_mark(dataset.name)
    status.mark = None if mark is None else shown(mark.cursor)
    status.quarantined = state.quarantine_count(dataset.name)
    status.unfinished_batches = len(state.unfinished_batches(dataset.name))
    pending = state.handover(dataset.name)
    if pending is not None:
        status.pending_handover = (f"bootstrap {pending.run_id} did not finish handing "
                                   f"{pending.object_key} over")
    holder = state.lease_holder(dataset.name)
    status.lease_owner = None if holder is None else f"{holder.owner} ({holder.host}:{holder.pid})"
    return status


def last_run(dataset: str, runs: Sequence[RunRecord]) -> LastRun | None:
    """The newest of ``runs`` (newest first) that synced ``dataset``, with its counts."""
    for run in runs:
        if dataset not in run.datasets:
            continue
        mine: dict[str, Any] = next((d for d in run.summary.get("datasets", [])
                                     if d.get("dataset") == dataset), {})
        return LastRun(run.run_id, run.status,
                       None if run.finished_at is None else run.finished_at.isoformat(),
                       mine.get("status"), int(mine.get("sent") or 0),
                       int(mine.get("invalid") or 0), len(mine.get("ambiguous") or []))
    return None


def shown(value: Any) -> Any:
    """A cursor value as plain JSON: text and numbers as they are, anything else its text."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    _, payload = encode_value(value)
    return payload if isinstance(payload, str) else str(value)
