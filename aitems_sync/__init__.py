"""aitems-sync: keep NAVER Cloud AiTEMS datasets fed from SQL databases, incrementally.

The public Python API, for orchestrators (Airflow, Dagster) and scripts; the CLI renders the same
reports. See docs/api.md::

    import aitems_sync

    spec = aitems_sync.load_spec("sync.yaml")       # SpecError lists every problem
    report = aitems_sync.run(spec, ["users"])       # a RunReport; report.exit_code as the CLI's
    print(report.to_dict())

Nothing here exits the process or configures logging; failures raise the errors below, all
subclasses of ``AitemsSyncError`` with an ``exit_code`` and an operator message.

The names are loaded on first use: the extraction worker (``python -m aitems_sync.sync.worker``)
imports this package first, and the whole API would cost that process memory it never uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from aitems_sync.commands import plan, run, validate
    from aitems_sync.errors import (
        AitemsSyncError,
        ApiError,
        AuthError,
        InvalidRowsError,
        LockHeldError,
        SourceError,
        SpecError,
        SpecProblem,
        StateError,
        UsageError,
    )
    from aitems_sync.spec.load import load_spec
    from aitems_sync.spec.model import Spec
    from aitems_sync.sync.checks import ValidationReport
    from aitems_sync.sync.report import AmbiguousBatch, DatasetReport, RunReport

#: Where each public name lives.
_HOMES = {
    "load_spec": "aitems_sync.spec.load",
    "Spec": "aitems_sync.spec.model",
    "run": "aitems_sync.commands",
    "plan": "aitems_sync.commands",
    "validate": "aitems_sync.commands",
    "RunReport": "aitems_sync.sync.report",
    "DatasetReport": "aitems_sync.sync.report",
    "AmbiguousBatch": "aitems_sync.sync.report",
    "ValidationReport": "aitems_sync.sync.checks",
    **{name: "aitems_sync.errors" for name in (
        "AitemsSyncError", "UsageError", "SpecError", "SpecProblem", "SourceError", "StateError",
        "LockHeldError", "ApiError", "AuthError", "InvalidRowsError",
    )},
}

__all__ = [
    "AitemsSyncError",
    "AmbiguousBatch",
    "ApiError",
    "AuthError",
    "DatasetReport",
    "InvalidRowsError",
    "LockHeldError",
    "RunReport",
    "SourceError",
    "Spec",
    "SpecError",
    "SpecProblem",
    "StateError",
    "UsageError",
    "ValidationReport",
    "__version__",
    "load_spec",
    "plan",
    "run",
    "validate",
]


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use (PEP 562)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'aitems_sync' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
