"""The command line: parse, call, render. The only place that exits or sets up logging."""

from __future__ import annotations

import contextlib
import gc
import io
import json
import logging
import math
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TextIO

import click

from aitems_sync import __version__, commands
from aitems_sync.cli import admin, lifecycle, render, scaffold
from aitems_sync.cli.context import Context, ErrorMappingGroup
from aitems_sync.cli.logfmt import JsonFormatter
from aitems_sync.cli.types import FilePath, FiniteRange, Host
from aitems_sync.redact import redact
from aitems_sync.sync import signals
from aitems_sync.sync.report import RunReport

log = logging.getLogger(__name__)

# Set by the console-script entry point: the process is ours, so process-wide settings (the
# garbage collector) may be tuned. Not when a library or a test calls main_group.
_own_process = False


#: Log events whose message the text summary repeats: a person reading text sees it once there.
SUMMARIZED = frozenset({"dataset_failed", "bootstrap_failed", "preflight_failed"})


def _said_in_the_summary(record: logging.LogRecord) -> bool:
    return getattr(record, "event", None) not in SUMMARIZED


def _setup_logging(level: str, fmt: str, *, summary: bool = False) -> None:
    """Log lines on stderr, as text or JSON. ``summary``: the command ends with a text summary
    that names each failed dataset with its error, so text logs leave those records out (each
    error once); JSON logs, and runs with --json, keep every record."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        if summary:
            handler.addFilter(_said_in_the_summary)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    logging.captureWarnings(True)  # a library's warning is a log line too (JSON with json)
    root.setLevel(level.upper())


class _Redacting(io.TextIOBase):
    """A text stream that masks the spec's credentials in everything written to it."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(redact(text))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, buffer, ...
        return getattr(self.stream, name)


