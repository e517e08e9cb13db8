"""Deliver what Graph cannot carry as time-limited download links (SCANGW_LINK_HOURS), from either spool.

Azure Storage signs its own URLs (SAS, see `AzureBlobStore.link`); the embedded spool has no public
endpoint, so its links point at `scangw http` (`GET /api/links/{token}`, SCANGW_PUBLIC_URL) with an
HMAC token. Either way the expiry comes from the job record (`OutgoingMessage.links_until`), written before
any link exists, so retention keeps the bytes at least as long as any link handed out promises.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from gateway.config import Settings
from gateway.core.errors import PermanentDeliveryError
from gateway.core.jobs import FileRef, Job
from gateway.core.links import (
    LINKS_ALL,
    LINKS_UNTIL,
    SUPERSEDED_DRAFTS,
    DownloadLink,
    LinkClaim,
    body_with_links,
    links_message_id,
    links_until,
    sign_token,
)
from gateway.core.message import OutgoingMessage
from gateway.core.ports import BlobStore, LinkSigner, NotFound
from gateway.delivery.graph.draft import UPLOAD_THRESHOLD
from gateway.delivery.graph.progress import DRAFT_ID

if TYPE_CHECKING:
    from gateway.delivery.graph.exactly_once import LinkFallback

log = logging.getLogger("scangw.links")

LINK_ROUTE = "/api/links/"


class _KeyHolder(Protocol):
    async def link_key(self) -> bytes: ...


class HmacLinkSigner:
    """Links served by the gateway's own HTTP app for the embedded spool; the key stays in the spool folder."""

    def __init__(self, blobs: _KeyHolder, public_url: str) -> None:
        self._blobs = blobs
        self._base = public_url.rstrip("/") + LINK_ROUTE

    async def link(self, name: str, expires: float, filename: str) -> str:
        token = sign_token(await self._blobs.link_key(), LinkClaim(name, filename, expires))
        return self._base + token


def link_signer(settings: Settings, blobs: BlobStore) -> LinkSigner | None:
    """Storage that signs its own URLs, else the gateway's HMAC links when SCANGW_PUBLIC_URL says where."""
    if isinstance(blobs, LinkSigner):
        return blobs
    if settings.public_url and callable(getattr(blobs, "link_key", None)):
        return HmacLinkSigner(blobs, settings.public_url)  # type: ignore[arg-type]
    return None


class BlobLinks:
    """GraphTransport's `LinkFallback`: the same message, with `files` swapped for links in its body."""

    def __init__(self, signer: LinkSigner, hours: float, clock: Callable[[], float] = time.time) -> None:
        self.signer = signer
        self.hours = hours
        self._now = clock

    async def replace_attachments(self, message: OutgoingMessage, files: tuple[FileRef, ...]) -> OutgoingMessage:
        """Deterministic for a job: the expiry is the one recorded in the job, never a fresh clock reading."""
        until = message.links_until
        if until is None:  # only messages the agent did not prepare (none carry large files today)
            until = links_until(self._now(), self.hours)
        links: list[DownloadLink] = []
        for file in files:
            try:
                url = await self.signer.link(file.blob, until, file.name)
            except NotFound as exc:
                raise PermanentDeliveryError(
                    f"The scan's bytes are missing from storage ({exc}).", "Send the scan again from the device."
                ) from exc
            links.append(DownloadLink(file.name, file.size, url, until))
        keep = tuple(f for f in message.attachments if f not in files)
        log.info("message=%s %d file(s) sent as links until %.0f", message.internet_message_id, len(links), until)
        return dataclasses.replace(
            message, attachments=keep, body=body_with_links(message.body, message.body_type, links)
        )


def make_link_fallback(settings: Settings, blobs: BlobStore) -> BlobLinks | None:
    """None when links are off or this storage cannot offer them: the permanent failure then stands."""
    if settings.link_hours <= 0:
        return None
    signer = link_signer(settings, blobs)
    return BlobLinks(signer, settings.link_hours) if signer is not None else None


class JobProgress(Protocol):
    """The slice of the agent's JobCheckpoint used here: the job as last saved, and an etag-checked update."""

    @property
    def job(self) -> Job: ...

    async def update(self, **progress: Any) -> None: ...


async def with_links(
    cp: JobProgress, message: OutgoingMessage, fallback: LinkFallback | None, settings: Settings, now: float
) -> OutgoingMessage:
    """Give the message its link expiry (recorded before any link exists) when links may be needed, and in
    "all files" mode (after MaxSendSize refused it) swap every attachment and take the links Message-ID."""
    if fallback is None:
        return message
    progress = cp.job.progress
    every_file = bool(progress.get(LINKS_ALL))
    no_upload = not settings.upload_sessions_available and any(f.size >= UPLOAD_THRESHOLD for f in message.attachments)
    if not (every_file or no_upload):
        return message
    until = progress.get(LINKS_UNTIL)
    if until is None:
        until = links_until(now, settings.link_hours)
        await cp.update(**{LINKS_UNTIL: until})
    message = dataclasses.replace(message, links_until=float(until))
    if not every_file:
        return message  # GraphTransport's hook swaps exactly the files it cannot upload
    message = dataclasses.replace(message, internet_message_id=links_message_id(message.internet_message_id))
    return await fallback.replace_attachments(message, message.attachments)


async def switch_to_links(cp: JobProgress, transport: object, mailbox: str, settings: Settings, now: float) -> None:
    """After MaxSendSize refused the message: forget its draft (recorded as superseded, then deleted) and
    deliver a new message, under its own Message-ID, that carries every file as a link."""
    progress = cp.job.progress
    draft = (progress.get("delivery") or {}).get(DRAFT_ID)
    superseded = [*(progress.get(SUPERSEDED_DRAFTS) or []), *([draft] if draft else [])]
    await cp.update(
        delivery={},
        **{LINKS_ALL: True, LINKS_UNTIL: links_until(now, settings.link_hours), SUPERSEDED_DRAFTS: superseded},
    )
    api = getattr(transport, "api", None)  # GraphTransport's; the outbox has no drafts
    if draft and api is not None:
        try:
            await api.delete(mailbox, draft)
        except Exception as exc:  # noqa: BLE001 - recorded above; the drafts sweep removes it later
            log.warning("refused draft %s in %s not deleted yet (%s)", draft, mailbox, type(exc).__name__)
