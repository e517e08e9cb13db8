"""Deliver by writing an .eml file: for `make dev`, dry runs and a look at exactly what would be sent.

The file is streamed from the spool part by part (base64 in 57-byte multiples), written under a temporary
name and renamed, so a crash never leaves half a message and a retry finds the finished file (exactly once).
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formataddr, formatdate
from pathlib import Path
from typing import BinaryIO

from gateway.core.errors import PermanentDeliveryError
from gateway.core.message import Address, OutgoingMessage
from gateway.core.ports import BlobStore
from gateway.core.sanitise import UnsafeHeaderBlock, check_header_block
from gateway.delivery.transport import Checkpoint, Delivered

#: 57 raw bytes make one 76-character base64 line; a multiple keeps lines intact across chunks.
_B64_BLOCK = 57 * 1024


def _fmt(addresses: tuple[Address, ...]) -> str:
    return ", ".join(formataddr((a.name or "", a.address)) for a in addresses)


def _headers(message: OutgoingMessage, boundary: str) -> bytes:
    """Headers go through the email package, never string concatenation (header injection, CVE-2024-6923)."""
    head = EmailMessage(policy=SMTP)
    head["From"] = _fmt((message.from_,))
    if message.to:
        head["To"] = _fmt(message.to)
    if message.cc:
        head["Cc"] = _fmt(message.cc)
    if message.reply_to:
        head["Reply-To"] = _fmt(message.reply_to)
    head["Subject"] = message.subject
    head["Date"] = message.date or formatdate(localtime=False, usegmt=True)
    head["Message-ID"] = message.internet_message_id
    for name, value in message.headers:
        head[name] = value
    if message.bcc:
        head["X-Scangw-Bcc"] = _fmt(message.bcc)
    head["MIME-Version"] = "1.0"
    head["Content-Type"] = f'multipart/mixed; boundary="{boundary}"'
    return _header_block(head)


def _header_block(head: EmailMessage) -> bytes:
    """Only the folded header lines and the blank line: the body is streamed separately. The values were
    cleaned in the core already; the block is still checked, because the interpreter's email package may fold
    a value into a header line of its own (CVE-2024-6923) and nothing here depends on its patch level."""
    block = b"".join(SMTP.fold_binary(name, value) for name, value in head.items()) + b"\r\n"
    try:
        check_header_block(block, len(head.items()))
    except UnsafeHeaderBlock as exc:
        raise PermanentDeliveryError(f"Refused to write a message whose headers would be unsafe: {exc}.") from None
    return block


def _part_headers(**fields: str | None) -> bytes:
    part = EmailMessage(policy=SMTP)
    part["Content-Type"] = fields["ctype"] or "application/octet-stream"
    part["Content-Transfer-Encoding"] = "base64"
    if fields.get("filename"):
        part.add_header("Content-Disposition", "attachment", filename=fields["filename"])
    return _header_block(part)


class OutboxTransport:
    def __init__(self, folder: Path, blobs: BlobStore) -> None:
        self.folder = folder
        self.blobs = blobs

    def path_for(self, message: OutgoingMessage) -> Path:
        stem = message.internet_message_id.strip("<>").replace("@", "_at_").replace("/", "_")
        return self.folder / f"{stem}.eml"

    async def deliver(self, message: OutgoingMessage, checkpoint: Checkpoint) -> Delivered:
        final = self.path_for(message)
        if final.exists():
            return Delivered(detail=f"outbox={final}")
        await asyncio.to_thread(self.folder.mkdir, parents=True, exist_ok=True)
        tmp = self.folder / f".{secrets.token_hex(6)}.tmp"
        boundary = f"=_scangw_{secrets.token_hex(12)}"
        handle = await asyncio.to_thread(open, tmp, "wb")
        try:
            await self._write(handle, message, boundary)
            await asyncio.to_thread(handle.flush)
            await asyncio.to_thread(os.fsync, handle.fileno())
        except BaseException:
            handle.close()
            tmp.unlink(missing_ok=True)
            raise
        handle.close()
        await asyncio.to_thread(os.replace, tmp, final)
        return Delivered(detail=f"outbox={final}")

    async def _write(self, out: BinaryIO, message: OutgoingMessage, boundary: str) -> None:
        sep = f"--{boundary}\r\n".encode()
        out.write(_headers(message, boundary))
        body_type = "text/html" if message.body_type == "html" else "text/plain"
        body = base64.encodebytes((message.body or "").encode()).replace(b"\n", b"\r\n")
        out.write(sep + _part_headers(ctype=f"{body_type}; charset=utf-8") + body)
        for ref in message.attachments:
            out.write(b"\r\n" + sep + _part_headers(ctype=ref.content_type, filename=ref.name))
            pending = b""
            async for chunk in self.blobs.stream(ref.blob):
                pending += chunk
                cut = len(pending) - len(pending) % _B64_BLOCK
                if cut:
                    await asyncio.to_thread(out.write, base64.encodebytes(pending[:cut]).replace(b"\n", b"\r\n"))
                    pending = pending[cut:]
            out.write(base64.encodebytes(pending).replace(b"\n", b"\r\n"))
        out.write(f"\r\n--{boundary}--\r\n".encode())

    async def close(self) -> None:
        return None
