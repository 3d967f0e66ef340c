"""Operator commands on a synced shop: state show/reset/set, quarantine, history, schema pull."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from aitems_sync.cli.main import main_group
from aitems_sync.emulator.server import EmulatorServer
from aitems_sync.state.store import QuarantineEntry, StateStore
from tests.shop import T0, Shop, customer_rows, write_spec

AGE_MINIMUM = "    json_schema: {properties: {AGE: {minimum: 0}}}"


@pytest.fixture
def synced(tmp_path: Path, emulator: EmulatorServer) -> Iterator[Path]:
    """A spec whose users were synced once: 20 rows, one of them quarantined (AGE -1)."""
    shop = Shop(f"sqlite:///{tmp_path / 'shop.db'}")
    shop.add_customers(customer_rows(20))
    shop.update_customer("u00003", age=-1)
    spec = write_spec(tmp_path / "sync.yaml", endpoint=emulator.base_url,
                      source_url=shop.url, state_url=f"sqlite:///{tmp_path / 'state.db'}",
                      extra=AGE_MINIMUM)
    assert cli(spec, "run", "users").exit_code == 0
    yield spec
    shop.close()


def cli(spec: Path, *args: str, json_output: bool = False, stdin: str | None = None) -> Result:
    flags = ["--json"] if json_output else []
    return CliRunner().invoke(main_group, ["--config", str(spec), *flags, *args], input=stdin)


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_state_show_lists_each_datasets_mark_ledger_and_quarantine(synced: Path) -> None:
    shown = {s["dataset"]: s for s in as_json(cli(synced, "state", "show", json_output=True))}

    assert shown["users"]["mark"]["key"] == [["str", "u00019"]]
    assert shown["users"]["ledger_size"] == 19
    assert shown["users"]["quarantined"] == 1
    assert shown["users"]["lease"] is None
    assert shown["events"]["mark"] is None


def test_state_reset_asks_first_and_then_the_next_run_sends_everything(
        synced: Path, emulator: EmulatorServer) -> None:
    refused = cli(synced, "state", "reset", "users", stdin="n\n")
    assert refused.exit_code == 1
    assert cli(synced, "run", "users").exit_code == 0
    assert emulator.received("dsusers0001").rows_received == 19

    assert cli(synced, "state", "reset", "users", "--yes").exit_code == 0
    assert cli(synced, "run", "users").exit_code == 0

    assert emulator.received("dsusers0001").rows_received == 38


def test_state_set_moves_the_mark_back_and_the_ledger_keeps_resends_off(
        synced: Path, emulator: EmulatorServer) -> None:
    result = cli(synced, "state", "set", "users", "--cursor", "2026-03-01 12:00:10")
    assert result.exit_code == 0, result.output

    report = as_json(cli(synced, "run", "users", json_output=True))

    users = report["datasets"][0]
    assert users["read"] == 10  # u00010 .. u00019 read again
    assert users["unchanged"] == 10
    assert emulator.received("dsusers0001").rows_received == 19


def test_state_commands_name_an_unknown_dataset(synced: Path) -> None:
    result = cli(synced, "state", "reset", "nope", "--yes")

    assert result.exit_code == 2
    assert "unknown dataset nope: the spec defines users, events" in result.stderr


def test_quarantine_list_show_export_and_drop(synced: Path, tmp_path: Path) -> None:
    [listed] = as_json(cli(synced, "quarantine", "list", json_output=True))["rows"]
    assert listed["key"] == {"USER_ID": "u00003"}
    assert listed["errors"] == [{"path": "$.AGE", "message": "-1 is less than the minimum of 0"}]

    shown = as_json(cli(synced, "quarantine", "show", str(listed["id"])))
    assert shown["raw"]["AGE"] == -1

    export = tmp_path / "q.jsonl"
    assert cli(synced, "quarantine", "export", "-o", str(export)).exit_code == 0
    assert [json.loads(line)["id"] for line in export.read_text().splitlines()] == [listed["id"]]

    assert cli(synced, "quarantine", "drop", str(listed["id"]), "--yes").exit_code == 0
    assert as_json(cli(synced, "quarantine", "list", json_output=True))["rows"] == []


def test_quarantine_list_says_when_it_cut_the_list_and_how_to_see_more(
        synced: Path, tmp_path: Path) -> None:
    with StateStore.open(f"sqlite:///{tmp_path / 'state.db'}") as store:
        store.add_quarantine([QuarantineEntry("users", "r", {"USER_ID": f"x{i}"}, {"AGE": -i},
                                              [{"path": "$.AGE", "message": "too small"}])
                              for i in range(1, 5)])

    text = cli(synced, "quarantine", "list", "--limit", "2")
    page = as_json(cli(synced, "quarantine", "list", "--limit", "2", json_output=True))
    whole = as_json(cli(synced, "quarantine", "list", "--limit", "5", json_output=True))

    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert len(lines) == 3
    assert lines[-1] == ("(the first 2 of 5 open entries: --limit 5 shows them all, "
                         "`aitems-sync quarantine export` writes them)")
    assert {k: page[k] for k in ("total", "shown", "truncated", "limit")} == {
        "total": 5, "shown": 2, "truncated": True, "limit": 2}
    assert len(page["rows"]) == 2
    assert (whole["total"], whole["truncated"], len(whole["rows"])) == (5, False, 5)
    assert len(cli(synced, "quarantine", "list", "--limit", "5").stdout.splitlines()) == 5


def test_quarantine_list_all_shows_closed_entries_with_their_state(
        synced: Path, tmp_path: Path) -> None:
    shop = Shop(f"sqlite:///{tmp_path / 'shop.db'}")
    shop.update_customer("u00003", age=33, updated_at=T0 + timedelta(days=1))  # fixed
    shop.close()
    assert cli(synced, "run", "users").exit_code == 0

    open_ = as_json(cli(synced, "quarantine", "list", json_output=True))
    every = as_json(cli(synced, "quarantine", "list", "--all", json_output=True))
    text = cli(synced, "quarantine", "list", "--all").stdout
    exported = cli(synced, "quarantine", "export", "--all").stdout.splitlines()

    assert (open_["rows"], open_["total"]) == ([], 0)
    [entry] = every["rows"]
    assert (entry["status"], every["total"]) == ("superseded", 1)
    assert text.split("\t")[:3] == [str(entry["id"]), "users", "superseded"]
    assert [json.loads(line)["status"] for line in exported] == ["superseded"]
    assert cli(synced, "quarantine", "export").stdout == ""
    shown = as_json(cli(synced, "quarantine", "show", str(entry["id"])))
    assert (shown["status"], shown["resolved_by"]) == ("superseded", entry["resolved_by"])


def test_quarantine_show_of_a_missing_id_says_where_to_look(synced: Path) -> None:
    result = cli(synced, "quarantine", "show", "999")

    assert result.exit_code == 2
    assert "no quarantined row has id 999" in result.stderr


def test_history_lists_runs_newest_first_with_counts(synced: Path) -> None:
    assert cli(synced, "run", "users").exit_code == 0

    runs = as_json(cli(synced, "history", json_output=True))

    assert [r["status"] for r in runs] == ["ok", "ok"]
    assert runs[0]["started_at"] >= runs[1]["started_at"]
    assert runs[1]["datasets"][0] == {
        "dataset": "users", "status": "ok", "read": 20, "sent": 19, "unchanged": 0,
        "invalid": 1, "batches": 1, "ambiguous": 0}


def test_history_says_when_it_cut_the_list_and_how_to_see_more(synced: Path) -> None:
    assert cli(synced, "run", "users").exit_code == 0  # two runs now

    cut = cli(synced, "history", "--limit", "1")
    whole = cli(synced, "history", "--limit", "2")

    assert cut.stdout.count("\n    users: ") == 1
    assert "(the latest 1 runs; older ones are not shown: --limit N shows more)" in cut.stdout
    assert whole.stdout.count("\n    users: ") == 2 and "not shown" not in whole.stdout
    assert len(as_json(cli(synced, "history", "--limit", "1", json_output=True))) == 1


def test_schema_pull_prints_the_fields_yaml(synced: Path) -> None:
    result = cli(synced, "schema", "pull", "users")

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "# schema demo_users of AiTEMS dataset dsusers0001 (user)\n"
        "fields:\n"
        "- {name: USER_ID, type: string}\n"
        "- name: AGE\n"
        "  type: [int, 'null']\n"
        "- name: GENDER\n"
        "  type: [string, 'null']\n"
        "  categorical: true\n"
    )


ITEMS_FIELDS = [
    {"name": "ITEM_ID", "type": "string"},
    {"name": "CATEGORY", "type": ["string", "null"], "categorical": True},
    {"name": "PRICE", "type": ["float", "null"]},
    {"name": "CREATION_TIMESTAMP", "type": "long"},
]


def test_schema_pull_json_prints_the_fields_as_the_spec_writes_them(synced: Path) -> None:
    pulled = as_json(cli(synced, "schema", "pull", "users", json_output=True))

    assert pulled == {
        "dataset_id": "dsusers0001", "schema": "demo_users", "dataset_type": "user",
        "fields": [{"name": "USER_ID", "type": "string"},
                   {"name": "AGE", "type": ["int", "null"]},
                   {"name": "GENDER", "type": ["string", "null"], "categorical": True}]}


def test_schema_pull_by_dataset_id_reads_a_dataset_the_spec_does_not_name(synced: Path) -> None:
    assert "dsitems0001" not in synced.read_text()

    text = cli(synced, "schema", "pull", "--dataset-id", "dsitems0001")
    data = as_json(cli(synced, "--json", "schema", "pull", "--dataset-id", "dsitems0001"))

    assert text.exit_code == 0, text.output
    assert text.stdout.startswith(
        "# schema demo_items of AiTEMS dataset dsitems0001 (item)\nfields:\n")
    assert yaml.safe_load(text.stdout) == {"fields": ITEMS_FIELDS}
    assert data == {"dataset_id": "dsitems0001", "schema": "demo_items",
                    "dataset_type": "item", "fields": ITEMS_FIELDS}


@pytest.mark.parametrize(("args", "code", "message"), [
    ((), 2, "give DATASET (a dataset of the spec) or --dataset-id ID, not both"),
    (("users", "--dataset-id", "dsusers0001"), 2, "or --dataset-id ID, not both"),
    (("items",), 2, "unknown dataset items: the spec defines"),
    (("--dataset-id", "dsnosuch001"), 1, "dsnosuch001"),
])
def test_schema_pull_says_what_it_needs(synced: Path, args: tuple[str, ...], code: int,
                                        message: str) -> None:
    result = cli(synced, "schema", "pull", *args)

    assert result.exit_code == code, result.output
    assert message in result.stderr


@pytest.fixture
def both_synced(tmp_path: Path, emulator: EmulatorServer) -> Iterator[Path]:
    """A spec whose users (20) and events (30, cursor event_id) were synced once."""
    shop = Shop(f"sqlite:///{tmp_path / 'shop.db'}")
    shop.add_customers(customer_rows(20))
    shop.add_events([(n, f"u{n % 7:05d}", f"i{n % 5}", "view", T0 + timedelta(seconds=n))
                     for n in range(1, 31)])
    spec = write_spec(tmp_path / "sync.yaml", endpoint=emulator.base_url,
                      source_url=shop.url, state_url=f"sqlite:///{tmp_path / 'state.db'}")
    assert cli(spec, "run").exit_code == 0
    yield spec
    shop.close()


@pytest.mark.parametrize(("args", "message"), [
    (["--cursor", "NaN", "--type", "decimal"], "--cursor 'NaN' is not a finite number"),
    (["--cursor", "Infinity", "--type", "decimal"], "--cursor 'Infinity' is not a finite number"),
    (["--cursor", str(2**64)], "is outside the range of a 64-bit integer column"),
    (["--cursor", "2026-01-01", "--type", "date"],
     "--cursor '2026-01-01' is a date, but this dataset's cursor values are ints"),
    (["--cursor", "abc", "--type", "str"], "is a str, but this dataset's cursor values are ints"),
])
def test_state_set_refuses_a_mark_no_later_run_could_use(
        both_synced: Path, args: list[str], message: str) -> None:
    before = as_json(cli(both_synced, "state", "show", json_output=True))

    result = cli(both_synced, "state", "set", "events", *args)

    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert as_json(cli(both_synced, "state", "show", json_output=True)) == before


def test_state_set_back_on_events_says_they_are_sent_again_and_needs_yes(
        both_synced: Path, emulator: EmulatorServer) -> None:
    refused = cli(both_synced, "state", "set", "events", "--cursor", "20")
    unmoved = as_json(cli(both_synced, "run", "events", json_output=True))
    moved = cli(both_synced, "state", "set", "events", "--cursor", "20", "--yes")
    resent = as_json(cli(both_synced, "run", "events", json_output=True))

    assert refused.exit_code == 2
    assert "sends every event after 20 to AiTEMS again" in refused.stderr
    assert "add --yes" in refused.stderr
    assert unmoved["datasets"][0]["sent"] == 0
    assert moved.exit_code == 0, moved.output
    assert resent["datasets"][0]["sent"] == 11  # events 20 .. 30, as the operator confirmed
    assert emulator.received("dsevent0001").rows_received == 41


def test_state_set_forward_on_events_needs_no_confirmation(both_synced: Path) -> None:
    result = cli(both_synced, "state", "set", "events", "--cursor", "40")

    assert result.exit_code == 0, result.output
    assert "events: mark set to 40 (int)" in result.stdout


def _strict(text: str) -> Any:
    """JSON as any standard parser reads it: NaN and Infinity are refused."""
    def refuse(constant: str) -> Any:
        raise ValueError(f"non-standard JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_quarantine_show_and_export_write_standard_json(synced: Path, tmp_path: Path) -> None:
    with StateStore.open(f"sqlite:///{tmp_path / 'state.db'}") as store:
        store.add_quarantine([QuarantineEntry(
            "users", "r", {"USER_ID": "u9"},
            {"USER_ID": "u9", "AGE": float("nan"), "SCORE": float("-inf"), "PHOTO": b"\x00\xff"},
            [{"path": "$.AGE", "message": "not a number"}])])
        [record] = [r for r in store.quarantined("users") if r.key == {"USER_ID": "u9"}]

    shown = cli(synced, "quarantine", "show", str(record.id))
    exported = cli(synced, "quarantine", "export", "users")

    assert shown.exit_code == 0 and exported.exit_code == 0, shown.output + exported.output
    raw = _strict(shown.stdout)["raw"]
    assert raw == {"USER_ID": "u9", "AGE": "NaN", "SCORE": "-Infinity",
                   "PHOTO": {"base64": "AP8="}}
    lines = [_strict(line) for line in exported.stdout.splitlines()]
    assert raw in [line["raw"] for line in lines]


def test_an_existing_state_file_is_made_private_with_its_wal(synced: Path, tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    state.chmod(0o666)

    assert cli(synced, "run", "users").exit_code == 0

    files = [f for f in (state, tmp_path / "state.db-wal", tmp_path / "state.db-shm")
             if f.exists()]
    assert files[0] == state
    assert {f.name: oct(f.stat().st_mode & 0o777) for f in files} == {
        f.name: "0o600" for f in files}


@pytest.mark.parametrize("command", [["state", "reset", "users", "--yes"],
                                     ["state", "set", "users", "--cursor", "2026-01-01"]])
def test_state_changes_are_refused_while_a_run_holds_the_dataset(
    synced: Path, command: list[str]
) -> None:
    """A run (or a bootstrap waiting on AiTEMS) holding the dataset would write its own mark
    and ledger over the change: exit 75, and nothing changed."""
    state_url = f"sqlite:///{synced.parent / 'state.db'}"
    with StateStore.open(state_url) as store:
        before = store.get_mark("users")
        store.acquire_lease("users", owner="a-run", host="h", pid=1, ttl=60)

    result = cli(synced, *command)

    assert result.exit_code == 75, result.output
    assert "locked by another run: a-run" in result.stderr
    with StateStore.open(state_url) as store:
        assert store.get_mark("users") == before and store.ledger_size("users") > 0
