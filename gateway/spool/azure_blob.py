"""BlobStore on Azure Blob Storage: scans stream in as staged blocks and out as ranged downloads.

Staged blocks stay invisible until `commit_block_list`, which gives the same promise as the embedded
twin's write-then-rename: a scan is either fully stored or not there at all.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterable, AsyncIterator
from datetime import UTC, datetime, timedelta

from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobBlock, BlobSasPermissions, UserDelegationKey, generate_blob_sas
from azure.storage.blob.aio import ContainerClient

from gateway.core.links import content_disposition
from gateway.core.ports import CHUNK, NotFound
from gateway.core.settle import settled
from gateway.spool.azure_errors import mapped

#: Bytes gathered before staging a block: few round trips, memory bounded by one block per upload,
#: and no larger than the 1 MiB aiohttp still sends without blocking the event loop.
BLOCK = 1024 * 1024
#: A SAS's start is backdated so a recipient's clock running a little behind Azure's does not reject it.
CLOCK_SKEW = timedelta(minutes=15)
#: Azure caps a user delegation key at seven days from the request.
MAX_DELEGATION = timedelta(days=7)


class AzureBlobStore:
    def __init__(self, container: ContainerClient) -> None:
        self._container = container

    async def write(self, name: str, chunks: AsyncIterable[bytes]) -> int:
        """Stage the stream block by block, then commit; an error before the commit leaves nothing visible.
        A blob that fits one block is one request (Put Blob), which is as atomic."""
        blob = self._container.get_blob_client(name)
        # A random tag per write keeps block ids fixed-length and apart from any crashed earlier attempt.
        tag = secrets.token_hex(8)
        block_ids: list[BlobBlock] = []
        buffer = bytearray()
        size = 0

        async def stage(data: bytes) -> None:
            block_id = f"{tag}-{len(block_ids):06d}"
            with mapped(f"store blob {name}"):
                await blob.stage_block(block_id, data, length=len(data), validate_content=True)
            block_ids.append(BlobBlock(block_id))

        async for chunk in chunks:
            buffer += chunk
            size += len(chunk)
            while len(buffer) >= BLOCK:
                await stage(bytes(buffer[:BLOCK]))
                del buffer[:BLOCK]
        if not block_ids:
            # It fits one block: one Put Blob instead of a staged block and its commit (same all-or-nothing).
            with mapped(f"store blob {name}"):
                await settled(  # a cancelled caller still learns whether it landed
                    blob.upload_blob(bytes(buffer), length=len(buffer), overwrite=True, validate_content=True)
                )
            return size
        if buffer:
            await stage(bytes(buffer))
        with mapped(f"commit blob {name}"):
            await settled(blob.commit_block_list(block_ids))  # a cancelled caller still learns if it landed
        return size

    async def stream(self, name: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Yield pieces of at most CHUNK bytes; the client's get sizes are CHUNK, re-cut here to be sure."""
        if length is not None and length <= 0:
            await self.size(name)  # still report a missing blob
            return
        blob = self._container.get_blob_client(name)
        what = f"read blob {name}"
        with mapped(what):
            try:
                downloader = await blob.download_blob(offset=offset, length=length, max_concurrency=1)
            except HttpResponseError as exc:
                if exc.status_code == 416:  # offset at or past the end: nothing to read
                    return
                raise
        pieces = downloader.chunks()
        while True:
            with mapped(what):
                try:
                    piece = await pieces.__anext__()
                except StopAsyncIteration:
                    return
            for start in range(0, len(piece), CHUNK):
                yield piece[start : start + CHUNK]

    async def read_range(self, name: str, offset: int, length: int) -> bytes:
        return b"".join([piece async for piece in self.stream(name, offset, length)])

    async def size(self, name: str) -> int:
        with mapped(f"read the size of blob {name}"):
            props = await self._container.get_blob_client(name).get_blob_properties()
        return int(props.size)

    async def list(self, prefix: str) -> list[str]:
        with mapped(f"list blobs under '{prefix}'"):
            return sorted([item.name async for item in self._container.list_blobs(name_starts_with=prefix)])

    async def delete_prefix(self, prefix: str) -> int:
        """Delete one by one: a job owns a handful of blobs, and batch calls need extra permissions."""
        deleted = 0
        for name in await self.list(prefix):
            try:
                with mapped(f"delete blob {name}"):
                    await self._container.delete_blob(name)
                deleted += 1
            except NotFound:
                pass  # removed by someone else meanwhile: the goal is reached
        return deleted

    async def link(self, name: str, expires: float, filename: str) -> str:
        """A read-only SAS for one blob. With an account key (connection string, Azurite) it is signed
        locally; with a managed identity it is a user delegation SAS, which needs generateUserDelegationKey:
        Storage Blob Data Owner or Contributor include it (infra/ grants Owner to the delivery identity)."""
        until = datetime.fromtimestamp(expires, UTC)
        start = datetime.now(UTC) - CLOCK_SKEW
        blob = self._container.get_blob_client(name)
        await self.size(name)  # never hand out a link to bytes that are not there
        key = getattr(self._container.credential, "account_key", None)
        delegation = None if key else await self._delegation_key(start, until)
        sas = generate_blob_sas(
            blob.account_name or "",
            blob.container_name,
            name,
            account_key=key,
            user_delegation_key=delegation,
            permission=BlobSasPermissions(read=True),
            expiry=until,
            start=start,
            content_disposition=content_disposition(filename),
        )
        return f"{blob.url}?{sas}"

    async def _delegation_key(self, start: datetime, until: datetime) -> UserDelegationKey:
        if until - start > MAX_DELEGATION + CLOCK_SKEW:
            raise ValueError("a user delegation SAS lasts at most 7 days (SCANGW_LINK_HOURS <= 168)")
        service = self._container._get_blob_service_client()  # shares this client's pipeline: not closed
        with mapped("get a user delegation key (needs Storage Blob Data Owner or Contributor)"):
            return await service.get_user_delegation_key(start, until)

    async def close(self) -> None:
        await self._container.close()
