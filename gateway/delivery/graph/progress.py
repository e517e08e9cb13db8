"""What GraphTransport keeps in the job's checkpoint between attempts, and how it reads the draft back.

Each key is written *before* the side effect it names, so after a crash or a lost reply the next attempt
knows what may have happened and asks Graph instead of repeating it.
"""

from __future__ import annotations

from gateway.core.jobs import FileRef
from gateway.core.message import OutgoingMessage

DRAFT_REQUESTED = "draft_requested"  # epoch seconds: a create POST may have happened
DRAFT_ID = "draft_id"  # the draft's Graph id
INLINE = "inline"  # indexes of the attachments sent inside the create request
ATTACHED = "attached"  # indexes of the attachments confirmed on the draft
ATTACHING = "attaching"  # index of the attachment whose POST / upload session may have happened
UPLOAD = "upload"  # {"index", "url", "expires", "offset"}: the open upload session and confirmed offset
SEND_REQUESTED_AT = "send_requested_at"  # epoch seconds: a send POST may have happened
ALL_KEYS = (DRAFT_REQUESTED, DRAFT_ID, INLINE, ATTACHED, ATTACHING, UPLOAD, SEND_REQUESTED_AT)

#: Graph may report an attachment's size with some overhead; a name match within this is "the same file".
SIZE_TOLERANCE = 16 * 1024


def is_present(message: OutgoingMessage, index: int, attached: list[int], present: list[tuple[str, int]]) -> bool:
    """Is attachment `index` on the draft? Counted per (name, size), so identical twins are not confused."""
    file = message.attachments[index]

    def same(name: str, size: int, other: FileRef) -> bool:
        return name == other.name and abs(size - other.size) <= SIZE_TOLERANCE

    have = sum(1 for name, size in present if same(name, size, file))
    known = sum(1 for i in attached if i != index and same(file.name, file.size, message.attachments[i]))
    return have > known
