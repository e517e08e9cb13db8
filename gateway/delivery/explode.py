"""Turn a spooled SMTP message into a ParsedMessage whose attachments are blobs of their own.

Done once per job by the delivery agent (the result is recorded in the job's progress), so intake stays a
byte copy and a parse problem never costs the device its 250.
"""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from email.utils import getaddresses, parseaddr

from gateway.core.accept import guess_type, safe_filename
from gateway.core.jobs import FileRef, Job
from gateway.core.message import Address, ParsedMessage
from gateway.core.ports import BlobStore


async def _one(data: bytes):  # type: ignore[no-untyped-def]
    yield data


async def explode_mime(job: Job, blobs: BlobStore) -> ParsedMessage:
    raw = b"".join([chunk async for chunk in blobs.stream(job.files[0].blob)])
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    body = ""
    body_type = "text"
    attachments: list[FileRef] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        filename = part.get_filename()
        ctype = part.get_content_type()
        disposition = part.get_content_disposition()
        if filename is None and disposition != "attachment" and ctype in ("text/plain", "text/html") and not body:
            body = str(part.get_content())
            body_type = "html" if ctype == "text/html" else "text"
            continue
        payload = part.get_payload(decode=True) or b""
        name = safe_filename(filename or f"attachment-{len(attachments) + 1}")
        blob = f"{job.id}/part-{len(attachments)}"
        await blobs.write(blob, _one(payload))
        ctype = ctype if ctype != "application/octet-stream" else guess_type(name)
        attachments.append(FileRef(blob=blob, name=name, content_type=ctype, size=len(payload)))
    from_name, from_addr = parseaddr(str(msg.get("From", "")))
    reply_name, reply_addr = parseaddr(str(msg.get("Reply-To", "")))
    return ParsedMessage(
        subject=str(msg["Subject"]) if msg["Subject"] is not None else None,
        from_=Address(from_addr, from_name or None) if from_addr else None,
        reply_to=Address(reply_addr, reply_name or None) if reply_addr else None,
        to=tuple(a for _, a in getaddresses([str(v) for v in msg.get_all("To", [])]) if a),
        cc=tuple(a for _, a in getaddresses([str(v) for v in msg.get_all("Cc", [])]) if a),
        message_id=str(msg["Message-ID"]).strip() if msg["Message-ID"] else None,
        date=str(msg["Date"]) if msg["Date"] else None,
        body=body,
        body_type=body_type,
        attachments=tuple(attachments),
    )
