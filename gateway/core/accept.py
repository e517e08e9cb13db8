"""accept(): the one rule both front doors follow. Bytes first, then the job record, then the queue
message, and only then may the edge answer 250/202. Any failure on the way removes what was written, so
nothing is half-accepted and the device simply retries. A cancellation (the client went away, a shutdown)
leaves nothing as well, unless the queue message was already out: then everything is stored and the scan
goes. Where even the removal fails, the sweep reconciles the record (gateway.delivery.reconcile).
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.core.devices import Device, sender_mailbox
from gateway.core.errors import BusyError, InputError, MalformedInput, MessageTooLarge, StorageUnavailable
from gateway.core.jobs import FileRef, Job, JobKind, encode_queue_message, iso, new_job_id
from gateway.core.ports import Spool
from gateway.core.sanitise import content_type as clean_content_type
from gateway.core.sanitise import file_name
from gateway.core.settle import settled

log = logging.getLogger("scangw.accept")


def safe_filename(raw: str, fallback: str = "scan.pdf") -> str:
    """Keep what a person would recognise, drop what could escape a folder or break a header."""
    return file_name(raw, fallback)


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


#: Accepts in progress in this process: storage must not close under one that is still taking back its record.
_COMMITS: set[asyncio.Task[Any]] = set()


async def settle_accepts(timeout: float = 30.0) -> None:
    """Wait (up to `timeout`) for accepts still in progress, typically ones whose client went away and which
    are taking back what they wrote; called before the spool closes at shutdown."""
    current, loop = asyncio.current_task(), asyncio.get_running_loop()
    pending = {task for task in _COMMITS if task is not current and not task.done() and task.get_loop() is loop}
    if pending:
        log.info("waiting for %d scan(s) still being stored or taken back", len(pending))
        await asyncio.wait(pending, timeout=timeout)


@dataclass
class _Outcome:
    cut: bool = False  # the caller was cancelled while the record and message were being written
    queued: bool = False  # the queue message is out: the scan is accepted, whoever hears of it


def _cut(job_id: str, outcome: _Outcome) -> None:
    """The client went away while the record and message were being written: the step runs to its end (a
    thread or a request on the wire cannot be stopped half-way) and takes back what it can."""
    log.info("job=%s event=accept.cut the client went away while storing; settling first", job_id)
    outcome.cut = True


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
                content_type = clean_content_type(incoming.content_type, name)
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
        me = asyncio.current_task()
        if me is not None:
            _COMMITS.add(me)
        try:
            return await self._commit_tracked(job, write, finish)
        finally:
            _COMMITS.discard(me)

    async def _commit_tracked(self, job: Job, write: Callable[[], Awaitable[None]], finish: Callable[[], Job]) -> Job:
        outcome = _Outcome()
        try:
            await write()
            final = finish()
            await settled(self._record_and_enqueue(final, outcome), on_cancel=lambda: _cut(final.id, outcome))
        except BaseException as exc:
            if outcome.queued:  # only a cancellation gets here once the message is out: the scan will go
                log.warning(
                    "job=%s state=queued, but its client went away before hearing so (a resend may repeat it)", job.id
                )
                raise
            await settled(self._discard(job.id))
            if isinstance(exc, Exception) and not isinstance(exc, (InputError, StorageUnavailable, BusyError)):
                # Only typed errors may leave the core; an unknown failure here is a storage fault.
                log.exception("job=%s accept failed", job.id)
                raise StorageUnavailable(f"could not store the scan: {exc}") from exc
            raise
        log.info("job=%s state=queued device=%s size=%d to=%s", final.id, final.device, final.size, ",".join(final.to))
        return final

    async def _record_and_enqueue(self, final: Job, outcome: _Outcome) -> None:
        """Record, then enqueue; on any failure, or if the client went away before the message was out, take
        the record back (it may exist even when the insert's reply was lost; deleting is idempotent)."""
        try:
            await self.spool.jobs.insert(final.id, final.to_record())
            if outcome.cut:
                raise asyncio.CancelledError  # nobody hears the answer: store nothing rather than a duplicate
            await self.spool.queue.put(encode_queue_message(final))
            outcome.queued = True
        except BaseException:
            try:
                await self.spool.jobs.delete(final.id)
            except Exception as exc:  # noqa: BLE001 - the sweep reconciles a queued record with no message
                log.error("job=%s record left without a queue message (the sweep will reconcile it): %s", final.id, exc)
            raise

    async def _discard(self, job_id: str) -> None:
        try:
            await self.spool.blobs.delete_prefix(f"{job_id}/")
        except Exception:  # noqa: BLE001 - best effort; retention sweeps any leftover
            log.warning("job=%s could not remove partial blobs; retention will", job_id)
