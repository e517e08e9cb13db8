"""The small interfaces the core needs from storage; each has an Azure adapter and an embedded twin.

Every adapter maps its own library's failures to `StorageUnavailable` (or `Conflict`/`NotFound` below)
where it meets them, so nothing above this line knows which storage it runs on.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

#: Chunk size for streaming blobs: small enough to keep memory flat, a multiple of 320 KiB for uploads.
CHUNK = 320 * 1024 * 4


class Conflict(Exception):
    """A conditional write lost a race (etag mismatch, or the key already exists)."""


class NotFound(Exception):
    """The named blob or record does not exist."""


class BlobStore(Protocol):
    async def write(self, name: str, chunks: AsyncIterable[bytes]) -> int:
        """Store the stream durably under `name`; return its size. Nothing is visible on failure."""

    def stream(self, name: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Yield the blob's bytes in chunks of at most CHUNK, from `offset`."""

    async def read_range(self, name: str, offset: int, length: int) -> bytes: ...

    async def size(self, name: str) -> int: ...

    async def delete_prefix(self, prefix: str) -> int: ...

    async def list(self, prefix: str) -> list[str]: ...


@runtime_checkable
class LinkSigner(Protocol):
    """Optional BlobStore capability: a URL anyone holding it may GET the blob from until `expires`.

    Only stores whose endpoint recipients can reach offer it (Azure Storage via SAS); the transport asks
    `isinstance(blobs, LinkSigner)` rather than every store pretending to have it.
    """

    async def link(self, name: str, expires: float, filename: str) -> str:
        """`expires` is epoch seconds (recorded in the job first); `filename` is the saved file's name."""


@runtime_checkable
class TemporaryFiles(Protocol):
    """Optional BlobStore capability: a store that writes beside and renames (the embedded spool) leaves a
    temporary file when a process is killed mid-write; Azure's block commit leaves nothing to sweep."""

    async def sweep_incoming(self, older_than: float) -> int:
        """Delete temporary files untouched for `older_than` seconds; return how many."""


@dataclass(frozen=True)
class QueueLease:
    """A received queue message; deleting or deferring it needs the receipt of this very receive."""

    message_id: str
    receipt: str
    text: str
    dequeue_count: int


class JobQueue(Protocol):
    async def put(self, text: str, delay: float = 0) -> None: ...

    async def receive(self, visibility: float, max_messages: int = 1) -> list[QueueLease]: ...

    async def delete(self, lease: QueueLease) -> None: ...

    async def defer(self, lease: QueueLease, delay: float) -> QueueLease:
        """Hide the message for `delay` seconds more (also a lease heartbeat); returns the new receipt."""

    async def put_poison(self, text: str) -> None: ...


@runtime_checkable
class PutWaker(Protocol):
    """Optional JobQueue capability: a queue that can tell an idle worker a message was just put (the embedded
    spool, in this process or another on the machine), so a scan does not wait for the next poll."""

    async def wait_for_put(self, timeout: float) -> None:
        """Return after a put, or after `timeout` seconds."""


@dataclass(frozen=True)
class Record:
    data: dict[str, Any]
    etag: str


class Table(Protocol):
    """JSON records by key with optimistic concurrency; one table per kind (devices, jobs)."""

    async def get(self, key: str) -> Record | None: ...

    async def insert(self, key: str, data: dict[str, Any]) -> str: ...

    async def replace(self, key: str, data: dict[str, Any], etag: str) -> str: ...

    async def upsert(self, key: str, data: dict[str, Any]) -> str: ...

    async def delete(self, key: str) -> None: ...

    async def list(self) -> list[Record]: ...


@dataclass(frozen=True)
class Spool:
    """Everything durable the gateway owns, wired once by the composition root."""

    blobs: BlobStore
    queue: JobQueue
    jobs: Table
    devices: Table
    mailboxes: Table  # each sender mailbox's shared Graph budget (gateway.core.mailbox_ledger)

    async def close(self) -> None:
        for part in (self.blobs, self.queue, self.jobs, self.devices, self.mailboxes):
            closer = getattr(part, "close", None)
            if closer is not None:
                await closer()
