"""The gateway's metrics (contract section 9): one function per event, called with one line where it happens.

Names and dimensions are the contract dashboards and alerts are built on (infra/app/kql/*.kql). Until export is
switched on (`install`), every function returns at once and nothing of OpenTelemetry is imported: the SMTP
door without APPLICATIONINSIGHTS_CONNECTION_STRING pays neither memory nor time for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from gateway.core.errors import (
    AuthenticationFailed,
    AuthThrottled,
    BusyError,
    MessageTooLarge,
    RecipientNotAllowed,
    StorageUnavailable,
)
from gateway.telemetry.reasons import failure_class

log = logging.getLogger("scangw.telemetry")

ACCEPTED = "scangw.scans.accepted"
REFUSED = "scangw.scans.refused"
DELIVERED = "scangw.scans.delivered"
FAILED = "scangw.scans.failed"
LATENCY = "scangw.delivery.latency"
THROTTLED = "scangw.graph.throttled"
AUTH_FAILURES = "scangw.auth.failures"
QUEUE_AGE = "scangw.queue.oldest_age"
CERT_DAYS = "scangw.tls.cert_days_left"
#: Each metric's dimensions (contract section 9; `device` on auth failures only for a username that exists,
#: `door` on the certificate gauge added so a second TLS listener can report its own).
DIMENSIONS: dict[str, frozenset[str]] = {
    ACCEPTED: frozenset({"door", "device"}),
    REFUSED: frozenset({"door", "reason"}),
    DELIVERED: frozenset({"device", "mailbox"}),
    FAILED: frozenset({"device", "mailbox", "reason"}),
    LATENCY: frozenset({"mailbox"}),
    THROTTLED: frozenset({"mailbox", "status"}),
    AUTH_FAILURES: frozenset({"door", "device"}),
    QUEUE_AGE: frozenset(),
    CERT_DAYS: frozenset({"door"}),
}
NAMES = tuple(DIMENSIONS)


class _Instruments:
    def __init__(self, meter: Any) -> None:
        self.accepted = meter.create_counter(ACCEPTED, unit="{scan}", description="Scans stored and queued")
        self.refused = meter.create_counter(REFUSED, unit="{scan}", description="Scans refused at a door")
        self.delivered = meter.create_counter(DELIVERED, unit="{scan}", description="Scans Graph accepted")
        self.failed = meter.create_counter(FAILED, unit="{scan}", description="Scans that ended failed")
        self.latency = meter.create_histogram(LATENCY, unit="s", description="Acceptance to Graph's accepted send")
        self.throttled = meter.create_counter(THROTTLED, unit="{response}", description="Graph 429/503 answers")
        self.auth_failures = meter.create_counter(AUTH_FAILURES, unit="{login}", description="Refused logins")
        self.queue_age = meter.create_gauge(QUEUE_AGE, unit="s", description="Age of the oldest unfinished job")
        meter.create_observable_gauge(
            CERT_DAYS, callbacks=[_observe_certificates], unit="d", description="Days until the TLS cert expires"
        )


_on: _Instruments | None = None
_certificates: dict[str, Path] = {}
#: Refusals already counted where they were raised (the HTTP door's catch-all must not count them again).
_counted: weakref.WeakSet[BaseException] = weakref.WeakSet()


def install(meter: Any) -> None:
    global _on
    _on = _Instruments(meter)


def enabled() -> bool:
    return _on is not None


# -- intake ----------------------------------------------------------------------------------------------------


def refusal_reason(exc: BaseException) -> str:
    """`reason` of scangw.scans.refused: auth | recipient | size | storage | busy | input."""
    if isinstance(exc, AuthenticationFailed | AuthThrottled):
        return "auth"
    if isinstance(exc, RecipientNotAllowed):
        return "recipient"
    if isinstance(exc, MessageTooLarge):
        return "size"
    if isinstance(exc, StorageUnavailable):
        return "storage"
    if isinstance(exc, BusyError):
        return "busy"
    return "input"


def scan_accepted(door: str, device: str) -> None:
    if _on is not None:
        _on.accepted.add(1, {"door": door, "device": device})


def scan_refused(door: str, reason: str | BaseException) -> None:
    if _on is None:
        return
    if isinstance(reason, BaseException):
        if reason in _counted:
            return
        _counted.add(reason)
        reason = refusal_reason(reason)
    _on.refused.add(1, {"door": door, "reason": reason})


class _Registry(Protocol):
    async def get(self, name: str) -> Any: ...


async def login_refused(door: str, username: str, registry: _Registry) -> None:
    """A failed or throttled login: scangw.auth.failures, and a refused scan (reason auth). The username becomes
    the `device` dimension only when such a device exists: guessed names (or a password typed into the
    username field) never reach telemetry."""
    if _on is None:
        return
    attributes = {"door": door}
    try:
        device = await registry.get(username) if username and len(username) <= 64 else None
    except Exception:  # noqa: BLE001 - a storage hiccup must not turn a 535 into a 451
        device = None
    if device is not None:
        attributes["device"] = device.name
    _on.auth_failures.add(1, attributes)
    _on.refused.add(1, {"door": door, "reason": "auth"})


async def http_refused(method: str, authorization: str | None, exc: BaseException, services: Any) -> None:
    """The HTTP door's catch-all: a refused login (credentials were sent and failed) or a refused upload."""
    if _on is None:
        return
    if isinstance(exc, AuthenticationFailed | AuthThrottled):
        if authorization:  # a client trying without credentials first (WebDAV style) is not a failed login
            svc = await services()
            await login_refused("http", _basic_username(authorization), svc.registry)
        return
    if method in ("PUT", "POST"):
        scan_refused("http", exc)


