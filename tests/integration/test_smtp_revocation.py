"""Revocation mid-session (issue 9 item 8): a session that logged in keeps no rights the admin took away.
The device record is read again at the first RCPT of each message and at the end of DATA."""

from __future__ import annotations

from pathlib import Path

from tests.integration.test_smtp_harness import USER, logged_in, running_smtp

MESSAGE = b"Subject: scan\r\n\r\nhello\r\n"


def test_revoked_between_messages_refuses_the_next_recipient(tmp_path: Path) -> None:
    with running_smtp(tmp_path) as run:
        talk = logged_in(run)
        assert talk.ask("MAIL FROM:<s@contoso.com>").startswith("250")
        assert talk.ask("RCPT TO:<bob@contoso.com>").startswith("250")
        assert talk.ask("DATA").startswith("354")
        talk.send(MESSAGE + b".\r\n")
        assert talk.reply().startswith("250 2.0.0")
        run.call(run.services.registry.revoke(USER))
        assert talk.ask("MAIL FROM:<s@contoso.com>").startswith("250")
        refused = talk.ask("RCPT TO:<bob@contoso.com>")
        assert refused.startswith("550 5.7.1") and "revoked" in refused
        assert len(run.jobs()) == 1


def test_revoked_during_data_stores_nothing(tmp_path: Path) -> None:
    with running_smtp(tmp_path) as run:
        talk = logged_in(run)
        talk.ask("MAIL FROM:<s@contoso.com>")
        assert talk.ask("RCPT TO:<bob@contoso.com>").startswith("250")
        assert talk.ask("DATA").startswith("354")
        talk.send(MESSAGE[:10])
        run.call(run.services.registry.revoke(USER))
        talk.send(MESSAGE[10:] + b".\r\n")
        refused = talk.reply()
        assert refused.startswith("550 5.7.1") and "revoked" in refused
        assert run.jobs() == [] and run.queue_count() == 0 and run.blobs() == []


def test_a_narrowed_allow_list_applies_to_the_message_in_flight(tmp_path: Path) -> None:
    with running_smtp(tmp_path) as run:
        talk = logged_in(run)
        talk.ask("MAIL FROM:<s@contoso.com>")
        assert talk.ask("RCPT TO:<bob@contoso.com>").startswith("250")
        assert talk.ask("DATA").startswith("354")
        run.call(run.services.registry.update(USER, allow_to=["alice@contoso.com"]))
        talk.send(MESSAGE + b".\r\n")
        refused = talk.reply()
        assert refused.startswith("550 5.7.1") and "bob@contoso.com" in refused
        assert run.jobs() == [] and run.queue_count() == 0
        talk.ask("MAIL FROM:<s@contoso.com>")
        assert talk.ask("RCPT TO:<bob@contoso.com>").startswith("550 5.7.1")
        assert talk.ask("RCPT TO:<alice@contoso.com>").startswith("250")


def test_a_rotated_password_ends_the_login(tmp_path: Path) -> None:
    with running_smtp(tmp_path) as run:
        talk = logged_in(run)
        run.call(run.services.registry.rotate(USER))
        talk.ask("MAIL FROM:<s@contoso.com>")
        assert talk.ask("RCPT TO:<bob@contoso.com>").startswith("530 5.7.0")
        assert talk.ask("MAIL FROM:<s@contoso.com>").startswith("530")  # must log in again
