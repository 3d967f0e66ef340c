"""CLI command that starts a spec from a database's tables: `init`.

Parse, call :mod:`aitems_sync.commands`, render. Registered on the main group by
:mod:`aitems_sync.cli.main`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import click

from aitems_sync import commands
from aitems_sync.cli import render
from aitems_sync.cli.context import Context
from aitems_sync.cli.types import FilePath
from aitems_sync.spec.model import DatasetType

_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _variable(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not _VARIABLE.fullmatch(value):
        raise click.BadParameter(f"{value!r} is not an environment variable name (letters, "
                                 "digits and _, not starting with a digit)")
    return value


def _database_url(argument: str | None, variable: str | None) -> tuple[str, str | None]:
    """The URL to inspect, and the variable the spec reads it from: DATABASE_URL, which may
    be a ``${VAR}`` reference as the spec writes it, or the variable --url-env names."""
    reference = _REFERENCE.fullmatch(argument or "")
    if reference:
        variable = variable or reference.group(1)
        argument = os.environ.get(reference.group(1)) or None
        if argument is None:
            raise click.UsageError(f"{reference.group(1)} is not set: export it with the "
                                   "database URL, or give the URL itself")
    if argument is not None:
        return argument, variable
    if variable is None:
        raise click.UsageError("give the DATABASE_URL, or --url-env VAR naming the "
                               "environment variable that holds it")
    url = os.environ.get(variable)
    if not url:
        raise click.UsageError(f"--url-env {variable}: the variable is not set (or empty)")
    return url, variable


@click.command()
@click.argument("database_url", required=False)
@click.option("--user", "user_table", metavar="TABLE",
              help="The table of the user dataset (its primary key is USER_ID).")
@click.option("--item", "item_table", metavar="TABLE",
              help="The table of the item dataset (its primary key is ITEM_ID).")
@click.option("--interaction", "interaction_table", metavar="TABLE",
              help="The table of the interaction dataset (events: a user, an item, a time).")
@click.option("--schema", metavar="NAME",
              help="The database schema that holds the tables (default: the database's "
                   "default, such as public on PostgreSQL).")
@click.option("--output", "-o", type=FilePath(dir_okay=False, path_type=Path), default=None,
              help="Where to write the spec (default: the --config path, sync.yaml).")
@click.option("--seed", type=FilePath(dir_okay=False, path_type=Path), default=None,
              help="Where to write the emulator seed (default: emulator-seed.yaml beside the "
                   "spec).")
@click.option("--url-env", metavar="VAR", callback=_variable,
              help="The environment variable the spec reads the URL from (default: "
                   "<SOURCE>_DATABASE_URL); without DATABASE_URL, init reads the URL from it "
                   "too, which keeps a password off the command line.")
@click.option("--force", is_flag=True, help="Overwrite the spec and the seed if they exist.")
@click.pass_obj
def init(ctx: Context, database_url: str | None, user_table: str | None,
         item_table: str | None, interaction_table: str | None, schema: str | None,
         output: Path | None, seed: Path | None, url_env: str | None, force: bool) -> None:
    """Write a starter spec and an emulator seed from the tables of the database at
    DATABASE_URL (or ${VAR}, or --url-env VAR): a dataset per table named with --user, --item
    and --interaction (without them, the tables whose names suggest users, items and events),
    fields mapped from the column types, a cursor chosen and explained, and a comment wherever
    a person must decide. The spec never holds a password: it reads the URL from a variable.

    Exit codes: 0 written; 1 the database could not be read; 2 usage error (a file exists
    without --force, an unknown table, no table to pick).
    """
    url, variable = _database_url(database_url, url_env)
    named: tuple[tuple[DatasetType, str | None], ...] = (
        ("user", user_table), ("item", item_table), ("interaction", interaction_table))
    picked = {kind: table for kind, table in named if table}
    report = commands.init(url, output=output or ctx.config, seed=seed, tables=picked,
                           schema=schema, url_variable=variable, force=force)
    if ctx.json_output:
        click.echo(json.dumps(report.to_dict()))
    else:
        click.echo(render.init_summary(report))


COMMANDS = [init]
