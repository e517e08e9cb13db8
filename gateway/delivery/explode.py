"""Turn a spooled SMTP message into a ParsedMessage whose attachments are blobs of their own, streaming.

Done once per job by the delivery agent (the result is recorded in the job's progress), so intake stays a
byte copy and a parse problem never costs the device its 250. The message is read chunk by chunk, split by
the incremental MIME parser, and each attachment is decoded straight into its own blob: memory stays flat
for a 150 MB scan; only headers and a bounded message text are held.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterable, AsyncIterator
from datetime import UTC, datetime

from gateway.core.accept import safe_filename
from gateway.core.jobs import FileRef, Job, parse_iso
from gateway.core.message import Address, ParsedMessage
from gateway.core.mime.charsets import decode_bytes
from gateway.core.mime.headers import HeaderBlock, PartInfo, address_list, mailbox, message_date, message_id
from gateway.core.mime.parts import Role, attachment_name, attachment_type, part_role
from gateway.core.mime.splitter import Data, End, Event, MimeSplitter, Start
from gateway.core.mime.transfer import Decoder, decoder_for
from gateway.core.ports import BlobStore

#: Message text kept in memory; a longer text part is delivered as an attachment instead.
BODY_LIMIT = 1024 * 1024
#: Bytes gathered before each blob write (few, large writes; still flat memory).
WRITE_SIZE = 256 * 1024
#: More parts than this is not a scan; the rest is dropped with a note rather than exhausting Graph.
MAX_ATTACHMENTS = 500


class _Events:
    """Pull-style access to the push parser: one chunk's events buffered at a time."""

    def __init__(self, chunks: AsyncIterable[bytes]) -> None:
        self._chunks = chunks.__aiter__()
        self._splitter = MimeSplitter()
        self._queue: deque[Event] = deque()
        self._done = False

    async def next(self) -> Event | None:
        while not self._queue:
            if self._done:
                return None
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                self._queue.extend(self._splitter.close())
                self._done = True
                continue
            self._queue.extend(self._splitter.feed(chunk))
        return self._queue.popleft()

    async def body(self, decoder: Decoder, prefix: bytes = b"") -> AsyncIterator[bytes]:
        """The current leaf part's decoded bytes, in writes of about WRITE_SIZE, up to its End."""
        pending = bytearray(prefix)
        while True:
            event = await self.next()
            if event is None or isinstance(event, End):
                pending += decoder.finish()
                if pending:
                    yield bytes(pending)
                return
            if isinstance(event, Data):
                pending += decoder.feed(event.data)
                if len(pending) >= WRITE_SIZE:
                    yield bytes(pending)
                    pending.clear()


class _Exploder:
    def __init__(self, prefix: str, blobs: BlobStore, events: _Events) -> None:
        self.prefix = prefix
        self.blobs = blobs
        self.events = events
        self.top = HeaderBlock()
        self.body: str | None = None
        self.body_ctype: str | None = None
        self.body_parent: str | None = None
        self.attachments: list[FileRef] = []
        self.notes: list[str] = []

    async def run(self) -> None:
        while (event := await self.events.next()) is not None:
            if not isinstance(event, Start):
                continue
            if event.depth == 0:
                self.top = event.headers
            if not event.leaf:
                continue
            role = part_role(event.info, event.parent, self.body_ctype, self.body_parent)
            if role is Role.BODY:
                await self._text(event)
            elif role is Role.ATTACHMENT:
                await self._attach(event.info, event.depth == 0)
            else:
                async for _ in self.events.body(decoder_for(event.info.encoding)):
                    pass

    async def _text(self, start: Start) -> None:
        decoder = decoder_for(start.info.encoding)
        data = bytearray()
        while (event := await self.events.next()) is not None and not isinstance(event, End):
            if isinstance(event, Data):
                data += decoder.feed(event.data)
                if len(data) > BODY_LIMIT:  # too long for a message text: deliver it as a file instead
                    self.notes.append("The message text was too long and is attached as a file.")
                    await self._attach(start.info, False, bytes(data), decoder)
                    return
        data += decoder.finish()
        self.body = decode_bytes(bytes(data), start.info.charset)
        self.body_ctype = start.info.content_type
        self.body_parent = start.parent

    @property
    def body_type(self) -> str:
        return "html" if self.body_ctype == "text/html" else "text"

    async def _attach(self, info: PartInfo, single: bool, prefix: bytes = b"", decoder: Decoder | None = None) -> None:
        chunks = self.events.body(decoder or decoder_for(info.encoding), prefix)
        if len(self.attachments) >= MAX_ATTACHMENTS:
            async for _ in chunks:
                pass
            if not any("parts" in note for note in self.notes):
                self.notes.append(f"The message had more than {MAX_ATTACHMENTS} parts; the rest were left out.")
            return
        name = safe_filename(attachment_name(info, len(self.attachments) + 1, single), "attachment.bin")
        blob = f"{self.prefix}/part-{len(self.attachments)}"
        size = await self.blobs.write(blob, chunks)
        if size == 0 and info.filename is None:
            return  # an empty unnamed part carries nothing worth a file (its blob goes with the job's)
        inline = info.filename is None and info.content_id is not None and info.disposition != "attachment"
        self.attachments.append(
            FileRef(
                blob=blob,
                name=name,
                content_type=attachment_type(info, name),
                size=size,
                content_id=info.content_id,
                inline=inline,
            )
        )


def _address(raw: bytes | None) -> Address | None:
    found = mailbox(raw)
    return Address(found[1], found[0]) if found else None


async def explode_stream(
    prefix: str, received: datetime, chunks: AsyncIterable[bytes], blobs: BlobStore, notes: tuple[str, ...] = ()
) -> ParsedMessage:
    """Explode any MIME byte stream; attachments are written as `<prefix>/part-<n>` blobs."""
    exploder = _Exploder(prefix, blobs, _Events(chunks))
    await exploder.run()
    top = exploder.top
    all_notes = (*notes, *exploder.notes)
    body = exploder.body or ""
    if all_notes:
        separator = "<br>" if exploder.body_type == "html" else "\n"
        body = separator.join(all_notes) + (separator * 2 + body if body else "")
    return ParsedMessage(
        subject=top.text("subject"),
        from_=_address(top.get("from")),
        reply_to=_address(top.get("reply-to")),
        to=address_list(top.get_all("to")),
        cc=address_list(top.get_all("cc")),
        message_id=message_id(top.get("message-id")),
        date=message_date(top.get("date"), received),
        body=body,
        body_type=exploder.body_type,
        attachments=tuple(exploder.attachments),
        notes=all_notes,
    )


def received_at(job: Job) -> datetime:
    try:
        return parse_iso(job.created)
    except ValueError:
        return datetime.now(UTC)


async def explode_mime(job: Job, blobs: BlobStore) -> ParsedMessage:
    """The job's spooled message (its first file) as a ParsedMessage; attachments land in `<job id>/part-<n>`."""
    return await explode_stream(job.id, received_at(job), blobs.stream(job.files[0].blob), blobs)
