"""The gateway's spans (contract section 9): `scan.accept` at a door, `scan.deliver` in the worker or Function,
and one child per Graph call, each with `scangw.job_id` and `scangw.device`.

The acceptance writes its W3C `traceparent` into the job record; delivery, in another process (container,
Function app, `scangw worker`), continues that trace, so one scan is one end-to-end transaction in Application
Insights. No span carries a body, password, token, upload-session URL or recipient. Like metrics, nothing of
OpenTelemetry is imported until export is switched on (`install`).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar, cast

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Coroutine[Any, Any, Any]])

_tracer: Any = None
#: scangw.job_id / scangw.device of the delivery running in this task, for its Graph child spans.
_delivery: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("scangw_delivery", default=None)


def install(tracer: Any) -> None:
    global _tracer
    _tracer = tracer


def enabled() -> bool:
    return _tracer is not None


class _Handle:
    def __init__(self, span: Any = None) -> None:
        self.span = span

    def job(self, job_id: str) -> None:
        if self.span is not None and job_id:
            self.span.set_attribute("scangw.job_id", job_id)

    def set(self, key: str, value: str | int | float | bool) -> None:
        if self.span is not None:
            self.span.set_attribute(key, value)


@contextlib.contextmanager
def _span(name: str, kind: Any, attributes: dict[str, Any], **options: Any) -> Iterator[Any]:
    """A current span whose failure records only the error's type: exception messages may quote a recipient
    or a mailbox's answer, which stay out of telemetry."""
    from opentelemetry.trace import Status, StatusCode

    with _tracer.start_as_current_span(
        name, kind=kind, attributes=attributes, record_exception=False, set_status_on_exception=False, **options
    ) as span:
        try:
            yield span
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise


def _kind_for_root(root_kind: str) -> Any:
    """A span with no parent is a request in Application Insights; under the Functions host's own invocation
    span it stays internal, so the host's request is not counted twice."""
    from opentelemetry import trace

    parent = trace.get_current_span().get_span_context()
    return getattr(trace.SpanKind, root_kind) if not parent.is_valid else trace.SpanKind.INTERNAL


@contextlib.contextmanager
def accept(door: str, device: str) -> Iterator[_Handle]:
    if _tracer is None:
        yield _Handle()
        return
    attributes = {"scangw.door": door, "scangw.device": device}
    with _span("scan.accept", _kind_for_root("SERVER"), attributes) as span:
        yield _Handle(span)


def traceparent() -> str | None:
    """The W3C traceparent of the current span, for the job record (None when export is off)."""
    if _tracer is None:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent")


def current_ids() -> dict[str, str]:
    """trace_id / span_id of the current span for a JSON log line; empty when there is none."""
    if _tracer is None:
        return {}
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


async def delivering(job: Any, work: Awaitable[T]) -> T:
    """Await one delivery attempt inside `scan.deliver`, continuing the trace its acceptance started.

    In the Function app the host's invocation span is current; it becomes a link, not the parent, so the
    scan's trace stays one transaction from the door to Graph.
    """
    if _tracer is None:
        return await work
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    current = trace.get_current_span().get_span_context()
    stored = getattr(job, "trace_context", None)
    parent = TraceContextTextMapPropagator().extract({"traceparent": stored}) if stored else None
    links = [trace.Link(current)] if parent is not None and current.is_valid else None
    attributes = {"scangw.job_id": job.id, "scangw.device": job.device, "scangw.attempt": int(job.attempts)}
    token = _delivery.set({"scangw.job_id": job.id, "scangw.device": job.device})
    try:
        with _span("scan.deliver", trace.SpanKind.CONSUMER, attributes, context=parent, links=links) as span:
            outcome = await work
            span.set_attribute("scangw.outcome", type(outcome).__name__.lower())
            return outcome
    finally:
        _delivery.reset(token)


def graph_call(operation: str) -> Callable[[F], F]:
    """Decorate a GraphApi method `(self, mailbox, ...)`: one client span per call, named `graph.<operation>`."""

    def decorate(method: F) -> F:
        @functools.wraps(method)
        async def traced(self: Any, mailbox: str, *args: Any, **kwargs: Any) -> Any:
            if _tracer is None:
                return await method(self, mailbox, *args, **kwargs)
            from opentelemetry import trace

            attributes: dict[str, Any] = {**(_delivery.get() or {}), "scangw.mailbox": mailbox.lower()}
            attributes["graph.operation"] = operation
            with _span(f"graph.{operation}", trace.SpanKind.CLIENT, attributes) as span:
                try:
                    return await method(self, mailbox, *args, **kwargs)
                except Exception as exc:
                    failure = getattr(exc, "failure", None)
                    if failure is not None:
                        if failure.status is not None:
                            span.set_attribute("http.response.status_code", int(failure.status))
                        span.set_attribute("graph.error_code", str(failure.code)[:100])
                    raise

        return cast(F, traced)

    return decorate
