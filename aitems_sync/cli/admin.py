"""CLI commands that inspect and repair state: `state`, `quarantine`, `history`, `schema`.

Parse, call :mod:`aitems_sync.commands`, render. Registered on the main group by
:mod:`aitems_sync.cli.main`.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from aitems_sync import commands
from aitems_sync.cli import render
from aitems_sync.cli.context import Context
from aitems_sync.cli.types import COUNT, ENTRY_ID, OutputFile
from aitems_sync.sync.status import shown


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, default=str, ensure_ascii=False, allow_nan=False))


def _echo(ctx: Context, data: Any, text: str) -> None:
    """``data`` as JSON with --json, else ``text``."""
    if ctx.json_output:
        _echo_json(data)
    else:
        click.echo(text)


def _confirm(ctx: Context, question: str) -> None:
    """Ask on a terminal (aborting on no); with --json, where stdout is a document and nobody
    answers, refuse: --yes is the answer."""
    if ctx.json_output:
        raise click.UsageError("--json cannot answer a confirmation: pass --yes")
    click.confirm(question, abort=True)


@click.group()
def state() -> None:
    """Inspect and repair the marks of the datasets."""


@state.command("show")
@click.pass_obj
def state_show(ctx: Context) -> None:
    """Each dataset's mark (with its type), ledger size, quarantine, unfinished batches, lease."""
    states = commands.state_show(ctx.spec(state_only=True))
    if ctx.json_output:
        _echo_json([s.to_dict() for s in states])
        return
    for s in states:
        mark = "none (the next run reads everything)" if s.mark is None else (
            f"{shown(s.mark.cursor)} ({type(s.mark.cursor).__name__}), key "
            f"{', '.join(str(shown(k)) for k in s.mark.key) or '(none)'}")
        click.echo(f"{s.dataset}: mark {mark}")
        click.echo(f"  ledger {s.ledger_size} keys, quarantine {s.quarantined} rows, "
                   f"unfinished batches {[b.batch_id for b in s.unfinished] or 'none'}")
        if s.lease is not None:
            click.echo(f"  lease held by {s.lease.owner} on {s.lease.host} pid {s.lease.pid} "
                       f"until {s.lease.expires_at.isoformat()}")


@state.command("reset")
@click.argument("dataset")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def state_reset(ctx: Context, dataset: str, yes: bool) -> None:
    """Forget DATASET's mark, ledger and journal: the next run sends every row again."""
    spec = ctx.spec(state_only=True)
    commands.dataset_named(spec, dataset)  # an unknown name is refused before asking
    if not yes:
        _confirm(ctx, f"Forget the mark and ledger of {dataset}? The next run re-sends every "
                 "row")
    commands.state_reset(spec, dataset)
    _echo(ctx, {"dataset": dataset, "reset": True}, f"reset {dataset}")


@state.command("set")
@click.argument("dataset")
@click.option("--cursor", required=True,
              help="The next run reads rows whose cursor is at or after this value.")
@click.option("--type", "kind", type=click.Choice(commands.CURSOR_TYPES), default="auto",
              show_default=True, help="The cursor's type (auto: that of the current mark).")
@click.option("--yes", is_flag=True,
              help="Move an interaction dataset's mark back although its events after the new "
                   "mark are then sent again.")
@click.pass_obj
def state_set(ctx: Context, dataset: str, cursor: str, kind: str, yes: bool) -> None:
    """Move DATASET's mark to a cursor value. On user and item datasets the ledger still skips
    the rows already delivered; on interaction datasets the events after the new mark are sent
    again, so moving the mark back needs --yes."""
    mark = commands.state_set(ctx.spec(state_only=True), dataset, cursor, kind, resend=yes)
    kind_name = type(mark.cursor).__name__
    _echo(ctx, {"dataset": dataset, "mark": shown(mark.cursor), "type": kind_name},
          f"{dataset}: mark set to {shown(mark.cursor)} ({kind_name})")


@click.group()
def quarantine() -> None:
    """List, show, export, retry and drop the rows that failed validation."""


@quarantine.command("list")
@click.argument("dataset", required=False)
@click.option("--limit", type=COUNT, default=100, show_default=True, help="At most this many.")
@click.option("--all", "closed", is_flag=True,
              help="Also the entries closed since (superseded by a later version of their "
                   "key, or resolved by retry), with their state.")
@click.pass_obj
def quarantine_list(ctx: Context, dataset: str | None, limit: int, closed: bool) -> None:
    """Open quarantine entries (of DATASET, or all), oldest first, with their first error; says
    so when there are more than --limit. With --json: {"rows", "total", "shown", "truncated",
    "limit"}."""
    listing = commands.quarantine_list(ctx.spec(state_only=True), dataset, limit,
                                      closed=closed)
    if ctx.json_output:
        _echo_json(listing.to_dict())
        return
    for r in listing.records:
        first = r.errors[0] if r.errors else {"path": "", "message": ""}
        state = f"\t{r.status}" if closed else ""
        click.echo(f"{r.id}\t{r.dataset}{state}\t{json.dumps(r.to_dict()['key'])}"
                   f"\t{r.origin}\t{first['path']}: {first['message']}")
    if listing.truncated:
        which = "entries" if closed else "open entries"
        click.echo(f"(the first {len(listing.records):,} of {listing.total:,} {which}: "
                   f"--limit {listing.total} shows them all, `aitems-sync quarantine export` "
                   "writes them)")


@quarantine.command("show")
@click.argument("entry_id", type=ENTRY_ID)
@click.pass_obj
def quarantine_show(ctx: Context, entry_id: int) -> None:
    """One quarantine entry with its state, raw values and every error."""
    _echo_json(commands.quarantine_show(ctx.spec(state_only=True), entry_id).to_dict())


