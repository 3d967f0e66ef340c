"""``apply``: read what AiTEMS holds for the spec, plan (:mod:`aitems_sync.sync.provision`), and
carry the plan out in this order:

1. stop the service's schedule, when it runs and the plan attaches, replaces or changes the cycle
   (AiTEMS refuses those while the schedule runs);
2. create the schemas (new datasets' and replacements');
3. create the service;
4. replace each dataset whose fields changed: a fresh bootstrap creates the new dataset from its
   first full load under the new schema and hands its state over (the old mark, ledger and
   quarantine go: the state is reset to the new dataset's);
5. attach the three datasets (a replaced one is detached and kept);
6. set the cycle;
7. start the schedule (or stop it, when the spec says ``schedule: false``).

Steps 5 to 7 are planned again from a fresh read after step 4, so they see the new datasets. A
failure stops the apply where it is; if step 1 stopped the schedule it is started again on the
way out. Every step reads before it writes, so running apply again carries on from there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Protocol

from aitems_sync.errors import AitemsSyncError, SpecError
from aitems_sync.spec.model import DatasetSpec, Spec
from aitems_sync.sync.bootstrap import BootstrapReport
from aitems_sync.sync.provision import CREATE, REPLACE, Current, Plan, make_plan
from aitems_sync.sync.resolve import Resource, look_up

log = logging.getLogger(__name__)

#: How long apply waits for a running train to end before it attaches or sets the cycle.
TRAIN_TIMEOUT_SECONDS = 6 * 3600.0
#: Train statuses that mean it still runs (the emulator's ``running``; AiTEMS's undocumented).
TRAINING = frozenset({"running", "training", "processing", "waiting"})


class ApplyApi(Protocol):
    """What apply reads and changes at AiTEMS."""

    def list_services(self) -> list[Resource]: ...

    def list_datasets(self) -> list[Resource]: ...

    def list_schemas(self, dataset_type: str) -> list[Resource]: ...

    def get_service(self, service_id: str) -> dict[str, Any]: ...

    def create_schema(self, name: str, dataset_type: str, fields: Sequence[Any],
                      description: str = "") -> dict[str, Any]: ...

    def create_service(self, name: str, service_type: str = "batch",
                       description: str = "") -> dict[str, Any]: ...

    def attach_datasets(self, service_id: str, dataset_ids: Sequence[str]) -> dict[str, Any]: ...

    def set_interval(self, service_id: str, term: str) -> dict[str, Any]: ...

    def set_schedule(self, service_id: str, action: str) -> dict[str, Any]: ...

    def list_trains(self, service_id: str, *, recent: bool = False, offset: int = 0,
                    limit: int = 1000) -> list[dict[str, Any]]: ...


#: Loads a replacement dataset (the spec dataset with the new schema, and the id of a detached
#: dataset to load into or ""): a fresh bootstrap.
Replacer = Callable[[DatasetSpec], BootstrapReport]


@dataclass
class ApplyReport:
    plan: Plan
    applied: list[str] = field(default_factory=list)  # the steps done, in order
    bootstraps: list[BootstrapReport] = field(default_factory=list)
    error: str | None = None
    error_exit_code: int = 1

    @property
    def exit_code(self) -> int:
        return self.error_exit_code if self.error else 0

    def to_dict(self) -> dict[str, Any]:
        return {**self.plan.to_dict(), "applied": self.applied, "error": self.error,
                "bootstraps": [b.to_dict() for b in self.bootstraps]}


def read_current(spec: Spec, api: ApplyApi) -> Current:
    """What AiTEMS holds for the spec: its service, datasets, their schemas, and the detached
    datasets of each dataset's name."""
    found = look_up(spec, api)
    if found.problems:
        raise SpecError(list(found.problems))
    service: Resource | None = None
    if spec.service is not None:
        service_id = spec.aitems.service_id or (found.service or {}).get("serviceId")
        if service_id:
            service = api.get_service(str(service_id))
    kinds: set[str] = {d.type for d in spec.datasets.values()}
    schemas = {kind: api.list_schemas(kind) for kind in sorted(kinds)}
    leftovers = {
        d.name: [r for r in found.everything
                 if r.get("name") == d.dataset_name and r.get("type") == d.type
                 and not r.get("connectedServices") and r is not found.datasets.get(d.name)]
        for d in spec.datasets.values() if d.dataset_name
    }
    return Current(service, found.datasets, schemas, leftovers)


def plan_apply(spec: Spec, api: ApplyApi, *, allow_replace: bool) -> tuple[Plan, Current]:
    current = read_current(spec, api)
    return make_plan(spec, current, allow_replace=allow_replace), current


