"""accept(): the one rule both front doors follow. Bytes first, then the job record, then the queue
message, and only then may the edge answer 250/202. Any failure on the way removes what was written, so
nothing is half-accepted and the device simply retries.
"""

from __future__ import annotations

import logging
import mimetypes
import re
import unicodedata
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.core.devices import Device, sender_mailbox
from gateway.core.errors import BusyError, InputError, MalformedInput, MessageTooLarge, StorageUnavailable
from gateway.core.jobs import FileRef, Job, JobKind, encode_queue_message, iso, new_job_id
from gateway.core.ports import Spool

log = logging.getLogger("scangw.accept")

_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")


def safe_filename(raw: str, fallback: str = "scan.pdf") -> str:
    """Keep what a person would recognise, drop what could escape a folder or break a header."""
    name = unicodedata.normalize("NFC", raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("_", name).strip(" .")
    if not name or set(name) <= {"_", "."}:
        return fallback
    return name[:200]


def guess_type(name: str) -> str:
    return mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"


@dataclass(frozen=True)
class Envelope:
    """Who gets the scan and what it says; for multipart uploads known only after the files streamed by."""

    to: tuple[str, ...]
    subject: str | None = None
    body: str | None = None


@dataclass(frozen=True)
class IncomingFile:
    name: str
    content_type: str | None
    chunks: AsyncIterable[bytes]


class _Budget:
    """Counts bytes across all parts of one submission and stops the stream as soon as it is over."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    async def meter(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            self.used += len(chunk)
            if self.used > self.limit:
                raise MessageTooLarge(self.limit)
            yield chunk


class Intake:
    def __init__(
        self,
        spool: Spool,
        max_bytes: int,
        default_sender: str | None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        trace_context: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.trace_context = trace_context  # the acceptance's traceparent, kept in the job record
        self.spool = spool
        self.max_bytes = max_bytes
        self.default_sender = default_sender
        self.clock = clock

    def _new_job(self, device: Device, to: tuple[str, ...], kind: JobKind, **fields: object) -> Job:
        now = iso(self.clock())
        return Job(
            id=new_job_id(),
            device=device.name,
            sender=sender_mailbox(device, self.default_sender),
            to=to,
            size=0,
            kind=kind,
            created=now,
            updated=now,
            sender_name=device.sender_name,
            reply_to=device.reply_to,
            trace_context=self.trace_context(),
            **fields,  # type: ignore[arg-type]
        )

    async def accept_files(
        self,
        device: Device,
        files: AsyncIterable[IncomingFile],
        envelope: Callable[[], Envelope],
    ) -> Job:
        """Spool uploaded files as one job (HTTP PUT or multipart POST).

        `envelope` is called after the files are stored, because multipart fields may follow the files;
        it raises (e.g. RecipientNotAllowed) to refuse the upload, which then leaves nothing behind.
        """
        job = self._new_job(device, (), JobKind.FILES)
        budget = _Budget(self.max_bytes)
        refs: list[FileRef] = []

        async def spool_files() -> None:
            async for incoming in files:
                name = safe_filename(incoming.name)
                blob = f"{job.id}/file-{len(refs)}"
                size = await self.spool.blobs.write(blob, budget.meter(incoming.chunks))
                if size == 0:
                    raise MalformedInput(f"The file '{name}' is empty: nothing to send.")
                content_type = incoming.content_type or guess_type(name)
                if content_type in ("application/octet-stream", "") and guess_type(name) != "application/octet-stream":
                    content_type = guess_type(name)
                refs.append(FileRef(blob=blob, name=name, content_type=content_type, size=size))
            if not refs:
                raise MalformedInput("The upload has no file: send the scan as the request body or a 'file' part.")

        def finish() -> Job:
            env = envelope()
            return job.evolve(
                self.clock(),
                to=env.to,
                subject=env.subject or f"Scan from {device.name}",
                body=env.body,
                files=tuple(refs),
                size=budget.used,
            )

        return await self._commit(job, spool_files, finish)

    async def accept_mime(self, device: Device, to: tuple[str, ...], data: AsyncIterable[bytes]) -> Job:
        """Spool an SMTP message exactly as received; parsing waits for the delivery agent."""
        job = self._new_job(device, to, JobKind.MIME)
        budget = _Budget(self.max_bytes)
        blob = f"{job.id}/message.eml"

        async def spool_message() -> None:
            if await self.spool.blobs.write(blob, budget.meter(data)) == 0:
                raise MalformedInput("The message is empty.")

        def finish() -> Job:
            ref = FileRef(blob=blob, name="message.eml", content_type="message/rfc822", size=budget.used)
            return job.evolve(self.clock(), files=(ref,), size=budget.used)

        return await self._commit(job, spool_message, finish)

    async def _commit(self, job: Job, write: Callable[[], Awaitable[None]], finish: Callable[[], Job]) -> Job:
        try:
            await write()
            final = finish()
            await self.spool.jobs.insert(final.id, final.to_record())
            try:
                await self.spool.queue.put(encode_queue_message(final))
            except BaseException:
                await self.spool.jobs.delete(final.id)
                raise
        except BaseException as exc:
            await self._discard(job.id)
            if isinstance(exc, Exception) and not isinstance(exc, (InputError, StorageUnavailable, BusyError)):
                # Only typed errors may leave the core; an unknown failure here is a storage fault.
                log.exception("job=%s accept failed", job.id)
                raise StorageUnavailable(f"could not store the scan: {exc}") from exc
            raise
        log.info("job=%s state=queued device=%s size=%d to=%s", final.id, final.device, final.size, ",".join(final.to))
        return final

    async def _discard(self, job_id: str) -> None:
        try:
            await self.spool.blobs.delete_prefix(f"{job_id}/")
        except Exception:  # noqa: BLE001 - best effort; retention sweeps any leftover
            log.warning("job=%s could not remove partial blobs; retention will", job_id)
