"""Sessions that never log in cannot starve devices (issue 9 item 7): they get a short deadline that NOOP and
RSET do not extend, capacity is reserved for sessions that authenticated, and an idle unauthenticated session
is closed (421) to make room before a new connection is refused."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from gateway.intake.smtp_limits import SmtpLimits
from tests.integration.test_smtp_harness import Dialogue, SmtpRun, logged_in, running_smtp

MESSAGE = b"Subject: scan\r\n\r\nhello\r\n"


def send(talk: Dialogue) -> str:
    assert talk.ask("MAIL FROM:<s@contoso.com>").startswith("250")
    assert talk.ask("RCPT TO:<bob@contoso.com>").startswith("250")
    assert talk.ask("DATA").startswith("354")
    talk.send(MESSAGE + b".\r\n")
    return talk.reply()


def gone(talk: Dialogue) -> str:
    """The 421 a session was closed with, or '' while it is still open (NOOP answered)."""
    try:
        answer = talk.ask("NOOP")
    except OSError:
        return "closed"
    return "" if answer.startswith("250") else answer


def test_noop_does_not_keep_an_unauthenticated_session_past_its_deadline(tmp_path: Path) -> None:
    with running_smtp(tmp_path, limits=SmtpLimits(preauth_seconds=1.0)) as run:
        idle = Dialogue(run.plain)
        idle.ask("EHLO prober")
        device = log_in(run)
        deadline = time.monotonic() + 10
        closed = ""
        while not closed and time.monotonic() < deadline:
            closed = gone(idle)  # a NOOP every 0.1 s: the deadline still runs out
            idle.ask("RSET") if not closed else None
            time.sleep(0.1)
        assert closed.startswith("421 4.7.0"), closed
        assert time.monotonic() < deadline
        assert gone(device) == ""  # an authenticated session is not bound by it
        assert send(device).startswith("250 2.0.0")


def test_a_flood_of_idle_sessions_cannot_keep_a_device_out(tmp_path: Path) -> None:
    limits = SmtpLimits(max_connections=6, auth_reserve=2)
    with running_smtp(tmp_path, limits=limits) as run:
        working = [log_in(run), log_in(run)]  # devices already sending
        flood = [Dialogue(run.plain) for _ in range(12)]  # every one of them answered 220, then kept idle
        assert all(f.greeting.startswith("220") for f in flood)
        for talk in flood:
            talk.ask("EHLO flood") if not gone(talk) else None
        scanner = log_in(run)  # a new device still gets in and is served
        assert send(scanner).startswith("250 2.0.0")
        assert all(send(w).startswith("250 2.0.0") for w in working)  # logged-in sessions were never evicted
        closed = [gone(f) for f in flood]
        assert sum(c.startswith("421 4.7.0") or c == "closed" for c in closed) >= 9
        assert sum(c == "" for c in closed) <= limits.max_connections - limits.auth_reserve
        assert len(run.jobs()) == 3


def test_when_every_slot_is_an_authenticated_session_new_ones_are_refused(tmp_path: Path) -> None:
    limits = SmtpLimits(max_connections=3, auth_reserve=1)
    with running_smtp(tmp_path, limits=limits) as run:
        sessions = [log_in(run) for _ in range(3)]
        refused = Dialogue(run.plain)
        assert refused.greeting.startswith("421 4.3.2")
        assert all(gone(s) == "" for s in sessions)


@pytest.mark.slow
def test_the_reported_flood_1000_idle_sessions_from_21_addresses_kept_alive_with_noop(tmp_path: Path) -> None:
    """Issue 9 item 7 as reported, with the default limits: every scanner got 421; now it is served."""

    async def flood(port: int) -> list[asyncio.StreamWriter]:
        async def one(source: str) -> asyncio.StreamWriter | None:
            for _ in range(5):  # a burst overflows the listen backlog now and then: connect again
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
                    greeting = await asyncio.wait_for(reader.readline(), 30)
                except OSError:
                    continue
                if not greeting.startswith(b"220"):
                    writer.close()
                    return None
                writer.write(b"EHLO flood\r\n")
                return writer
            return None

        sources = [f"127.0.0.{n}" for n in range(2, 23)]
        writers = await asyncio.gather(*(one(sources[i % 21]) for i in range(1040)))
        return [w for w in writers if w is not None]

    async def keep_alive(writers: list[asyncio.StreamWriter], stop: asyncio.Event) -> None:
        while not stop.is_set():
            for writer in writers:
                if not writer.is_closing():
                    writer.write(b"NOOP\r\n")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    with running_smtp(tmp_path) as run:
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        writers: list[asyncio.StreamWriter] = []
        alive: asyncio.Task[None] | None = None
        try:
            writers = loop.run_until_complete(flood(run.plain[1]))
            assert len(writers) >= 1000  # the door is full of sessions that never log in
            alive = loop.create_task(keep_alive(writers, stop))
            loop.run_until_complete(asyncio.sleep(1))
            scanner = log_in(run)  # served despite the flood
            assert send(scanner).startswith("250 2.0.0")
        finally:
            stop.set()
            if alive is not None:
                loop.run_until_complete(alive)
            for writer in writers:
                writer.close()
            loop.run_until_complete(asyncio.sleep(0.1))
            loop.close()


def log_in(run: SmtpRun) -> Dialogue:
    talk = logged_in(run)
    assert talk.greeting.startswith("220"), talk.greeting
    return talk
