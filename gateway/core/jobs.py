"""The job: one accepted scan on its way to one Graph message.

The job record (a table row) is the single source of truth; the queue message only says "look at job X".
So a duplicated, delayed or replayed queue message is harmless, and every retry rebuilds its requests from
the record and the spooled bytes.
"""

from __future__ import annotations

import enum
import json
import secrets
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

QUEUE_MESSAGE_VERSION = 1
#: Job ids are 24 characters (see new_job_id); anything past this is not one, and no storage key could hold it.
MAX_JOB_ID = 64


class JobState(enum.StrEnum):
    """Named states, the same words in code, storage, logs and the CLI (Postfix-style queue states)."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        return self in (JobState.SENT, JobState.FAILED)


class JobKind(enum.StrEnum):
    MIME = "mime"  # SMTP: the DATA bytes as received, one blob
    FILES = "files"  # HTTP: the uploaded files, one blob each


@dataclass(frozen=True)
class FileRef:
    """A spooled file: where its bytes are and what to call it in the delivered message."""

    blob: str
    name: str
    content_type: str
    size: int
    content_id: str | None = None
    inline: bool = False


@dataclass(frozen=True)
class Job:
    id: str
    device: str
    sender: str | None
    to: tuple[str, ...]
    size: int
    kind: JobKind
    created: str
    updated: str
    state: JobState = JobState.QUEUED
    attempts: int = 0
    error: str | None = None
    subject: str | None = None
    body: str | None = None
    sender_name: str | None = None
    reply_to: str | None = None
    files: tuple[FileRef, ...] = ()
    #: Delivery progress owned by the transport (draft id, attachments done, send requested...).
    progress: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    #: W3C traceparent of the acceptance, so delivery continues the scan's trace (contract section 9).
    trace_context: str | None = None

    def summary(self) -> dict[str, Any]:
        """The public view printed by `scangw jobs list --json` (contract section 2)."""
        return {
            "id": self.id,
            "state": self.state.value,
            "device": self.device,
            "to": list(self.to),
            "size": self.size,
            "attempts": self.attempts,
            "error": self.error,
            "created": self.created,
            "updated": self.updated,
            "subject": self.subject,
            "sender": self.sender,
            "request_id": self.request_id,
        }

    def to_record(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        data["kind"] = self.kind.value
        data["to"] = list(self.to)
        data["files"] = [asdict(f) for f in self.files]
        return data

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Job:
        return cls(
            id=data["id"],
            device=data["device"],
            sender=data.get("sender"),
            to=tuple(data.get("to") or ()),
            size=int(data.get("size") or 0),
            kind=JobKind(data.get("kind", "files")),
            created=data["created"],
            updated=data.get("updated") or data["created"],
            state=JobState(data.get("state", "queued")),
            attempts=int(data.get("attempts") or 0),
            error=data.get("error"),
            subject=data.get("subject"),
            body=data.get("body"),
            sender_name=data.get("sender_name"),
            reply_to=data.get("reply_to"),
            files=tuple(FileRef(**f) for f in data.get("files") or ()),
            progress=dict(data.get("progress") or {}),
            request_id=data.get("request_id"),
            trace_context=data.get("trace_context"),
        )

    def evolve(self, now: datetime, **changes: Any) -> Job:
        return replace(self, updated=iso(now), **changes)

    def age_hours(self, now: datetime) -> float:
        return (now - parse_iso(self.created)).total_seconds() / 3600


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def new_job_id(now: float | None = None) -> str:
    """Time-ordered (newest sorts last), unguessable, and safe in blob names, table keys and Message-IDs."""
    millis = int((time.time() if now is None else now) * 1000)
    return f"{millis:012x}{secrets.token_hex(6)}"


def internet_message_id(job_id: str, sender: str | None) -> str:
    """The delivered Message-ID, derived only from the job, so a retry can find an earlier attempt by it."""
    domain = sender.rpartition("@")[2] if sender and "@" in sender else "scangw.invalid"
    return f"<scan.{job_id}@{domain}>"


def encode_queue_message(job: Job) -> str:
    """A small versioned JSON pointer to the job record; never the bytes (queue messages max 64 KB)."""
    return json.dumps({"v": QUEUE_MESSAGE_VERSION, "id": job.id, "device": job.device}, separators=(",", ":"))


class PoisonMessage(ValueError):
    """A queue message that can never be processed (not JSON, unknown version, no job id)."""


def decode_queue_message(text: str | bytes) -> str:
    """Return the job id, or raise PoisonMessage with a reason fit for a log line."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PoisonMessage(f"queue message is not JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("v") != QUEUE_MESSAGE_VERSION:
        raise PoisonMessage(f"queue message has unknown version: {str(data)[:100]}")
    job_id = data.get("id")
    if not isinstance(job_id, str) or not job_id.isascii() or not job_id.isalnum() or len(job_id) > MAX_JOB_ID:
        raise PoisonMessage("queue message has no valid job id")
    return job_id
