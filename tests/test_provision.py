"""apply's plan and the name lookup, as pure decisions: what AiTEMS holds in, changes out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aitems_sync.errors import SpecError
from aitems_sync.spec.load import load_spec
from aitems_sync.spec.model import DatasetSpec, Field, Spec
from aitems_sync.sync.provision import (
    BOOTSTRAP,
    CREATE,
    REFUSED,
    REPLACE,
    UPDATE,
    Current,
    aitems_fields,
    make_plan,
    next_schema_name,
    schema_versions,
)
from aitems_sync.sync.resolve import pick_dataset

SPEC = """\
version: 1
aitems: {access_key: a, secret_key: s}
sources: {shop: {url: "sqlite:///shop.db"}}
service: {name: recs, cycle: 3h}
datasets:
  users:
    type: user
    dataset_name: users-ds
    query: SELECT id AS USER_ID, updated_at FROM t
    cursor: updated_at
    fields: [{name: USER_ID, type: string}]
  items:
    type: item
    dataset_name: items-ds
    query: SELECT id AS ITEM_ID, updated_at FROM t
    cursor: updated_at
    fields: [{name: ITEM_ID, type: string}]
  events:
    type: interaction
    dataset_name: events-ds
    query: SELECT u AS USER_ID, i AS ITEM_ID, t AS TIMESTAMP FROM e
    cursor: TIMESTAMP
    fields: [{name: USER_ID, type: string}, {name: ITEM_ID, type: string},
             {name: TIMESTAMP, type: long}]
