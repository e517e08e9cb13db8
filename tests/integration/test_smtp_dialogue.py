"""The SMTP dialogue as scanners speak it (contract section 5, ../shared/devices.md), against the real door on
loopback with the embedded spool: raw sockets where the exact bytes matter, smtplib elsewhere."""

from __future__ import annotations

import base64
import smtplib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway.core.errors import StorageUnavailable
from gateway.core.jobs import JobState
from gateway.services import Services
from tests.integration.test_smtp_harness import USER, Dialogue, SmtpRun, running_smtp


def B64(text: str) -> str:  # noqa: N802 - reads like the encoding it stands for
    return base64.b64encode(text.encode()).decode()


MESSAGE = b"From: Alice <alice@contoso.com>\r\nTo: bob@contoso.com\r\nSubject: scan\r\n\r\nhello\r\n"


@pytest.fixture
def door(tmp_path: Path) -> Iterator[SmtpRun]:
    with running_smtp(tmp_path) as run:
        yield run


def logged_in(run: SmtpRun, helo: str = "EHLO scanner") -> Dialogue:
    talk = Dialogue(run.plain)
    assert talk.ask(helo).startswith("250")
    assert talk.ask("AUTH PLAIN " + B64(f"\0{USER}\0{run.password}")).startswith("235 2.7.0")
    return talk


def send(talk: Dialogue, data: bytes, to: str = "bob@contoso.com") -> str:
    assert talk.ask("MAIL FROM:<scanner@contoso.com>").startswith("250")
    assert talk.ask(f"RCPT TO:<{to}>").startswith("250")
    assert talk.ask("DATA").startswith("354")
    talk.send(data)
    return talk.reply()


def test_ehlo_offers_size_and_only_plain_and_login(door: SmtpRun) -> None:
    talk = Dialogue(door.plain)
    ehlo = talk.ask("EHLO scanner")
    assert f"250-SIZE {35 * 1024 * 1024}" in ehlo
    assert "250-AUTH LOGIN PLAIN" in ehlo.split("\n")  # no CRAM-MD5: it confuses devices
    assert "STARTTLS" not in ehlo  # no certificate configured
    assert talk.greeting.startswith("220 ") and "ESMTP" in talk.greeting  # some devices EHLO only then


def test_auth_login_challenges_are_exactly_username_and_password(door: SmtpRun) -> None:
    talk = Dialogue(door.plain)
    talk.ask("EHLO xerox")
    assert talk.ask("AUTH LOGIN") == "334 VXNlcm5hbWU6"  # "Username:"
    assert talk.ask(B64(USER)) == "334 UGFzc3dvcmQ6"  # "Password:"
    assert talk.ask(B64(door.password)).startswith("235 2.7.0")


def test_auth_login_with_initial_response_and_plain_by_challenge(door: SmtpRun) -> None:
    talk = Dialogue(door.plain)
    talk.ask("EHLO a")
    assert talk.ask("AUTH LOGIN " + B64(USER)) == "334 UGFzc3dvcmQ6"
    assert talk.ask(B64(door.password)).startswith("235")
    other = Dialogue(door.plain)
    other.ask("EHLO b")
    assert other.ask("AUTH PLAIN") == "334 "
    assert other.ask(B64(f"{USER}\0{USER}\0{door.password}")).startswith("235")  # an authzid is ignored


def test_helo_only_devices_can_authenticate_and_send(door: SmtpRun) -> None:
    talk = logged_in(door, helo="HELO oldscanner")
    assert send(talk, MESSAGE + b".\r\n").startswith("250 2.0.0 Ok: queued as ")


def test_unauthenticated_mail_and_bad_passwords_are_refused(door: SmtpRun) -> None:
    talk = Dialogue(door.plain)
    talk.ask("EHLO x")
    assert talk.ask("MAIL FROM:<a@contoso.com>").startswith("530 5.7.0")
    assert talk.ask("AUTH PLAIN " + B64(f"\0{USER}\0wrong")).startswith("535 5.7.8")
    assert talk.ask("AUTH CRAM-MD5").startswith("504 5.5.4")
    assert talk.ask("AUTH LOGIN").startswith("334")
    assert talk.ask("*").startswith("501")  # the client may cancel


