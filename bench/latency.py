"""One scan's latency on an idle system: from the SMTP door's `250` to the send Graph accepted, with a warm
worker, and with a worker process started after the scan was queued (a cold start).

Real processes: `scangw smtp`, `scangw worker` on one embedded spool, the fake Graph with a fixed latency
per request in its own process. A typical scan takes two Graph requests (create with the attachment inline,
send), so the floor is twice the fake's latency.
"""

from __future__ import annotations

import os
import re
import smtplib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.accept import add_device, message_bytes
from bench.common import ROOT, free_port, wait_for_port
from bench.fake_service import FakeService
from bench.throughput import start_workers, stop, worker_env

MAILBOX = "scanner0@contoso.com"
_QUEUED = re.compile(rb"queued as ([0-9a-f]+)")


def _send(port: int, user: str, password: str, payload: bytes) -> tuple[str, float]:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        smtp.ehlo("bench")
        smtp.login(user, password)
        smtp.mail("scanner@contoso.com")
        smtp.rcpt("alice@example.com")
        code, _ = smtp.docmd("DATA")
        assert code == 354
        smtp.send(payload.replace(b"\r\n.", b"\r\n..") + b"\r\n.\r\n")
        code, reply = smtp.getreply()
        accepted = time.time()
        assert code == 250, reply
    match = _QUEUED.search(reply)
    assert match, reply
    return match.group(1).decode(), accepted


def _sent_after(fake: FakeService, job_id: str, timeout: float = 60.0) -> float:
    key = f"<scan.{job_id}@contoso.com>"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sent = fake.ask("sent_at")
        if key in sent:
            return float(sent[key])
        time.sleep(0.005)
    raise TimeoutError(f"scan {job_id} was not sent within {timeout}s")


def run(quick: bool = False, latency: float = 0.02) -> dict[str, Any]:
    scans, colds = (5, 1) if quick else (25, 3)
    payload = message_bytes(50_000)
    with tempfile.TemporaryDirectory() as tmp_dir, FakeService(latency, [MAILBOX]) as fake:
        tmp = Path(tmp_dir)
        env = worker_env(fake, tmp / "spool", SCANGW_SENDER=MAILBOX, SCANGW_SMTP_REQUIRE_TLS_AUTH="0")
        user, password = add_device(env)
        port = free_port()
        with open(tmp / "smtp.log", "wb") as log:
            door = subprocess.Popen(
                [sys.executable, "-m", "gateway", "smtp", "--listen", f"127.0.0.1:{port}"],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=log,
            )
        try:
            wait_for_port(port, process=door)
            workers = start_workers(env, 1, 4, tmp / "worker.log")
            try:
                for _ in range(2):  # warm: imports, token, connections
                    job, _ = _send(port, user, password, payload)
                    _sent_after(fake, job)
                warm = []
                for _ in range(scans):
                    time.sleep(0.3)  # idle between scans: the worker is waiting, not busy
                    job, accepted = _send(port, user, password, payload)
                    warm.append(_sent_after(fake, job) - accepted)
            finally:
                stop(workers)
            cold = []
            for _ in range(colds):
                job, _ = _send(port, user, password, payload)
                started = time.time()
                workers = start_workers(env, 1, 4, tmp / "worker.log")
                try:
                    cold.append(_sent_after(fake, job) - started)
                finally:
                    stop(workers)
        finally:
            door.terminate()
            door.wait(30)
        violations = fake.ask("violations")
    floor_ms = 2 * latency * 1000
    return {
        "graph_latency_ms": latency * 1000,
        "floor_ms": floor_ms,
        "warm_ms": [round(x * 1000, 1) for x in warm],
        "p50_ms": statistics.median(warm) * 1000,
        "p50_over_floor_ms": statistics.median(warm) * 1000 - floor_ms,
        "cold_ms": [round(x * 1000, 1) for x in cold],
        "cold_max_ms": max(cold) * 1000,
        "violations": len(violations),
        "cpu_count": os.cpu_count(),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run("--quick" in sys.argv), indent=1))
