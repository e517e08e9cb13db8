"""Connection limits per client address and in total, and the graceful stop on SIGTERM (the CLI sets `stop`):
no new connections, idle sessions told 421, sessions in DATA finish, nothing half-stored when cut."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pytest

from gateway.intake.smtp_limits import SmtpLimits
from tests.integration.test_smtp_harness import Dialogue, SmtpRun, logged_in, running_smtp, stored

MESSAGE = b"Subject: stop\r\n\r\n" + b"line\r\n" * 100


def in_data(run: SmtpRun) -> Dialogue:
    talk = logged_in(run)
    talk.ask("MAIL FROM:<s@contoso.com>")
    talk.ask("RCPT TO:<bob@contoso.com>")
    assert talk.ask("DATA").startswith("354")
    talk.send(MESSAGE[:50])
    return talk


def test_per_address_limit_then_total_limit(tmp_path: Path) -> None:
    limits = SmtpLimits(max_per_address=2, max_connections=3, auth_reserve=0)
    with running_smtp(tmp_path, limits=limits) as run:
        kept = [Dialogue(run.plain), Dialogue(run.plain)]
        third = Dialogue(run.plain)
        assert third.greeting.startswith("421 4.7.0") and third.closed()
        kept[0].ask("QUIT")
        deadline = time.monotonic() + 5  # the door frees the slot when it sees the close: poll, never sleep-and-hope
        while not (again := Dialogue(run.plain)).greeting.startswith("220"):
            assert again.greeting.startswith("421 4.7.0"), again.greeting
            assert time.monotonic() < deadline, "a freed slot was never given back"
            time.sleep(0.02)
        assert again.greeting.startswith("220")  # a freed slot can be used again
    with running_smtp(tmp_path / "proxy", {"SCANGW_SMTP_PROXY_CIDRS": "127.0.0.1/32"}, limits=limits) as run:
        kept = [Dialogue(run.plain) for _ in range(3)]  # behind a proxy, one address is many devices
        assert all(k.greeting.startswith("220") for k in kept)
        # The door is full of sessions that did not log in: the oldest makes room (see test_smtp_preauth).
        assert Dialogue(run.plain).greeting.startswith("220")
        assert kept[0].reply().startswith("421 4.7.0") and kept[0].closed()


def test_stop_lets_data_finish_and_tells_idle_sessions_421(tmp_path: Path) -> None:
    with running_smtp(tmp_path) as run:
        busy = in_data(run)
        idle = logged_in(run)
        run.stop()
        assert idle.reply().startswith("421 4.3.2") and idle.closed()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the listener goes away at once
            try:
                socket.create_connection(run.plain, timeout=1).close()
            except OSError:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the listener still accepts connections after stop")
        busy.send(MESSAGE[50:] + b".\r\n")
        assert busy.reply().startswith("250 2.0.0 Ok: queued as ")
        assert busy.reply().startswith("421 4.3.2") and busy.closed()
    [job], queued, messages = stored(tmp_path)
    assert queued == 1 and messages[job.id] == MESSAGE


def cut_by_the_server(talk: Dialogue, within: float) -> bool:
    """True when the server closes (EOF or reset, after at most a 421) within `within` seconds; False when
    the connection is still open then. `Dialogue.closed()` cannot tell these apart: a timeout looks closed."""
    talk.sock.settimeout(within)
    try:
        while line := talk.file.readline():
            if not line.startswith(b"421"):
                return False
        return True
    except TimeoutError:
        return False
    except OSError:
        return True


def test_a_session_still_in_data_at_the_deadline_is_cut_and_nothing_is_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="scangw.smtp"):
        with running_smtp(tmp_path, limits=SmtpLimits(stop_deadline_seconds=0.5)) as run:
            busy = in_data(run)
            started = time.monotonic()
            run.stop()
            assert busy.reply().startswith("421 4.3.2")  # a temporary refusal: the device sends the scan again
            assert cut_by_the_server(busy, within=3.0), "the stop deadline never cut the session in DATA"
            assert time.monotonic() - started < 5.0
    assert stored(tmp_path)[:2] == ([], 0)
    assert any("event=smtp.stop_cut" in r.getMessage() for r in caplog.records)


def test_a_session_in_data_before_the_deadline_is_not_cut(tmp_path: Path) -> None:
    """The other side of the check above: an open session is not mistaken for a cut one."""
    with running_smtp(tmp_path, limits=SmtpLimits(stop_deadline_seconds=30)) as run:
        busy = in_data(run)
        assert not cut_by_the_server(busy, within=0.5)
        busy.close()


def test_the_door_takes_its_limits_from_the_settings(tmp_path: Path) -> None:
    with running_smtp(tmp_path, {"SCANGW_SMTP_MAX_PER_ADDRESS": "1"}) as run:
        first = Dialogue(run.plain)
        assert first.greeting.startswith("220")
        second = Dialogue(run.plain)
        assert second.greeting.startswith("421 4.7.0") and second.closed()