def _basic_username(header: str) -> str:
    import base64
    import binascii

    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return ""
    try:
        return base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[0]
    except (binascii.Error, UnicodeDecodeError):
        return ""


async def accepting(door: str, device: str, work: Awaitable[Any]) -> Any:
    """Await an acceptance (`Intake.accept_*`) inside the `scan.accept` span and count its outcome."""
    from gateway.telemetry import spans

    with spans.accept(door, device) as span:
        try:
            job = await work
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception as exc:
            scan_refused(door, exc)
            raise
        span.job(getattr(job, "id", ""))
    scan_accepted(door, device)
    return job


# -- delivery --------------------------------------------------------------------------------------------------


def _age_seconds(created: str, now: float) -> float:
    try:
        moment = datetime.strptime(created, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return 0.0
    return max(0.0, now - moment)


def scan_delivered(job: Any, mailbox: str | None, now: Callable[[], float] = time.time) -> None:
    """Graph accepted the send: the scan is delivered; latency counts from acceptance."""
    if _on is None:
        return
    mailbox = (mailbox or "").lower()
    _on.delivered.add(1, {"device": job.device, "mailbox": mailbox})
    _on.latency.record(_age_seconds(job.created, now()), {"mailbox": mailbox})


def scan_failed(job: Any, reason: str, mailbox: str | None) -> None:
    if _on is None:
        return
    cls = failure_class(reason, job.progress)
    _on.failed.add(1, {"device": job.device, "mailbox": (mailbox or "").lower(), "reason": cls})


def graph_throttled(mailbox: str, status: int | None) -> None:
    if _on is not None and status in (429, 503):
        _on.throttled.add(1, {"mailbox": mailbox.lower(), "status": str(status)})


def queue_oldest_age(seconds: float) -> None:
    if _on is not None:
        _on.queue_age.set(max(0.0, seconds))


# -- TLS certificate ---------------------------------------------------------------------------------------------


def watch_certificate(path: Path | None, door: str = "smtp") -> None:
    """Report the days left on this certificate file at every export (a renewal on disk is seen at once)."""
    if path is not None:
        _certificates[door] = Path(path)


def _observe_certificates(options: Any) -> Iterable[Any]:
    from opentelemetry.metrics import Observation

    from gateway.telemetry.certificates import days_left

    for door, path in list(_certificates.items()):
        days = days_left(path)
        if days is not None:
            yield Observation(days, {"door": door})