@quarantine.command("export")
@click.argument("dataset", required=False)
@click.option("--output", "-o", type=OutputFile("w"), default="-",
              help="Write JSON lines here (default stdout).")
@click.option("--all", "closed", is_flag=True,
              help="Also the entries closed since (superseded or resolved).")
@click.pass_obj
def quarantine_export(ctx: Context, dataset: str | None, output: Any, closed: bool) -> None:
    """Every open quarantine entry (of DATASET, or all) as JSON lines (with --json on stdout:
    one JSON array; to a file: the lines, and the count on stdout)."""
    records = commands.quarantine_list(ctx.spec(state_only=True), dataset,
                                      closed=closed).records
    if ctx.json_output and getattr(output, "name", None) == "<stdout>":
        _echo_json([r.to_dict() for r in records])
        return
    for record in records:
        output.write(json.dumps(record.to_dict(), default=str, ensure_ascii=False,
                                allow_nan=False) + "\n")
    if ctx.json_output:
        _echo_json({"exported": len(records)})


@quarantine.command("retry")
@click.argument("datasets", nargs=-1)
@click.pass_obj
def quarantine_retry(ctx: Context, datasets: tuple[str, ...]) -> None:
    """Read the open quarantine entries (of DATASETS, or all) again, from the source by key
    where the run rejected them, shape them with the current spec and send those that now
    pass; entries of a key delivered since are closed as superseded, and a key the source no
    longer has is left as it was."""
    reports = commands.quarantine_retry(ctx.spec(), datasets)
    if ctx.json_output:
        _echo_json([r.to_dict() for r in reports])
        return
    for r in reports:
        click.echo(f"{r.dataset}: {r.checked} quarantined, sent {r.sent}, still invalid "
                   f"{r.still_invalid}, refused again {r.refused}, closed as already "
                   f"delivered {r.already_delivered}, closed as superseded {r.superseded}, "
                   f"read again from the source {r.from_source} (no longer there: "
                   f"{r.not_at_source}, left as they were)")


@quarantine.command("drop")
@click.argument("entry_ids", type=ENTRY_ID, nargs=-1, required=True)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def quarantine_drop(ctx: Context, entry_ids: tuple[int, ...], yes: bool) -> None:
    """Delete quarantined rows for good (they are not sent)."""
    if not yes:
        _confirm(ctx, f"Delete {len(entry_ids)} quarantined rows for good?")
    dropped = commands.quarantine_drop(ctx.spec(state_only=True), entry_ids)
    _echo(ctx, {"dropped": dropped}, f"dropped {dropped} rows")


@click.command()
@click.argument("datasets", nargs=-1)
@click.pass_obj
def status(ctx: Context, datasets: tuple[str, ...]) -> None:
    """How the service and every dataset (or the DATASETS named) stand: at AiTEMS (status,
    schema, the service's cycle, schedule and latest trains) and in the state store (the last
    run, mark, quarantine, unfinished batches, lease). Writes nothing.

    Exit codes: 0 nothing wrong; 1 a dataset failed at AiTEMS or is unknown to it, or the
    latest train failed (for a CronJob or CI step to alert on); 2 usage or spec error.
    """
    report = commands.status(ctx.spec(), datasets)
    if ctx.json_output:
        _echo_json(report.to_dict())
    else:
        click.echo(render.status_summary(report))
    sys.exit(report.exit_code)


@click.command()
@click.option("--limit", type=COUNT, default=20, show_default=True, help="At most this many runs.")
@click.pass_obj
def history(ctx: Context, limit: int) -> None:
    """Past runs, newest first, with their status, counts and duration."""
    found = commands.history(ctx.spec(state_only=True), limit + 1)  # one more: any older?
    runs = [r.to_dict() for r in found[:limit]]
    if ctx.json_output:
        _echo_json(runs)
        return
    for run in runs:
        seconds = "" if run["seconds"] is None else f"{run['seconds']:8.2f} s"
        click.echo(f"{run['run_id']}  {run['status']:<11} {seconds}".rstrip())
        for d in run["datasets"]:
            counts = ", ".join(f"{name} {d[key]}" for name, key in (
                ("read", "read"), ("sent", "sent"), ("unchanged", "unchanged"),
                ("invalid", "invalid"), ("ambiguous batches", "ambiguous"))
                if d[key] is not None)  # a crashed run's summary knows only what it committed
            click.echo(f"    {d['dataset']}: {d['status']}, {counts}")
    if len(found) > limit:
        click.echo(f"(the latest {limit} runs; older ones are not shown: --limit N shows more)")


@click.group()
def schema() -> None:
    """Work with the AiTEMS schemas of the datasets."""


@schema.command("pull")
@click.argument("dataset", required=False)
@click.option("--dataset-id", metavar="ID",
              help="An AiTEMS dataset ID instead of DATASET: any dataset of the spec's "
                   "service account, in the spec or not (yet).")
@click.pass_obj
def schema_pull(ctx: Context, dataset: str | None, dataset_id: str | None) -> None:
    """Print the AiTEMS schema of DATASET (a dataset of the spec), or of the AiTEMS dataset
    --dataset-id ID, as the spec's `fields:` YAML; with --json as a JSON object (dataset_id,
    schema, dataset_type, fields)."""
    if (dataset is None) == (dataset_id is None):
        raise click.UsageError("give DATASET (a dataset of the spec) or --dataset-id ID, "
                               "not both")
    pulled = commands.schema_pull(ctx.spec(), dataset, dataset_id=dataset_id)
    if ctx.json_output:
        _echo_json(pulled.to_dict())
    else:
        click.echo(pulled.fields_yaml(), nl=False)


COMMANDS = (state, quarantine, history, schema, status)
