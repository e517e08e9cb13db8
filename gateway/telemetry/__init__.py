"""Telemetry: log lines (SCANGW_LOG_FORMAT text or json, control characters escaped), and metrics and spans
through OpenTelemetry, exported to Application Insights when APPLICATIONINSIGHTS_CONNECTION_STRING is set.

    escape      one rule for every logged value
    fields      key=value fields read from a line's format string (alerts match these, never free text)
    records     the log record factory that applies both
    formats     the text and JSON formatters
    metrics     the contract's metrics, one call per event; no-ops until export starts
    spans       scan.accept, scan.deliver and the Graph calls; no-ops until export starts
    reasons     a failed scan's reason class and remedy
    export      azure-monitor-opentelemetry, imported only when needed
"""

from __future__ import annotations

import logging
import sys

from gateway.config import Settings
from gateway.telemetry import records
from gateway.telemetry.formats import JsonFormatter, TextFormatter


def configure_logging(settings: Settings | None = None, level: int = logging.INFO, role: str | None = None) -> None:
    """One handler on stderr in the configured format; export when a connection string is set."""
    records.install()
    root = logging.getLogger()
    log_format = getattr(settings, "log_format", "text") if settings is not None else "text"
    formatter: logging.Formatter = JsonFormatter() if log_format == "json" else TextFormatter()
    mine: list[logging.Handler] = [h for h in root.handlers if getattr(h, "_scangw", False)]
    if not mine:
        stream = logging.StreamHandler(sys.stderr)
        stream._scangw = True  # type: ignore[attr-defined]
        root.addHandler(stream)
        mine = [stream]
    for handler in mine:
        handler.setFormatter(formatter)
    root.setLevel(level)
    # Library chatter (per-request HTTP logs of the Azure SDK) would drown the event lines.
    for noisy in ("azure", "httpx", "httpcore", "uvicorn.access", "mail.log", "msal"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if settings is not None and settings.appinsights_connection_string:
        from gateway.telemetry.export import enable

        enable(settings, role or _role())


def _role() -> str:
    """The command this process runs (`smtp`, `worker`...), or `functions` inside the Function host."""
    argv = [a for a in sys.argv[1:] if not a.startswith("-")]
    return argv[0] if argv and sys.argv[0].endswith(("scangw", "__main__.py", "gateway")) else "functions"
