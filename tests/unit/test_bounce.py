"""Reading non-delivery reports: which job bounced, for whom, and why (RFC 3464 as Exchange writes it)."""

from __future__ import annotations

from gateway.core.bounce import job_id_of, read_bounce

JOB = "018f3a2b4c5d1a2b3c4d5e6f"

EXCHANGE_NDR = (
    "From: Microsoft Outlook <MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@contoso.com>\r\n"
    "To: <scanner@contoso.com>\r\n"
    "Subject: Undeliverable: Scan from mfp1\r\n"
    "MIME-Version: 1.0\r\n"
    'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n'
    "\r\n"
    "--b1\r\n"
    'Content-Type: multipart/alternative; boundary="b2"\r\n\r\n'
    "--b2\r\nContent-Type: text/plain\r\n\r\nYour message to nobody@fabrikam.com couldn't be delivered.\r\n--b2--\r\n"
    "--b1\r\n"
    "Content-Type: message/delivery-status\r\n\r\n"
    "Reporting-MTA: dns;AM0PR01MB1234.eurprd01.prod.exchangelabs.com\r\n"
    "Received-From-MTA: dns;AM0PR01MB1234.eurprd01.prod.exchangelabs.com\r\n"
    "\r\n"
    "Original-Recipient: rfc822;Nobody@Fabrikam.com\r\n"
    "Final-Recipient: rfc822;nobody@fabrikam.com\r\n"
    "Action: failed\r\n"
    "Status: 5.1.1\r\n"
    "Diagnostic-Code: smtp;550 5.1.1 <nobody@fabrikam.com>: Recipient\r\n"
    " address rejected: User unknown\r\n"
    "\r\n"
    "Final-Recipient: rfc822;slow@fabrikam.com\r\n"
    "Action: delayed\r\n"
    "Status: 4.4.7\r\n"
    "\r\n"
    "--b1\r\n"
    "Content-Type: message/rfc822\r\n\r\n"
    "From: Front desk <scanner@contoso.com>\r\n"
    "To: nobody@fabrikam.com, slow@fabrikam.com\r\n"
    f"Message-ID: <scan.{JOB}.links@contoso.com>\r\n"
    "Subject: Scan from mfp1\r\n"
    "\r\n"
    "Download links inside.\r\n"
    "--b1--\r\n"
).encode()


def test_an_exchange_report_names_the_job_the_refused_recipient_and_the_reason() -> None:
    bounce = read_bounce(EXCHANGE_NDR)
    assert bounce is not None and bounce.job_id == JOB
    assert [(r.recipient, r.status) for r in bounce.refused] == [
        ("nobody@fabrikam.com", "5.1.1")
    ]  # not the delayed one
    assert "User unknown" in bounce.refused[0].diagnostic
    assert "nobody@fabrikam.com" in bounce.reason() and "Fix:" in bounce.reason()


def test_a_report_cut_short_is_still_read_from_its_head() -> None:
    """Only the first 256 KiB are fetched; the original's Message-ID may then come from In-Reply-To."""
    head = EXCHANGE_NDR[: EXCHANGE_NDR.index(b"--b1\r\nContent-Type: message/rfc822")]
    assert read_bounce(head) is None  # no way to tell whose it is
    threaded = head.replace(b"MIME-Version", f"In-Reply-To: <scan.{JOB}@contoso.com>\r\nMIME-Version".encode())
    bounce = read_bounce(threaded)
    assert bounce is not None and bounce.job_id == JOB


def test_other_mail_is_not_a_bounce() -> None:
    assert read_bounce(b"Subject: hello\r\n\r\nhi\r\n") is None
    assert read_bounce(EXCHANGE_NDR.replace(JOB.encode(), b"not-a-job")) is None
    assert read_bounce(EXCHANGE_NDR.replace(b"Action: failed", b"Action: delivered")) is None


def test_only_our_message_ids_name_a_job() -> None:
    assert job_id_of(f"<scan.{JOB}@contoso.com>") == JOB
    assert job_id_of(f"<scan.{JOB}.links@contoso.com>") == JOB
    assert job_id_of(f"<notice.{JOB}@contoso.com>") is None
    assert job_id_of("<abc@contoso.com>") is None


def test_a_report_whose_mime_is_not_rfc_3464_is_read_from_its_text() -> None:
    """Some converters hand Exchange a plain HTML message; what decides is what it says, not its class."""
    html = (
        "From: postmaster@contoso.com\r\nSubject: Undeliverable: Scan from mfp1\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        "<p>Delivery has failed to these recipients:</p><pre>\r\n"
        "Final-Recipient: rfc822;gone@fabrikam.com\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp;550 5.1.1 User unknown\r\n"
        f"Message-ID: &lt;scan.{JOB}@contoso.com&gt;</pre>\r\n"
    ).encode()
    bounce = read_bounce(html)
    assert bounce is not None and bounce.job_id == JOB
    assert [(r.recipient, r.status) for r in bounce.refused] == [("gone@fabrikam.com", "5.1.1")]
    assert "User unknown" in bounce.refused[0].diagnostic
    delayed = html.replace(b"Status: 5.1.1", b"Status: 4.4.7").replace(b"550 5.1.1", b"451 4.4.7")
    assert read_bounce(delayed.replace(b"Undeliverable:", b"Delayed:").replace(b"has failed", b"is delayed")) is None


def test_a_status_with_a_comment_keeps_the_code_and_gives_the_words_to_the_diagnostic() -> None:
    report = EXCHANGE_NDR.replace(b"Status: 5.1.1", b"Status: 5.1.1 (bad destination mailbox address)")
    bounce = read_bounce(report)
    assert bounce is not None and bounce.refused[0].status == "5.1.1"
    assert "bad destination mailbox address" in bounce.refused[0].diagnostic


def test_a_recipient_that_is_not_an_address_is_not_passed_on_as_one() -> None:
    report = EXCHANGE_NDR.replace(b"Original-Recipient: rfc822;Nobody@Fabrikam.com\r\n", b"").replace(
        b"Final-Recipient: rfc822;nobody@fabrikam.com", b"Final-Recipient: rfc822;|/usr/bin/procmail -f-"
    )
    bounce = read_bounce(report)
    assert bounce is not None and [r.recipient for r in bounce.refused] == ["a recipient"]
    assert "procmail" not in bounce.reason()
