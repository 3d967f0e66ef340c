"""What every command of the CLI shares: the global options, the loaded spec, and the one place
where our errors become ``FAILED: message`` and their exit codes."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from aitems_sync.errors import AitemsSyncError
from aitems_sync.spec.load import load_spec
from aitems_sync.spec.model import Spec

log = logging.getLogger(__name__)


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

    def spec(self) -> Spec:
        """The spec named by ``--config``, loaded (SpecError lists every problem)."""
        return load_spec(self.config)


class ErrorMappingGroup(click.Group):
    """Maps our errors to ``FAILED: message`` and their exit codes, in one place."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AitemsSyncError as error:
            debug = isinstance(ctx.obj, Context) and ctx.obj.debug
            if debug:
                log.exception("failed")
            click.echo(f"FAILED: {error}", err=True)
            ctx.exit(error.exit_code)
