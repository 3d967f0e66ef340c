"""The CLI's parameter types: every value an operator types is checked by click, so a mistake is
a usage error (exit 2) naming the option, never a traceback from deeper down."""

from __future__ import annotations

import math
from typing import Any

import click

#: The largest integer the state stores' INTEGER columns hold (a larger id or limit overflowed).
MAX_INTEGER = 2**63 - 1


class FiniteRange(click.FloatRange):
    """A finite number in a range, for options that take seconds or a share (``nan`` and
    ``1e400`` are refused: the calls they reach fail on them); ``max`` may be infinite to
    allow ``inf`` itself."""

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if math.isnan(number) or (math.isinf(number) and not math.isinf(self.max or 0)):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


#: A count or limit: 0 up to what a database integer holds.
COUNT = click.IntRange(0, MAX_INTEGER)
#: A quarantine entry's id.
ENTRY_ID = click.IntRange(1, MAX_INTEGER)


def _refuse_nul(type_: FilePath | OutputFile, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> None:
    if isinstance(value, str) and "\x00" in value:
        type_.fail("a path cannot hold a NUL byte.", param, ctx)


class FilePath(click.Path):
    """``click.Path`` that refuses a NUL byte (the operating system would, with a ValueError)."""

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        _refuse_nul(self, value, param, ctx)
        return super().convert(value, param, ctx)


class OutputFile(click.File):
    """``click.File`` that refuses a NUL byte in the path."""

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        _refuse_nul(self, value, param, ctx)
        return super().convert(value, param, ctx)


class Host(click.types.StringParamType):
    """A host name or address to bind: not empty, no NUL byte or whitespace."""

    name = "host"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        text = str(value)
        if not text or any(c.isspace() or c == "\x00" for c in text):
            self.fail(f"{value!r} is not a host name or address.", param, ctx)
        return text
