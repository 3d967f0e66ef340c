"""``apply``: read what AiTEMS holds for the spec, plan (:mod:`aitems_sync.sync.provision`), and
carry the plan out in this order, holding the state store's ``~apply`` lease (one apply at once):

1. create the schemas (new datasets' and replacements', or reuse a version already holding the
   fields);
2. create the service;
3. replace each dataset whose fields changed: a fresh bootstrap creates the new dataset (or
   loads a detached one of its name an earlier apply left) from its first full load under the
   new schema, while the old one stays attached and the schedule runs, and hands the state over
   (the old mark, ledger and quarantine go: the state is the new dataset's);
4. stop the schedule, when it runs (or may: AiTEMS does not document whether it does) and the
   datasets or the cycle change (AiTEMS refuses those while it runs), and wait for a running
   train to end;
5. attach the three datasets (a replaced one is detached and kept);
6. set the cycle;
7. start the schedule (or stop it, when the spec says ``schedule: false``).

Steps 4 to 7 are planned again from a fresh read after step 3, with the new datasets' ids. A
failure stops the apply where it is; if step 4 stopped the schedule, it is started again on the
way out. Every step reads before it writes, so running apply again carries on from there: a
replacement handed over is found by the state store's binding and only attached.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Protocol

from aitems_sync.errors import EXIT_USAGE, AitemsSyncError, NotFoundError, SpecError
from aitems_sync.source.extract import Source
from aitems_sync.spec.model import DatasetSpec, ObjectStorageConfig, Spec
from aitems_sync.state.store import StateStore
from aitems_sync.sync.bootstrap import (
    BootstrapReport,
    BootstrapSettings,
    bootstrap,
    object_storage_of,
)
from aitems_sync.sync.engine import new_run_id
from aitems_sync.sync.handover import DatasetApi
from aitems_sync.sync.leases import Leases
from aitems_sync.sync.options import RunOptions
from aitems_sync.sync.provision import CREATE, REPLACE, Change, Current, Plan, make_plan
from aitems_sync.sync.resolve import Resource, bound_ids, look_up

log = logging.getLogger(__name__)

#: How long apply waits for a running train to end before it attaches or sets the cycle.
TRAIN_TIMEOUT_SECONDS = 6 * 3600.0
#: How many of the service's trains are looked at for one still running (newest first).
TRAINS_CHECKED = 20
#: Train statuses that mean it still runs (the emulator's ``running``; AiTEMS's undocumented).
TRAINING = frozenset({"running", "training", "processing", "waiting"})


class ApplyApi(DatasetApi, Protocol):
    """What apply reads and changes at AiTEMS (and a replacement's bootstrap)."""

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
#: dataset to load into or ""), bound to the service id given: a fresh bootstrap.
Replacer = Callable[[DatasetSpec, str], BootstrapReport]


@dataclass(frozen=True)
class ApplyOptions:
    allow_replace: bool = False
    plan_only: bool = False  # --exit-code: plan, change nothing
    timeout: float = TRAIN_TIMEOUT_SECONDS  # a replacement's read, and a train's end
    lease_ttl: float = RunOptions.lease_ttl


#: The state store's lease one apply holds at a time (not a dataset: no spec names it so).
APPLY_LEASE = "~apply"


def apply(spec: Spec, *, state: StateStore, sources: Mapping[str, Source], api: ApplyApi,
          storage: Callable[[ObjectStorageConfig], Any], options: ApplyOptions,
          confirm: Callable[[Plan], bool], stop: threading.Event | None = None) -> ApplyReport:
    """Plan, and unless ``options.plan_only``, when the plan has changes, none is refused and
    ``confirm(plan)`` says yes, carry it out. Holds the ``~apply`` lease meanwhile
    (LockHeldError, exit 75, while another apply holds it). ``storage`` makes the Object
    Storage client a replacement's bootstrap writes with."""
    leases = Leases(state, [APPLY_LEASE], new_run_id(), options.lease_ttl)
    leases.acquire()
    try:
        bound = bound_ids(state, spec.datasets.values())
        plan, current = plan_apply(spec, api, allow_replace=options.allow_replace, bound=bound)
        report = ApplyReport(plan)
        if plan.refused:
            report.error = "; ".join(f"{c.kind} {c.name}: {c.details[0]}" for c in plan.refused)
            report.error_exit_code = EXIT_USAGE
        if options.plan_only or plan.empty or report.error:
            return report
        s3 = storage(object_storage_of(spec)) if plan.replacements else None  # before asking
        if not confirm(plan):
            report.error = "not applied: the plan was not confirmed"
            return report

        def replacer(dataset: DatasetSpec, service_id: str) -> BootstrapReport:
            on_service = replace(spec, aitems=replace(spec.aitems, service_id=service_id))
            settings = BootstrapSettings(run_id=new_run_id(), ready_timeout=options.timeout)
            return bootstrap(on_service, [dataset], state=state, sources=sources, api=api,
                             storage=s3, settings=settings, stop=stop)

        return carry_out(spec, plan, current, api, replacer, timeout=options.timeout,
                         stop=stop, bound=bound)
    finally:
        leases.release()


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


def read_current(spec: Spec, api: ApplyApi, bound: Mapping[str, str] | None = None) -> Current:
    """What AiTEMS holds for the spec: its service, datasets (among several of a name, the one
    ``bound`` says the state store's marks belong to), their schemas, and the detached datasets
    of each dataset's name."""
    found = look_up(spec, api, None, bound)
    if found.problems:
        raise SpecError(list(found.problems))
    service: Resource | None = None
    service_id = spec.aitems.service_id or (found.service or {}).get("serviceId")
    if service_id:
        try:
            service = api.get_service(str(service_id))
        except NotFoundError as error:
            raise SpecError([spec.problem(("aitems", "service_id"), f"AiTEMS: {error}")]
                            ) from None
    kinds: set[str] = {d.type for d in spec.datasets.values()}
    schemas = {kind: api.list_schemas(kind) for kind in sorted(kinds)}
    leftovers = {
        d.name: [r for r in found.everything
                 if r.get("name") == d.dataset_name and r.get("type") == d.type
                 and not r.get("connectedServices") and r is not found.datasets.get(d.name)]
        for d in spec.datasets.values() if d.dataset_name
    }
    return Current(service, found.datasets, schemas, leftovers, found.everything)


def plan_apply(spec: Spec, api: ApplyApi, *, allow_replace: bool,
               bound: Mapping[str, str] | None = None) -> tuple[Plan, Current]:
    current = read_current(spec, api, bound)
    return make_plan(spec, current, allow_replace=allow_replace), current


def carry_out(spec: Spec, plan: Plan, current: Current, api: ApplyApi, replacer: Replacer, *,
              timeout: float = TRAIN_TIMEOUT_SECONDS, stop: threading.Event | None = None,
              bound: Mapping[str, str] | None = None) -> ApplyReport:
    """Carry ``plan`` out (see the module docstring); never raises for a failed step: the
    report says what was done and what failed. ``timeout``: seconds a train that runs may take
    to end before the datasets are attached or the cycle set (AiTEMS refuses both meanwhile)."""
    stop = stop or threading.Event()
    report = ApplyReport(plan)
    service_id = str((current.service or {}).get("serviceId") or spec.aitems.service_id or "")
    try:
        service_id = _create(spec, plan, api, report) or service_id
        made = {change.dataset: _replace(spec, change, service_id, replacer, report)
                for change in plan.replacements}
        if service_id:
            # Planned again with the new datasets' ids: the old ones still carry their names.
            datasets = {name: replace(d, dataset_id=made.get(name, d.dataset_id))
                        for name, d in spec.datasets.items()}
            now = replace(spec, aitems=replace(spec.aitems, service_id=service_id),
                          datasets=MappingProxyType(datasets))
            after, _ = plan_apply(now, api, allow_replace=False, bound=bound)
            _update_service(service_id, after, api, report,
                            lambda: _wait_for_trains(service_id, api, timeout, stop))
    except AitemsSyncError as error:
        report.error = str(error)
        report.error_exit_code = error.exit_code
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
        created = str(answer.get("serviceId") or "")
        if not created:
            raise AitemsSyncError(f"AiTEMS created service {spec.service.name} without "
                                  "answering its serviceId: run apply again (it finds it by name)")
        report.applied.append(f"created service {spec.service.name} ({created})")
    return created


def _replace(spec: Spec, change: Change, service_id: str, replacer: Replacer,
             report: ApplyReport) -> str:
    """Step 3 for one dataset: a fresh bootstrap into a new (or a left-over) dataset; the id
    of the dataset it loaded."""
    name, schema_name = change.dataset, change.schema
    dataset = replace(spec.datasets[name], dataset_id=change.reuse_dataset_id,
                      schema_name=schema_name)
    loaded = replacer(dataset, service_id)
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
    """Steps 4 to 7, from a plan made after the replacements. If step 4 stopped the schedule
    and a later step fails, the schedule is started again."""
    stopped = False
    try:
        if plan.stop_first:
            api.set_schedule(service_id, "stop")
            stopped = True
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
    except AitemsSyncError:
        if stopped:
            _restart(service_id, api, report)
        raise
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
        trains = api.list_trains(service_id, limit=TRAINS_CHECKED)
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
