"""Memory of the real `scangw smtp` process while 10 devices each send a 30 MB scan at once.

DATA is streamed into the spool, so the process should grow by a few buffers per session, not by the 300 MB
in flight. The measured figure is printed (run with -s) and goes in the README.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.support import ROOT, free_port, poll

SENDERS = 10
MESSAGE_MB = 30


def _message(seed: int) -> bytes:
    raw = os.urandom(1024 * 1024)
    body = base64.encodebytes(raw).replace(b"\n", b"\r\n") * (MESSAGE_MB * 3 // 4)
    head = (
        f"Subject: big {seed}\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n"
        "Content-Type: application/pdf; name=big.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    ).encode()
    return head + body + b"--B--\r\n"


@pytest.mark.slow
def test_ten_concurrent_30_mb_messages_keep_the_smtp_process_small(tmp_path: Path) -> None:
    env = {**os.environ, "SCANGW_STORAGE": f"local:{tmp_path / 'spool'}", "SCANGW_MAX_MESSAGE_MB": "35"}
    added = subprocess.run(
        [sys.executable, "-m", "gateway", "devices", "add", "scanner1", "--sender", "scanner@contoso.com",
         "--allow-to", "*@contoso.com", "--json"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    password = json.loads(added.stdout)["password"]
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "smtp", "--listen", f"127.0.0.1:{port}"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:

        def listening() -> bool:
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read() if proc.stderr else "scangw smtp exited")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return True
            except OSError:
                return False

        poll(listening, timeout=30, what="scangw smtp to listen")
        process = psutil.Process(proc.pid)
        start_rss = process.memory_info().rss
        peak = [start_rss]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], process.memory_info().rss)
                time.sleep(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        messages = [_message(n) for n in range(SENDERS)]

        async def scenario() -> tuple[float, float, float, list[str]]:
            # A raw client: aiosmtplib would spend more CPU dot-stuffing 300 MB than the server spends storing it.
            sessions = [await asyncio.open_connection("127.0.0.1", port, limit=2**20) for _ in messages]
            auth = base64.b64encode(f"\0scanner1\0{password}".encode()).decode()

            async def say(session: tuple[asyncio.StreamReader, asyncio.StreamWriter], line: bytes) -> str:
                reader, writer = session
                if line:
                    writer.write(line)
                    await writer.drain()
                while (reply := (await reader.readline()).decode())[3:4] == "-":
                    pass
                return reply

            await asyncio.gather(*(say(s, b"") for s in sessions))
            await asyncio.gather(*(say(s, b"EHLO big\r\n") for s in sessions))
            await asyncio.gather(*(say(s, f"AUTH PLAIN {auth}\r\n".encode()) for s in sessions))  # argon2: 64 MiB each
            await asyncio.sleep(0.3)
            login_peak, before_data = peak[0], process.memory_info().rss
            peak[0] = before_data
            started = time.monotonic()

            async def send(session: tuple[asyncio.StreamReader, asyncio.StreamWriter], message: bytes) -> str:
                for line in (b"MAIL FROM:<s@contoso.com>\r\n", b"RCPT TO:<bob@contoso.com>\r\n", b"DATA\r\n"):
                    await say(session, line)
                return await say(session, message + b".\r\n")

            replies = await asyncio.gather(*(send(s, m) for s, m in zip(sessions, messages, strict=True)))
            elapsed = time.monotonic() - started
            for _, writer in sessions:
                writer.close()
            return login_peak, before_data, elapsed, replies

        login_peak, before_data, elapsed, replies = asyncio.run(scenario())
        done.set()
        sampler.join()
        assert all(r.startswith("250 2.0.0 Ok: queued as ") for r in replies), replies
        grown = (peak[0] - before_data) / 2**20
        print(
            f"\nscangw smtp RSS: at start {start_rss / 2**20:.0f} MiB; peak during 10 concurrent logins "
            f"{login_peak / 2**20:.0f} MiB; before DATA {before_data / 2**20:.0f} MiB; peak during DATA "
            f"{peak[0] / 2**20:.0f} MiB (+{grown:.0f} MiB) for {SENDERS} x {MESSAGE_MB} MB concurrent in {elapsed:.1f} s"
        )
        assert grown < 64, f"the SMTP process grew by {grown:.0f} MiB for {SENDERS * MESSAGE_MB} MB in flight"
        assert (login_peak - start_rss) / 2**20 < 200, "password checks are not bounded"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
