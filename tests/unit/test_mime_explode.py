"""Exploding device-shaped messages (tests/data) gives the right text and byte-identical, well-named files.

Runs against the embedded blob store in a temporary folder; memory use is checked on a generated 100 MB scan.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import tracemalloc
from collections.abc import AsyncIterable, AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.core.jobs import FileRef, Job, JobKind, iso, new_job_id
from gateway.core.message import ParsedMessage
from gateway.core.ports import BlobStore
from gateway.delivery.explode import explode_mime
from gateway.spool.local import LocalBlobStore

DATA = Path(__file__).resolve().parent.parent / "data"
MANIFEST: dict[str, dict[str, Any]] = json.loads((DATA / "manifest.json").read_text(encoding="utf-8"))
WHOLE = sorted(name for name, meta in MANIFEST.items() if "partial" not in meta)


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


def mime_job(blob: str, size: int, job_id: str | None = None) -> Job:
    now = iso(datetime(2025, 7, 1, 12, 0, tzinfo=UTC))
    return Job(
        id=job_id or new_job_id(),
        device="scanner1",
        sender="scanner@contoso.com",
        to=("alice@contoso.com",),
        size=size,
        kind=JobKind.MIME,
        created=now,
        updated=now,
        files=(FileRef(blob, "message.eml", "message/rfc822", size),),
    )


async def explode_file(blobs: BlobStore, name: str) -> ParsedMessage:
    data = (DATA / name).read_bytes()
    job = mime_job("x", len(data))
    job = mime_job(f"{job.id}/message.eml", len(data), job.id)
    await blobs.write(job.files[0].blob, _one(data))
    return await explode_mime(job, blobs)


async def digest(blobs: BlobStore, ref: FileRef) -> str:
    sha = hashlib.sha256()
    async for chunk in blobs.stream(ref.blob):
        sha.update(chunk)
    return sha.hexdigest()


def check(parsed: ParsedMessage, meta: dict[str, Any], digests: list[str]) -> None:
    expected = meta["attachments"]
    assert [a.name for a in parsed.attachments] == [e["name"] for e in expected]
    assert [a.size for a in parsed.attachments] == [e["size"] for e in expected]
    assert digests == [e["sha256"] for e in expected]
    assert parsed.subject == meta["subject"]
    if "body" in meta:
        assert meta["body"] in parsed.body
    if "message_id" in meta:
        assert parsed.message_id == meta["message_id"]
    for key in ("to", "cc"):
        if key in meta:
            assert list(getattr(parsed, key)) == meta[key]
    assert parsed.date  # always present: the device's, or the time it was received


@pytest.mark.parametrize("name", WHOLE)
def test_device_messages_explode_into_named_byte_identical_files(tmp_path: Path, name: str) -> None:
    async def scenario() -> None:
        blobs = LocalBlobStore(tmp_path)
        parsed = await explode_file(blobs, name)
        check(parsed, MANIFEST[name], [await digest(blobs, a) for a in parsed.attachments])

    asyncio.run(scenario())


def test_details_of_particular_devices(tmp_path: Path) -> None:
    async def scenario() -> None:
        blobs = LocalBlobStore(tmp_path)
        ricoh = await explode_file(blobs, "ricoh_rfc2047_param.eml")
        assert ricoh.from_ is not None and (ricoh.from_.name, ricoh.from_.address) == (
            "Jürgen Müller",
            "juergen@contoso.com",
        )
        minimal = await explode_file(blobs, "minimal_headers.eml")
        assert minimal.message_id is None and minimal.to == () and minimal.date == "Tue, 01 Jul 2025 12:00:00 +0000"
        xerox = await explode_file(blobs, "xerox_bare_lf.eml")
        assert xerox.from_ is not None and xerox.from_.name is None  # "x <x>": no display name worth keeping
        epson = await explode_file(blobs, "epson_html_related.eml")
        assert epson.body_type == "html"
        logo, photo = epson.attachments
        assert (logo.inline, logo.content_id, photo.inline) == (True, "logo@epson", False)
        single = await explode_file(blobs, "single_part_pdf.eml")
        assert single.body == "" and [a.content_type for a in single.attachments] == ["application/pdf"]

    asyncio.run(scenario())


class _GeneratedScan:
    """A blob store whose one message is generated on the fly and whose writes are only hashed: what stays in
    memory is then the explode's own doing."""

    def __init__(self, megabytes: int) -> None:
        self.block = bytes(range(256)) * (57 * 16 * 3)  # 700 KiB, a multiple of 57 bytes (whole base64 lines)
        self.count = megabytes * 1024 * 1024 // len(self.block)
        self.hashes: dict[str, tuple[int, str]] = {}

    def expected(self) -> tuple[int, str]:
        sha = hashlib.sha256()
        for _ in range(self.count):
            sha.update(self.block)
        return self.count * len(self.block), sha.hexdigest()

    async def stream(self, name: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        yield (
            b"From: big@contoso.com\r\nSubject: big\r\nContent-Type: multipart/mixed; boundary=BIG\r\n\r\n--BIG\r\n"
            b"Content-Type: application/pdf; name=big.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        )
        encoded = base64.encodebytes(self.block).replace(b"\n", b"\r\n")
        for _ in range(self.count):
            yield encoded
        yield b"--BIG--\r\n"

    async def write(self, name: str, chunks: AsyncIterable[bytes]) -> int:
        sha, size = hashlib.sha256(), 0
        async for chunk in chunks:
            sha.update(chunk)
            size += len(chunk)
        self.hashes[name] = (size, sha.hexdigest())
        return size


def test_a_100_mb_scan_explodes_in_flat_memory() -> None:
    store = _GeneratedScan(100)
    job = mime_job("big/message.eml", 0, "0" * 24)

    async def scenario() -> ParsedMessage:
        return await explode_mime(job, store)  # type: ignore[arg-type]

    tracemalloc.start()
    try:
        parsed = asyncio.run(scenario())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    [attachment] = parsed.attachments
    assert store.hashes[attachment.blob] == store.expected()
    assert peak < 12 * 1024 * 1024, f"explode held {peak / 2**20:.1f} MiB for a 100 MB message"
