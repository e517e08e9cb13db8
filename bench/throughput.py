"""Delivery throughput: `scangw worker` processes sharing one embedded spool, against the fake Graph with a
fixed latency, next to a naive one-request relay (one `sendMail` per scan, as SMTP2Graph-style relays do)
measured on the same fake in the same run.

Scans are accepted first (as the SMTP door does: the message as received, exploded by the worker), then the
workers start; the rate is taken between the first and the last send Graph accepted, so process start-up is
not in it, and the workers' CPU per scan from /proc between the tenth and the last scan.
"""

from __future__ import annotations

import asyncio
import base64
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path
from typing import Any

from bench.common import ROOT, cpu_seconds, rss_hwm_kib
from bench.fake_service import FakeService

FOREIGN_IDENTITY = ("MSI_ENDPOINT", "MSI_SECRET", "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT", "AZURE_CLIENT_ID")


def mailboxes(n: int) -> list[str]:
    return [f"scanner{i}@contoso.com" for i in range(n)]


def scan_message(size: int, n: int = 0) -> bytes:
    msg = EmailMessage()
    msg["From"] = "scanner@contoso.com"
    msg["To"] = "alice@contoso.com"
    msg["Subject"] = f"Scan {n}"
    msg.set_content("Scanned pages attached.")
    msg.add_attachment(os.urandom(size), maintype="application", subtype="pdf", filename="scan.pdf")
    return msg.as_bytes(policy=SMTP_POLICY)


async def fill(spool_dir: Path, boxes: list[str], scans: int, size: int) -> None:
    """Accept `scans` messages into the spool, round-robin over one device per sender mailbox."""
    from gateway.core.accept import Intake
    from gateway.core.devices import Device
    from gateway.spool.local import open_local_spool

    spool = await open_local_spool(spool_dir)
    try:
        devices = []
        for i, box in enumerate(boxes):
            device = Device(name=f"dev{i}", password_hash="-", sender=box, default_to="alice@contoso.com")
            await spool.devices.insert(device.name, device.to_record())
            devices.append(device)
        intake = Intake(spool, 200 * 1024 * 1024, None)
        payload = scan_message(size)

        async def one() -> AsyncIterator[bytes]:
            yield payload

        accepts = [intake.accept_mime(devices[n % len(devices)], ("alice@contoso.com",), one()) for n in range(scans)]
        for start in range(0, scans, 16):
            await asyncio.gather(*accepts[start : start + 16])
    finally:
        await spool.close()


def worker_env(fake: FakeService, spool_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_IDENTITY}
    env.update(fake.env)
    env.update(
        {
            "SCANGW_STORAGE": f"local:{spool_dir}",
            "SCANGW_GRAPH_URL": fake.url,
            "SCANGW_MAILBOX_RATE_PER_MIN": "0",
            **extra,
        }
    )
    env.pop("SCANGW_OUTBOX", None)
    return env


def start_workers(env: dict[str, str], workers: int, concurrency: int, log: Path) -> list[subprocess.Popen[bytes]]:
    with open(log, "ab") as out:
        return [
            subprocess.Popen(
                [sys.executable, "-m", "gateway", "worker", "--concurrency", str(concurrency)],
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=out,
            )
            for _ in range(workers)
        ]


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rate_from(sent_at: dict[str, float]) -> float:
    times = sorted(sent_at.values())
    if len(times) < 2 or times[-1] <= times[0]:
        return 0.0
    return (len(times) - 1) / (times[-1] - times[0])


