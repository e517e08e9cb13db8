"""Hostile input at the real SMTP door on loopback (issue 9 items 1 and 3): each ends in a clear refusal that
names what was wrong, nothing is stored, and the same session still delivers a good scan afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_smtp_harness import Dialogue, logged_in, running_smtp, stored

GOOD = b"Subject: fine\r\n\r\nscan\r\n"


def send(talk: Dialogue, message: bytes) -> str:
    assert talk.ask("MAIL FROM:<s@contoso.com>").startswith("250")
    assert talk.ask("RCPT TO:<bob@contoso.com>").startswith("250")
    assert talk.ask("DATA").startswith("354")
    talk.send(message + b".\r\n")
    return talk.reply()


@pytest.mark.parametrize(
    "params",
    ["number=1; total=1000000000000", "number=1; total=101", "number=\u00b2; total=3", "number=7; total=3"],
)
def test_a_partial_fragment_claiming_too_much_is_refused_before_250(tmp_path: Path, params: str) -> None:
    bomb = f'Subject: [1/x]\r\nContent-Type: message/partial; id="bomb"; {params}\r\n\r\nSubject: s\r\n\r\nx\r\n'
    with running_smtp(tmp_path) as run:
        talk = logged_in(run)
        answer = send(talk, bomb.encode())
        assert answer.startswith("554 5.6.0") and "message/partial" in answer, answer
        assert talk.ask("RSET").startswith("250")
        assert send(talk, GOOD).startswith("250 2.0.0")  # the session goes on; the door did not die
    jobs, queued, messages = stored(tmp_path)
    assert queued == 1 and list(messages.values()) == [GOOD]


@pytest.mark.parametrize(
    ("rcpt", "shown"),
    [
        (b"a\x01b@contoso.com", "a\\x01b@contoso.com"),
        (b"a\x00b@contoso.com", "a\\x00b@contoso.com"),
        (b"a\x7fb@contoso.com", "a\\x7fb@contoso.com"),
        (b"a" * 65 + b"@contoso.com", "a" * 10),
        (b"a..b@contoso.com", "a..b@contoso.com"),
    ],
)
def test_an_undeliverable_recipient_inside_the_policy_gets_553_naming_it(
    tmp_path: Path, rcpt: bytes, shown: str
) -> None:
    with running_smtp(tmp_path) as run:
        talk = logged_in(run)
        assert talk.ask("MAIL FROM:<s@contoso.com>").startswith("250")
        talk.send(b"RCPT TO:<" + rcpt + b">\r\n")
        answer = talk.reply()
        assert answer.startswith("553 5.1.3") and shown in answer, answer
        assert talk.ask("RCPT TO:<bob@contoso.com>").startswith("250")
    assert stored(tmp_path)[:2] == ([], 0)