def test_five_failures_for_a_username_then_454_without_checking_the_password(door: SmtpRun) -> None:
    for _ in range(5):
        talk = Dialogue(door.plain)
        talk.ask("EHLO x")
        assert talk.ask("AUTH PLAIN " + B64(f"\0{USER}\0wrong")).startswith("535")
    talk = Dialogue(door.plain)
    talk.ask("HELO x")
    assert talk.ask("AUTH PLAIN " + B64(f"\0{USER}\0{door.password}")).startswith("454 4.7.0")


def test_five_failures_from_one_address_block_other_usernames_too(door: SmtpRun) -> None:
    password = door.add_device("scanner2", sender="scanner@contoso.com")
    for n in range(5):
        talk = Dialogue(door.plain)
        talk.ask("EHLO x")
        assert talk.ask("AUTH PLAIN " + B64(f"\0guess{n}\0x")).startswith("535")
    talk = Dialogue(door.plain)
    talk.ask("EHLO x")
    assert talk.ask("AUTH PLAIN " + B64(f"\0scanner2\0{password}")).startswith("454 4.7.0")


def test_behind_a_proxy_only_the_username_counts(tmp_path: Path) -> None:
    with running_smtp(tmp_path, {"SCANGW_SMTP_PROXY_CIDRS": "127.0.0.0/8"}) as run:
        for n in range(6):
            talk = Dialogue(run.plain)
            talk.ask("EHLO x")
            assert talk.ask("AUTH PLAIN " + B64(f"\0attacker{n}\0x")).startswith("535")
        assert logged_in(run) is not None  # one attacker cannot lock out every scanner behind the proxy


def test_recipients_are_checked_one_by_one_with_a_readable_reason(door: SmtpRun) -> None:
    talk = logged_in(door)
    assert talk.ask("MAIL FROM:<>").startswith("250")  # the envelope sender does not matter
    assert talk.ask("RCPT TO:<bob@contoso.com>").startswith("250")
    refused = talk.ask("RCPT TO:<mallory@evil.example>")
    assert refused.startswith("550 5.7.1 Recipient mallory@evil.example is not allowed for device scanner1")
    assert talk.ask("RCPT TO:<Carol@CONTOSO.com>").startswith("250")
    assert talk.ask("DATA").startswith("354")
    talk.send(MESSAGE + b".\r\n")
    job_id = talk.reply().rsplit(" ", 1)[1]
    [job] = door.jobs()
    assert (job.id, job.to, job.state, job.device) == (
        job_id,
        ("bob@contoso.com", "Carol@contoso.com"),
        JobState.QUEUED,
        USER,
    )
    assert job.size == len(MESSAGE) and door.message(job) == MESSAGE
    assert door.queue_count() == 1


def test_size_is_refused_at_mail_from_and_at_the_end_of_data(tmp_path: Path) -> None:
    with running_smtp(tmp_path, {"SCANGW_MAX_MESSAGE_MB": "1"}) as run:
        talk = logged_in(run)
        refused = talk.ask(f"MAIL FROM:<s@contoso.com> SIZE={2 * 1024 * 1024}")
        assert refused.startswith("552 5.3.4 Message too large: the limit is 1 MB")
        big = b"Subject: big\r\n\r\n" + b"x" * 998 + b"\r\n"
        reply = send(talk, big * 1100 + b".\r\n")
        assert reply.startswith("552 5.3.4")
        assert run.jobs() == [] and run.queue_count() == 0
        assert send(talk, MESSAGE + b".\r\n").startswith("250 2.0.0")  # the session goes on
        assert run.queue_count() == 1