def _redact_output(ctx: click.Context) -> None:
    """Pass everything written to stdout and stderr (output, errors, log lines, tracebacks
    with --debug) through :func:`aitems_sync.redact.redact`, until the command ends."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Redacting(sys.stdout), _Redacting(sys.stderr)

    def restore() -> None:
        sys.stdout, sys.stderr = saved

    ctx.call_on_close(restore)


def _statuses(text: str) -> tuple[int, ...]:
    """``--fail-statuses``: comma-separated HTTP error statuses."""
    try:
        statuses = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of statuses, such "
                                 "as 429,500,503") from None
    if not statuses or any(not 400 <= status <= 599 for status in statuses):
        raise click.BadParameter("each status must be from 400 to 599")
    return statuses


@click.group(cls=ErrorMappingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "-c",
    type=FilePath(dir_okay=False, path_type=Path),
    envvar="AITEMS_SYNC_CONFIG",
    default="sync.yaml",
    show_default=True,
    help="The spec file (also from AITEMS_SYNC_CONFIG).",
)
@click.option("--json", "json_output", is_flag=True, help="Print the result as JSON on stdout.")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
    help="Lowest level of log lines written to stderr.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log lines as text or as JSON lines.",
)
@click.option("--debug", is_flag=True, help="Show the traceback of a failure.")
@click.version_option(__version__, prog_name="aitems-sync")
@click.pass_context
def main_group(
    ctx: click.Context, config: Path, json_output: bool, log_level: str, log_format: str,
    debug: bool,
) -> None:
    """Keep NAVER Cloud AiTEMS datasets fed from SQL databases, incrementally."""
    _redact_output(ctx)
    _setup_logging("debug" if debug else log_level, log_format, summary=not json_output)
    ctx.obj = Context(config=config, json_output=json_output, debug=debug,
                      log_format=log_format)


@main_group.command()
@click.option("--connect", is_flag=True,
              help="Also open the state store, every source and AiTEMS: each query's columns "
                   "against the fields, key and cursor, rows with a NULL cursor, lookback, "
                   "and the credentials, service and each dataset's schema.")
@click.pass_obj
def validate(ctx: Context, connect: bool) -> None:
    """Check the spec (and with --connect, the sources and AiTEMS) without changing anything."""
    result = commands.validate(ctx.spec(), connect=connect)
    if ctx.json_output:
        click.echo(json.dumps(result.to_dict()))
    else:
        for check in result.checks:
            click.echo(f"ok: {check}")
        for warning in result.warnings:
            click.echo(f"warning: {warning}")


@main_group.command()
@click.argument("datasets", nargs=-1)
@click.option("--full-refresh", is_flag=True,
              help="Re-read every row, not only those past the mark; the ledger still skips "
                   "what was delivered.")
@click.option("--lease-ttl", type=FiniteRange(min=0, min_open=True, max=86_400), default=None,
              metavar="SECONDS",
              help="Seconds a dataset's lease lasts without renewal (default 60; renewed every "
                   "third of it): a killed run's datasets are free again after this.")
@click.option("--wait", type=FiniteRange(min=0, max=math.inf), is_flag=False, flag_value=math.inf,
              default=None, metavar="[TIMEOUT]",
              help="When another run holds a dataset's lease, wait for it (polling, and "
                   "logging who holds it) instead of exiting 75 at once; with TIMEOUT seconds, "
                   "exit 75 if it is still held then. Give it after the DATASETS or as "
                   "--wait=TIMEOUT.")
@click.option("--parallel", type=click.IntRange(min=1), default=1, show_default=True,
              metavar="N", help="Sync up to N datasets at once, each in its own thread.")
@click.option("--grace", type=FiniteRange(min=0, max=86_400), default=signals.DEFAULT_GRACE,
              show_default=True, metavar="SECONDS",
              help="After SIGTERM or SIGINT, how long the uploads on the wire may take to "
                   "finish and commit before the run exits anyway.")
@click.option("--extract-worker", is_flag=True, envvar="AITEMS_SYNC_EXTRACT_WORKER",
              help="Past 20,000 rows, read, validate and encode a dataset's rows in a second "
                   "process, so reading overlaps uploading on two cores or more; the worker "
                   "uses more memory while it reads (see benchmarks/README.md for the figures).")
@click.pass_obj
def run(ctx: Context, datasets: tuple[str, ...], full_refresh: bool,
        lease_ttl: float | None, wait: float | None, parallel: int, grace: float,
        extract_worker: bool) -> None:
    """Sync the new and changed rows of every dataset (or of the DATASETS named).

    Exit codes: 0 done; 1 a dataset failed (what was acknowledged is committed); 2 usage or
    spec error; 3 a dataset passed max_invalid; 75 another run holds a dataset's lease; 143 or
    130 stopped by SIGTERM or SIGINT after committing what was acknowledged.
    """
    spec = ctx.spec()
    _freeze_imports()
    report = RunReport(run_id="")

    def show_at_once(_code: int) -> None:  # a second signal, or the grace period over
        _show_run(ctx, report)
        sys.stdout.flush()

    with signals.stop_on_signals(grace) as stop, ExitStack() as display, \
            signals.on_abort(show_at_once):
        progress = None
        if ctx.show_progress:
            # Imported here for start-up time: tqdm only for a person at a terminal.
            from aitems_sync.cli.progress import terminal_progress

            progress = display.enter_context(terminal_progress(sys.stderr))
        commands.run(spec, datasets, full_refresh=full_refresh, stop=stop.event,
                     lease_ttl=lease_ttl, wait=wait, parallel=parallel, progress=progress,
                     extract_worker=extract_worker, report=report)
        if stop.exit_code is not None:
            report.interrupted_exit_code = stop.exit_code
    _show_run(ctx, report)
    sys.exit(report.exit_code)


def _show_run(ctx: Context, report: RunReport) -> None:
    if ctx.json_output:
        click.echo(json.dumps(report.to_dict(), default=str))
    else:
        click.echo(render.run_summary(report))


@main_group.command()
@click.argument("datasets", nargs=-1)
@click.option("--timeout", type=FiniteRange(min=1, max=7 * 86_400), default=None,
              metavar="SECONDS",
              help="How long AiTEMS may take to read a dataset's file (default 6 hours).")
@click.option("--lease-ttl", type=FiniteRange(min=0, min_open=True, max=86_400), default=None,
              metavar="SECONDS",
              help="Seconds a dataset's lease lasts without renewal (default 60), as for run.")
@click.option("--wait", type=FiniteRange(min=0, max=math.inf), is_flag=False, flag_value=math.inf,
              default=None, metavar="[TIMEOUT]",
              help="Wait for a dataset's lease another run holds, as for run (default: fail "
                   "that dataset at once).")
@click.option("--from", "export", metavar="s3://BUCKET/PATH",
              help="Register the one .csv or .csv.gz file another engine exported there as "
                   "the DATASET's first load, instead of writing one (needs --mark and "
                   "exactly one DATASET).")
@click.option("--mark", metavar="CURSOR",
              help="With --from: the cursor value the next run reads from (inclusive); the "
                   "export should hold the rows before it.")
@click.option("--type", "kind", type=click.Choice(commands.CURSOR_TYPES), default="auto",
              show_default=True, help="The type of --mark's value, as for state set.")
@click.pass_obj
def bootstrap(ctx: Context, datasets: tuple[str, ...], timeout: float | None,
              lease_ttl: float | None, wait: float | None, export: str | None,
              mark: str | None, kind: str) -> None:
    """Load every dataset (or the DATASETS named) whole, as a first load: its query becomes one
    gzip CSV file in Object Storage (object_storage in the spec), AiTEMS reads it into the
    dataset, and the state store takes the snapshot, so the next run sends only what changed.
    With --from, AiTEMS reads a file another engine exported instead, and the mark is --mark.

    Exit codes: 0 done; 1 a dataset failed (run again: it finishes or starts the dataset's
    hand-over); 2 usage or spec error, or an export that cannot be registered; 3 a dataset had
    more invalid rows than max_invalid allows; 75 another run holds a dataset's lease; 143 or
    130 stopped by SIGTERM or SIGINT.
    """
    _check_from(export, mark, kind, datasets)
    spec = ctx.spec()
    options: dict[str, Any] = {"lease_ttl": lease_ttl, "wait": wait,
                               **({} if timeout is None else {"timeout": timeout})}
    with signals.stop_on_signals() as stop:  # a signal aborts the upload, moves nothing
        if export is not None and mark is not None:
            report = commands.bootstrap_from(spec, datasets[0], export, mark, kind,
                                             stop=stop.event, **options)
        else:
            report = commands.bootstrap(spec, datasets, stop=stop.event, **options)
    report.interrupted_exit_code = stop.exit_code
    if ctx.json_output:
        click.echo(json.dumps(report.to_dict(), default=str))
    else:
        click.echo(render.bootstrap_summary(report))
    sys.exit(report.exit_code)


def _check_from(export: str | None, mark: str | None, kind: str,
                datasets: tuple[str, ...]) -> None:
    """``bootstrap --from``'s options go together, with exactly one dataset."""
    if export is None:
        if mark is not None or kind != "auto":
            raise click.UsageError("--mark and --type go with --from (the mark of a file "
                                   "another engine exported)")
        return
    if mark is None:
        raise click.UsageError("--from needs --mark CURSOR: the cursor value the next run "
                               "reads from (the export should hold the rows before it)")
    if len(datasets) != 1:
        named = ", ".join(datasets) if datasets else "none"
        raise click.UsageError(f"--from registers one file as one dataset's first load: name "
                               f"exactly one DATASET (named: {named})")


