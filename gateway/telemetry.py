"""Logging: one line per event on stderr; Azure Monitor export when APPLICATIONINSIGHTS_CONNECTION_STRING is set."""

from __future__ import annotations

import logging
import os
import sys

from gateway.config import Settings

_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(settings: Settings | None = None, level: int = logging.INFO) -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_scangw", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler._scangw = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    # Library chatter (per-request HTTP logs of the Azure SDK) would drown the event lines.
    for noisy in ("azure", "httpx", "httpcore", "uvicorn.access", "mail.log", "msal"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if settings is not None and settings.appinsights_connection_string:
        enable_azure_monitor(settings)


def enable_azure_monitor(settings: Settings) -> None:
    """Optional dependency: the Function host may already export; a second exporter would duplicate."""
    try:
        from azure.monitor.opentelemetry import configure_azure_monitor
    except ImportError:
        logging.getLogger("scangw").warning("azure-monitor-opentelemetry not installed; telemetry export off")
        return
    kwargs = {}
    if os.environ.get("IDENTITY_ENDPOINT") or os.environ.get("MSI_ENDPOINT"):
        # App Insights with local auth disabled (infra/) accepts only Entra-authenticated ingestion.
        from azure.identity import ManagedIdentityCredential

        kwargs["credential"] = ManagedIdentityCredential(client_id=settings.azure_client_id)
    configure_azure_monitor(connection_string=settings.appinsights_connection_string, logger_name="scangw", **kwargs)
