"""The draft as msgraph-sdk models, and the plan of which attachments ride inline in its create request.

Contract section 6: attachments under 3 MiB go inline while the create request stays under 4 MiB, the
rest one per POST, and 3 MiB or more through upload sessions. The plan is a pure function of the message
(names and sizes, never the bytes), so every retry of a job computes the same plan.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from kiota_serialization_json.json_serialization_writer import JsonSerializationWriter
from msgraph.generated.models.attachment import Attachment
from msgraph.generated.models.attachment_item import AttachmentItem
from msgraph.generated.models.attachment_type import AttachmentType
from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.email_address import EmailAddress
from msgraph.generated.models.file_attachment import FileAttachment
from msgraph.generated.models.internet_message_header import InternetMessageHeader
from msgraph.generated.models.item_body import ItemBody
from msgraph.generated.models.message import Message
from msgraph.generated.models.recipient import Recipient

from gateway.core.jobs import FileRef
from gateway.core.message import Address, OutgoingMessage

MIB = 1024 * 1024
#: Graph's request size limit (about 4 MB; we read it as 4 MiB and stay well below).
MAX_REQUEST = 4 * MIB
#: Room left for what our estimate cannot see (HTTP framing, serializer differences).
MARGIN = 64 * 1024
#: Attachments of this size and more go through upload sessions (contract section 6).
UPLOAD_THRESHOLD = 3 * MIB


def base64_length(size: int) -> int:
    return 4 * math.ceil(size / 3)


def serialized_size(model: Message | FileAttachment) -> int:
    """The exact JSON size the SDK will send for `model` (with whatever content it holds)."""
    writer = JsonSerializationWriter()
    writer.write_object_value(None, model)
    return len(writer.get_serialized_content())


def _recipients(addresses: tuple[Address, ...]) -> list[Recipient]:
    return [Recipient(email_address=EmailAddress(address=a.address, name=a.name or None)) for a in addresses]


def draft_model(message: OutgoingMessage, attachments: Sequence[Attachment]) -> Message:
    """Everything but the large attachments; `internetMessageId` is what finds the draft after a crash."""
    headers = [
        InternetMessageHeader(name=name, value=value)
        for name, value in message.headers
        if name.lower().startswith("x-")
    ]
    body_type = BodyType.Html if message.body_type.lower() == "html" else BodyType.Text
    return Message(
        from_=Recipient(email_address=EmailAddress(address=message.from_.address, name=message.from_.name or None)),
        to_recipients=_recipients(message.to),
        cc_recipients=_recipients(message.cc),
        bcc_recipients=_recipients(message.bcc),
        reply_to=_recipients(message.reply_to),
        subject=message.subject,
        body=ItemBody(content_type=body_type, content=message.body),
        internet_message_id=message.internet_message_id,
        internet_message_headers=headers or None,
        attachments=list(attachments) or None,
    )


def file_attachment(file: FileRef, content: bytes) -> FileAttachment:
    return FileAttachment(
        name=file.name,
        content_type=file.content_type or "application/octet-stream",
        content_bytes=content,
        is_inline=file.inline or None,
        content_id=file.content_id or None,
    )


def upload_item(file: FileRef) -> AttachmentItem:
    return AttachmentItem(
        attachment_type=AttachmentType.File,
        name=file.name,
        size=file.size,
        content_type=file.content_type or "application/octet-stream",
        is_inline=file.inline or None,
        content_id=file.content_id or None,
    )


def attachment_cost(file: FileRef) -> int:
    """Bytes this attachment adds to a JSON request: its metadata plus the base64 of its content."""
    return serialized_size(file_attachment(file, b"")) + base64_length(file.size) + 32


def plan_inline(message: OutgoingMessage, limit: int = MAX_REQUEST - MARGIN) -> list[int]:
    """Indexes of the attachments that go inline in the create request: first fit, in order."""
    budget = limit - serialized_size(draft_model(message, [])) - 64
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
