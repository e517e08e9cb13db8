"""Oversize messages: every client reads a permanent `552 5.3.4`, however large the message and whether or not
it announced `SIZE=`; nothing is stored, and no line of the refused body is ever taken as a command."""

from __future__ import annotations

import base64
import contextlib
import logging
import smtplib
import threading
from pathlib import Path

import pytest

from gateway.intake.smtp_limits import SmtpLimits
from tests.integration.test_smtp_harness import USER, Dialogue, running_smtp

MB = 1024 * 1024
#: Body lines that would each get a reply if they were ever read as commands after the refusal.
COMMANDS = b"MAIL FROM:<evil@contoso.com>\r\nRCPT TO:<bob@contoso.com>\r\nDATA\r\nNOOP\r\n"


def body(size: int) -> bytes:
    line = b"x" * 998 + b"\r\n"
    return b"Subject: big\r\n\r\n" + line * (size // len(line)) + COMMANDS


def test_smtplib_without_size_gets_552_for_a_message_five_times_the_limit(tmp_path: Path) -> None:
    with running_smtp(tmp_path, {"SCANGW_MAX_MESSAGE_MB": "1"}) as run:
        with smtplib.SMTP(*run.plain, timeout=30) as client:
            client.login(USER, run.password)
            client.esmtp_features.pop("size", None)  # a client that never sends SIZE=
            with pytest.raises(smtplib.SMTPDataError) as refused:
                client.sendmail("s@contoso.com", ["bob@contoso.com"], body(5 * MB))
            assert refused.value.smtp_code == 552 and refused.value.smtp_error.startswith(b"5.3.4")
            assert client.noop()[0] == 250  # the session goes on, no stray replies
            client.sendmail("s@contoso.com", ["bob@contoso.com"], b"Subject: small\r\n\r\nhello\r\n")
        assert len(run.jobs()) == 1 and run.queue_count() == 1


def test_raw_client_gets_exactly_one_552_then_its_next_command_answered(tmp_path: Path) -> None:
    with running_smtp(tmp_path, {"SCANGW_MAX_MESSAGE_MB": "1"}) as run:
        talk = Dialogue(run.plain)
        talk.ask("EHLO x")
        assert talk.ask("AUTH PLAIN " + base64.b64encode(f"\0{USER}\0{run.password}".encode()).decode())[:3] == "235"
        talk.ask("MAIL FROM:<s@contoso.com>")
        talk.ask("RCPT TO:<bob@contoso.com>")
        assert talk.ask("DATA").startswith("354")
        writer = threading.Thread(target=talk.send, args=(body(8 * MB) + b".\r\n",))
        writer.start()  # the client writes everything before it reads, as most do
        assert talk.reply().startswith("552 5.3.4")
        writer.join(30)
        assert talk.ask("RSET") == "250 OK"  # not a reply to a body line
        assert talk.ask("NOOP") == "250 OK"
        assert run.jobs() == [] and run.blobs() == []


def test_past_the_drain_bound_the_door_refuses_and_closes_without_storing(tmp_path: Path) -> None:
    limits = SmtpLimits(oversize_drain_bytes=3 * MB)
    with running_smtp(tmp_path, {"SCANGW_MAX_MESSAGE_MB": "1"}, limits=limits) as run:
        with smtplib.SMTP(*run.plain, timeout=30) as client:
            client.login(USER, run.password)
            client.esmtp_features.pop("size", None)
            with pytest.raises((smtplib.SMTPDataError, smtplib.SMTPServerDisconnected, OSError)) as refused:
                client.sendmail("s@contoso.com", ["bob@contoso.com"], body(10 * MB))
            if isinstance(refused.value, smtplib.SMTPDataError):
                assert refused.value.smtp_code == 552
        assert run.jobs() == [] and run.blobs() == []


def test_after_the_cut_no_buffered_body_line_is_read_as_a_command(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    limits = SmtpLimits(oversize_drain_bytes=2 * MB)
    evil = b"MAIL FROM:<evil@contoso.com>\r\n" * (12 * MB // 30)  # every line of the body is a command
    with caplog.at_level(logging.DEBUG):
        with running_smtp(tmp_path, {"SCANGW_MAX_MESSAGE_MB": "1"}, limits=limits) as run:
            talk = Dialogue(run.plain)
            talk.ask("EHLO x")
            auth = base64.b64encode(f"\0{USER}\0{run.password}".encode()).decode()
            assert talk.ask("AUTH PLAIN " + auth).startswith("235")
            talk.ask("MAIL FROM:<s@contoso.com>")
            talk.ask("RCPT TO:<bob@contoso.com>")
            assert talk.ask("DATA").startswith("354")
            with contextlib.suppress(OSError):
                talk.send(b"Subject: x\r\n\r\n" + evil)
            with contextlib.suppress(OSError):  # the reply may be lost to a reset: the client was still writing
                assert talk.reply().startswith("552 5.3.4")
            assert talk.closed()
    assert any("event=smtp.drain_cut" in r.getMessage() for r in caplog.records)  # the bounded path was taken
    parsed = [r.getMessage() for r in caplog.records if "evil@contoso.com" in r.getMessage()]
    assert parsed == []
