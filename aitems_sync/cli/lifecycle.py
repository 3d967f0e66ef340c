"""CLI command that provisions AiTEMS from the spec: `apply`.

Parse, call :mod:`aitems_sync.commands`, render. Registered on the main group by
:mod:`aitems_sync.cli.main`.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

from aitems_sync import commands
from aitems_sync.cli import render
from aitems_sync.cli.context import Context
from aitems_sync.cli.types import FiniteRange
from aitems_sync.errors import EXIT_USAGE
from aitems_sync.sync import signals

if TYPE_CHECKING:
    from aitems_sync.sync.provision import Plan


@click.command()
@click.option("--exit-code", is_flag=True,
              help="Only plan: exit 1 when AiTEMS differs from the spec, 0 when it matches "
                   "(drift detection in CI). Changes nothing.")
@click.option("--allow-replace", is_flag=True,
              help="Replace datasets whose fields changed (new schema, new dataset from a fresh "
                   "bootstrap, re-attached, its state reset).")
@click.option("--yes", is_flag=True, help="Apply without asking for confirmation.")
@click.option("--timeout", type=FiniteRange(min=1, max=7 * 86_400), default=None,
              metavar="SECONDS",
              help="How long AiTEMS may take to read a replacement's file, and a running "
                   "train to end before datasets are attached (default 6 hours each).")
@click.pass_obj
def apply(ctx: Context, exit_code: bool, allow_replace: bool, yes: bool,
          timeout: float | None) -> None:
    """Make AiTEMS match the spec: the schemas of its datasets' fields, the service (created,
    its three datasets attached, its cycle set, its schedule started). Prints the plan (+
    create, ~ update, -/+ replace, with the field diff) and applies it once confirmed. Deletes
    nothing. Datasets are created by `bootstrap`, from their first full load.

    Exit codes: 0 applied, or nothing to do; 1 a step failed or the plan was not confirmed
    (with --exit-code: AiTEMS differs from the spec); 2 usage or spec error, or a change the
    plan refuses (a field change without --allow-replace).
    """
    spec = ctx.spec()
    if not (yes or exit_code or ctx.json_output) and not sys.stdin.isatty():
        raise click.UsageError("apply asks for confirmation on a terminal: pass --yes to apply "
                               "without asking, or --exit-code to only plan")

    def confirm(plan: Plan) -> bool:
        if yes:
            return True
        if ctx.json_output:
            return False  # a machine reading JSON cannot answer: --yes applies
        return click.confirm("Apply these changes?", default=False)

    shown = False

    def show_then_confirm(plan: Plan) -> bool:
        nonlocal shown
        if not ctx.json_output:
            click.echo(render.apply_plan(plan))
            shown = True
        return confirm(plan)

    with signals.stop_on_signals() as stop:
        report = commands.apply(spec, allow_replace=allow_replace, plan_only=exit_code,
                                confirm=show_then_confirm, stop=stop.event,
                                **({} if timeout is None else {"timeout": timeout}))
    if ctx.json_output:
        click.echo(json.dumps(report.to_dict(), default=str))
    else:
        if not shown:
            click.echo(render.apply_plan(report.plan))
        if report.applied or report.error:
            click.echo(render.apply_summary(report))
    if stop.exit_code is not None:  # SIGTERM or SIGINT: what was done is reported
        sys.exit(stop.exit_code)
    if report.error:
        sys.exit(report.exit_code)
    if exit_code and not report.plan.empty:
        sys.exit(1)
    sys.exit(0 if report.exit_code != EXIT_USAGE else EXIT_USAGE)


COMMANDS = [apply]
