"""Push a run's per-dataset figures to a Prometheus Pushgateway (``metrics.pushgateway``).

One group per dataset (``job``, ``dataset``), pushed with POST so that a failed run replaces
the counts but leaves ``aitems_sync_last_success_timestamp_seconds`` of the last good run in
place: alert on its age. A push that fails is logged and does not fail the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway

from aitems_sync.spec.model import MetricsConfig
from aitems_sync.sync.report import OK, DatasetReport, RunReport

log = logging.getLogger(__name__)

PREFIX = "aitems_sync_"

#: Gauges per dataset: name, help, and how to read it off the report.
_GAUGES: tuple[tuple[str, str, Callable[[DatasetReport], float]], ...] = (
    ("rows_read", "Rows read from the source in the last run", lambda d: d.read),
    ("rows_sent", "Rows acknowledged by AiTEMS in the last run", lambda d: d.sent),
    ("rows_unchanged", "Rows skipped because the ledger shows them delivered",
     lambda d: d.unchanged),
    ("rows_invalid", "Rows quarantined in the last run", lambda d: d.invalid),
    ("rows_null_cursor", "Rows never synced because their cursor is NULL (counted each run)",
     lambda d: d.null_cursor),
    ("batches", "Upload batches acknowledged in the last run", lambda d: d.batches),
    ("ambiguous_batches", "Batches that may have been delivered twice", lambda d: len(d.ambiguous)),
    ("duration_seconds", "Seconds the dataset took in the last run", lambda d: d.seconds),
    ("last_run_ok", "1 if the dataset's last run succeeded, else 0", lambda d: d.status == OK),
)


def push_run_metrics(report: RunReport, config: MetricsConfig, *, now: float,
                     timeout: float = 10.0) -> None:
    """Push the report's figures; ``now`` (epoch seconds) stamps a successful dataset."""
    if not config.pushgateway:
        return
    for dataset in report.datasets:
        registry = CollectorRegistry()
        _fill(registry, dataset, now)
        try:
            pushadd_to_gateway(config.pushgateway, job=config.job, registry=registry,
                               grouping_key={"dataset": dataset.dataset}, timeout=timeout)
        except OSError as error:
            log.warning("could not push metrics for %s to the Pushgateway: %s",
                        dataset.dataset, error, extra={"event": "metrics_push_failed"})


def _fill(registry: CollectorRegistry, dataset: DatasetReport, now: float) -> None:
    for name, help_text, read in _GAUGES:
        Gauge(PREFIX + name, help_text, registry=registry).set(float(read(dataset)))
    if dataset.status == OK:
        Gauge(PREFIX + "last_success_timestamp_seconds",
              "When the dataset last synced without error (epoch seconds)",
              registry=registry).set(now)
