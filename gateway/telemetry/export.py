"""Export to Application Insights through azure-monitor-opentelemetry, imported only when a connection string
is set (about 40 MB and a second of start-up otherwise spent for nothing in the SMTP door).

Authentication: Application Insights accepts Entra tokens only (infra: local auth disabled). In Azure the
managed identity endpoint is present (Container Apps and Functions set IDENTITY_ENDPOINT), and its token is
used; elsewhere the exporter reads APPLICATIONINSIGHTS_AUTHENTICATION_STRING itself.

Double counting in the Function app: with PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true the Python worker
configures Azure Monitor itself, so the gateway only adds its instruments to the worker's providers; otherwise
(the infra default, PYTHON_ENABLE_OPENTELEMETRY=true) the gateway configures the one exporter and the host,
told by that setting, leaves the worker's logs to it. The library instrumentations (httpx, requests, urllib,
Azure SDK) stay off: they would record every storage call and the Graph upload-session URLs, whose query
string is a credential; the gateway's own spans describe each Graph call instead.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from gateway.config import Settings

log = logging.getLogger("scangw.telemetry")

#: Instrumentations azure-monitor-opentelemetry enables by default, all switched off (see above).
LIBRARIES = ("azure_sdk", "django", "fastapi", "flask", "httpx", "httpx2", "psycopg2", "requests", "urllib", "urllib3")
_started: list[str] = []


def _true(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in {"1", "true", "yes"}


def enable(settings: Settings, role: str, env: Mapping[str, str] | None = None) -> bool:
    """Start export once per process; returns False when the exporter is not installed."""
    env = os.environ if env is None else env
    if _started:
        return True
    from gateway.telemetry import metrics, spans

    if _true(env, "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"):
        log.info("event=telemetry.export mode=functions-worker role=%s", role)
    else:
        try:
            from azure.monitor.opentelemetry import configure_azure_monitor
            from opentelemetry.sdk.resources import Resource
        except ImportError:
            log.warning("event=telemetry.export mode=off reason=azure-monitor-opentelemetry is not installed")
            return False
        options: dict[str, object] = {}
        if env.get("IDENTITY_ENDPOINT") or env.get("MSI_ENDPOINT"):
            from azure.identity import ManagedIdentityCredential

            options["credential"] = ManagedIdentityCredential(client_id=settings.azure_client_id)
        if not env.get("OTEL_TRACES_SAMPLER"):
            # The distro's default limits spans per second, dropping single spans of a trace under a burst;
            # a ratio samples by trace id, the same decision in every process, so a scan's trace stays whole.
            options["sampling_ratio"] = 1.0
        configure_azure_monitor(
            connection_string=settings.appinsights_connection_string,
            logger_name="scangw",
            resource=Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or f"scangw-{role}"}),
            instrumentation_options={name: {"enabled": False} for name in LIBRARIES},
            enable_live_metrics=False,
            **options,
        )
        _only_gateway_spans()
        log.info("event=telemetry.export mode=azure-monitor role=%s entra=%s", role, "credential" in options)
    from opentelemetry import metrics as otel_metrics
    from opentelemetry import trace

    metrics.install(otel_metrics.get_meter("scangw"))
    spans.install(trace.get_tracer("scangw"))
    _started.append(role)
    return True


def _only_gateway_spans() -> None:
    """Switch off the spans libraries make on their own (kiota and its Azure auth provider trace every
    middleware step, with URLs as attributes): the gateway's spans say what happened to a scan. Uses the SDK's
    tracer configurator, still experimental, so a change there only leaves those spans on."""
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import _TracerConfig

        provider = trace.get_tracer_provider()
        provider._set_tracer_configurator(  # type: ignore[attr-defined]
            tracer_configurator=lambda scope: _TracerConfig(is_enabled=scope.name == "scangw")
        )
    except (ImportError, AttributeError, TypeError) as exc:
        log.warning("event=telemetry.library_spans result=kept error=%s", exc)
