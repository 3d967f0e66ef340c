"""What every command of the CLI shares: the global options, the loaded spec, and the one place
where our errors become ``FAILED: message`` and their exit codes."""

from __future__ import annotations

import itertools
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from aitems_sync.cli.hoist import command_start, hoist
from aitems_sync.cli.logfmt import JsonFormatter
from aitems_sync.errors import EXIT_FAILED, AitemsSyncError, ApiError, SpecError
from aitems_sync.spec.load import load_spec
from aitems_sync.spec.model import Spec

log = logging.getLogger(__name__)

#: The spec's sections a command that only touches the state store does not use.
STATE_ONLY = (("aitems",), ("sources",), ("object_storage",), ("metrics",), ("service",))


@dataclass
class Context:
    config: Path
    json_output: bool
    debug: bool
    log_format: str = "text"

    @property
    def show_progress(self) -> bool:
        """A progress display only for a person at a terminal reading text."""
        return not self.json_output and self.log_format == "text" and sys.stderr.isatty()

    def spec(self, *, state_only: bool = False) -> Spec:
        """The spec named by ``--config``, loaded (SpecError lists every problem).

        ``state_only``: for commands that only read or repair the state store (history,
        state, quarantine list/show/export/drop): the AiTEMS keys, source URLs, Object
        Storage and metrics may then come from variables that are not set."""
        return load_spec(self.config, unused=STATE_ONLY if state_only else ())


class ErrorMappingGroup(click.Group):
    """The one place where our errors become their exit codes and messages: ``FAILED:
    message`` on stderr (a JSON log record with ``--log-format json``) and, with ``--json``,
    one JSON error object on stdout (:func:`error_document`). Also accepts the global options
    after the command (:mod:`aitems_sync.cli.hoist`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist(self, args))

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        wanted = _wanted(self, argv)
        if not standalone_mode or not (wanted.json_output or wanted.log_json):
            return super().main(argv, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(argv, prog_name, complete_var, False, **extra)
        except click.exceptions.Abort:
            _report(wanted, "Aborted", "aborted", EXIT_FAILED, None)
            sys.exit(EXIT_FAILED)
        except click.ClickException as error:  # usage: the command line itself is wrong
            _report(wanted, "UsageError", error.format_message(), error.exit_code, None)
            sys.exit(error.exit_code)
        except Exception as error:  # a bug: still one document, and the traceback logged
            log.exception("unexpected failure")
            _report(wanted, "InternalError", f"{type(error).__name__}: {error} (a bug in "
                    "aitems-sync: please report it with the log)", EXIT_FAILED, None)
            sys.exit(EXIT_FAILED)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AitemsSyncError as error:
            options = ctx.obj if isinstance(ctx.obj, Context) else None
            if options is not None and options.debug:
                log.exception("failed")
            wanted = _Wanted(bool(options and options.json_output),
                             bool(options and options.log_format == "json"))
            _report(wanted, type(error).__name__, str(error), error.exit_code, error)
            ctx.exit(error.exit_code)


@dataclass(frozen=True)
class _Wanted:
    json_output: bool
    log_json: bool


def _wanted(group: click.Group, argv: list[str]) -> _Wanted:
    """What the command line asks for (before click has parsed it, for click's own errors)."""
    args = hoist(group, argv)
    head = args[:command_start(group, args)[0]]  # the global options, all in front now
    log_json = any(a == "--log-format=json" for a in head) or any(
        a == "--log-format" and b == "json" for a, b in itertools.pairwise(head))
    return _Wanted("--json" in head, log_json)


def _report(wanted: _Wanted, kind: str, message: str, exit_code: int,
            error: AitemsSyncError | None) -> None:
    """The failure, once for a person or a log reader on stderr, and as one JSON document on
    stdout with ``--json``."""
    if wanted.log_json:  # a record even before logging is set up (a usage error)
        record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "FAILED: %s",
                                (message,), None, extra={"event": "failed", "status": kind})
        click.echo(JsonFormatter().format(record), err=True)
    else:
        click.echo(f"FAILED: {message}", err=True)
    if wanted.json_output:
        click.echo(json.dumps(error_document(kind, message, exit_code, error), default=str))


def error_document(kind: str, message: str, exit_code: int,
                   error: AitemsSyncError | None) -> dict[str, Any]:
    """``{"error": {type, message, exit_code, location, problems?}}``: what ``--json`` prints
    when a command fails. ``location`` says where (the spec's file, line and key of the first
    problem; an AiTEMS call's method, path and status), or is null."""
    body: dict[str, Any] = {"type": kind, "message": message, "exit_code": exit_code,
                            "location": None}
    if isinstance(error, SpecError):
        problems = [{"file": p.file, "line": p.line, "key": p.key, "message": p.message}
                    for p in error.problems]
        body["problems"] = problems
        body["location"] = {k: problems[0][k] for k in ("file", "line", "key")} \
            if problems else None
    elif isinstance(error, ApiError) and (error.path or error.status):
        body["location"] = {"method": error.method or None, "path": error.path or None,
                            "status": error.status}
    return {"error": body}
