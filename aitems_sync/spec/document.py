"""A spec file being read: the line of every key path, and the problems found, located.

Shared by reading (``load``) and building (``build``): each reports problems here, so that every
problem is shown at once with file, line and dotted key, and values that may be secrets never are.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

from aitems_sync.errors import SpecProblem

KeyPath = tuple[str | int, ...]

#: Keys whose values are never shown in a message, wherever they come from.
_SENSITIVE = frozenset({"secret_key", "access_key", "url", "state", "pushgateway", "endpoint"})


def dotted(path: KeyPath) -> str:
    """``("datasets", "users", "fields", 0, "type")`` -> ``datasets.users.fields[0].type``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


@dataclass
class Document:
    """One spec file being read: the line of each key path, and the problems found so far."""

    file: str
    folder: Path
    lines: dict[KeyPath, int] = field(default_factory=dict)
    #: Paths whose value came (partly) from the environment or a file.
    tainted: set[KeyPath] = field(default_factory=set)
    problems: list[SpecProblem] = field(default_factory=list)
    #: Sections the command does not use: a value taken from outside the file there (a
    #: variable that is not set, a file missing) is no problem for it (``load_spec``).
    unused: tuple[KeyPath, ...] = ()
    _bad: set[KeyPath] = field(default_factory=set)

    def line(self, path: KeyPath) -> int | None:
        """The line of ``path``, or of its nearest ancestor written in the file."""
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path)

    def bad(self, path: KeyPath) -> bool:
        """Whether a problem was reported at ``path`` or above it (so checks below are moot)."""
        return any(path[: len(p)] == p for p in self._bad)

    def add(
        self, path: KeyPath, message: str, *, line: int | None = None, mark: bool = True
    ) -> None:
        """Report a problem at ``path``, once: later checks of a reported path stay quiet."""
        if self.bad(path):
            return
        if mark or self._unused(path):
            self._bad.add(path)
        if self._unused(path):
            return
        where = line if line is not None else self.line(path)
        self.problems.append(SpecProblem(self.file, where, dotted(path), message))

    def _unused(self, path: KeyPath) -> bool:
        return self.is_tainted(path) and any(path[: len(u)] == u for u in self.unused)

    def is_tainted(self, path: KeyPath) -> bool:
        """Whether the value at ``path`` (or anything inside it) came from outside the file."""
        return any(t[: len(path)] == path for t in self.tainted)

    def show(self, path: KeyPath, value: object) -> str:
        """``value`` for a message, or ``the value`` when it may be a secret."""
        names = [p for p in path if isinstance(p, str)]
        secret = self.is_tainted(path) or bool(names and names[-1] in _SENSITIVE)
        if secret or not isinstance(value, str | int | float) or isinstance(value, bool):
            return "the value"
        text = repr(value)
        return text if len(text) <= 80 else text[:77] + "..."

    def suggest(self, path: KeyPath, value: object, choices: list[str]) -> str:
        """``; did you mean 'x'?`` when a choice is close to ``value`` and it may be shown."""
        if not isinstance(value, str) or self.is_tainted(path):
            return ""
        close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
        return f"; did you mean {close[0]!r}?" if close else ""
