"""SMTPUTF8 (RFC 6531): the door offers it, so relays such as Postfix that mark mail with raw UTF-8 headers as
SMTPUTF8 can hand it over instead of bouncing it (5.6.7), and UTF-8 local parts are accepted where the device
may send to the domain. Bytes that are not UTF-8 in an address are refused with 553, never stored."""

from __future__ import annotations

import base64
import smtplib
from pathlib import Path

from gateway.services import Services
from tests.integration.test_smtp_clients import deliver_all
from tests.integration.test_smtp_harness import USER, Dialogue, running_smtp

MESSAGE = (
    "From: Jürgen Müller <jmueller@contoso.com>\r\nTo: Jürgen <alice@contoso.com>\r\nSubject: Größe prüfen\r\n"
    "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    "Grüße\r\n"
).encode()


def test_smtputf8_is_offered_and_mail_flagged_smtputf8_is_queued_and_delivered(tmp_path: Path) -> None:
    """What Postfix sends for a scan with a raw UTF-8 subject and sender name: MAIL FROM ... SMTPUTF8."""
    with running_smtp(tmp_path) as run:
        with smtplib.SMTP(*run.plain, timeout=10) as client:
            client.ehlo("relay")
            assert client.has_extn("smtputf8") and client.has_extn("8bitmime")
            client.login(USER, run.password)
            refused = client.sendmail(
                "jürgen@contoso.com",  # any sender is fine: From is rewritten
                ["alice@contoso.com", "bob@contoso.com"],
                MESSAGE,
                mail_options=["SMTPUTF8", "BODY=8BITMIME"],
            )
            assert refused == {}
        [job] = run.jobs()
        assert set(job.to) == {"alice@contoso.com", "bob@contoso.com"}
    [delivered] = deliver_all(tmp_path)
    assert delivered["Subject"] == "Größe prüfen"
    body = delivered.get_body(("plain",))
    assert body is not None and body.get_content().strip() == "Grüße"


def test_in_smtputf8_mode_the_policy_holds_and_bytes_that_are_not_utf8_are_refused(tmp_path: Path) -> None:
    with running_smtp(tmp_path) as run:
        talk = Dialogue(run.plain)
        talk.ask("EHLO relay")
        assert talk.ask("AUTH PLAIN " + base64.b64encode(f"\0{USER}\0{run.password}".encode()).decode())[:3] == "235"
        assert talk.ask("MAIL FROM:<s@contoso.com> SMTPUTF8").startswith("250")
        assert talk.ask("RCPT TO:<bob@fabrikam.com>").startswith("550 5.7.1")
        talk.send(b"RCPT TO:<j\xfcrgen@contoso.com>\r\n")  # Latin-1, not UTF-8
        assert talk.reply().startswith("553 5.1.3")
        assert talk.ask("RCPT TO:<bob@contoso.com>").startswith("250")
        assert run.jobs() == []


def test_utf8_addresses_follow_the_shared_recipient_decision(tmp_path: Path) -> None:
    """gateway.core.addresses: an IDN domain goes out as its A-label; a non-ASCII local part cannot be delivered
    through Graph, so it is refused at RCPT (553 naming it), never accepted and retried for a day."""

    async def allow_idn(services: Services) -> None:
        await services.registry.update(USER, allow_to=["*@contoso.com", "*@bücher.example"])

    with running_smtp(tmp_path, prepare=allow_idn) as run:
        talk = Dialogue(run.plain)
        talk.ask("EHLO relay")
        assert talk.ask("AUTH PLAIN " + base64.b64encode(f"\0{USER}\0{run.password}".encode()).decode())[:3] == "235"
        assert talk.ask("MAIL FROM:<s@contoso.com> SMTPUTF8").startswith("250")
        refused = talk.ask("RCPT TO:<jürgen@contoso.com>")
        assert refused.startswith("553 5.1.3") and "rgen@contoso.com" in refused
        assert talk.ask("RCPT TO:<anna@bücher.example>").startswith("250")
        assert talk.ask("DATA").startswith("354")
        talk.send(MESSAGE + b".\r\n")
        assert talk.reply().startswith("250 2.0.0")
        [job] = run.jobs()
        assert job.to == ("anna@xn--bcher-kva.example",)
