"""The one exception tree of aitems-sync, grouped by what the caller should do.

Every class carries the process exit code the CLI uses and a message written for the operator:
what went wrong, where, and what to do. No message ever holds a secret, a signature or a payload.

    AitemsSyncError                 exit 1   (root; only the CLI catches it)
    ├── UsageError                  exit 2   bad command line
    ├── SpecError                   exit 2   the spec file is wrong (all problems at once)
    ├── SourceError                 exit 1   the source database failed
    │   ├── QueryError                       the database refused the query itself
    │   └── UnreadableRowError               a row's cursor or key the driver cannot read
    ├── StateError                  exit 1   the state store failed
    │   ├── HandoverPendingError             a bootstrap's hand-over is not finished
    │   ├── LockHeldError           exit 75  another run holds a dataset's lease
    │   └── LeaseLostError          exit 1   this run can no longer prove it holds one
    ├── ObjectStorageError          exit 1   a bootstrap file was not written, or not read
    ├── ExportError                 exit 2   bootstrap --from: no usable file, or its header
    ├── ApiError                    exit 1   AiTEMS answered with an error or not at all
    │   ├── RetriableApiError                connection errors, 429, 500, 503, 504
    │   ├── RetriesExhaustedError            a retriable failure until the retries ran out
    │   ├── FatalApiError                    400, 401, 403, 404: retrying will not help
    │   │   ├── BadRequestError              400: the rows or the request are wrong
    │   │   ├── AuthError                    401 or 403
    │   │   └── NotFoundError                404
    │   └── PayloadTooLargeError             413: split the batch and try again
    └── InvalidRowsError            exit 3   a dataset passed max_invalid or on_invalid: fail

A run stopped by SIGTERM or SIGINT is not an error: its report carries exit code 143 or 130.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aitems_sync.redact import redact

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INVALID_ROWS = 3
EXIT_LOCKED = 75
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class AitemsSyncError(Exception):
    """Root of every error aitems-sync raises on purpose."""

    exit_code: int = EXIT_FAILED

    def __init__(self, message: str) -> None:
        message = redact(message)  # a driver's or a URL's words may hold a credential
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(AitemsSyncError):
    """The command line is wrong (unknown dataset, bad option value)."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class SpecProblem:
    """One problem found in a spec file: where it is and what is wrong."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class SpecError(AitemsSyncError):
    """The spec is invalid. Holds every problem found, so the operator fixes them in one go."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: Sequence[SpecProblem],
                 warnings: Sequence[SpecProblem] = ()) -> None:
        self.problems = tuple(problems)
        self.warnings = tuple(warnings)
        count = len(self.problems)
        head = f"the spec has {count} problem{'s' if count != 1 else ''}:"
        lines = [head, *(f"  {p}" for p in self.problems)]
        if self.warnings:
            lines += ["and warnings:", *(f"  {w}" for w in self.warnings)]
        super().__init__("\n".join(lines))


class SourceError(AitemsSyncError):
    """The source database could not be reached or a query failed."""


class QueryError(SourceError):
    """The database refused a query itself (its syntax, a table or column it does not have):
    running again cannot help, the query must change. ``run`` reports it as a spec error."""


class UnreadableRowError(SourceError):
    """A row's cursor or key holds a value the source's driver cannot read: the rows before it
    were delivered, the dataset stops at it."""


class StateError(AitemsSyncError):
    """The state store could not be opened, migrated or written."""


class HandoverPendingError(StateError):
    """A bootstrap asked AiTEMS to read a dataset's file and did not take the snapshot: runs
    refuse the dataset until a bootstrap finishes (or gives up) the hand-over."""


class LockHeldError(StateError):
    """Another run holds the lease on a dataset."""

    exit_code = EXIT_LOCKED


class LeaseLostError(StateError):
    """This run can no longer prove it holds a dataset's lease (another run took it over, or it
    could not renew it in time): it sends and commits nothing more for that dataset."""


class ObjectStorageError(AitemsSyncError):
    """A first load's file could not be written to Object Storage, or AiTEMS could not read it
    (``bootstrap``)."""


class ExportError(AitemsSyncError):
    """The file ``bootstrap --from`` names cannot be registered as it is: no ``.csv`` or
    ``.csv.gz`` file under the URL, several, or a header that differs from the dataset's fields.
    Retrying will not help: the export, the URL or the spec must change (exit 2)."""

    exit_code = EXIT_USAGE


class ApiError(AitemsSyncError):
    """AiTEMS (or its API gateway) answered with an error, or did not answer.

    ``status`` is None when no HTTP answer arrived. ``body`` is the raw answer, cut to a few
    hundred characters, kept for the operator and for quarantine records. ``ambiguous`` is True
    when an attempt of the request may have been stored by AiTEMS although none succeeded (a
    lost answer, then a final error): what it carried may be there.
    """

    def __init__(
        self,
        message: str,
        *,
        method: str = "",
        path: str = "",
        status: int | None = None,
        error_code: str | None = None,
        body: str = "",
        ambiguous: bool = False,
    ) -> None:
        super().__init__(message)
        self.method = method
        self.path = path
        self.status = status
        self.error_code = error_code
        self.body = body
        self.ambiguous = ambiguous


class RetriableApiError(ApiError):
    """A failure that may pass if the same request is sent again later."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class RetriesExhaustedError(ApiError):
    """A retriable failure that kept happening until the attempts or the time ran out: retrying
    at once will not help (the last failure is its ``__cause__``).

    ``ambiguous`` is True when one of the failed attempts may have been stored by AiTEMS.
    """


class FatalApiError(ApiError):
    """A failure that will happen again whatever we do: do not retry."""


class BadRequestError(FatalApiError):
    """400: AiTEMS rejected the request (for an upload: some rows do not fit the schema)."""


class AuthError(FatalApiError):
    """401 or 403: the keys, the clock or the permissions are wrong."""


class NotFoundError(FatalApiError):
    """404: the service, dataset or schema does not exist."""


class PayloadTooLargeError(ApiError):
    """413: the body is over the gateway's limit; the engine splits the batch."""


class InvalidRowsError(AitemsSyncError):
    """A dataset had more invalid rows than ``max_invalid`` allows, or ``on_invalid: fail``."""

    exit_code = EXIT_INVALID_ROWS