def deliver(
    workers: int,
    concurrency: int,
    boxes: int,
    scans: int,
    size: int,
    latency: float,
    throttle_rate: float = 0.0,
    timeout: float = 240.0,
) -> dict[str, Any]:
    """One run: fill a fresh spool, start the workers, wait for every send (or the timeout)."""
    names = mailboxes(boxes)
    with tempfile.TemporaryDirectory() as tmp_dir, FakeService(latency, names, throttle_rate) as fake:
        tmp = Path(tmp_dir)
        asyncio.run(fill(tmp / "spool", names, scans, size))
        procs = start_workers(worker_env(fake, tmp / "spool"), workers, concurrency, tmp / "worker.log")
        try:
            warm = max(1, scans // 10)
            fake.wait_sent(warm, timeout)
            cpu_warm, at_warm = sum(cpu_seconds(p.pid) for p in procs), fake.ask("count")
            done = fake.wait_sent(scans, timeout)
            cpu_end, at_end = sum(cpu_seconds(p.pid) for p in procs), fake.ask("count")
            rss = sum(rss_hwm_kib(p.pid) for p in procs) / 1024
        finally:
            stop(procs)
        sent_at = fake.ask("sent_at")
        result = {
            "workers": workers,
            "concurrency": concurrency,
            "mailboxes": boxes,
            "scans": scans,
            "delivered": len(sent_at),
            "complete": done,
            "rate": rate_from(sent_at),
            "cpu_ms_per_scan": 1000 * (cpu_end - cpu_warm) / max(1, at_end - at_warm),
            "rss_mib": rss,
            "duplicates": len(fake.ask("duplicates")),
            "violations": len(fake.ask("violations")),
            "max_in_flight": max(fake.ask("max_concurrency").values() or [0]),
        }
    return result


def _naive_main(url: str, token: str, boxes: list[str], scans: int, size: int, concurrency: int, conn: Any) -> None:
    """One sendMail per scan; a refused request (a 429 under throttling) is that scan lost, as a relay that
    does not retry loses it (one that retries a sendMail whose reply was lost may send it twice instead)."""
    import httpx

    payload = os.urandom(size)

    async def main() -> None:
        limits = {box: asyncio.Semaphore(4) for box in boxes}  # Exchange's 4 per mailbox, as any relay must
        gate = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:

            async def send(n: int) -> None:
                box = boxes[n % len(boxes)]
                async with gate, limits[box]:
                    # The relay reads the scan and sends it in one request: no draft, so no way to find a
                    # send whose reply was lost (it either repeats it or loses it).
                    message = {
                        "subject": f"Scan {n}",
                        "body": {"contentType": "text", "content": "Scanned pages attached."},
                        "toRecipients": [{"emailAddress": {"address": "alice@contoso.com"}}],
                        "internetMessageId": f"<naive.{n}@contoso.com>",
                        "attachments": [
                            {
                                "@odata.type": "#microsoft.graph.fileAttachment",
                                "name": "scan.pdf",
                                "contentType": "application/pdf",
                                "contentBytes": base64.b64encode(payload).decode(),
                            }
                        ],
                    }
                    r = await client.post(f"{url}/v1.0/users/{box}/sendMail", json={"message": message})
                    r.raise_for_status()

            await asyncio.gather(*(send(n) for n in range(scans)), return_exceptions=True)

    start = time.process_time()
    asyncio.run(main())
    conn.send(time.process_time() - start)


def naive(
    concurrency: int, boxes: int, scans: int, size: int, latency: float, throttle_rate: float = 0.0
) -> dict[str, Any]:
    names = mailboxes(boxes)
    with FakeService(latency, names, throttle_rate) as fake:
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        child = context.Process(
            target=_naive_main, args=(fake.url, fake.token, names, scans, size, concurrency, theirs), daemon=True
        )
        child.start()
        cpu = ours.recv() if ours.poll(300) else float("nan")
        child.join(30)
        sent_at = fake.ask("sent_at")
        return {
            "concurrency": concurrency,
            "mailboxes": boxes,
            "scans": scans,
            "delivered": len(sent_at),
            "rate": rate_from(sent_at),
            "cpu_ms_per_scan": 1000 * cpu / scans,
            "violations": len(fake.ask("violations")),
        }
