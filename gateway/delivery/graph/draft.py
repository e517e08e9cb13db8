"""The draft as the JSON Graph receives, and the plan of which attachments ride inline in its create request.

The bodies are written here directly, not built as msgraph-sdk models and serialised by kiota: a Message
model costs more CPU to build and write than its request spends on the wire (a backing store per object, a
writer call per field, base64 through a str), and the bodies are a handful of fixed fields. The names and
shapes are Graph v1.0's (camelCase, `#microsoft.graph.fileAttachment`), as the SDK writes them.

Contract section 6: attachments under 3 MiB go inline while the create request stays under 4 MiB, the
rest one per POST, and 3 MiB or more through upload sessions. The plan is a pure function of the message
(names and sizes, never the bytes), so every retry of a job computes the same plan.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from typing import Any

from gateway.core.jobs import FileRef
from gateway.core.message import Address, OutgoingMessage

MIB = 1024 * 1024
#: Graph's request size limit (about 4 MB; we read it as 4 MiB and stay well below).
MAX_REQUEST = 4 * MIB
#: Room left for what our estimate cannot see (HTTP framing).
MARGIN = 64 * 1024
#: Attachments of this size and more go through upload sessions (contract section 6).
UPLOAD_THRESHOLD = 3 * MIB


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def base64_length(size: int) -> int:
    return 4 * math.ceil(size / 3)


def _address(address: Address) -> dict[str, Any]:
    email: dict[str, str] = {"address": address.address}
    if address.name:
        email["name"] = address.name
    return {"emailAddress": email}


def _message_fields(message: OutgoingMessage) -> dict[str, Any]:
    """Everything but the attachments; `internetMessageId` is what finds the draft after a crash."""
    fields: dict[str, Any] = {
        "@odata.type": "#microsoft.graph.message",
        "from": _address(message.from_),
        "toRecipients": [_address(a) for a in message.to],
        "ccRecipients": [_address(a) for a in message.cc],
        "bccRecipients": [_address(a) for a in message.bcc],
        "replyTo": [_address(a) for a in message.reply_to],
        "subject": message.subject,
        "body": {"contentType": "html" if message.body_type.lower() == "html" else "text", "content": message.body},
        "internetMessageId": message.internet_message_id,
    }
    headers = [{"name": n, "value": v} for n, v in message.headers if n.lower().startswith("x-")]
    if headers:
        fields["internetMessageHeaders"] = headers
    return fields


def draft_json(message: OutgoingMessage, attachments: Sequence[bytes]) -> bytes:
    """The create request's body; `attachments` are `file_attachment` bodies, spliced in without re-encoding."""
    head = _dumps(_message_fields(message))
    if not attachments:
        return head
    return b"".join((head[:-1], b',"attachments":[', b",".join(attachments), b"]}"))


def _attachment_fields(file: FileRef) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "@odata.type": "#microsoft.graph.fileAttachment",
        "name": file.name,
        "contentType": file.content_type or "application/octet-stream",
    }
    if file.inline:
        fields["isInline"] = True
    if file.content_id:
        fields["contentId"] = file.content_id
    return fields


def file_attachment(file: FileRef, content: bytes) -> bytes:
    """A fileAttachment body; the base64 goes straight from bytes to bytes (JSON needs no escaping in it)."""
    head = _dumps(_attachment_fields(file))
    return b"".join((head[:-1], b',"contentBytes":"', base64.b64encode(content), b'"}'))


def upload_session_json(file: FileRef) -> bytes:
    """The createUploadSession body (the SDK writes the property name in PascalCase, as Graph documents it)."""
    item: dict[str, Any] = {
        "attachmentType": "file",
        "name": file.name,
        "size": file.size,
        "contentType": file.content_type or "application/octet-stream",
    }
    if file.inline:
        item["isInline"] = True
    if file.content_id:
        item["contentId"] = file.content_id
    return _dumps({"AttachmentItem": item})


def attachment_cost(file: FileRef) -> int:
    """Bytes this attachment adds to a JSON request: its metadata plus the base64 of its content."""
    return len(file_attachment(file, b"")) + base64_length(file.size) + 32


def plan_inline(message: OutgoingMessage, limit: int = MAX_REQUEST - MARGIN) -> list[int]:
    """Indexes of the attachments that go inline in the create request: first fit, in order."""
    budget = limit - len(draft_json(message, [])) - 64
    chosen: list[int] = []
    for index, file in enumerate(message.attachments):
        if file.size >= UPLOAD_THRESHOLD:
            continue
        cost = attachment_cost(file)
        if cost <= budget:
            chosen.append(index)
            budget -= cost
    return chosen


def needs_upload_session(file: FileRef) -> bool:
    return file.size >= UPLOAD_THRESHOLD