@pytest.mark.parametrize("smuggled", [b"\n.\n", b"\r.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n"])
def test_only_crlf_dot_crlf_ends_data_so_nothing_can_be_smuggled(door: SmtpRun, smuggled: bytes) -> None:
    talk = logged_in(door)
    evil = b"MAIL FROM:<x@contoso.com>\r\nRCPT TO:<bob@contoso.com>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n"
    reply = send(talk, b"Subject: one\r\n\r\nfirst" + smuggled + evil + b".\r\n")
    assert reply.startswith("250 2.0.0")
    assert talk.ask("NOOP").startswith("250")  # no stray replies: the smuggled commands were content
    [job] = door.jobs()
    assert b"Subject: smuggled" in door.message(job)
    assert door.queue_count() == 1


def test_bare_lf_is_normalised_and_dots_unstuffed(door: SmtpRun) -> None:
    talk = logged_in(door)
    lines = b"Subject: lf\n\n" + b"".join(b"line %d of a long bare-LF message\n" % n for n in range(5000))
    assert send(talk, lines + b"\r\n..dot\r\n.\r\n").startswith("250 2.0.0")
    [job] = door.jobs()
    stored = door.message(job)
    assert b"\n" not in stored.replace(b"\r\n", b"") and stored.endswith(b"\r\n.dot\r\n")
    assert stored.count(b"\r\n") == 5000 + 4


def _failing_spool(services: Services) -> None:
    class Broken:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def write(self, name: str, chunks: Any) -> int:
            async for _ in chunks:
                raise StorageUnavailable("disk on fire")
            return 0

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    services.spool = replace(services.spool, blobs=Broken(services.spool.blobs))


def test_storage_failure_answers_451_and_keeps_nothing(tmp_path: Path) -> None:
    with running_smtp(tmp_path, prepare=_failing_spool) as run:
        talk = logged_in(run)
        assert send(talk, MESSAGE * 1000 + b".\r\n").startswith("451 4.3.0")
        assert talk.ask("NOOP").startswith("250")
        assert run.jobs() == [] and run.queue_count() == 0
        assert [b for b in run.blobs() if not b.startswith(".incoming")] == []


def test_unexpected_errors_answer_451_without_a_traceback(tmp_path: Path) -> None:
    def explode(services: Services) -> None:
        async def verify(username: str, password: str) -> Any:
            raise RuntimeError("secret internals /srv/scangw/registry.py line 42")

        services.registry.verify = verify  # type: ignore[method-assign]

    with running_smtp(tmp_path, prepare=explode) as run:
        talk = Dialogue(run.plain)
        talk.ask("EHLO x")
        answer = talk.ask("AUTH PLAIN " + B64(f"\0{USER}\0x"))
        assert answer.startswith("451 4.3.0") and "secret" not in answer and "Traceback" not in answer


def test_devices_allow_listed_by_address_send_without_auth_unless_behind_a_proxy(tmp_path: Path) -> None:
    with running_smtp(tmp_path) as run:
        run.add_device("lobby", sender="scanner@contoso.com", allow_to=["*@contoso.com"], from_ip=["127.0.0.0/8"])
        talk = Dialogue(run.plain)
        talk.ask("HELO lobby")
        assert send(talk, MESSAGE + b".\r\n").startswith("250 2.0.0")
        assert run.jobs()[0].device == "lobby"
    with running_smtp(tmp_path / "proxied", {"SCANGW_SMTP_PROXY_CIDRS": "127.0.0.1/32"}) as run:
        run.add_device("lobby", sender="scanner@contoso.com", from_ip=["127.0.0.0/8"])
        talk = Dialogue(run.plain)
        talk.ask("HELO lobby")
        assert talk.ask("MAIL FROM:<a@contoso.com>").startswith("530 5.7.0")


def test_smtplib_sends_one_job_per_250(door: SmtpRun) -> None:
    with smtplib.SMTP(*door.plain, timeout=10) as client:
        client.login(USER, door.password)
        for n in range(3):
            client.sendmail("scanner@contoso.com", ["bob@contoso.com"], MESSAGE + b"n=%d\r\n" % n)
    assert len(door.jobs()) == 3 and door.queue_count() == 3
