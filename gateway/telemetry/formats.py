"""The two log formats (SCANGW_LOG_FORMAT): `text`, one `key=value` event line per record for people and
journald, and `json`, one object per line for log shippers. Both escape control characters; a traceback in
text mode is indented under its line, so no line of it can pass for an event."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from gateway.core.escape import escape

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def _trace_ids(record: logging.LogRecord) -> dict[str, str]:
    """The OpenTelemetry trace and span of the record, when one is active (export on and inside a span)."""
    from gateway.telemetry import spans

    return spans.current_ids()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        text = super().formatException(ei)
        return "\n".join("    | " + escape(line) for line in text.splitlines())

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - logging's name
        return "\n".join("    | " + escape(line) for line in stack_info.splitlines())


class JsonFormatter(logging.Formatter):
    """json.dumps escapes every control character (and, ASCII-only, every separator and bidi mark)."""

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        return logging.Formatter.formatException(self, ei)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if callable(fields):
            for key, value in fields().items():
                entry.setdefault(key, value)
        entry.update(_trace_ids(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=True, default=str)