@main_group.command()
@click.argument("datasets", nargs=-1)
@click.option("--full-refresh", is_flag=True,
              help="Plan a full refresh: every row is read and compared with the ledger.")
@click.option("--exit-code", is_flag=True,
              help="Exit 1 when there is something to send (for CI), 0 when nothing.")
@click.pass_obj
def plan(ctx: Context, datasets: tuple[str, ...], full_refresh: bool, exit_code: bool) -> None:
    """Dry run: per dataset the rows new, changed, unchanged and invalid, and the batches a run
    would send now. Uploads nothing, writes nothing to the state store, takes no lease."""
    spec = ctx.spec()
    _freeze_imports()
    report = commands.plan(spec, datasets, full_refresh=full_refresh)
    if ctx.json_output:
        click.echo(json.dumps(report.to_dict(), default=str))
    else:
        click.echo(render.run_summary(report, planned=True))
    pending = any(d.sent or d.batches for d in report.datasets)
    sys.exit(report.exit_code or (1 if exit_code and pending else 0))


#: Where the emulator's --object-storage-key may come from instead of the command line.
OBJECT_STORAGE_KEY_ENV = "AITEMS_EMULATOR_OBJECT_STORAGE_KEY"


def _key_pair(pair: str, option: str) -> tuple[str, str]:
    access, sep, secret = pair.partition(":")
    if not sep or not access or not secret:
        raise click.BadParameter("expected ACCESS_KEY:SECRET_KEY", param_hint=option)
    return access, secret


