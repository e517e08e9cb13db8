"""Header injection (issue 9 item 2): a device's subject, names, file names, content types and Message-ID never
become header lines of their own in what is delivered, whatever the interpreter's email package does with a
decoded CR LF (CVE-2024-6923; the machine's 3.11.7 has no fix). Each case is read back from the outbox `.eml`
as a mail reader would parse it.
"""

from __future__ import annotations

from email import message_from_bytes
from email.message import Message
from email.policy import default
from pathlib import Path

import pytest

from gateway.core.devices import Device
from gateway.core.jobs import FileRef, Job, JobKind
from gateway.core.message import Address, ParsedMessage, compose
from gateway.core.notice import failure_notice, notice_recipients
from gateway.delivery.outbox import OutboxTransport
from gateway.delivery.transport import MemoryCheckpoint
from tests.support import run, services_for

CRLF_WORD = "=?utf-8?q?x=0D=0ABcc:_evil@attacker.example?="
DOUBLE_WORD = "=?utf-8?q?=3D=3Futf-8=3Fq=3Fx=3D0D=3D0ABcc=3A=5Fevil=40attacker.example=3F=3D?="
DEVICE = Device(name="mfp1", password_hash="x", sender_name="Floor 2 MFP", allow_to=("*@contoso.com",))


def job(**kw: object) -> Job:
    base = dict(
        id="0123456789abcdef01234567",
        device="mfp1",
        sender="scanner@contoso.com",
        to=("a@contoso.com",),
        size=1,
        kind=JobKind.FILES,
        created="2026-11-23T00:00:00.000000Z",
        updated="2026-11-23T00:00:00.000000Z",
    )
    base.update(kw)
    return Job(**base)  # type: ignore[arg-type]


def delivered(tmp: Path, j: Job, parsed: ParsedMessage) -> Message:
    """Compose and write through the real outbox; the .eml parsed back as a mail reader sees it."""

    async def go() -> bytes:
        svc = await services_for(tmp)
        try:
            for ref in (*j.files, *parsed.attachments):

                async def one() -> object:
                    yield b"%PDF-1.4 test"

                await svc.spool.blobs.write(ref.blob, one())  # type: ignore[arg-type]
            outbox = OutboxTransport(tmp / "outbox", svc.spool.blobs)
            message = compose(j, parsed, DEVICE, None)
            await outbox.deliver(message, MemoryCheckpoint())
            return outbox.path_for(message).read_bytes()
        finally:
            await svc.close()

    return message_from_bytes(run(go()), policy=default)


def assert_no_injected_header(eml: Message) -> None:
    names = {name.lower() for name in eml.keys()}
    assert "bcc" not in names, eml.keys()
    for part in eml.walk():
        assert "bcc" not in {n.lower() for n in part.keys()}, part.keys()
    for name, value in eml.items():
        assert "\r" not in str(value) and "\n" not in str(value), (name, value)


@pytest.mark.parametrize(
    "subject", [f"Hi {CRLF_WORD}", "Hi\r\nBcc: evil@attacker.example", DOUBLE_WORD, "a\u2028b\x85c"]
)
def test_an_http_subject_never_becomes_a_header(tmp_path: Path, subject: str) -> None:
    eml = delivered(tmp_path, job(subject=subject), ParsedMessage())
    assert_no_injected_header(eml)
    assert eml["Subject"].startswith(("Hi", "a", "=", "x"))


def test_a_device_message_id_and_display_name_never_become_headers(tmp_path: Path) -> None:
    parsed = ParsedMessage(
        subject=f"Scan {CRLF_WORD}",
        from_=Address("alice@contoso.com", f"Alice {CRLF_WORD}"),
        message_id=f"<{CRLF_WORD}>",
    )
    eml = delivered(tmp_path, job(kind=JobKind.MIME), parsed)
    assert_no_injected_header(eml)
    assert eml["From"].addresses[0].addr_spec == "scanner@contoso.com"


@pytest.mark.parametrize(
    ("name", "ctype"),
    [
        (f"{CRLF_WORD}.pdf", "application/pdf"),
        ("scan.pdf", f"application/pdf; name={CRLF_WORD}"),
        ("scan.pdf", "application/pdf\r\nBcc: evil@attacker.example"),
        ("a\r\nBcc: evil@attacker.example.pdf", None),
    ],
)
def test_an_upload_file_name_or_content_type_never_becomes_a_header(tmp_path: Path, name: str, ctype: str) -> None:
    ref = FileRef(blob="0123456789abcdef01234567/file-0", name=name, content_type=ctype or "", size=13)
    eml = delivered(tmp_path, job(files=(ref,)), ParsedMessage())
    assert_no_injected_header(eml)
    attachment = next(p for p in eml.walk() if p.get_filename())
    assert "\n" not in attachment.get_filename() and "\r" not in attachment.get_filename()


def test_bidi_overrides_are_taken_out_of_file_names(tmp_path: Path) -> None:
    ref = FileRef(blob="0123456789abcdef01234567/file-0", name="invoice\u202efdp.exe", content_type="", size=13)
    eml = delivered(tmp_path, job(files=(ref,)), ParsedMessage())
    attachment = next(p for p in eml.walk() if p.get_filename())
    assert attachment.get_filename() == "invoicefdp.exe"


def test_a_failure_notice_carries_no_injected_header(tmp_path: Path) -> None:
    ref = FileRef(blob="j/file-0", name=f"{CRLF_WORD}.pdf", content_type="application/pdf", size=1)
    j = job(subject=f"S {CRLF_WORD}", files=(ref,))
    notice = failure_notice(j, "Mailbox missing.", "scanner@contoso.com", notice_recipients("a@contoso.com", None))

    async def go() -> bytes:
        svc = await services_for(tmp_path)
        try:
            outbox = OutboxTransport(tmp_path / "outbox", svc.spool.blobs)
            await outbox.deliver(notice, MemoryCheckpoint())
            return outbox.path_for(notice).read_bytes()
        finally:
            await svc.close()

    assert_no_injected_header(message_from_bytes(run(go()), policy=default))


def test_an_undeliverable_scanning_user_gets_no_notice_instead_of_breaking_it() -> None:
    assert notice_recipients("al\x00ice@contoso.com", "admin@contoso.com") == (Address("admin@contoso.com"),)
