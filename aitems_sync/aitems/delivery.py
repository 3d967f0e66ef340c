"""Deliver one batch to AiTEMS, splitting it on 413 and bisecting it on 400.

Runs in the engine's upload threads. It decides nothing about marks or the ledger: it reports
which rows were acknowledged, which ones AiTEMS refused (with its answer), and whether any
request's answer was lost so the rows may have landed twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from aitems_sync.errors import AitemsSyncError, BadRequestError, PayloadTooLargeError

log = logging.getLogger(__name__)


class UploadOutcome(Protocol):
    @property
    def ambiguous(self) -> bool: ...


class Uploader(Protocol):
    """The one call the engine needs from the AiTEMS client."""

    def upload_encoded(
        self, service_id: str, dataset_id: str, dataset_type: str, rows: Sequence[bytes]
    ) -> UploadOutcome: ...


@dataclass(frozen=True)
class Target:
    """Where a dataset's rows go."""

    service_id: str
    dataset_id: str
    dataset_type: str


@dataclass
class Delivery:
    """The outcome of delivering one batch: row indices acknowledged and refused.

    ``error`` is set when the batch failed (retries used up, 401/403, ...): the rows in
    ``delivered`` were acknowledged before that (halves of a split batch), the others were not.
    """

    delivered: list[int] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    requests: int = 0
    ambiguous: bool = False
    error: AitemsSyncError | None = None


def deliver(uploader: Uploader, target: Target, rows: Sequence[bytes]) -> Delivery:
    """Upload ``rows``; on 413 split in halves, on 400 bisect down to the refused rows.

    A single row that is still too large, or that AiTEMS refuses, is reported as rejected with
    the server's answer; every other row ends up delivered. Any other error ends the delivery
    and is returned in ``Delivery.error``, with the rows acknowledged before it, so that the
    engine records those and then stops the dataset.
    """
    outcome = Delivery()
    pending: list[list[int]] = [list(range(len(rows)))]
    while pending:
        indices = pending.pop()
        outcome.requests += 1
        try:
            result = uploader.upload_encoded(
                target.service_id, target.dataset_id, target.dataset_type,
                rows if len(indices) == len(rows) else [rows[i] for i in indices],
            )
        except (PayloadTooLargeError, BadRequestError) as error:
            outcome.ambiguous = outcome.ambiguous or error.ambiguous
            if len(indices) == 1:
                outcome.rejected.append((indices[0], _server_answer(error)))
                continue
            half = len(indices) // 2
            log.info(
                "%s on %d rows of %s: splitting", error.status, len(indices), target.dataset_id,
                extra={"event": "split", "status": error.status},
            )
            # Pushed last-first so the first half goes first: delivery keeps row order.
            pending.append(indices[half:])
            pending.append(indices[:half])
            continue
        except AitemsSyncError as error:
            outcome.error = error
            return outcome
        outcome.ambiguous = outcome.ambiguous or result.ambiguous
        outcome.delivered.extend(indices)
    return outcome


def _server_answer(error: PayloadTooLargeError | BadRequestError) -> str:
    if isinstance(error, PayloadTooLargeError):
        return f"AiTEMS answered 413: the row alone is over the gateway's body limit ({error})"
    body = error.body or error.message
    return f"AiTEMS answered 400: {body}"
