"""Match the names a spec uses (fields, cursor, key) to the columns a query returns."""

from __future__ import annotations

from collections.abc import Sequence


class ColumnMatchError(ValueError):
    """A wanted name matches no result column, or several case-insensitively."""


def match_column(wanted: str, columns: Sequence[str]) -> int:
    """Index of the column named ``wanted``: exact name first, then case-insensitively.

    PostgreSQL folds unquoted aliases to lower case, so ``AS USER_ID`` comes back as
    ``user_id``; the case-insensitive pass finds it. Two columns differing only in case make the
    case-insensitive match ambiguous.
    """
    exact = [i for i, name in enumerate(columns) if name == wanted]
    if len(exact) == 1:
        return exact[0]
    if len(exact) > 1:
        raise ColumnMatchError(f"{wanted!r} names {len(exact)} result columns")
    folded = [i for i, name in enumerate(columns) if name.lower() == wanted.lower()]
    if len(folded) == 1:
        return folded[0]
    if not folded:
        listed = ", ".join(columns) if columns else "(none)"
        raise ColumnMatchError(f"no result column named {wanted!r} (the query returns: {listed})")
    names = ", ".join(columns[i] for i in folded)
    raise ColumnMatchError(f"{wanted!r} matches several result columns case-insensitively: {names}")


def match_columns(wanted: Sequence[str], columns: Sequence[str]) -> list[int]:
    """Indices of several wanted names; raises on the first that does not match exactly once."""
    return [match_column(name, columns) for name in wanted]
