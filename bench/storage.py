"""Storage round trips and CPU per scan on Azurite, and one busy sender mailbox shared by four workers.

Runs the real agent in this process against Azurite (the Azure Storage emulator) and the fake Graph (its own
process, with latency): every HTTP request the Azure SDKs send is counted by service (the transport's
`send`, which all three SDKs share). Per scan: the SMTP door's accept (message blob, job record, queue
message), then delivery (queue, job record, blobs, mailbox ledger). The busy-mailbox run has four agents,
each with its own ledger client as separate processes would have, four jobs at a time each: sixteen
requests wanting one mailbox's four slots.
"""

from __future__ import annotations

import asyncio
import collections
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from bench.fake_service import FakeService
from bench.throughput import FOREIGN_IDENTITY, mailboxes, scan_message


class Counter:
    """Counts the requests azure-core's aiohttp transport sends, by service (blob/queue/table) and ledger."""

    def __init__(self, ports: dict[int, str]) -> None:
        self.ports = ports
        self.counts: collections.Counter[str] = collections.Counter()

    def install(self) -> Any:
        from azure.core.pipeline.transport import AioHttpTransport

        original = AioHttpTransport.send
        counter = self

        async def send(transport: Any, request: Any, **kwargs: Any) -> Any:
            url = urlparse(request.url)
            service = counter.ports.get(url.port or 0, "other")
            counter.counts[service] += 1
            if service == "table" and "mailboxes" in url.path:
                counter.counts["ledger"] += 1
            return await original(transport, request, **kwargs)

        AioHttpTransport.send = send  # type: ignore[method-assign]
        return original

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)


def _diff(after: dict[str, int], before: dict[str, int], scans: int) -> dict[str, float]:
    keys = set(after) | set(before)
    return {k: round((after.get(k, 0) - before.get(k, 0)) / scans, 2) for k in sorted(keys)}


async def _scenario(
    conn: str, fake: FakeService, counter: Counter, scans: int, size: int, agents: int
) -> dict[str, Any]:
    from gateway.config import load_settings
    from gateway.core.devices import Device
    from gateway.delivery.agent import DeliveryAgent
    from gateway.delivery.graph.exactly_once import GraphTransport
    from gateway.delivery.graph.shared_limits import SharedMailboxLimits
    from gateway.delivery.worker import Worker
    from gateway.services import build

    settings = load_settings({"SCANGW_STORAGE": conn, "SCANGW_GRAPH_URL": fake.url, "SCANGW_MAILBOX_RATE_PER_MIN": "0"})
    boxes = mailboxes(1 if agents > 1 else 8)
    services = [await build(settings) for _ in range(agents)]
    svc = services[0]
    try:
        devices = []
        for i, box in enumerate(boxes):
            device = Device(name=f"dev{i}", password_hash="-", sender=box, default_to="alice@contoso.com")
            await svc.spool.devices.upsert(device.name, device.to_record())
            devices.append(device)
        payload = scan_message(size)

        async def one() -> AsyncIterator[bytes]:
            yield payload

        before = counter.snapshot()
        cpu = time.process_time()
        intake = svc.intake(200 * 1024 * 1024)
        for n in range(scans):
            await intake.accept_mime(devices[n % len(devices)], ("alice@contoso.com",), one())
        accept_cpu = time.process_time() - cpu
        accepted = counter.snapshot()

        limits = [SharedMailboxLimits(s.spool.mailboxes, rate_per_min=0) for s in services]
        transports = [
            GraphTransport(settings, s.spool.blobs, limits=lim) for s, lim in zip(services, limits, strict=True)
        ]
        workers = [
            Worker(DeliveryAgent(s, t), concurrency=4, poll_seconds=0.2)
            for s, t in zip(services, transports, strict=True)
        ]
        stop = asyncio.Event()
        cpu, started = time.process_time(), time.perf_counter()
        running = [asyncio.create_task(w.run(stop)) for w in workers]
        deadline = time.monotonic() + 300
        while fake.ask("count") < scans and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # Let the last jobs record `sent` and delete their messages before counting.
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*running)
        delivery_cpu, elapsed = time.process_time() - cpu, time.perf_counter() - started
        delivered = counter.snapshot()
        for transport in transports:
            await transport.close()
        writes = sum(lim.writes for lim in limits)
        conflicts = sum(lim.conflicts for lim in limits)
        return {
            "scans": scans,
            "agents": agents,
            "mailboxes": len(boxes),
            "delivered": fake.ask("count"),
            "accept_requests_per_scan": _diff(accepted, before, scans),
            "delivery_requests_per_scan": _diff(delivered, accepted, scans),
            "requests_per_scan": round(
                sum(_diff(delivered, before, scans).get(k, 0) for k in ("blob", "queue", "table")), 1
            ),
            "accept_cpu_ms_per_scan": 1000 * accept_cpu / scans,
            "delivery_cpu_ms_per_scan": 1000 * delivery_cpu / scans,
            "rate": scans / elapsed,
            "ledger_writes_per_scan": writes / scans,
            "ledger_conflict_share": conflicts / max(1, writes + conflicts),
            "max_in_flight": max(fake.ask("max_concurrency").values() or [0]),
            "violations": len(fake.ask("violations")),
        }
    finally:
        for s in services:
            await s.close()


def run(quick: bool = False, latency: float = 0.02) -> dict[str, Any]:
    from tests.integration.azurite import find_azurite, running_azurite

    binary = find_azurite()
    if binary is None:
        return {"skipped": "Azurite (Node.js) is not installed"}
    scans, size = (8, 50_000) if quick else (60, 200_000)
    saved = dict(os.environ)
    for key in FOREIGN_IDENTITY:
        os.environ.pop(key, None)
    workdir = Path(tempfile.mkdtemp())
    results: dict[str, Any] = {}
    try:
        with running_azurite(binary, workdir) as conn:
            parts = dict(p.split("=", 1) for p in conn.split(";") if "=" in p)
            ports = {urlparse(parts[f"{k.capitalize()}Endpoint"]).port or 0: k for k in ("blob", "queue", "table")}
            counter = Counter(ports)
            original = counter.install()
            try:
                for label, agents, boxes in (("eight_mailboxes", 1, 8), ("one_busy_mailbox", 4, 1)):
                    with FakeService(latency, mailboxes(boxes)) as fake:
                        os.environ.update(fake.env)
                        n = scans if agents == 1 else scans * 2
                        results[label] = asyncio.run(_scenario(conn, fake, counter, n, size, agents))
            finally:
                from azure.core.pipeline.transport import AioHttpTransport

                AioHttpTransport.send = original  # type: ignore[method-assign]
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(workdir, ignore_errors=True)
    return results


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run("--quick" in sys.argv), indent=1))