"""


@pytest.fixture
def spec(tmp_path: Path) -> Spec:
    path = tmp_path / "sync.yaml"
    path.write_text(SPEC)
    return load_spec(path)


def schema(dataset: DatasetSpec, name: str | None = None) -> dict[str, Any]:
    return {"name": name or dataset.schema_base, "datasetType": dataset.type,
            "fields": list(aitems_fields(dataset.fields))}


def everything_in_place(spec: Spec, *, term: str = "hour3", schedule: str = "running"
                        ) -> Current:
    datasets = {name: {"datasetId": f"id-{name}", "name": d.dataset_name, "type": d.type,
                       "schemaName": d.schema_base} for name, d in spec.datasets.items()}
    service = {"serviceId": "svc", "name": "recs", "type": "interval", "term": term,
               "schedule": schedule,
               "datasets": [{"datasetId": d["datasetId"]} for d in datasets.values()]}
    schemas = {d.type: [schema(d)] for d in spec.datasets.values()}
    return Current(service, datasets, schemas)


def summary(plan: Any) -> list[tuple[str, str, str]]:
    return [(c.symbol, c.kind, c.name) for c in plan.changes]


def test_an_empty_aitems_gets_schemas_and_a_service_and_waits_for_bootstrap(spec: Spec) -> None:
    plan = make_plan(spec, Current(None, dict.fromkeys(spec.datasets), {}),
                     allow_replace=False)

    assert summary(plan) == [
        (CREATE, "schema", "users-ds"), (CREATE, "schema", "items-ds"),
        (CREATE, "schema", "events-ds"), (CREATE, "service", "recs"),
        (BOOTSTRAP, "dataset", "users"), (BOOTSTRAP, "dataset", "items"),
        (BOOTSTRAP, "dataset", "events")]
    assert plan.attach is None and plan.schedule is None  # nothing to attach yet


def test_aitems_that_matches_the_spec_plans_nothing(spec: Spec) -> None:
    assert make_plan(spec, everything_in_place(spec), allow_replace=False).empty


def test_a_new_cycle_is_an_update_that_stops_and_restarts_the_schedule(spec: Spec) -> None:
    plan = make_plan(spec, everything_in_place(spec, term="hour12"), allow_replace=False)

    assert summary(plan) == [(UPDATE, "service", "recs")]
    assert (plan.term, plan.stop_first, plan.schedule) == ("hour3", True, "start")


def test_schedule_false_stops_a_running_schedule(spec: Spec, tmp_path: Path) -> None:
    (tmp_path / "sync.yaml").write_text(SPEC.replace("cycle: 3h", "cycle: 3h, schedule: false"))
    spec = load_spec(tmp_path / "sync.yaml")

    plan = make_plan(spec, everything_in_place(spec), allow_replace=False)

    assert (plan.schedule, plan.stop_first) == ("stop", False)


def test_a_field_change_is_refused_without_allow_replace_and_replaced_with_it(
    spec: Spec,
) -> None:
    current = everything_in_place(spec)
    users = spec.datasets["users"]
    widened = dict(schema(users), fields=[{"name": "USER_ID", "type": ["string"]},
                                          {"name": "AGE", "type": ["int", "null"]}])
    current = Current(current.service, current.datasets,
                      {**current.schemas, "user": [widened]})

    refused = make_plan(spec, current, allow_replace=False)
    replaced = make_plan(spec, current, allow_replace=True)

    assert summary(refused) == [(REFUSED, "dataset", "users")]
    assert "- AGE: [int, \"null\"]" in refused.changes[0].details
    assert summary(replaced) == [(REPLACE, "dataset", "users"), (UPDATE, "service", "recs")]
    assert replaced.changes[0].schema == "users-ds_2"
    assert replaced.stop_first


def test_a_dataset_pinned_by_id_is_never_replaced(spec: Spec) -> None:
    current = everything_in_place(spec)
    events = spec.datasets["events"]
    pinned = DatasetSpec(**{**events.__dict__, "dataset_name": None, "dataset_id": "id-events",
                            "fields": (*events.fields, Field("EXTRA", ("string", "null")))})
    spec = Spec(**{**spec.__dict__, "datasets": {**spec.datasets, "events": pinned}})

    plan = make_plan(spec, current, allow_replace=True)

    assert summary(plan)[0] == (REFUSED, "dataset", "events")
    assert "dataset_id pins it" in plan.changes[0].details[0]


def test_a_service_of_another_type_is_refused_not_recreated(spec: Spec) -> None:
    current = everything_in_place(spec)
    batch = {**(current.service or {}), "type": "batch"}

    plan = make_plan(spec, Current(batch, current.datasets, current.schemas),
                     allow_replace=True)

    assert summary(plan) == [(REFUSED, "service", "recs")]


@pytest.mark.parametrize(("base", "taken", "expected"), [
    ("users", [], "users"),
    ("users", ["users"], "users_2"),
    ("users", ["users", "users_2", "users_3"], "users_4"),
    ("a-twenty-char-name-x", ["a-twenty-char-name-x"], "a-twenty-char-na_2"),
])
def test_a_new_schema_version_takes_the_first_free_name_within_twenty_characters(
    base: str, taken: list[str], expected: str,
) -> None:
    name = next_schema_name(base, [{"name": n} for n in taken])

    assert name == expected and 3 <= len(name) <= 20


def test_schema_versions_are_the_base_and_its_numbered_successors_in_order() -> None:
    names = ["users_10", "users", "users_2", "users-old", "usersx_2", "users_1"]

    found = [s["name"] for s in schema_versions("users", [{"name": n} for n in names])]

    assert found == ["users", "users_2", "users_10"]


def test_a_name_carried_by_two_datasets_finds_the_one_attached_to_the_service(
    spec: Spec,
) -> None:
    users = spec.datasets["users"]
    old = {"datasetId": "old", "name": "users-ds", "type": "user", "connectedServices": []}
    new = {"datasetId": "new", "name": "users-ds", "type": "user",
           "connectedServices": [{"serviceId": "svc"}]}
    other_type = {"datasetId": "x", "name": "users-ds", "type": "item"}

    assert pick_dataset([old, new, other_type], users, "svc") == [new]
    assert pick_dataset([old, other_type], users, "svc") == [old]
    assert pick_dataset([old, new], users, None) == [old, new]  # undecided: a spec error


def test_a_service_whose_cycle_and_schedule_aitems_does_not_show_is_not_drift(
    spec: Spec,
) -> None:
    """AiTEMS documents neither `term` nor `schedule` in a service object: unknown, not wrong."""
    current = everything_in_place(spec)
    documented = {k: v for k, v in (current.service or {}).items()
                  if k not in ("term", "schedule")}

    assert make_plan(spec, Current(documented, current.datasets, current.schemas),
                     allow_replace=False).empty


def test_an_attach_on_a_service_of_unknown_schedule_stops_it_first_and_sets_the_cycle(
    spec: Spec,
) -> None:
    current = everything_in_place(spec)
    documented = {k: v for k, v in (current.service or {}).items()
                  if k not in ("term", "schedule")}
    documented["datasets"] = documented["datasets"][:2]  # the interactions are not attached

    plan = make_plan(spec, Current(documented, current.datasets, current.schemas),
                     allow_replace=False)

    assert plan.attach == ("id-users", "id-items", "id-events")
    assert (plan.stop_first, plan.term, plan.schedule) == (True, "hour3", "start")


def test_a_replacement_reuses_a_schema_version_an_earlier_apply_made(spec: Spec) -> None:
    current = everything_in_place(spec)
    users = spec.datasets["users"]
    old = dict(schema(users), fields=[{"name": "USER_ID", "type": ["string"]},
                                      {"name": "AGE", "type": ["int", "null"]}])
    made = schema(users, "users-ds_2")  # the spec's fields, created before a crash
    current = Current(current.service, current.datasets,
                      {**current.schemas, "user": [old, made]})

    plan = make_plan(spec, current, allow_replace=True)

    (replacement,) = plan.replacements
    assert (replacement.schema, replacement.fields) == ("users-ds_2", ())  # nothing to create


def test_without_a_service_section_a_replacement_is_attached_to_the_service_id(
    spec: Spec,
) -> None:
    pinned = Spec(**{**spec.__dict__, "service": None,
                     "aitems": type(spec.aitems)(**{**spec.aitems.__dict__,
                                                    "service_id": "svc"})})
    current = everything_in_place(pinned)
    users = pinned.datasets["users"]
    old = dict(schema(users), fields=[{"name": "USER_ID", "type": ["string"]},
                                      {"name": "AGE", "type": ["int", "null"]}])
    current = Current(current.service, current.datasets, {**current.schemas, "user": [old]})

    first = make_plan(pinned, current, allow_replace=True)
    assert summary(first) == [(REPLACE, "dataset", "users"), (UPDATE, "service", "recs")]
    # After the new dataset is loaded, the plan attaches it with the service's other datasets.
    loaded = {**current.datasets, "users": {"datasetId": "new", "name": "users-ds",
                                            "type": "user", "schemaName": "users-ds"}}
    after = make_plan(pinned, Current(current.service, loaded,
                                      {**current.schemas, "user": [schema(users)]}),
                      allow_replace=False)
    assert after.attach == ("new", "id-items", "id-events") and after.stop_first


@pytest.mark.parametrize(("edit", "reason"), [
    (lambda s: s.replace("  items:\n", "  users2:\n    type: user\n    dataset_name: users-2\n"
                         "    query: SELECT id AS USER_ID, updated_at FROM t\n"
                         "    cursor: updated_at\n    fields: [{name: USER_ID, type: string}]\n"
                         "  items:\n", 1),
     "are both user datasets"),
    (lambda s: s.replace("service: {name: recs", "service: {name: other"),
     "the spec's service.name says 'other'"),
], ids=["two-of-a-type", "name-differs"])
def test_what_apply_will_not_decide_for_the_operator_is_refused(
    tmp_path: Path, edit: Any, reason: str,
) -> None:
    (tmp_path / "sync.yaml").write_text(edit(SPEC).replace(
        "aitems: {access_key: a", "aitems: {service_id: svc, access_key: a"))
    spec = load_spec(tmp_path / "sync.yaml")

    plan = make_plan(spec, everything_in_place(spec), allow_replace=True)

    assert [c.symbol for c in plan.refused] == [REFUSED]
    assert reason in plan.refused[0].details[0]


def test_a_new_service_for_a_spec_without_every_type_is_refused(tmp_path: Path) -> None:
    only_users = SPEC.split("  items:")[0]
    (tmp_path / "sync.yaml").write_text(only_users)
    spec = load_spec(tmp_path / "sync.yaml")

    plan = make_plan(spec, Current(None, {"users": None}, {}), allow_replace=False)

    assert plan.refused and "item or interaction" in plan.refused[0].details[0]


def test_two_datasets_may_not_share_a_schema_name(tmp_path: Path) -> None:
    """AiTEMS schema names are unique: two datasets naming one would fight over it."""
    text = SPEC.replace("    dataset_name: items-ds\n",
                        "    dataset_name: items-ds\n    schema_name: users-ds\n")
    (tmp_path / "sync.yaml").write_text(text)
    with pytest.raises(SpecError, match=r"is also datasets\.users's schema_name"):
        load_spec(tmp_path / "sync.yaml")
