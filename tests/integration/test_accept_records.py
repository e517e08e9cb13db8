"""What accept() stores for an upload, and where its size limit cuts (found unguarded by mutation testing,
docs/mutation.md): the job names the device's sender mailbox and display name, the size is the bytes
received across chunks and files, a scan exactly at the limit is taken and one byte more leaves nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.core.accept import Envelope, IncomingFile
from gateway.core.errors import MessageTooLarge
from gateway.core.jobs import JobState
from tests.support import services_for

MIB = 1024 * 1024


async def files(*sizes: int, chunk: int = 300_000) -> AsyncIterator[IncomingFile]:
    for n, size in enumerate(sizes):

        async def chunks(size: int = size) -> AsyncIterator[bytes]:
            left = size
            while left:
                yield b"x" * min(chunk, left)
                left -= min(chunk, left)

        yield IncomingFile(f"page{n}.pdf", "application/pdf", chunks())


def test_the_job_names_the_device_sender_and_counts_every_byte(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc = await services_for(tmp_path, SCANGW_SENDER="scans@contoso.com")
        device, _ = await svc.registry.add(
            "mfp1", sender="floor2@contoso.com", sender_name="Floor 2", reply_to="desk@contoso.com"
        )
        job = await svc.intake().accept_files(device, files(700_000, 500_001), lambda: Envelope(("a@contoso.com",)))
        stored = await svc.jobs.get(job.id)
        assert stored is not None and stored.state == JobState.QUEUED
        assert (stored.sender, stored.sender_name, stored.reply_to) == (
            "floor2@contoso.com",
            "Floor 2",
            "desk@contoso.com",
        )
        assert (stored.to, stored.size, [f.size for f in stored.files]) == (
            ("a@contoso.com",),
            1_200_001,
            [700_000, 500_001],
        )
        plain, _ = await svc.registry.add("mfp2")
        other = await svc.intake().accept_files(plain, files(10), lambda: Envelope(("a@contoso.com",)))
        assert (await svc.jobs.get(other.id)).sender == "scans@contoso.com"  # type: ignore[union-attr]
        await svc.close()

    asyncio.run(scenario())


def test_a_scan_exactly_at_the_limit_is_taken_and_one_byte_more_leaves_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc = await services_for(tmp_path, SCANGW_SENDER="scans@contoso.com", SCANGW_MAX_MESSAGE_MB="1")
        device, _ = await svc.registry.add("mfp1", default_to="a@contoso.com")
        taken = await svc.intake().accept_files(device, files(MIB - 100, 100), lambda: Envelope(("a@contoso.com",)))
        assert taken.size == MIB
        with pytest.raises(MessageTooLarge) as refused:
            await svc.intake().accept_files(device, files(MIB - 100, 101), lambda: Envelope(("a@contoso.com",)))
        assert "the limit is 1 MB" in str(refused.value)
        assert [j.id for j in await svc.jobs.list()] == [taken.id]
        assert {n.split("/", 1)[0] for n in await svc.spool.blobs.list("")} == {taken.id}
        assert await svc.spool.queue.count() == 1  # type: ignore[attr-defined]
        await svc.close()

    asyncio.run(scenario())


async def named(*items: tuple[str, str, bytes]) -> AsyncIterator[IncomingFile]:
    for name, kind, data in items:

        async def chunks(data: bytes = data) -> AsyncIterator[bytes]:
            if data:
                yield data

        yield IncomingFile(name, kind, chunks())


def test_what_an_upload_is_sent_as_names_types_subject_and_body(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc = await services_for(tmp_path, SCANGW_SENDER="scans@contoso.com")
        device, _ = await svc.registry.add("mfp1", default_to="a@contoso.com")
        upload = named(
            ("page 1.pdf", "application/octet-stream", b"%PDF-1"),
            ("photo.jpg", "", b"\xff\xd8"),
            ("notes.weird", "application/octet-stream", b"n"),
            ("", "text/plain", b"t"),
            ("photo.pct", "application/octet-stream", b"p"),
        )
        job = await svc.intake().accept_files(device, upload, lambda: Envelope(("a@contoso.com",)))
        stored = await svc.jobs.get(job.id)
        assert stored is not None
        assert [(f.name, f.content_type, f.size) for f in stored.files] == [
            ("page 1.pdf", "application/pdf", 6),  # a device's octet-stream gets the type its name says
            ("photo.jpg", "image/jpeg", 2),
            ("notes.weird", "application/octet-stream", 1),
            ("scan.pdf", "text/plain", 1),  # a nameless part gets a name
            ("photo.pct", "image/pict", 1),  # a type only Python's non-strict table knows is still used
        ]
        blobs = [f.blob for f in stored.files]
        assert blobs == [f"{job.id}/file-{n}" for n in range(5)]  # what the worker reads each file from
        assert [b"".join([c async for c in svc.spool.blobs.stream(b)]) for b in blobs] == [
            b"%PDF-1",
            b"\xff\xd8",
            b"n",
            b"t",
            b"p",
        ]
        assert stored.subject == "Scan from mfp1"  # the default when the device gives none
        told = await svc.intake().accept_files(
            device, named(("a.pdf", "application/pdf", b"x")), lambda: Envelope(("a@contoso.com",), "Invoice", "Hi")
        )
        again = await svc.jobs.get(told.id)
        assert again is not None and (again.subject, again.body) == ("Invoice", "Hi")
        await svc.close()

    asyncio.run(scenario())


def test_an_empty_file_or_no_file_is_refused_by_name_and_leaves_nothing(tmp_path: Path) -> None:
    from gateway.core.errors import MalformedInput

    async def scenario() -> None:
        svc = await services_for(tmp_path, SCANGW_SENDER="scans@contoso.com")
        device, _ = await svc.registry.add("mfp1", default_to="a@contoso.com")
        with pytest.raises(MalformedInput) as empty:
            await svc.intake().accept_files(
                device, named(("ok.pdf", "application/pdf", b"x"), ("blank.pdf", "application/pdf", b"")),
                lambda: Envelope(("a@contoso.com",)),
            )  # fmt: skip
        assert str(empty.value) == "The file 'blank.pdf' is empty: nothing to send."
        with pytest.raises(MalformedInput) as none:
            await svc.intake().accept_files(device, named(), lambda: Envelope(("a@contoso.com",)))
        assert str(none.value) == "The upload has no file: send the scan as the request body or a 'file' part."
        assert await svc.jobs.list() == [] and await svc.spool.blobs.list("") == []
        assert await svc.spool.queue.count() == 0  # type: ignore[attr-defined]
        await svc.close()

    asyncio.run(scenario())


def test_an_smtp_message_is_stored_byte_for_byte_as_one_queued_job(tmp_path: Path) -> None:
    """accept_mime (the SMTP path), in-process: the job the worker will deliver and the exact bytes it reads."""
    from datetime import UTC, datetime, timedelta

    from gateway.core.accept import Intake
    from gateway.core.errors import MalformedInput
    from gateway.core.jobs import FileRef, JobKind, decode_queue_message

    message = b"From: scanner@contoso.com\r\nSubject: Invoice\r\n\r\n" + bytes(range(256)) * 2_000
    started = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    ticks = iter(started + timedelta(seconds=n) for n in range(100))

    async def chunks(data: bytes, size: int = 64_000) -> AsyncIterator[bytes]:
        for at in range(0, len(data), size):
            yield data[at : at + size]

    async def scenario() -> None:
        svc = await services_for(tmp_path, SCANGW_SENDER="scans@contoso.com")
        device, _ = await svc.registry.add("mfp1", sender="floor2@contoso.com", sender_name="Floor 2")
        intake = Intake(svc.spool, len(message), "scans@contoso.com", clock=lambda: next(ticks),
                        trace_context=lambda: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")  # fmt: skip
        job = await intake.accept_mime(device, ("a@contoso.com", "b@contoso.com"), chunks(message))
        stored = await svc.jobs.get(job.id)
        assert stored is not None and stored == job
        assert (stored.state, stored.kind, stored.device, stored.to) == (
            JobState.QUEUED,
            JobKind.MIME,
            "mfp1",
            ("a@contoso.com", "b@contoso.com"),
        )
        assert (stored.sender, stored.sender_name, stored.size) == ("floor2@contoso.com", "Floor 2", len(message))
        assert stored.files == (FileRef(f"{job.id}/message.eml", "message.eml", "message/rfc822", len(message)),)
        assert (stored.created, stored.updated) == ("2026-03-01T09:30:00.000000Z", "2026-03-01T09:30:01.000000Z")
        assert stored.trace_context == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        assert b"".join([c async for c in svc.spool.blobs.stream(stored.files[0].blob)]) == message
        assert await svc.spool.blobs.list("") == [f"{job.id}/message.eml"]
        (lease,) = await svc.spool.queue.receive(30, max_messages=32)
        assert decode_queue_message(lease.text) == job.id

        with pytest.raises(MalformedInput) as empty:
            await intake.accept_mime(device, ("a@contoso.com",), chunks(b""))
        assert str(empty.value) == "The message is empty."  # what the device reads after 554 5.6.0
        with pytest.raises(MessageTooLarge):
            await intake.accept_mime(device, ("a@contoso.com",), chunks(message + b"!"))
        assert [j.id for j in await svc.jobs.list()] == [job.id]
        assert await svc.spool.blobs.list("") == [f"{job.id}/message.eml"]
        assert await svc.spool.queue.count() == 1  # type: ignore[attr-defined]
        await svc.close()

    asyncio.run(scenario())
