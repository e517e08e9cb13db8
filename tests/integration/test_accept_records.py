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
        )
        job = await svc.intake().accept_files(device, upload, lambda: Envelope(("a@contoso.com",)))
        stored = await svc.jobs.get(job.id)
        assert stored is not None
        assert [(f.name, f.content_type, f.size) for f in stored.files] == [
            ("page 1.pdf", "application/pdf", 6),  # a device's octet-stream gets the type its name says
            ("photo.jpg", "image/jpeg", 2),
            ("notes.weird", "application/octet-stream", 1),
            ("scan.pdf", "text/plain", 1),  # a nameless part gets a name
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
