"""Writes the bounce-report corpus in tests/data/bounces/ and its manifest (for each report: its shape, the
job it names, and each refused recipient with its status code; `job: null` when it is not a bounce).

Each report is written byte by byte in the shape a real mail system writes it (Office 365, Exchange 2003,
qmail, OpenSMTPD, Postfix/Gmail RFC 3464, auto-replies), with the original Message-ID one of ours, so the
quirks stay: CRLF or bare LF, folded fields, base64 and quoted-printable parts, HTML entities.
Deterministic. Run: python -m tests.data.bounces.make_bounces
"""

from __future__ import annotations

import base64
import json
import quopri
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOMAIN = "contoso.com"


def job(n: int) -> str:
    return f"018f3a2b4c5d{n:012x}"


def mid(n: int, links: bool = False) -> str:
    return f"<scan.{job(n)}{'.links' if links else ''}@{DOMAIN}>"


def crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def lf(text: str) -> bytes:
    return text.encode()


def b64(text: str, eol: str = "\r\n") -> str:
    return base64.encodebytes(text.encode()).decode().replace("\n", eol)


def qp(text: str) -> str:
    return quopri.encodestring(text.encode()).decode()


ORIGINAL_HEADERS = """Received: from AM0PR01MB1234.eurprd01.prod.exchangelabs.com (2603:10a6:208::1) by
 AM0PR01MB1234.eurprd01.prod.exchangelabs.com with HTTPS; Tue, 1 Dec 2026 15:00:00 +0000
From: Front desk <scanner@contoso.com>
To: {to}
Subject: Scan from mfp1
Date: Tue, 1 Dec 2026 15:00:00 +0000
Message-ID: {mid}
MIME-Version: 1.0
"""


