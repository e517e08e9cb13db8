"""Without APPLICATIONINSIGHTS_CONNECTION_STRING the SMTP door loads nothing of OpenTelemetry or Azure Monitor:
the exporter alone costs about 40 MB and a second of start-up, and every instrumentation call is a no-op."""

from __future__ import annotations

import subprocess
import sys

from tests.support import ROOT

PROBE = """
import sys
from gateway.config import load_settings
from gateway.telemetry import configure_logging, metrics, spans
import gateway.intake.smtp, gateway.run, gateway.delivery.agent
configure_logging(load_settings({"SCANGW_STORAGE": "local:/nonexistent"}))
metrics.scan_accepted("smtp", "mfp1")
with spans.accept("smtp", "mfp1") as span:
    span.job("x")
assert spans.traceparent() is None
print(sorted({m for m in sys.modules if m.startswith(("opentelemetry", "azure.monitor"))}))
"""


def test_the_smtp_door_without_a_connection_string_imports_no_telemetry_library() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
