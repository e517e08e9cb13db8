"""`scangw doctor`: one line per check with OK/FAIL and the remedy, so an admin fixes a deployment in one pass.

A bad setting is reported as a FAIL line like any other check (never exit 2): doctor is what you run when
something is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

from gateway.config import Settings, load_settings
from gateway.core.errors import ConfigError, DeliveryError, GatewayError, PermanentDeliveryError
from gateway.core.ports import NotFound


@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'OK  ' if self.ok else 'FAIL'} {self.name}: {self.detail}"


async def _storage(settings: Settings) -> Check:
    from gateway.admin import no_store, store_missing
    from gateway.services import build

    if store_missing(settings):  # doctor looks, it never creates a store
        return Check("storage", True, no_store(settings))
    try:
        svc = await build(settings)
        try:
            await svc.jobs.list()
            await svc.registry.list()
        finally:
            await svc.close()
    except GatewayError as exc:
        return Check("storage", False, f"{exc}. Remedy: check SCANGW_STORAGE and the identity's storage roles.")
    return Check("storage", True, f"reachable ({settings.store_label})")


async def _graph(settings: Settings, send_test: str | None) -> list[Check]:
    if settings.outbox is not None:
        eml = [Check("delivery", True, f"writing .eml files to {settings.outbox} (SCANGW_OUTBOX); Graph not used")]
        if send_test:
            eml.append(await _send_test_eml(settings, send_test))
        return eml
    if not settings.sender:
        return [
            Check(
                "sender",
                False,
                "SCANGW_SENDER is not set. Remedy: set it to the shared mailbox UPN to send through Graph, or set "
                "SCANGW_OUTBOX=DIR to write .eml files there instead.",
            )
        ]
    from gateway.delivery.graph.exactly_once import GraphTransport
    from gateway.delivery.graph.identity import build_credential

    checks: list[Check] = []
    credential = build_credential(settings)
    try:
        try:
            await credential.get_token(settings.graph_scope)
            checks.append(Check("identity", True, f"token for {settings.graph_scope}"))
        except Exception as exc:  # noqa: BLE001 - any identity failure is reported, never raised
            from gateway.delivery.graph.failures import classify, failure_from_exception

            failure = failure_from_exception(exc, time.time())
            detail = str(classify(failure, settings.sender)) if failure else f"no token: {type(exc).__name__}"
            checks.append(Check("identity", False, detail))
            return checks
        transport = GraphTransport(settings, _NoScans(), credential=credential)
        try:
            await transport.check_mailbox(settings.sender)
            checks.append(Check("mailbox", True, f"{settings.sender} reachable with mail permission"))
        except PermanentDeliveryError as exc:
            checks.append(Check("mailbox", False, exc.reason()))
        except DeliveryError as exc:
            checks.append(Check("mailbox", False, f"{exc} (transient; try again)"))
        if send_test and all(c.ok for c in checks):
            checks.append(await _send_test(settings, transport, send_test))
        await transport.close()
    finally:
        await credential.close()
    return checks


class _NoScans:
    """Doctor's messages carry no attachment, so its transport never reads a scan from storage."""

    async def write(self, name: str, chunks: AsyncIterable[bytes]) -> int:
        raise NotFound(name)

    async def stream(self, name: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        raise NotFound(name)
        yield b""  # pragma: no cover - makes this an async generator

    async def read_range(self, name: str, offset: int, length: int) -> bytes:
        raise NotFound(name)

    async def size(self, name: str) -> int:
        raise NotFound(name)

    async def delete_prefix(self, prefix: str) -> int:
        return 0

    async def list(self, prefix: str) -> list[str]:
        return []


async def _send_test_eml(settings: Settings, address: str) -> Check:
    """The local .eml mode's test message: written where every scan goes, through the same transport."""
    from gateway.delivery.outbox import OutboxTransport

    assert settings.outbox is not None
    transport = OutboxTransport(settings.outbox, _NoScans())
    try:
        return await _send_test(settings, transport, address, f"written to {settings.outbox}")
    finally:
        await transport.close()


async def _send_test(settings: Settings, transport: object, address: str, done: str = "") -> Check:
    from gateway.core.jobs import new_job_id
    from gateway.core.message import Address, OutgoingMessage
    from gateway.delivery.transport import MemoryCheckpoint

    sender = settings.sender or "scangw@gateway.localhost"
    message = OutgoingMessage(
        mailbox=sender,
        internet_message_id=f"<doctor.{new_job_id()}@{sender.rpartition('@')[2]}>",
        from_=Address(sender, "Scan gateway"),
        to=(Address(address),),
        cc=(),
        bcc=(),
        reply_to=(),
        subject="scangw doctor: test message",
        body="This test message was sent by `scangw doctor --send-test`: delivery works.",
        body_type="text",
        attachments=(),
    )
    try:
        await transport.deliver(message, MemoryCheckpoint())  # type: ignore[attr-defined]
    except DeliveryError as exc:
        return Check("send-test", False, str(exc))
    return Check("send-test", True, f"test message to {address} {done or 'sent'}")


async def run_checks(env: dict[str, str], send_test: str | None) -> list[Check]:
    try:
        settings = load_settings(env)
    except ConfigError as exc:
        return [Check("settings", False, f"{exc}")]
    checks = [Check("settings", True, "all settings valid")]
    storage = await _storage(settings)
    checks.append(storage)
    checks.extend(await _graph(settings, send_test))
    return checks


def doctor_main(args: argparse.Namespace, env: dict[str, str]) -> int:
    checks = asyncio.run(run_checks(env, args.send_test))
    for check in checks:
        print(check.line())
    return 0 if all(c.ok for c in checks) else 1
