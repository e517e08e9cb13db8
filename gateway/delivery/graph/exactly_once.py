"""Deliver one message through Microsoft Graph exactly once: draft → attachments → send, resumable.

Every side effect is announced in the checkpoint before it happens, so a retry (or another worker after a
crash) reads what may have happened and checks Graph instead of repeating it:

    send_requested_at  set  → search by internetMessageId; sent copy → done; never send twice (a draft
                              gone without a searchable copy is waited for: Exchange indexes late)
    draft_requested, no draft_id → search; reuse the draft (delete duplicates) or create it
    draft_id           set  → attach what is missing (listing the draft when an outcome is unknown)
    all attached            → pace, record send_requested_at, send

A typical scan (attachments under 3 MiB that fit in 4 MiB) costs two Graph requests: create and send.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from azure.core.credentials_async import AsyncTokenCredential

from gateway.config import Settings
from gateway.core.errors import PermanentDeliveryError, TransientDeliveryError
from gateway.core.jobs import FileRef
from gateway.core.message import OutgoingMessage
from gateway.core.ports import BlobStore, NotFound
from gateway.delivery.graph.api import GraphApi
from gateway.delivery.graph.draft import (
    draft_json,
    file_attachment,
    needs_upload_session,
    plan_inline,
    upload_session_json,
)
from gateway.delivery.graph.failures import GraphCallError, classify
from gateway.delivery.graph.identity import RefreshableCredential, build_credential
from gateway.delivery.graph.mailbox_limits import MailboxLimits
from gateway.delivery.graph.progress import (
    ALL_KEYS,
    ATTACHED,
    ATTACHING,
    DRAFT_ID,
    DRAFT_REQUESTED,
    INLINE,
    SEND_REQUESTED_AT,
    UPLOAD,
    is_present,
)
from gateway.delivery.graph.upload import ChunkUploader, SessionGone, expired, new_upload_client
from gateway.delivery.mailbox_sweep import MailboxReport, sweep_mailboxes
from gateway.delivery.transport import Checkpoint, Delivered
from gateway.services import Services

#: Exchange moves a sent draft to Sent Items asynchronously; "not found" is believed only after this long.
SEND_GRACE_SECONDS = 300.0
#: Once the draft is gone after a send request, Exchange took it to send: the Sent Items copy may still be
#: unsearchable (the index lags, by minutes or more). Only this long after the request is "neither the draft
#: nor the copy" believed to mean the draft was deleted before any send, and the message built again.
SENT_INDEX_GRACE_SECONDS = 3600.0


class LinkFallback(Protocol):
    """Hook for scans Graph cannot carry (no upload sessions in this cloud): send links instead."""

    async def replace_attachments(self, message: OutgoingMessage, files: tuple[FileRef, ...]) -> OutgoingMessage:
        """Return `message` without `files`, with a time-limited download link for each in its body.

        Must be deterministic for a job (same result on every retry): the attachment plan depends on it.
        """


class _StartOver(Exception):
    """The draft is gone and no send is pending: forget the draft and build the message again."""


class _AlreadySent(Exception):
    def __init__(self, request_id: str | None) -> None:
        super().__init__("already sent")
        self.request_id = request_id


class GraphTransport:
    def __init__(
        self,
        settings: Settings,
        blobs: BlobStore,
        credential: AsyncTokenCredential | None = None,
        clock: Callable[[], float] = time.time,
        *,
        send_grace: float = SEND_GRACE_SECONDS,
        max_inline_wait: float = 5.0,
        inline_retries: int = 3,
        backoff_base: float = 0.5,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        limits: MailboxLimits | None = None,
        link_fallback: LinkFallback | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.blobs = blobs
        self._owns_credential = credential is None
        self.credential = RefreshableCredential(credential or build_credential(settings))
        self.limits = limits or MailboxLimits(settings.mailbox_rate_per_min, max_wait=max_inline_wait, sleep=sleep)
        self.api = GraphApi(settings, self.credential, self.limits, clock)
        self.uploader = ChunkUploader(new_upload_client(), blobs, self.limits, clock)
        self.link_fallback = link_fallback
        self._now = clock
        self._sleep = sleep
        self.send_grace = send_grace
        self.max_inline_wait = max_inline_wait
        self.inline_retries = inline_retries
        self.backoff_base = backoff_base
        self._rng = rng or random.Random()

    # -- public API --------------------------------------------------------------------------------------

    async def deliver(self, message: OutgoingMessage, checkpoint: Checkpoint) -> Delivered:
        """Short waits (Retry-After, backoff) are slept here; longer ones raise TransientDeliveryError."""
        message = await self._fit_cloud(message)
        for round_ in range(self.inline_retries + 1):
            try:
                return await self._attempt(message, checkpoint)
            except TransientDeliveryError as exc:
                wait = exc.retry_after if exc.retry_after is not None else self._backoff(round_)
                if round_ >= self.inline_retries or wait > self.max_inline_wait:
                    raise
                await self._sleep(wait)
        raise AssertionError("unreachable")

    async def check_mailbox(self, mailbox: str) -> None:
        """For `scangw doctor`: a token for the scope and a read that needs Mail.ReadWrite on `mailbox`."""
        try:
            await self.api.drafts_folder(mailbox)
        except GraphCallError as exc:
            raise classify(exc.failure, mailbox) from exc

    async def sweep_mailboxes(self, services: Services, now: datetime) -> MailboxReport:
        """Bounces, orphan drafts and abandoned upload sessions, through this transport's Graph client."""
        return await sweep_mailboxes(services, self.api, self.uploader.http, now)

    async def close(self) -> None:
        await self.limits.close()
        await self.api.close()
        await self.uploader.http.aclose()
        if self._owns_credential:
            await self.credential.close()

    # -- the protocol ------------------------------------------------------------------------------------

    def _backoff(self, round_: int) -> float:
        ceiling = min(self.max_inline_wait, self.backoff_base * 2.0**round_)
        return ceiling / 2 + self._rng.random() * ceiling / 2

    async def _fit_cloud(self, message: OutgoingMessage) -> OutgoingMessage:
        large = tuple(f for f in message.attachments if needs_upload_session(f))
        if not large or self.settings.upload_sessions_available:
            return message
        if self.link_fallback is not None:
            return await self.link_fallback.replace_attachments(message, large)
        names = ", ".join(f.name for f in large)
        raise PermanentDeliveryError(
            f"{names} is 3 MiB or larger and Graph in the {self.settings.cloud} cloud has no attachment upload "
            "sessions, so it cannot be attached.",
            "Scan at a lower resolution or in parts under 3 MiB, or enable download links (SCANGW_LINK_HOURS).",
        )

    async def _attempt(self, message: OutgoingMessage, cp: Checkpoint) -> Delivered:
        mailbox = message.mailbox
        try:
            for _ in range(3):
                try:
                    return await self._resume(message, cp)
                except _StartOver:
                    await cp.save(**dict.fromkeys(ALL_KEYS))
            raise TransientDeliveryError(f"The draft in {mailbox} keeps disappearing; trying again later.")
        except _AlreadySent as done:
            return Delivered(request_id=done.request_id, detail="found already sent")
        except GraphCallError as exc:
            raise classify(exc.failure, mailbox) from exc
        except NotFound as exc:
            raise PermanentDeliveryError(
                f"The scan's bytes are missing from storage ({exc}).", "Send the scan again from the device."
            ) from exc

    async def _resume(self, message: OutgoingMessage, cp: Checkpoint) -> Delivered:
        if cp.progress.get(SEND_REQUESTED_AT):
            return await self._resolve_send(message, cp)
        draft_id = cp.progress.get(DRAFT_ID) or await self._ensure_draft(message, cp)
        await self._attach_missing(message, cp, draft_id)
        return await self._send(message, cp, draft_id)

    async def _resolve_send(self, message: OutgoingMessage, cp: Checkpoint) -> Delivered:
        """Step 1: a send may have happened. Only the mailbox can tell, and only after the grace period."""
        mailbox = message.mailbox
        found, rid = await self.api.find(mailbox, message.internet_message_id)
        if any(not f.is_draft for f in found):
            return Delivered(request_id=rid, detail="found in the mailbox after an earlier send")
        waited = self._now() - float(cp.progress[SEND_REQUESTED_AT])
        if waited < self.send_grace:
            raise TransientDeliveryError(
                f"Send requested {waited:.0f} s ago; waiting for Exchange to show the sent message.",
                retry_after=self.send_grace - waited,
                request_id=rid,
            )
        recorded = cp.progress.get(DRAFT_ID)
        drafts = [f.id for f in found if f.is_draft]
        for orphan in (d for d in drafts if d != recorded):  # duplicates from lost creates: never complete
            await self._delete_quietly(mailbox, orphan)
        if recorded not in drafts:
            if waited < SENT_INDEX_GRACE_SECONDS:
                raise TransientDeliveryError(
                    f"The draft left {mailbox} after the send request, but the sent copy is not searchable yet; "
                    "waiting for Exchange's index.",
                    retry_after=min(self.send_grace, SENT_INDEX_GRACE_SECONDS - waited),
                    request_id=rid,
                )
            raise _StartOver()
        await cp.save(**{SEND_REQUESTED_AT: None})
        return await self._send(message, cp, recorded)

    async def _ensure_draft(self, message: OutgoingMessage, cp: Checkpoint) -> str:
        """Steps 2 and 3: find the draft an earlier create may have made, else create it."""
        mailbox = message.mailbox
        if cp.progress.get(DRAFT_REQUESTED):
            found, rid = await self.api.find(mailbox, message.internet_message_id)
            if any(not f.is_draft for f in found):
                raise _AlreadySent(rid)
            drafts = [f.id for f in found if f.is_draft]
            if drafts:
                for extra in drafts[1:]:
                    await self._delete_quietly(mailbox, extra)
                inline = list(cp.progress.get(INLINE) or [])
                await cp.save(**{DRAFT_ID: drafts[0], ATTACHED: inline, DRAFT_REQUESTED: None})
                return drafts[0]
        inline = plan_inline(message)
        contents = [file_attachment(message.attachments[i], await self._read(message.attachments[i])) for i in inline]
        await cp.save(**{DRAFT_REQUESTED: self._now(), INLINE: inline, ATTACHED: [], ATTACHING: None, UPLOAD: None})
        try:
            draft_id, _ = await self.api.create_draft(mailbox, draft_json(message, contents))
        except GraphCallError as exc:
            if not exc.failure.may_have_acted:
                await cp.save(**{DRAFT_REQUESTED: None})
            raise
        del contents
        created = {DRAFT_ID: draft_id, ATTACHED: inline, DRAFT_REQUESTED: None}
        if len(inline) == len(message.attachments):
            # Nothing left to attach: the send's record carries the id. A crash before it finds the draft by
            # its internetMessageId, exactly as after a lost reply to the create.
            cp.stage(**created)
        else:
            await cp.save(**created)
        return draft_id

    async def _attach_missing(self, message: OutgoingMessage, cp: Checkpoint, draft_id: str) -> None:
        """Steps 4 and 5, one attachment at a time, each confirmed in the checkpoint."""
        mailbox = message.mailbox
        pending = cp.progress.get(ATTACHING)
        upload = cp.progress.get(UPLOAD) or {}
        attached = list(cp.progress.get(ATTACHED) or [])
        if pending is not None and pending not in attached and upload.get("index") != pending:
            present = await self._list(mailbox, draft_id)
            if is_present(message, pending, attached, present):
                attached.append(pending)
            await cp.save(**{ATTACHED: attached, ATTACHING: None})
        for index, file in enumerate(message.attachments):
            if index in attached:
                continue
            if needs_upload_session(file):
                await self._upload(message, cp, draft_id, index)
            else:
                attachment = file_attachment(file, await self._read(file))
                await cp.save(**{ATTACHING: index})
                try:
                    await self.api.add_attachment(mailbox, draft_id, attachment)
                except GraphCallError as exc:
                    await self._after_failure(cp, exc)
                    raise
                del attachment
            attached.append(index)
            await cp.save(**{ATTACHED: attached, ATTACHING: None, UPLOAD: None})

    async def _upload(self, message: OutgoingMessage, cp: Checkpoint, draft_id: str, index: int) -> None:
        mailbox, file = message.mailbox, message.attachments[index]
        for _ in range(2):
            session: Mapping[str, Any] = cp.progress.get(UPLOAD) or {}
            if session.get("index") != index or expired(session.get("expires"), self._now()):
                await cp.save(**{ATTACHING: index, UPLOAD: None})
                try:
                    target = await self.api.create_upload_session(mailbox, draft_id, upload_session_json(file))
                except GraphCallError as exc:
                    await self._after_failure(cp, exc)
                    raise
                session = {"index": index, "url": target.url, "expires": target.expires, "offset": 0}
                await cp.save(**{UPLOAD: session})

            async def confirmed(offset: int, session: Mapping[str, Any] = session) -> None:
                await cp.save(**{UPLOAD: {**session, "offset": offset}})

            try:
                await self.uploader.upload(mailbox, file, session["url"], int(session["offset"]), confirmed)
                return
            except SessionGone:
                present = await self._list(mailbox, draft_id)
                if is_present(message, index, list(cp.progress.get(ATTACHED) or []), present):
                    return
                await cp.save(**{UPLOAD: None})
        raise TransientDeliveryError(f"The upload session for {file.name} keeps failing; trying again later.")

    async def _send(self, message: OutgoingMessage, cp: Checkpoint, draft_id: str) -> Delivered:
        """Step 6: the only non-repeatable call; recorded first, and cleared only when Graph surely refused."""
        await self.limits.pace_send(message.mailbox)
        await cp.save(**{SEND_REQUESTED_AT: self._now()})
        try:
            request_id = await self.api.send(message.mailbox, draft_id)
        except GraphCallError as exc:
            if exc.failure.item_not_found:
                return await self._resolve_send(message, cp)
            if not exc.failure.may_have_acted:
                await cp.save(**{SEND_REQUESTED_AT: None})
            raise
        return Delivered(request_id=request_id, detail=f"sent from {message.mailbox}")

    # -- helpers -----------------------------------------------------------------------------------------

    async def _after_failure(self, cp: Checkpoint, exc: GraphCallError) -> None:
        """A 404 on the draft means it is gone (no send was requested yet): start over."""
        if exc.failure.item_not_found:
            raise _StartOver() from exc
        if not exc.failure.may_have_acted:
            await cp.save(**{ATTACHING: None})

    async def _list(self, mailbox: str, draft_id: str) -> list[tuple[str, int]]:
        try:
            return await self.api.list_attachments(mailbox, draft_id)
        except GraphCallError as exc:
            if exc.failure.item_not_found:
                raise _StartOver() from exc
            raise

    async def _delete_quietly(self, mailbox: str, message_id: str) -> None:
        try:
            await self.api.delete(mailbox, message_id)
        except GraphCallError as exc:
            if not exc.failure.item_not_found:
                raise

    async def _read(self, file: FileRef) -> bytes:
        """A small attachment's bytes, read afresh on every attempt (never a consumed stream)."""
        data = await self.blobs.read_range(file.blob, 0, file.size)
        if len(data) != file.size:
            raise PermanentDeliveryError(
                f"Stored file {file.name} has {len(data)} bytes, not {file.size}.", "Send the scan again."
            )
        return data
