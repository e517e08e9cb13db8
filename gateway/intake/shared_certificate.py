"""The SMTP door's self-signed certificate kept in the spool's blob store, so every replica serves the same one.

On Azure the door runs in Container Apps: up to `maxReplicas` copies at once, each with its own temporary
folder, and a new container at every restart or new revision. A certificate kept only in that folder would
differ per replica and change at every restart, and a device or relay that trusts the door's fingerprint
(the README's Postfix and msmtp recipes pin it) would fail half its connections and all of them after the next
restart. The spool's private container outlives them all, and every door can already write to it.

The key and the certificate are one blob, so a reader never pairs one door's key with another's certificate.
Anyone who can read scans in that container can read this key too; the key protects only this door's TLS.

Two replicas starting at the same moment with nothing stored may both make one: each writes its own, then
reads back what is stored and serves that, and `converge()` runs again every SYNC_SECONDS, so the doors
agree within minutes whatever the order. A stored pair that is unreadable, names other hosts or is near
expiry is replaced by `ensure()`'s rules, exactly as a local one is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from gateway.core.ports import BlobStore, NotFound
from gateway.intake.self_signed import SelfSigned, ensure, install

log = logging.getLogger("scangw.smtp")

#: Not a job id (those are hex), so retention's orphan sweep leaves it alone.
BLOB_NAME = "tls/self-signed.pem"
#: How often a running door checks the stored certificate (one small blob read).
SYNC_SECONDS = 600.0
_MAX_BYTES = 64 * 1024


async def _read(blobs: BlobStore) -> bytes | None:
    try:
        if not await blobs.list(BLOB_NAME):
            return None
        data = bytearray()
        async for chunk in blobs.stream(BLOB_NAME):
            data += chunk
            if len(data) > _MAX_BYTES:
                return None  # not ours: let ensure() replace it
        return bytes(data)
    except NotFound:
        return None


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _pack(made: SelfSigned) -> bytes:
    return made.key.read_bytes() + made.cert.read_bytes()


def _unpack(data: bytes, folder: Path) -> None:
    """Write a stored pair (key, then certificate) into `folder`; an unreadable one is left for ensure()."""
    cut = data.find(b"-----BEGIN CERTIFICATE-----")
    if cut > 0:
        install(folder, data[:cut], data[cut:])


async def converge(blobs: BlobStore, hosts: Sequence[str], folder: Path) -> SelfSigned:
    """Make `folder` hold the stored certificate (storing a new one when there is none fit to serve) and
    return it. Raises StorageUnavailable when the store cannot be read or written."""
    stored = await _read(blobs)
    if stored is not None:
        await asyncio.to_thread(_unpack, stored, folder)
    made = await asyncio.to_thread(ensure, hosts, folder)
    mine = _pack(made)
    if mine == stored:
        return made
    await blobs.write(BLOB_NAME, _one(mine))
    log.info("event=smtp.self_signed result=stored blob=%s sha256=%s", BLOB_NAME, made.fingerprint)
    again = await _read(blobs)
    if again is not None and again != mine:  # another replica stored its own meanwhile: serve that one
        await asyncio.to_thread(_unpack, again, folder)
        made = await asyncio.to_thread(ensure, hosts, folder)
    return made
