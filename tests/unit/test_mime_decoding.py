"""Subjects, file names and addresses decode the way devices actually write them (pure functions, no I/O)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from gateway.core.mime.charsets import decode_bytes, sniff
from gateway.core.mime.headers import (
    address_list,
    mailbox,
    message_date,
    message_id,
    parse_header_block,
    part_info,
)
from gateway.core.mime.params import parse_structured
from gateway.core.mime.partial import merged_headers, partial_info
from gateway.core.mime.parts import Role, attachment_name, attachment_type, part_role
from gateway.core.mime.words import decode_text


def jis_word(text: str) -> str:
    return "=?ISO-2022-JP?B?" + base64.b64encode(text.encode("iso2022_jp")).decode() + "?="


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"=?UTF-8?B?5pel5pys6Kqe?= =?UTF-8?B?44Gu5paH5a2X?=.pdf", "日本語の文字.pdf"),
        (b"a =?utf-8?q?caf=C3?= =?utf-8?q?=A9?= b", "a café b"),  # one character split across two words
        (jis_word("会議資料").encode(), "会議資料"),
        (b"=?iso-2022-jp*ja?B?GyRCRnxLXDhsGyhC?=", "日本語"),  # RFC 2231 language suffix in an encoded-word
        ("スキャン".encode("cp932"), "スキャン"),  # raw Shift-JIS, no label
        ("スキャン".encode("iso2022_jp"), "スキャン"),  # raw ISO-2022-JP escape sequences
        ("Grüße".encode(), "Grüße"),
        ("résumé.pdf".encode("latin-1"), "résumé.pdf"),  # raw Latin-1 is not mistaken for Shift-JIS
        (b"=?utf-8?q?evil=0D=0ABcc:_x@y?=", "evil Bcc: x@y"),  # no line breaks survive decoding
        (b"=?bogus-charset?B?!!!?= plain", "=?bogus-charset?B?!!!?= plain"),
    ],
)
def test_header_text_decodes_like_a_mail_reader(raw: bytes, expected: str) -> None:
    assert decode_text(raw) == expected


def test_charset_labels_map_to_the_supersets_devices_really_use() -> None:
    assert decode_bytes("①髙".encode("cp932"), "Shift_JIS") == "①髙"  # CP932-only characters
    assert decode_bytes("ｽｷｬﾝ".encode("iso2022_jp_ext"), "ISO-2022-JP") == "ｽｷｬﾝ"  # half-width kana
    assert decode_bytes("Grüße".encode(), "iso-8859-1") == "Grüße"  # a wrong label does not garble UTF-8
    assert decode_bytes(b"\xff\xfe", "no-such-charset") == sniff(b"\xff\xfe")


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        (b"attachment; filename*0*=UTF-8''%E6%97%A5%E6%9C%AC; filename*1*=%E8%AA%9E.pdf; filename=x.pdf", "日本語.pdf"),
        (b'attachment; filename*0="long name "; filename*1="in parts.pdf"', "long name in parts.pdf"),
        (b"attachment; filename*=iso-2022-jp'ja'%1B%24B%46%7C%4B%5C%38%6C%1B%28B.pdf", "日本語.pdf"),
        (b"attachment; filename*=shift_jis''%83%58%83%4C%83%83%83%93.pdf", "スキャン.pdf"),
        (b'inline; filename="=?UTF-8?B?w5xiZXJ3ZWlzdW5nLnBkZg==?="', "Überweisung.pdf"),
        (b"attachment; filename=my scan.pdf", "my scan.pdf"),
        (b'attachment; filename="a;b.pdf"; size=3', "a;b.pdf"),
        (b'attachment; filename="C:\\Scans\\doc.pdf"', "C:\\Scans\\doc.pdf"),
        (b'attachment; filename="unterminated.pdf', "unterminated.pdf"),
        ('attachment; filename="スキャン.pdf"'.encode("cp932"), "スキャン.pdf"),
    ],
)
def test_file_name_parameters_in_every_encoding(raw: bytes, name: str) -> None:
    assert parse_structured(raw)[1]["filename"] == name


def test_part_info_prefers_disposition_name_and_knows_inline_named_parts() -> None:
    block = parse_header_block(
        b'Content-Type: application/pdf;\r\n\tname="type-name.pdf"\r\nContent-Disposition: inline;\r\n'
        b' filename="scan.pdf"\r\nContent-Transfer-Encoding: BASE64\r\nContent-ID: <x@y>\r\n'
    )
    info = part_info(block)
    assert (info.content_type, info.filename, info.disposition, info.encoding, info.content_id) == (
        "application/pdf",
        "scan.pdf",
        "inline",
        "base64",
        "x@y",
    )
    assert part_role(info, "multipart/mixed", None, None) is Role.ATTACHMENT


def test_text_parts_become_the_body_once_and_html_wins_within_an_alternative() -> None:
    plain, html = part_info(parse_header_block(b"")), part_info(parse_header_block(b"Content-Type: text/html\r\n"))
    assert part_role(plain, "multipart/alternative", None, None) is Role.BODY
    assert part_role(html, "multipart/alternative", "text/plain", "multipart/alternative") is Role.BODY
    assert part_role(plain, "multipart/alternative", "text/html", "multipart/alternative") is Role.SKIP
    assert part_role(plain, "multipart/mixed", "text/plain", "multipart/mixed") is Role.ATTACHMENT


def test_unnamed_parts_get_names_matching_their_type() -> None:
    pdf = part_info(parse_header_block(b"Content-Type: application/pdf\r\n"))
    assert attachment_name(pdf, 1, single=True) == "scan.pdf"
    assert attachment_name(pdf, 2, single=False) == "attachment-2.pdf"
    octet = part_info(parse_header_block(b"Content-Type: application/octet-stream\r\n"))
    assert attachment_type(octet, "img001.pdf") == "application/pdf"


def test_addresses_ids_and_dates() -> None:
    assert mailbox(b"scanner@x.com <scanner@x.com>") == (None, "scanner@x.com")
    assert mailbox(b"=?UTF-8?Q?Doe=2C_John?= <j@x.com>") == ("Doe, John", "j@x.com")
    assert mailbox(b"not an address") is None
    assert address_list([b'a@x.com, "B" <b@y.com>', b"A@x.com, junk"]) == ("a@x.com", "b@y.com")
    assert message_id(b"  <abc.123@host>  ") == "<abc.123@host>"
    assert message_id(b"<bad id\r\nBcc: x>") is None
    received = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert message_date(None, received) == "Thu, 02 Jan 2025 03:04:05 +0000"
    assert message_date(b"garbage", received) == "Thu, 02 Jan 2025 03:04:05 +0000"
    assert message_date(b"Tue, 1 Jul 2025 10:00:00 +0900", received) == "Tue, 01 Jul 2025 10:00:00 +0900"


def test_partial_headers_merge_as_rfc_2046_says() -> None:
    outer = parse_header_block(
        b"From: fx@x.com\r\nTo: a@x.com\r\nSubject: [1/3] Big\r\nMessage-ID: <f1@x>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: message/partial; id="abc"; number=1\r\n'
    )
    inner = parse_header_block(
        b"Subject: Big\r\nMessage-ID: <big@x>\r\nX-Ignored: yes\r\nContent-Type: multipart/mixed; boundary=B\r\n"
    )
    merged = parse_header_block(merged_headers(outer, inner))
    assert [n for n, _ in merged.fields] == ["from", "to", "subject", "message-id", "content-type"]
    assert merged.text("subject") == "Big" and merged.text("message-id") == "<big@x>"
    info = partial_info(outer)
    assert info is not None and (info.id, info.number, info.total) == ("abc", 1, None)
    no_subject = parse_header_block(merged_headers(outer, parse_header_block(b"Content-Type: text/plain\r\n")))
    assert no_subject.text("subject") == "Big"  # the fragment counter is dropped


def _pct(data: bytes) -> str:
    return "".join(f"%{b:02X}" for b in data)


@pytest.mark.parametrize(
    ("charset", "name"),
    [
        ("windows-1251", "Скан договора.pdf"),
        ("koi8-r", "Счёт.pdf"),
        ("iso-8859-7", "Σάρωση.pdf"),
        ("iso-8859-2", "Łódź skan.pdf"),
        ("euc-kr", "스캔 문서.pdf"),
        ("big5", "掃描文件.pdf"),
    ],
)
def test_a_declared_charset_that_sniffing_cannot_guess_decides_the_file_name(charset: str, name: str) -> None:
    data = name.encode(charset)
    assert sniff(data) != name  # the test means something only if the declared charset is what decodes it
    raw = f"attachment; filename*={charset}''{_pct(data)}".encode()
    assert parse_structured(raw)[1]["filename"] == name
    pieces = [data[i : i + 3] for i in range(0, len(data), 3)]
    sections = [f"filename*0*={charset}''{_pct(pieces[0])}"] + [
        f"filename*{i}*={_pct(p)}" for i, p in enumerate(pieces[1:], start=1)
    ]
    assert parse_structured(("attachment; " + "; ".join(sections)).encode())[1]["filename"] == name


def test_rfc_2231_sections_are_joined_in_numeric_order_whatever_order_they_come_in() -> None:
    """Sections may arrive in any order (RFC 2231 section 3); 10 sorts before 2 as text, not as a number."""
    name = "Quartalsbericht Überweisungen März 2026 Filiale Nord.pdf"
    data = name.encode("iso-8859-1")
    pieces = [data[i : i + 5] for i in range(0, len(data), 5)]
    assert len(pieces) > 10
    sections = [f"filename*0*=iso-8859-1'de'{_pct(pieces[0])}"] + [
        f"filename*{i}*={_pct(p)}" for i, p in enumerate(pieces[1:], start=1)
    ]
    shuffled = sections[::-1]
    shuffled[0], shuffled[3] = shuffled[3], shuffled[0]
    assert parse_structured(("attachment; " + "; ".join(shuffled)).encode())[1]["filename"] == name
    mixed = 'attachment; filename*1="in parts.pdf"; filename*0="long name "'
    assert parse_structured(mixed.encode())[1]["filename"] == "long name in parts.pdf"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'attachment; filename="say \\"hi\\".pdf"; size=3', ("attachment", {"filename": 'say "hi".pdf', "size": "3"})),
        (
            b'attachment; filename="a \\"b;c\\" d.pdf"; size=3',
            ("attachment", {"filename": 'a "b;c" d.pdf', "size": "3"}),
        ),
        (b'attachment; filename="a\\\\b;c.pdf"; size="3"', ("attachment", {"filename": "a\\b;c.pdf", "size": "3"})),
        (b'attachment; filename="ends in a backslash\\', ("attachment", {"filename": "ends in a backslash\\"})),
        (b'"Application/PDF"; name=a.pdf', ("application/pdf", {"name": "a.pdf"})),
        (b"attachment; broken; =x; filename=x.pdf", ("attachment", {"filename": "x.pdf"})),
        (b"attachment; filename*=%C3%9Cber.pdf", ("attachment", {"filename": "Über.pdf"})),
        (b"attachment; filename*=\"utf-8''%C3%9C.pdf\"", ("attachment", {"filename": "Ü.pdf"})),
        (b'inline; filename=""', ("inline", {"filename": ""})),
        (b'inline; filename="', ("inline", {"filename": ""})),
    ],
)
def test_quoted_strings_escapes_and_broken_parameters_read_as_a_mail_reader_would(
    raw: bytes, expected: tuple[str, dict[str, str]]
) -> None:
    """Only \\" and \\\\ are escapes inside quotes, a quoted ; does not split, a parameter without a value is
    skipped (not the end of the list), and a value-less header still yields its type."""
    assert parse_structured(raw) == expected
    assert parse_structured(None) == ("", {})
