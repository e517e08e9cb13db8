"""Writes the device-shaped message corpus in tests/data/ and its manifest (names and sha256 of every file).

The messages are written byte by byte the way devices write them (not with the email package), so they carry
the quirks the gateway must survive. Deterministic: running it again produces identical files.
Run: python -m tests.data.make_corpus
"""

from __future__ import annotations

import base64
import hashlib
import json
import quopri
import random
from pathlib import Path
from urllib.parse import quote

HERE = Path(__file__).resolve().parent


def pdf(seed: int, size: int) -> bytes:
    """A PDF-looking file with binary content, so any decoding slip changes its hash."""
    rng = random.Random(seed)
    return b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + rng.randbytes(size) + b"\n%%EOF\n"


def b64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("ascii")


def entry(name: str, data: bytes) -> dict[str, object]:
    return {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def corpus() -> dict[str, tuple[bytes, dict[str, object]]]:
    out: dict[str, tuple[bytes, dict[str, object]]] = {}

    # Xerox-style: bare LF everywhere, "From: x <x>" with the same address twice, PDF inline-named.
    scan = pdf(1, 40_000)
    msg = (
        (
            b"From: scanner@contoso.com <scanner@contoso.com>\nTo: alice@contoso.com\nSubject: Scan from WorkCentre\n"
            b"Date: Tue, 01 Jul 2025 09:30:00 +0200\nMessage-ID: <wc7855.1@scanner.contoso.com>\nMIME-Version: 1.0\n"
            b'Content-Type: multipart/mixed; boundary="---XEROX-BOUNDARY"\n\n'
            b"-----XEROX-BOUNDARY\nContent-Type: text/plain; charset=us-ascii\n\nPlease open the attached document.\n"
            b'-----XEROX-BOUNDARY\nContent-Type: application/pdf; name="Scan_0001.pdf"\n'
            b'Content-Transfer-Encoding: base64\nContent-Disposition: attachment; filename="Scan_0001.pdf"\n\n'
        )
        + base64.encodebytes(scan)
        + b"-----XEROX-BOUNDARY--\n"
    )
    out["xerox_bare_lf.eml"] = (
        msg,
        {
            "subject": "Scan from WorkCentre",
            "body": "Please open the attached document.",
            "message_id": "<wc7855.1@scanner.contoso.com>",
            "attachments": [entry("Scan_0001.pdf", scan)],
        },
    )

    # Ricoh-style: RFC 2047 encoded-words inside quoted parameters (forbidden by the RFC, common in practice).
    scan = pdf(2, 30_000)
    name = "Überweisung März.pdf"
    word = "=?UTF-8?B?" + base64.b64encode(name.encode()).decode() + "?="
    msg = (
        crlf(
            "From: =?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@contoso.com>\nTo: alice@contoso.com\n"
            "Subject: =?UTF-8?Q?Scan_=C3=9Cberweisung?=\nDate: Wed, 02 Jul 2025 10:00:00 +0000\nMIME-Version: 1.0\n"
            'Content-Type: multipart/mixed; boundary="RicohBoundary"\n\n--RicohBoundary\n'
            f'Content-Type: application/pdf; name="{word}"\nContent-Transfer-Encoding: base64\n'
            f'Content-Disposition: attachment; filename="{word}"\n\n'
        )
        + b64(scan)
        + crlf("--RicohBoundary--\n")
    )
    out["ricoh_rfc2047_param.eml"] = (
        msg,
        {"subject": "Scan Überweisung", "from_name": "Jürgen Müller", "attachments": [entry(name, scan)]},
    )

    # Canon-style: RFC 2231 continuations with a charset, and a plain fallback name that must lose.
    scan = pdf(3, 20_000)
    name = "Réunion d'équipe – compte rendu 2025 (version finale).pdf"
    encoded = quote(name, safe="")
    pieces, rest = [], encoded
    while rest:  # cut every ~30 characters, never inside a %XX escape
        cut = min(30, len(rest))
        while "%" in rest[max(0, cut - 2) : cut]:
            cut -= 1
        pieces.append(rest[:cut])
        rest = rest[cut:]
    params = ";\n".join(f" filename*{i}*=UTF-8''{p}" if i == 0 else f" filename*{i}*={p}" for i, p in enumerate(pieces))
    msg = (
        crlf(
            "From: canon@contoso.com\nTo: alice@contoso.com\nSubject: Attached Image\nDate: Thu, 03 Jul 2025 11:00:00 +0000\n"
            'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="CANON-1"\n\n--CANON-1\n'
            "Content-Type: application/pdf\nContent-Transfer-Encoding: base64\n"
            f'Content-Disposition: attachment; filename="fallback.pdf";\n{params}\n\n'
        )
        + b64(scan)
        + crlf("--CANON-1--\n")
    )
    out["canon_rfc2231.eml"] = (msg, {"subject": "Attached Image", "attachments": [entry(name, scan)]})

    # Sharp-style Japanese: ISO-2022-JP encoded-words in Subject and file name, ISO-2022-JP body.
    scan = pdf(4, 25_000)
    name = "スキャン文書_会議資料.pdf"
    subject = "スキャンデータ送信"
    jis = lambda text: "=?ISO-2022-JP?B?" + base64.b64encode(text.encode("iso2022_jp")).decode() + "?="  # noqa: E731
    body = "添付ファイルをご確認ください。\n".encode("iso2022_jp").replace(b"\n", b"\r\n")
    msg = (
        crlf(
            f"From: sharp-mfp@contoso.com\nTo: alice@contoso.com\nSubject: {jis(subject)}\n"
            "Date: Fri, 04 Jul 2025 12:00:00 +0900\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=SHARP\n\n"
            "--SHARP\nContent-Type: text/plain; charset=ISO-2022-JP\nContent-Transfer-Encoding: 7bit\n\n"
        )
        + body
        + crlf(
            f'--SHARP\nContent-Type: application/pdf; name="{jis(name)}"\nContent-Transfer-Encoding: base64\n'
            f'Content-Disposition: attachment; filename="{jis(name)}"\n\n'
        )
        + b64(scan)
        + crlf("--SHARP--\n")
    )
    out["sharp_iso2022jp.eml"] = (
        msg,
        {"subject": subject, "body": "添付ファイルをご確認ください。", "attachments": [entry(name, scan)]},
    )

    # Kyocera-style: raw Shift-JIS bytes in the file name parameter and the body, no encoded-words at all.
    scan = pdf(5, 15_000)
    name = "見積書_第２版.pdf"
    msg = (
        crlf(
            "From: kyocera@contoso.com\nTo: alice@contoso.com\nSubject: Scan\nDate: Sat, 05 Jul 2025 08:00:00 +0900\n"
            "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=KM\n\n--KM\n"
            "Content-Type: text/plain; charset=Shift_JIS\nContent-Transfer-Encoding: 8bit\n\n"
        )
        + "スキャンしました。\r\n".encode("cp932")
        + crlf("--KM\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n")
        + b'Content-Disposition: attachment; filename="'
        + name.encode("cp932")
        + b'"\r\n\r\n'
        + b64(scan)
        + crlf("--KM--\n")
    )
    out["kyocera_shift_jis.eml"] = (
        msg,
        {"subject": "Scan", "body": "スキャンしました。", "attachments": [entry(name, scan)]},
    )

    # Missing Date, Message-ID and To: the envelope is the truth; Date is added.
    scan = pdf(6, 10_000)
    msg = (
        crlf(
            "From: brother@contoso.com\nSubject: Scanned image\nMIME-Version: 1.0\n"
            "Content-Type: multipart/mixed; boundary=BRO\n\n--BRO\nContent-Type: text/plain\n\nScanned.\n"
            '--BRO\nContent-Type: application/octet-stream; name="img001.pdf"\nContent-Transfer-Encoding: base64\n\n'
        )
        + b64(scan)
        + crlf("--BRO--\n")
    )
    out["minimal_headers.eml"] = (
        msg,
        {"subject": "Scanned image", "message_id": None, "to": [], "attachments": [entry("img001.pdf", scan)]},
    )

    # HP-style: the PDF is marked inline but has a file name, so it is an attachment.
    scan = pdf(7, 12_000)
    msg = (
        crlf(
            "From: hp@contoso.com\nTo: alice@contoso.com\nSubject: Scan\nDate: Mon, 07 Jul 2025 09:00:00 +0000\n"
            "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=HPB\n\n--HPB\n"
            'Content-Type: application/pdf\nContent-Disposition: inline; filename="scan.pdf"\n'
            "Content-Transfer-Encoding: base64\n\n"
        )
        + b64(scan)
        + crlf("--HPB--\n")
    )
    out["inline_pdf.eml"] = (msg, {"subject": "Scan", "attachments": [entry("scan.pdf", scan)]})

    # Konica-style: the whole message is one PDF (no multipart).
    scan = pdf(8, 18_000)
    msg = crlf(
        "From: konica@contoso.com\nTo: alice@contoso.com\nSubject: SKMBT_C224\nDate: Tue, 08 Jul 2025 09:00:00 +0000\n"
        'MIME-Version: 1.0\nContent-Type: application/pdf; name="SKMBT_C22425070809000.pdf"\n'
        "Content-Transfer-Encoding: base64\n\n"
    ) + b64(scan)
    out["single_part_pdf.eml"] = (
        msg,
        {"subject": "SKMBT_C224", "attachments": [entry("SKMBT_C22425070809000.pdf", scan)]},
    )

    # Epson-style: quoted-printable HTML alternative, an unnamed JPEG, an inline image for the HTML.
    jpeg = b"\xff\xd8\xff\xe0" + random.Random(9).randbytes(5000) + b"\xff\xd9"
    logo = b"\x89PNG\r\n\x1a\n" + random.Random(10).randbytes(800)
    html = '<p>Scanned by Epson: caf\u00e9 <img src="cid:logo@epson"></p>'
    msg = (
        crlf(
            "From: epson@contoso.com\nTo: alice@contoso.com, bob@contoso.com\nCc: carol@contoso.com\nSubject: Epson scan\n"
            "Date: Wed, 09 Jul 2025 09:00:00 +0000\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=E1\n\n"
            "--E1\nContent-Type: multipart/related; boundary=E2\n\n--E2\nContent-Type: multipart/alternative; boundary=E3\n\n"
            "--E3\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n"
        )
        + quopri.encodestring("Scanned by Epson: café\n".encode()).replace(b"\n", b"\r\n")
        + crlf("--E3\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n")
        + quopri.encodestring((html + "\n").encode()).replace(b"\n", b"\r\n")
        + crlf("--E3--\n--E2\nContent-Type: image/png\nContent-ID: <logo@epson>\nContent-Transfer-Encoding: base64\n\n")
        + b64(logo)
        + crlf("--E2--\n--E1\nContent-Type: image/jpeg\nContent-Transfer-Encoding: base64\n\n")
        + b64(jpeg)
        + crlf("--E1--\n")
    )
    out["epson_html_related.eml"] = (
        msg,
        {
            "subject": "Epson scan",
            "body": html,
            "body_type": "html",
            "to": ["alice@contoso.com", "bob@contoso.com"],
            "cc": ["carol@contoso.com"],
            "attachments": [entry("attachment-1.png", logo), entry("attachment-2.jpg", jpeg)],
        },
    )

    # Fuji Xerox / Canon message/partial: one message with a PDF split into three fragments.
    scan = pdf(11, 60_000)
    inner = (
        crlf(
            "Subject: Big scan\nMessage-ID: <big.1@fx.contoso.com>\nMIME-Version: 1.0\n"
            "Content-Type: multipart/mixed; boundary=FXB\n\n--FXB\nContent-Type: text/plain\n\nThree parts.\n"
            '--FXB\nContent-Type: application/pdf; name="BigScan.pdf"\nContent-Transfer-Encoding: base64\n\n'
        )
        + b64(scan)
        + crlf("--FXB--\n")
    )
    lines = inner.split(b"\r\n")[:-1]
    third = len(lines) // 3
    chunks = [lines[:third], lines[third : 2 * third], lines[2 * third :]]
    for number, chunk in enumerate(chunks, 1):
        total = "; total=3" if number == 3 else ""
        fragment = crlf(
            f"From: fx@contoso.com\nTo: alice@contoso.com\nSubject: [{number}/3] Big scan\n"
            f"Date: Thu, 10 Jul 2025 09:00:0{number} +0900\nMessage-ID: <frag{number}@fx.contoso.com>\nMIME-Version: 1.0\n"
            f'Content-Type: message/partial; id="fx-20250710-0001@fx.contoso.com"; number={number}{total}\n\n'
        ) + b"".join(line + b"\r\n" for line in chunk)
        meta: dict[str, object] = {"partial": {"number": number, "total": 3 if number == 3 else None}}
        if number == 1:
            meta.update(
                {
                    "subject": "Big scan",
                    "body": "Three parts.",
                    "message_id": "<big.1@fx.contoso.com>",
                    "attachments": [entry("BigScan.pdf", scan)],
                }
            )
        out[f"partial_{number}of3.eml"] = (fragment, meta)
    return out


def main() -> None:
    manifest = {}
    for name, (data, meta) in corpus().items():
        (HERE / name).write_bytes(data)
        manifest[name] = meta
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
