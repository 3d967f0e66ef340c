"""Log line formats: JSON lines with stable keys for machines (``--log-format json``)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

#: Attributes a library log call may attach with ``extra=`` that become JSON keys.
EXTRA_KEYS = ("event", "dataset", "run_id", "counts", "status", "wait", "batch")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, plus the known extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in EXTRA_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode("utf-8")
