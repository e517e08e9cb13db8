"""In the Function app the host has spans of its own: the gateway's must neither count the host's request twice
nor break the scan's trace, and a worker that configured Azure Monitor itself must not get a second exporter."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.telemetry import spans
from tests.support import ROOT


@dataclass
class FakeJob:
    id: str
    device: str
    attempts: int
    trace_context: str | None


@pytest.fixture
def recorded() -> Iterator[tuple[InMemorySpanExporter, trace.Tracer]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("scangw")
    spans.install(tracer)
    try:
        yield exporter, tracer
    finally:
        spans.install(None)


def test_delivery_continues_the_scans_trace_and_links_the_host_invocation(recorded) -> None:  # type: ignore[no-untyped-def]
    exporter, tracer = recorded
    with spans.accept("http", "mfp1") as handle:  # a door with no host span around it: a request
        handle.job("j1")
        stored = spans.traceparent()
    assert stored is not None

    async def deliver() -> str:
        return "done"

    with tracer.start_as_current_span("host invocation") as host:  # what the Functions host makes current
        job = FakeJob("j1", "mfp1", 1, stored)
        assert asyncio.run(spans.delivering(job, deliver())) == "done"
    by_name = {s.name: s for s in exporter.get_finished_spans()}
    accept, deliver_span = by_name["scan.accept"], by_name["scan.deliver"]
    assert accept.kind == trace.SpanKind.SERVER
    assert deliver_span.context.trace_id == accept.context.trace_id  # one trace per scan
    assert deliver_span.parent is not None and deliver_span.parent.span_id == accept.context.span_id
    assert [link.context.span_id for link in deliver_span.links] == [host.get_span_context().span_id]
    assert deliver_span.attributes is not None and deliver_span.attributes["scangw.job_id"] == "j1"


def test_acceptance_under_the_hosts_request_is_internal(recorded) -> None:  # type: ignore[no-untyped-def]
    exporter, tracer = recorded
    with tracer.start_as_current_span("host request", kind=trace.SpanKind.SERVER) as host:
        with spans.accept("http", "mfp1"):
            pass
    accept = next(s for s in exporter.get_finished_spans() if s.name == "scan.accept")
    assert accept.kind == trace.SpanKind.INTERNAL  # the host's request is the one request
    assert accept.context.trace_id == host.get_span_context().trace_id


PROBE = """
import sys
from gateway.config import load_settings
from gateway.telemetry import metrics, spans
from gateway.telemetry.export import enable
settings = load_settings({"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x"})
assert enable(settings, "functions", env={"PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "true"})
assert metrics.enabled() and spans.enabled()
print("azure.monitor.opentelemetry" in sys.modules)
"""


def test_a_worker_that_exports_itself_gets_no_second_exporter() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