@main_group.command()
@click.option("--host", type=Host(), default="127.0.0.1", show_default=True,
              help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65_535), default=8787, show_default=True,
              help="Port to listen on (0: any free).")
@click.option(
    "--seed",
    type=FilePath(exists=True, dir_okay=False, path_type=Path),
    help="YAML or JSON file of keys, schemas, datasets and services to create at start-up.",
)
@click.option(
    "--access-key",
    "access_keys",
    multiple=True,
    help="An accepted key pair as ACCESS_KEY:SECRET_KEY (repeatable).",
)
@click.option(
    "--state",
    "state_path",
    type=FilePath(dir_okay=False, path_type=Path),
    help="Persist the emulator's data to this SQLite file.",
)
@click.option("--latency", type=FiniteRange(min=0, max=3600), default=0.0,
              help="Seconds added to every upload answer.")
@click.option("--latency-jitter", type=FiniteRange(min=0, max=3600), default=0.0,
              help="Random extra latency, seconds.")
@click.option("--fail-rate", type=FiniteRange(min=0, max=1), default=0.0,
              help="Share of uploads answered with an error (0 to 1).")
@click.option(
    "--fail-statuses",
    default="429,500,503,504",
    show_default=True,
    callback=lambda _ctx, _param, value: _statuses(value),
    help="Statuses drawn from for --fail-rate (comma-separated, 400 to 599).",
)
@click.option("--retry-after", type=FiniteRange(min=0, max=3600), default=1.0, show_default=True,
              help="Retry-After seconds sent with injected 429s.")
@click.option("--max-body-bytes", type=click.IntRange(min=1), default=None,
              help="Answer 413 to upload bodies larger than this.")
@click.option("--drop-rate", type=FiniteRange(min=0, max=1), default=0.0,
              help="Share of uploads stored and then answered by closing the connection "
                   "(0 to 1).")
@click.option("--no-record", is_flag=True,
              help="Keep only counts of received rows, not the rows (for benchmarks).")
@click.option("--object-storage", "object_storage", metavar="URL",
              help="S3-compatible endpoint that dataset create and modify read their file from "
                   "(needs boto3).")
@click.option("--object-storage-key", metavar="AK:SK", envvar=OBJECT_STORAGE_KEY_ENV,
              show_envvar=True,
              help="Key pair to read Object Storage with (default: the key that signed the "
                   "call); the environment variable keeps the secret out of the process list.")
@click.option("--ingest-seconds", type=FiniteRange(min=0, max=3600), default=1.0,
              show_default=True, help="How long a dataset stays waiting, then processing.")
@click.option("--hour-seconds", type=FiniteRange(min=0.001, max=3600), default=3600.0,
              show_default=True, help="Real seconds of one hour of an interval term.")
@click.option("--train-seconds", type=FiniteRange(min=0, max=3600), default=1.0,
              show_default=True, help="How long an interval train runs.")