def carry_out(spec: Spec, plan: Plan, current: Current, api: ApplyApi, replacer: Replacer, *,
              timeout: float = TRAIN_TIMEOUT_SECONDS,
              stop: threading.Event | None = None) -> ApplyReport:
    """Carry ``plan`` out (see the module docstring); never raises for a failed step: the
    report says what was done and what failed. ``timeout``: seconds a train that runs may take
    to end before the datasets are attached or the cycle set (AiTEMS refuses both meanwhile)."""
    stop = stop or threading.Event()
    report = ApplyReport(plan)
    service_id = str((current.service or {}).get("serviceId") or spec.aitems.service_id or "")
    stopped = False
    try:
        if plan.stop_first and service_id:
            api.set_schedule(service_id, "stop")
            stopped = True
            report.applied.append(f"stopped the schedule of service {service_id}")
        service_id = _create(spec, plan, api, report) or service_id
        made = {change.dataset: _replace(spec, change.dataset, change.schema,
                                         change.reuse_dataset_id, replacer, report)
                for change in plan.replacements}
        if spec.service is not None:
            # Planned again with the new datasets' ids: the old ones still carry their names.
            datasets = {name: replace(d, dataset_id=made.get(name, d.dataset_id))
                        for name, d in spec.datasets.items()}
            now = replace(spec, aitems=replace(spec.aitems, service_id=service_id),
                          datasets=MappingProxyType(datasets))
            after, _ = plan_apply(now, api, allow_replace=False)
            _update_service(service_id, after, api, report,
                            lambda: _wait_for_trains(service_id, api, timeout, stop))
            stopped = False  # the schedule is now as the spec wants it
    except AitemsSyncError as error:
        report.error = str(error)
        report.error_exit_code = error.exit_code
    finally:
        if stopped:
            _restart(service_id, api, report)
    return report


def _create(spec: Spec, plan: Plan, api: ApplyApi, report: ApplyReport) -> str | None:
    """Steps 2 and 3: the schemas, then the service; the new service's id."""
    for change in plan.changes:
        if (change.kind == "schema" and change.symbol == CREATE) or (
                change.symbol == REPLACE and change.fields):
            api.create_schema(change.schema, change.dataset_type, change.fields,
                              spec.datasets[change.dataset].description)
            report.applied.append(f"created schema {change.schema} ({change.dataset_type}) "
                                  f"for dataset {change.dataset}")
    created = None
    if spec.service is not None and any(c.kind == "service" and c.symbol == CREATE
                                        for c in plan.changes):
        answer = api.create_service(spec.service.name, spec.service.type,
                                    spec.service.description)
        created = str(answer["serviceId"])
        report.applied.append(f"created service {spec.service.name} ({created})")
    return created


def _replace(spec: Spec, name: str, schema_name: str, reuse: str, replacer: Replacer,
             report: ApplyReport) -> str:
    """Step 4 for one dataset: a fresh bootstrap into a new (or a left-over) dataset; the id
    of the dataset it loaded."""
    dataset = replace(spec.datasets[name], dataset_id=reuse, schema_name=schema_name)
    loaded = replacer(dataset)
    report.bootstraps.append(loaded)
    if loaded.exit_code:
        failure = AitemsSyncError(f"the replacement of dataset {name} failed: " + "; ".join(
            str(d.error) for d in loaded.datasets if d.error))
        failure.exit_code = loaded.exit_code
        raise failure
    made = loaded.datasets[0].dataset_id if loaded.datasets else ""
    report.applied.append(f"replaced dataset {name}: AiTEMS dataset {made} (schema "
                          f"{schema_name}) loaded by bootstrap {loaded.run_id}")
    return made


def _update_service(service_id: str, plan: Plan, api: ApplyApi, report: ApplyReport,
                    wait_for_trains: Callable[[], None]) -> None:
    """Steps 5 to 7, from a plan made after the replacements."""
    if plan.stop_first:
        api.set_schedule(service_id, "stop")
        report.applied.append(f"stopped the schedule of service {service_id}")
    if plan.attach or plan.term:
        wait_for_trains()
    if plan.attach:
        api.attach_datasets(service_id, plan.attach)
        report.applied.append(f"attached datasets {', '.join(plan.attach)} to service "
                              f"{service_id}")
    if plan.term:
        api.set_interval(service_id, plan.term)
        report.applied.append(f"set the cycle of service {service_id} to {plan.term}")
    if plan.schedule:
        api.set_schedule(service_id, plan.schedule)
        report.applied.append(f"{'started' if plan.schedule == 'start' else 'stopped'} the "
                              f"schedule of service {service_id}")


def _wait_for_trains(service_id: str, api: ApplyApi, timeout: float,
                     stop: threading.Event) -> None:
    """Until the service's latest train has ended (AiTEMS refuses to attach or to change the
    cycle while one runs): polled soon, then each 1.5 times later, up to 10 s apart."""
    deadline, pause = time.monotonic() + timeout, 0.2
    while True:
        trains = api.list_trains(service_id, recent=True, limit=1)
        running = [t for t in trains if str(t.get("status")).lower() in TRAINING]
        if not running:
            return
        left = deadline - time.monotonic()
        if left <= 0 or stop.is_set():
            raise AitemsSyncError(
                f"service {service_id} is still training (train {running[0].get('trainId')}) "
                f"after {timeout:g} s{' and apply was stopped' if stop.is_set() else ''}: "
                "AiTEMS attaches datasets and changes the cycle only between trains; run apply "
                "again once it has ended")
        log.info("service %s is training (train %s): waiting for it to end", service_id,
                 running[0].get("trainId"), extra={"event": "apply_waits_for_train"})
        stop.wait(min(pause, left))
        pause = min(pause * 1.5, 10.0)


def _restart(service_id: str, api: ApplyApi, report: ApplyReport) -> None:
    """The schedule step 1 stopped, started again after a failure."""
    try:
        api.set_schedule(service_id, "start")
        report.applied.append(f"started the schedule of service {service_id} again")
    except AitemsSyncError as error:
        log.error("could not start the schedule of service %s again (%s): start it in the "
                  "NCP console or run apply again", service_id, error,
                  extra={"event": "apply_restart_failed"})
