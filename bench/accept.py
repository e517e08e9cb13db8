"""SMTP accept: the door's durable accept rate and latency against aiosmtpd's null `Sink`, in the same run.

Both servers get the same load: `clients` client processes, each sending `per_client` messages of `size`
bytes, one message per connection with AUTH PLAIN (EHLO, AUTH, MAIL, RCPT, DATA, QUIT). The Sink drops
the bytes; the door answers 250 only once the bytes, the job record and the queue message are durable on
the embedded spool (fsync'd). The ratio of the two rates is the figure; the latency is measured per
message from the end of DATA to the 250 (what a device waits for once it has sent everything).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import smtplib
import statistics
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path
from typing import Any

from bench.common import ROOT, free_port, rss_hwm_kib, wait_for_port

USER, PASSWORD = "sink", "sink-password"


def _sink_main(port: int) -> None:
    """Child process: aiosmtpd with the null Sink handler, AUTH accepted for anyone, no TLS."""
    import warnings

    warnings.simplefilter("ignore")  # aiosmtpd deprecation notes on every AUTH
    from aiosmtpd.handlers import Sink
    from aiosmtpd.smtp import SMTP, AuthResult

    def anyone(*_args: Any) -> AuthResult:
        return AuthResult(success=True)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(
                Sink(), authenticator=anyone, auth_require_tls=False, data_size_limit=200 * 1024 * 1024, loop=loop
            ),
            "127.0.0.1",
            port,
        )
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def message_bytes(size: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = "scanner@example.com"
    msg["To"] = "alice@example.com"
    msg["Subject"] = "Scan"
    msg.set_content("Scanned pages attached.")
    msg.add_attachment(os.urandom(max(1, size * 3 // 4)), maintype="application", subtype="pdf", filename="scan.pdf")
    return msg.as_bytes(policy=SMTP_POLICY)


def _client(port: int, user: str, password: str, count: int, payload: bytes) -> list[float]:
    """Send `count` messages, one per connection; return each one's DATA-to-250 time in seconds."""
    latencies = []
    for _ in range(count):
        with smtplib.SMTP("127.0.0.1", port, timeout=120) as smtp:
            smtp.ehlo("bench")
            smtp.login(user, password)
            smtp.mail("scanner@example.com")
            smtp.rcpt("alice@example.com")
            code, _ = smtp.docmd("DATA")
            assert code == 354, code
            body = payload.replace(b"\r\n.", b"\r\n..")
            start = time.perf_counter()
            smtp.send(body + b"\r\n.\r\n")
            code, reply = smtp.getreply()
            latencies.append(time.perf_counter() - start)
            assert code == 250, reply
    return latencies


def load(port: int, user: str, password: str, clients: int, per_client: int, size: int) -> dict[str, Any]:
    payload = message_bytes(size)
    context = multiprocessing.get_context("spawn")
    with context.Pool(clients) as pool:
        pool.starmap(_client, [(port, user, password, 1, payload)] * clients)  # warm: imports, argon2 cache
        start = time.perf_counter()
        results = pool.starmap(_client, [(port, user, password, per_client, payload)] * clients)
        elapsed = time.perf_counter() - start
    latencies = sorted(x for r in results for x in r)
    return {
        "messages": len(latencies),
        "seconds": elapsed,
        "rate": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))],
        "latencies_ms": [round(1000 * x, 2) for x in latencies],
    }


def add_device(env: dict[str, str]) -> tuple[str, str]:
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "devices", "add", "bench", "--default-to", "alice@example.com"]
        + ["--allow-to", "*@example.com", "--json"],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    creds = json.loads(out.stdout)
    return creds["username"], creds["password"]


def run(quick: bool = False) -> dict[str, Any]:
    clients, per_client, size = (2, 10, 20_000) if quick else (4, 100, 100_000)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        context = multiprocessing.get_context("spawn")
        sink_port = free_port()
        sink = context.Process(target=_sink_main, args=(sink_port,), daemon=True)
        sink.start()
        try:
            wait_for_port(sink_port)
            sink_result = load(sink_port, USER, PASSWORD, clients, per_client, size)
            sink_rss = rss_hwm_kib(sink.pid or 0)
        finally:
            sink.terminate()
            sink.join(10)
        env = {
            "SCANGW_STORAGE": f"local:{tmp / 'spool'}",
            "SCANGW_OUTBOX": str(tmp / "outbox"),
            "SCANGW_SMTP_REQUIRE_TLS_AUTH": "0",
        }
        user, password = add_device(env)
        port = free_port()
        with open(tmp / "smtp.log", "w") as log:
            door = subprocess.Popen(
                [sys.executable, "-m", "gateway", "smtp", "--listen", f"127.0.0.1:{port}"],
                env={**os.environ, **env},
                cwd=ROOT,
                stdout=log,
                stderr=log,
            )
            try:
                wait_for_port(port, process=door)
                door_result = load(port, user, password, clients, per_client, size)
                door_rss = rss_hwm_kib(door.pid)
            finally:
                door.terminate()
                door.wait(30)
    return {
        "clients": clients,
        "messages_per_client": per_client,
        "message_bytes": size,
        "sink": {**sink_result, "rss_mib": sink_rss / 1024},
        "door": {**door_result, "rss_mib": door_rss / 1024},
        "ratio": door_result["rate"] / sink_result["rate"],
    }


if __name__ == "__main__":
    result = run("--quick" in sys.argv)
    for side in ("sink", "door"):
        result[side].pop("latencies_ms")
    print(json.dumps(result, indent=1))