def emulator(
    host: str, port: int, seed: Path | None, access_keys: tuple[str, ...],
    state_path: Path | None, latency: float, latency_jitter: float, fail_rate: float,
    fail_statuses: tuple[int, ...], retry_after: float, max_body_bytes: int | None,
    drop_rate: float, no_record: bool, object_storage: str | None,
    object_storage_key: str | None, ingest_seconds: float, hour_seconds: float,
    train_seconds: float,
) -> None:
    """Serve a local AiTEMS on loopback for development, demos and tests."""
    # Imported here for start-up time: no other command needs the emulator.
    from aitems_sync.emulator.server import (
        EmulatorServer,
        Faults,
        ObjectStorage,
        Timing,
        load_seed,
    )

    keys = dict(_key_pair(pair, "--access-key") for pair in access_keys)
    storage = None
    if object_storage is not None:
        hint = f"--object-storage-key (or {OBJECT_STORAGE_KEY_ENV})"
        access, secret = (_key_pair(object_storage_key, hint) if object_storage_key
                          else (None, None))
        storage = ObjectStorage(object_storage, access, secret)
    elif object_storage_key and click.get_current_context().get_parameter_source(
            "object_storage_key") is not click.core.ParameterSource.ENVIRONMENT:
        raise click.BadParameter("needs --object-storage", param_hint="--object-storage-key")
    faults = Faults(
        latency=latency,
        latency_jitter=latency_jitter,
        status_rate=fail_rate,
        status_choices=fail_statuses,
        retry_after=retry_after,
        max_body_bytes=max_body_bytes,
        drop_rate=drop_rate,
    )
    server = EmulatorServer(
        host=host,
        port=port,
        seed=load_seed(seed) if seed else None,
        keys=keys,
        state_path=state_path,
        faults=faults,
        record=not no_record,
        object_storage=storage,
        timing=Timing(ingest_seconds, hour_seconds, train_seconds),
    )
    click.echo(f"AiTEMS emulator listening on {server.base_url}", err=True)
    server.serve_forever()


for _command in [*admin.COMMANDS, *lifecycle.COMMANDS, *scaffold.COMMANDS]:
    main_group.add_command(_command)


#: Seconds a thread waiting for the GIL lets a busy one run before asking it to let go
#: (Python's default is 0.005). See _freeze_imports.
SWITCH_INTERVAL = 0.001


def _freeze_imports() -> None:
    """Tune the interpreter for a sync, in a process of ours (not a library caller's).

    Exempt what the imports built from the cyclic garbage collector: a sync allocates
    containers by the million (rows, batches), so the collector runs often, and each full
    collection walked every object SQLAlchemy and the rest had built at import, a noticeable
    share of a backfill's and even a small delta's time (measured: docs/perf-history.md).
    Nothing imported is garbage, and objects freed later by reference counting are freed as
    before.

    Shorten the GIL's switch interval: the committer and upload threads give the GIL up at
    every statement and socket call, and beside the busy reading thread each of them then
    waited up to a whole switch interval to get it back. With an extraction worker the shorter
    interval made backfills faster (SWITCH_INTERVAL did best of the values tried); without one
    it made no measurable difference (benchmarks/README.md).
    """
    if _own_process:
        gc.freeze()
        sys.setswitchinterval(SWITCH_INTERVAL)
        _one_malloc_arena()


#: glibc's mallopt parameter for the most malloc arenas a process may create.
_M_ARENA_MAX = -8


def _one_malloc_arena() -> None:
    """Let every thread allocate from one malloc arena (glibc; elsewhere nothing changes).

    glibc gives a thread that allocates while another holds the arena's lock an arena of its
    own, up to eight per core, and each keeps the memory freed into it: a run's committer,
    lookup and upload threads raised a backfill's peak memory with their arenas, and no speed
    was gained by them (measured: docs/perf-history.md): the threads allocate little, and
    mostly under the GIL. Called before any thread starts (an arena made already stays).
    """
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, 1)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: runs the command, then ends the process at once.

    The interpreter's teardown (collecting every module's objects) is a sizeable part of a
    short run, such as one with nothing to send (measured: docs/perf-history.md), and there is
    nothing left for it to do: commands close their connections and join their threads before
    they return, and logs and output are flushed here. (A library caller uses ``main_group``,
    which raises SystemExit as usual.)
    """
    global _own_process
    _own_process = True
    try:
        main_group.main(args=argv, prog_name="aitems-sync")
        code: object = 0
    except SystemExit as done:
        code = done.code
    os._exit(_flush(_exit_status(code)))


def _exit_status(code: object) -> int:
    """The process status ``sys.exit(code)`` would give."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _flush(status: int) -> int:
    """Flush logs and output (click.echo flushes already; a stray print would not be), as
    Python's own exit does; a failed flush gives status 120, as there."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            status = status or 120
    return status
