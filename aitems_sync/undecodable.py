"""Values a source's driver could not turn into Python values, kept as what the database sent.

One such value must cost one row, not the dataset (design: bad rows are quarantined, never
silently dropped, and never block the rest). The source puts an :class:`Undecodable` in the
value's place; shaping rejects the row and says why, the quarantine keeps the raw text, and a
cursor or key that cannot be read stops the dataset at that row, after the rows before it are
delivered (a row that cannot be placed cannot be tracked). How each driver produces one is in
:mod:`aitems_sync.source.decode`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A value as the database sent it (``raw``, as text, undecodable bytes escaped) and why
    the driver could not read it (``reason``)."""

    raw: str
    reason: str

    def describe(self) -> str:
        """The value and the reason, for messages: ``'infinity' (timestamp too large ...)``."""
        raw = self.raw if len(self.raw) <= 80 else self.raw[:77] + "..."
        return f"{raw!r} ({self.reason})"
