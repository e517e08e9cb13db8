"""Delivery: Graph requests and time per typical scan against a naive relay measured in the same run (one
`sendMail` per message, as SMTP2Graph-style relays do), and the delivering process's peak allocation for a
1 MiB and a 100 MiB scan. Both run against the strict fake Graph on loopback, so the ratios, not the
absolute times, are the result: the extra request buys exactly-once (a recorded draft can be found again)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx

from bench.fake_service import FakeService
from gateway.config import load_settings
from gateway.core.jobs import FileRef
from gateway.core.message import Address, OutgoingMessage
from gateway.core.ports import BlobStore
from gateway.delivery.graph.exactly_once import GraphTransport
from gateway.delivery.graph.shared_limits import SharedMailboxLimits
from gateway.delivery.transport import MemoryCheckpoint
from gateway.spool.local import open_local_spool

MAILBOX = "scanner@contoso.com"
MIB = 1024 * 1024
SCANS = 30
SCAN_BYTES = 400_000
T = TypeVar("T")
_FOREIGN_IDENTITY = ("MSI_ENDPOINT", "MSI_SECRET", "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT", "AZURE_CLIENT_ID")


async def _store(blobs: BlobStore, name: str, size: int) -> tuple[FileRef, str]:
    digest = hashlib.sha256()

    async def chunks() -> AsyncIterator[bytes]:
        left = size
        while left:
            block = os.urandom(min(MIB, left))
            digest.update(block)
            left -= len(block)
            yield block

    await blobs.write(name, chunks())
    return FileRef(
        blob=name, name=name.rsplit("/", 1)[-1], content_type="application/pdf", size=size
    ), digest.hexdigest()


def _message(ref: FileRef, n: str) -> OutgoingMessage:
    return OutgoingMessage(
        mailbox=MAILBOX,
        internet_message_id=f"<scan.bench{n}@contoso.com>",
        from_=Address(MAILBOX, "Bench"),
        to=(Address("alice@contoso.com"),),
        cc=(),
        bcc=(),
        reply_to=(),
        subject=f"Scan {n}",
        body="Scanned pages attached.",
        body_type="text",
        attachments=(ref,),
    )


async def _gateway(transport: GraphTransport, blobs: BlobStore) -> float:
    refs = [(await _store(blobs, f"g{n}/scan.pdf", SCAN_BYTES))[0] for n in range(SCANS)]
    start = time.perf_counter()
    for n, ref in enumerate(refs):
        await transport.deliver(_message(ref, f"g{n}"), MemoryCheckpoint())
    return time.perf_counter() - start


async def _naive(graph_url: str, token: str) -> float:
    payloads = [os.urandom(SCAN_BYTES) for _ in range(SCANS)]
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=f"{graph_url}/v1.0", headers=headers, timeout=30) as client:
        start = time.perf_counter()
        for n, data in enumerate(payloads):
            attachment = {
                "@odata.type": "#microsoft.graph.fileAttachment",
                "name": "scan.pdf",
                "contentType": "application/pdf",
                "contentBytes": base64.b64encode(data).decode(),
            }
            message = {
                "subject": f"Scan n{n}",
                "body": {"contentType": "text", "content": "Scanned pages attached."},
                "toRecipients": [{"emailAddress": {"address": "alice@contoso.com"}}],
                "attachments": [attachment],
            }
            r = await client.post(f"/users/{MAILBOX}/sendMail", json={"message": message, "saveToSentItems": True})
            r.raise_for_status()
        return time.perf_counter() - start


async def _peak(
    transport: GraphTransport, blobs: BlobStore, fakes: FakeService, size: int, tag: str
) -> tuple[int, bool]:
    ref, digest = await _store(blobs, f"{tag}/scan.pdf", size)
    tracemalloc.start()
    try:
        await transport.deliver(_message(ref, tag), MemoryCheckpoint())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, fakes.ask("hashes")[f"<scan.bench{tag}@contoso.com>"] == [digest]


@asynccontextmanager
async def _warm_transport(tmp: Path, fakes: FakeService) -> AsyncIterator[tuple[GraphTransport, BlobStore]]:
    """The production transport against the fakes, past its first delivery."""
    for key in _FOREIGN_IDENTITY:
        os.environ.pop(key, None)
    os.environ.update(fakes.env)
    settings = load_settings({"SCANGW_GRAPH_URL": fakes.url, "SCANGW_MAILBOX_RATE_PER_MIN": "0"})
    spool = await open_local_spool(tmp / "spool")
    # The production limiter: each Graph call claims a slot in the spool's shared mailbox ledger.
    transport = GraphTransport(settings, spool.blobs, limits=SharedMailboxLimits(spool.mailboxes, rate_per_min=0))
    try:
        # The first message imports msgraph's models (tens of MiB, once per process): not part of any scan.
        await transport.deliver(
            _message((await _store(spool.blobs, "w/scan.pdf", 1000))[0], "warm"), MemoryCheckpoint()
        )
        yield transport, spool.blobs
    finally:
        await transport.close()
        await spool.close()


async def _run(tmp: Path, fakes: FakeService) -> list[str]:
    async with _warm_transport(tmp, fakes) as (transport, blobs):
        before = fakes.ask("requests")
        gateway_s = await _gateway(transport, blobs)
        gateway_requests = fakes.ask("requests") - before
        before = fakes.ask("requests")
        naive_s = await _naive(fakes.url, fakes.token)
        naive_requests = fakes.ask("requests") - before
        small, small_ok = await _peak(transport, blobs, fakes, MIB, "small")
        large, large_ok = await _peak(transport, blobs, fakes, 100 * MIB, "large")
    violations = fakes.ask("violations")
    assert not violations, violations
    return [
        f"{SCANS} scans of {SCAN_BYTES // 1000} KB (pacing off): gateway {gateway_requests / SCANS:.1f} Graph requests "
        f"per scan vs naive sendMail relay {naive_requests / SCANS:.1f}; time ratio {gateway_s / naive_s:.2f}x "
        "(the extra request is the recorded draft that makes delivery exactly-once)",
        f"peak Python allocation while delivering: 1 MiB scan {small / MIB:.1f} MiB, 100 MiB scan {large / MIB:.1f} MiB "
        f"(ratio {large / max(small, 1):.1f}x; byte-identical: {small_ok and large_ok})",
    ]


async def _curve(tmp: Path, fakes: FakeService, sizes_mib: list[float]) -> list[dict[str, Any]]:
    points = []
    async with _warm_transport(tmp, fakes) as (transport, blobs):
        for n, mib in enumerate(sizes_mib):
            peak, identical = await _peak(transport, blobs, fakes, int(mib * MIB), f"c{n}")
            points.append({"scan_mib": mib, "peak_mib": peak / MIB, "byte_identical": identical})
    return points


def _with_fakes(main: Callable[[Path, FakeService], Coroutine[Any, Any, T]]) -> T:
    """Run `main` with the fakes (served from a child process) and a scratch folder; the environment is restored."""
    with tempfile.TemporaryDirectory() as tmp:
        saved = dict(os.environ)
        fakes = FakeService(latency=0.0)  # the ratios against the naive relay need no network delay
        try:
            return asyncio.run(main(Path(tmp), fakes))
        finally:
            fakes.close()
            os.environ.clear()
            os.environ.update(saved)


def memory_curve(sizes_mib: list[float]) -> list[dict[str, Any]]:
    """Peak Python allocation while delivering one scan of each size (upload sessions above 3 MiB)."""
    return _with_fakes(lambda tmp, fakes: _curve(tmp, fakes, sizes_mib))


def run() -> list[str]:
    return _with_fakes(_run)
