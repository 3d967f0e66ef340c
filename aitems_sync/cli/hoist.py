"""Global options written after the command: moved in front of it before click parses.

``aitems-sync run --config sync.yaml --json`` means ``aitems-sync --config sync.yaml --json run``.
The rule, documented in the README: the global options (``--config``/``-c``, ``--json``,
``--log-level``, ``--log-format``, ``--debug``) are accepted before or after the command, in any
position among its arguments; given twice, the later one wins. A token that is the value of one of
the command's own options (``--cursor --json`` sets the cursor to ``--json``) stays where it is, and
so does everything after ``--``.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

#: Global options that take a value, and those that are flags.
VALUED = frozenset({"--config", "-c", "--log-level", "--log-format"})
FLAGS = frozenset({"--json", "--debug"})


def hoist(group: click.Group, args: Sequence[str]) -> list[str]:
    """``args`` with the global options found after the command moved before it."""
    args = list(args)
    start, command = command_start(group, args)
    if command is None:
        return args
    front, rest = args[:start], args[start:]
    moved: list[str] = []
    kept: list[str] = [rest[0]]
    index = 1
    while index < len(rest):
        token = rest[index]
        if token == "--":
            kept.extend(rest[index:])
            break
        if isinstance(command, click.Group) and token in command.commands and not kept[1:]:
            command = command.commands[token]  # a subcommand: its own options from here
            kept.append(token)
            index += 1
            continue
        if token in FLAGS or _with_value(token):
            moved.append(token)
        elif token in VALUED:  # --config X, -c X
            moved.extend(rest[index:index + 2])
            index += 1
        else:
            kept.append(token)
            if _takes_value(command, token) and index + 1 < len(rest):
                index += 1
                kept.append(rest[index])
        index += 1
    return [*front, *moved, *kept]


def _with_value(token: str) -> bool:
    """``--config=X``, ``--log-level=X``, ``-cX``: a global option with its value attached."""
    name, equals, _ = token.partition("=")
    return (bool(equals) and name in VALUED - {"-c"}) or (token[:2] == "-c" and len(token) > 2)


def command_start(group: click.Group, args: list[str]) -> tuple[int, click.Command | None]:
    """Where the command's name is in ``args`` (after the global options in front), and it."""
    index = 0
    while index < len(args):
        token = args[index]
        if token == "--":
            return index, None
        if token in group.commands:
            return index, group.commands[token]
        if token in VALUED:
            index += 1  # its value
        elif not token.startswith("-"):
            return index, None  # an unknown command: click says so
        index += 1
    return index, None


def _takes_value(command: click.Command, token: str) -> bool:
    """Whether ``token`` is one of the command's options that consumes the next token."""
    if "=" in token or not token.startswith("-"):
        return False
    for param in command.params:
        if isinstance(param, click.Option) and token in (*param.opts, *param.secondary_opts):
            if param.is_flag or param.count:
                return False
            return not getattr(param, "_flag_needs_value", False)
    return False