def reports() -> dict[str, tuple[bytes, dict[str, object]]]:
    out: dict[str, tuple[bytes, dict[str, object]]] = {}

    def add(name: str, data: bytes, shape: str, n: int | None, refused: list[tuple[str, str]]) -> None:
        out[name] = (data, {"shape": shape, "job": job(n) if n else None, "refused": [list(r) for r in refused]})

    # 1. Office 365, multipart/report with text parts only: the original survives only as prose headers.
    html = (
        "<html><body><p><b>Your message to nobody@fabrikam.com couldn't be delivered.</b></p>"
        "<p>nobody wasn't found at fabrikam.com.</p>"
        "<p><b>Diagnostic information for administrators:</b></p>"
        "<p>Generating server: AM0PR01MB1234.eurprd01.prod.exchangelabs.com<br>"
        "nobody@fabrikam.com<br>Remote Server returned '550 5.1.1 RESOLVER.ADR.RecipNotFound; not found'</p>"
        "<p><b>Original message headers:</b></p><pre>"
        + ORIGINAL_HEADERS.format(to="nobody@fabrikam.com", mid=mid(1)).replace("<", "&lt;").replace(">", "&gt;")
        + "</pre></body></html>\n"
    )
    add(
        "o365_prose_text_parts_only.eml",
        crlf(
            "From: Microsoft Outlook <MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@contoso.com>\n"
            "To: <scanner@contoso.com>\nSubject: Undeliverable: Scan from mfp1\nMIME-Version: 1.0\n"
            'Content-Type: multipart/report; report-type=delivery-status;\n\tboundary="_o365_"\n\n'
            "--_o365_\nContent-Type: text/plain; charset=us-ascii\n\n"
            "Your message to nobody@fabrikam.com couldn't be delivered.\n\n"
            "--_o365_\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: base64\n\n"
            + b64(html, "\n")
            + "--_o365_--\n"
        ),
        "Office 365 multipart/report, text parts only, original headers as HTML prose (base64)",
        1,
        [("nobody@fabrikam.com", "5.1.1")],
    )

    # 2. Office 365, delivery-status but no returned message or headers part: prose again (quoted-printable).
    prose = (
        "Delivery has failed to these recipients or groups:\n\ngone@fabrikam.com\n"
        "The email address you entered couldn't be found.\n\n"
        "Original message headers:\n\n" + ORIGINAL_HEADERS.format(to="gone@fabrikam.com, ok@fabrikam.com", mid=mid(2))
    )
    add(
        "o365_status_without_original.eml",
        crlf(
            "From: postmaster@contoso.onmicrosoft.com\nTo: scanner@contoso.com\n"
            "Subject: Undeliverable: Scan from mfp1\nMIME-Version: 1.0\n"
            'Content-Type: multipart/report; report-type=delivery-status; boundary="b2"\n\n'
            "--b2\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n"
            + qp(prose)
            + "\n--b2\nContent-Type: message/delivery-status\n\n"
            "Reporting-MTA: dns;AM0PR01MB1234.eurprd01.prod.exchangelabs.com\n\n"
            "Final-Recipient: rfc822;gone@fabrikam.com\nAction: failed\nStatus: 5.1.10\n"
            "Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address\n\n"
            "Final-Recipient: rfc822;ok@fabrikam.com\nAction: delivered\nStatus: 2.0.0\n\n"
            "--b2--\n"
        ),
        "Office 365 multipart/report with delivery-status, no returned message: original headers in prose (QP)",
        2,
        [("gone@fabrikam.com", "5.1.10")],
    )

    # 3. Exchange 2003: multipart/mixed, the original attached as message/rfc822.
    add(
        "exchange2003_mixed_rfc822.eml",
        crlf(
            "From: System Administrator <postmaster@contoso.com>\nTo: scanner@contoso.com\n"
            "Subject: Undeliverable: Scan from mfp1\nMIME-Version: 1.0\n"
            'Content-Type: multipart/mixed;\n\tboundary="----_=_NextPart_001_01C2A9B1.6E2D7F40"\n\n'
            "------_=_NextPart_001_01C2A9B1.6E2D7F40\nContent-Type: text/plain; charset=iso-8859-1\n\n"
            "Your message did not reach some or all of the intended recipients.\n\n"
            "      Subject:\tScan from mfp1\n      Sent:\t12/1/2026 3:00 PM\n\n"
            "The following recipient(s) cannot be reached:\n\n"
            "      'nobody@fabrikam.com' on 12/1/2026 3:01 PM\n"
            "            The e-mail address could not be found.\n"
            "            <mx.fabrikam.com #5.1.1 smtp;550 5.1.1 User unknown>\n\n"
            "------_=_NextPart_001_01C2A9B1.6E2D7F40\nContent-Type: message/rfc822\n\n"
            + ORIGINAL_HEADERS.format(to="nobody@fabrikam.com", mid=mid(3, links=True))
            + "Content-Type: text/plain\n\nDownload links inside.\n\n"
            "------_=_NextPart_001_01C2A9B1.6E2D7F40--\n"
        ),
        "Exchange 2003 multipart/mixed with the original as message/rfc822",
        3,
        [("nobody@fabrikam.com", "5.1.1")],
    )

    # 4. qmail: plain text, two refused recipients, the original after "Below this line". Bare LF.
    add(
        "qmail_plain_text.eml",
        lf(
            "From: MAILER-DAEMON@mx.fabrikam.com\nTo: scanner@contoso.com\nSubject: failure notice\n\n"
            "Hi. This is the qmail-send program at mx.fabrikam.com.\n"
            "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
            "This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
            "<nobody@fabrikam.com>:\n192.0.2.10 does not like recipient.\n"
            "Remote host said: 550 5.1.1 <nobody@fabrikam.com>: Recipient address rejected: User unknown\n"
            "Giving up on 192.0.2.10.\n\n"
            "<full@fabrikam.com>:\nSorry, this mailbox is over its quota. (#5.2.2)\n\n"
            "--- Below this line is a copy of the message.\n\n"
            "Return-Path: <scanner@contoso.com>\n"
            + ORIGINAL_HEADERS.format(to="nobody@fabrikam.com, full@fabrikam.com, cc@fabrikam.com", mid=mid(4))
            + "\nScan attached.\n"
        ),
        "qmail plain text, two recipients, codes after the address",
        4,
        [("nobody@fabrikam.com", "5.1.1"), ("full@fabrikam.com", "5.2.2")],
    )

    # 5. Office 365 relay, plain text, quoted-printable, 5.7.515, the Message-ID folded onto its own line.
    text = (
        "Delivery has failed to these recipients or groups:\n\nblocked@fabrikam.com\n"
        "Your message wasn't delivered because the recipient's email provider rejected it.\n\n"
        "Diagnostic information for administrators:\n\nGenerating server: DB8PR01MB5678.eurprd01.prod.outlook.com\n\n"
        "blocked@fabrikam.com\nRemote Server returned '550 5.7.515 Access denied, sending domain contoso.com "
        "doesn't meet the required authentication level.'\n\nOriginal message headers:\n\n"
        "From: scanner@contoso.com\nTo: blocked@fabrikam.com\nSubject: Scan from mfp1\n"
        f"Message-ID:\n {mid(5)}\n"
    )
    add(
        "o365_relay_plain_text.eml",
        crlf(
            "From: postmaster@outlook.com\nTo: scanner@contoso.com\nSubject: Undeliverable: Scan from mfp1\n"
            "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n"
            + qp(text)
        ),
        "Office 365 relay plain text (QP), 5.7.515, folded Message-ID in the quoted headers",
        5,
        [("blocked@fabrikam.com", "5.7.515")],
    )

    # 6./7. OpenSMTPD: message/delivery-status inside multipart/mixed; a delay, then a failure.
    def opensmtpd(n: int, action: str, status: str, words: str) -> bytes:
        return lf(
            "From: Mailer Daemon <MAILER-DAEMON@relay.fabrikam.com>\nTo: scanner@contoso.com\n"
            f"Subject: {'Delivery status notification: delayed' if action == 'delayed' else 'Delivery status notification: error'}\n"
            'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="15405220880.a1b2c3.relay"\n\n'
            "--15405220880.a1b2c3.relay\nContent-Type: text/plain; charset=utf-8\n\n"
            f"Hi!\n\nThis is the MAILER-DAEMON, please DO NOT REPLY to this email.\n\n{words}\n\n"
            "--15405220880.a1b2c3.relay\nContent-Type: message/delivery-status\n\n"
            "Reporting-MTA: dns; relay.fabrikam.com\n\n"
            f"Final-Recipient: rfc822; slow@fabrikam.com\nAction: {action}\nStatus: {status}\n\n"
            "--15405220880.a1b2c3.relay\nContent-Type: message/rfc822\n\n"
            + ORIGINAL_HEADERS.format(to="slow@fabrikam.com", mid=mid(n))
            + "\nScan attached.\n--15405220880.a1b2c3.relay--\n"
        )

    add(
        "opensmtpd_mixed_delayed.eml",
        opensmtpd(6, "delayed", "4.7.0", "An error has occurred while attempting to deliver a message; retrying."),
        "OpenSMTPD multipart/mixed with message/delivery-status: a delay, not a bounce",
        None,
        [],
    )
    add(
        "opensmtpd_mixed_failed.eml",
        opensmtpd(7, "failed", "5.0.0", "Delivery of this message failed permanently."),
        "OpenSMTPD multipart/mixed with message/delivery-status: a failure",
        7,
        [("slow@fabrikam.com", "5.0.0")],
    )

    # 8./9. Auto-replies naming our Message-ID in In-Reply-To: never bounces.
    add(
        "autoreply_out_of_office.eml",
        crlf(
            "From: Desk <desk@fabrikam.com>\nTo: scanner@contoso.com\nSubject: Automatic reply: Scan from mfp1\n"
            f"In-Reply-To: {mid(8)}\nReferences: {mid(8)}\nAuto-Submitted: auto-replied\n"
            "X-MS-Exchange-Inbox-Rules-Loop: desk@fabrikam.com\nContent-Type: text/plain; charset=utf-8\n\n"
            "I am out of the office until 8 December and cannot read mail that could not be delivered to me earlier.\n"
            "For urgent matters, contact frontdesk@fabrikam.com.\n"
        ),
        "RFC 3834 out-of-office auto-reply (even with failure-like wording)",
        None,
        [],
    )
    add(
        "autoreply_thanks.eml",
        lf(
            "From: Support <support@fabrikam.com>\nTo: scanner@contoso.com\nSubject: RE: Scan from mfp1 [#4711]\n"
            f"In-Reply-To: {mid(9)}\nX-Autoreply: yes\nPrecedence: auto_reply\nContent-Type: text/plain\n\n"
            "Thank you for your mail. We have received your message and will answer within two working days.\n\n"
            "-----Original Message-----\nFrom: scanner@contoso.com\nSent: Tuesday, December 1, 2026 3:00 PM\n"
            f"Subject: Scan from mfp1\nMessage-ID: {mid(9)}\n"
        ),
        "ticket-system auto-reply (X-Autoreply, Precedence: auto_reply) quoting the original",
        None,
        [],
    )

    # 10. RFC 3464: mixed Actions, a Status with a comment, text/rfc822-headers in quoted-printable, folding.
    headers = ORIGINAL_HEADERS.format(
        to="a@fabrikam.com, b@fabrikam.com, c@fabrikam.com, d@fabrikam.com", mid=mid(10)
    ).replace("Subject: Scan from mfp1", "Subject: Scan from mfp1 =?utf-8?q?=C3=9Cberweisung?=")
    add(
        "rfc3464_mixed_actions.eml",
        lf(
            "From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\nTo: scanner@contoso.com\n"
            "Subject: Delivery Status Notification (Failure)\nMIME-Version: 1.0\nContent-Type: multipart/report;\n"
            ' report-type=delivery-status;\n boundary="00000000000012345678"\n\n'
            "--00000000000012345678\nContent-Type: text/plain; charset=UTF-8\n\n"
            "There was a problem delivering your message.\n\n"
            "--00000000000012345678\nContent-Type: message/delivery-status\n\n"
            "Reporting-MTA: dns; googlemail.com\nArrival-Date: Tue, 01 Dec 2026 15:00:01 -0800 (PST)\n\n"
            "Final-Recipient: rfc822; a@fabrikam.com\nAction: failed\nStatus: 5.1.1\nRemote-MTA: dns; mx.fabrikam.com.\n"
            "Diagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach does\n"
            "    not exist. Please try double-checking the recipient's email\n    address for typos.\n\n"
            "Final-Recipient: rfc822; b@fabrikam.com\nAction: delayed\nStatus: 4.4.7\n"
            "Will-Retry-Until: Thu, 03 Dec 2026 15:00:01 -0800 (PST)\n\n"
            "Final-Recipient: rfc822; c@fabrikam.com\nAction: delivered\nStatus: 2.0.0\n\n"
            "Original-Recipient: rfc822;D@Fabrikam.com\nFinal-Recipient: rfc822; d@fabrikam.com\nAction: failed\n"
            "Status: 5.0.0 (permanent failure)\n\n"
            "--00000000000012345678\nContent-Type: text/rfc822-headers\nContent-Transfer-Encoding: quoted-printable\n\n"
            + qp(headers)
            + "\n--00000000000012345678--\n"
        ),
        "RFC 3464 with failed/delayed/delivered/failed recipients, a Status comment, QP text/rfc822-headers, LF",
        10,
        [("a@fabrikam.com", "5.1.1"), ("d@fabrikam.com", "5.0.0")],
    )

    # 11. RFC 3464 with recipients that are not addresses, a base64 text part, the original returned, CRLF.
    add(
        "rfc3464_not_addresses.eml",
        crlf(
            "From: MAILER-DAEMON@mx.fabrikam.com (Mail Delivery System)\nTo: scanner@contoso.com\n"
            "Subject: Undelivered Mail Returned to Sender\nAuto-Submitted: auto-replied\nMIME-Version: 1.0\n"
            'Content-Type: multipart/report; report-type=delivery-status;\n\tboundary="9C1F3A0B2.1764601200/mx"\n\n'
            "--9C1F3A0B2.1764601200/mx\nContent-Type: text/plain; charset=us-ascii\nContent-Transfer-Encoding: base64\n\n"
            + b64("This is the mail system at host mx.fabrikam.com.\n\nYour message could not be delivered.\n")
            + "\n--9C1F3A0B2.1764601200/mx\nContent-Type: message/delivery-status\n\n"
            "Reporting-MTA: dns; mx.fabrikam.com\n\n"
            "Final-Recipient: rfc822; |/usr/bin/procmail\nAction: failed\nStatus: 5.3.0\n"
            "Diagnostic-Code: x-unix; procmail: Couldn't create /var/mail/lists\n\n"
            "Final-Recipient: rfc822; @mx1.fabrikam.com\nOriginal-Recipient: rfc822; lists@fabrikam.com\n"
            "Action: failed\nStatus: 5.4.4\n\n"
            "--9C1F3A0B2.1764601200/mx\nContent-Type: message/rfc822\n\n"
            + ORIGINAL_HEADERS.format(to="lists@fabrikam.com", mid=mid(11))
            + "\nScan attached.\n--9C1F3A0B2.1764601200/mx--\n"
        ),
        "Postfix RFC 3464 whose recipients are a pipe and a bare route (base64 text part, CRLF)",
        11,
        [("a recipient", "5.3.0"), ("lists@fabrikam.com", "5.4.4")],
    )

    # 12. Exchange Online delay notice (RFC 3464, Action: delayed only): not a bounce.
    add(
        "o365_delay_notice.eml",
        crlf(
            "From: Microsoft Outlook <postmaster@contoso.com>\nTo: scanner@contoso.com\n"
            "Subject: Delivery delayed:Scan from mfp1\nMIME-Version: 1.0\n"
            'Content-Type: multipart/report; report-type=delivery-status; boundary="d1"\n\n'
            "--d1\nContent-Type: text/plain\n\nDelivery is delayed to these recipients or groups:\n\n"
            "later@fabrikam.com\n\nThis message hasn't been delivered yet. Delivery will continue to be attempted.\n\n"
            "--d1\nContent-Type: message/delivery-status\n\n"
            "Reporting-MTA: dns;AM0PR01MB1234.eurprd01.prod.exchangelabs.com\n\n"
            "Final-Recipient: rfc822;later@fabrikam.com\nAction: Delayed\nStatus: 4.4.7\n"
            "X-Display-Name: later@fabrikam.com\n\n"
            "--d1\nContent-Type: text/rfc822-headers\n\n"
            + ORIGINAL_HEADERS.format(to="later@fabrikam.com", mid=mid(12))
            + "\n--d1--\n"
        ),
        "Exchange Online delay notice: a delay, not a bounce",
        None,
        [],
    )

    # 13. A real bounce of somebody else's message: not ours.
    add(
        "not_ours.eml",
        crlf(
            "From: postmaster@fabrikam.com\nTo: scanner@contoso.com\nSubject: Undeliverable: Lunch\n"
            "Content-Type: text/plain\n\nDelivery has failed to these recipients or groups:\n\nx@fabrikam.com\n"
            "Remote Server returned '550 5.1.1 User unknown'\n\nOriginal message headers:\n\n"
            "Message-ID: <CAB1234@mail.contoso.com>\nIn-Reply-To: <scan.018f3a2b4c5dzzzzzzzzzzzz@contoso.com>\n"
        ),
        "plain-text bounce of a message that is not ours",
        None,
        [],
    )
    return out


def main() -> None:
    manifest = {}
    for name, (data, meta) in sorted(reports().items()):
        (HERE / name).write_bytes(data)
        manifest[name] = meta
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
