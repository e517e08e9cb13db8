"""JobQueue on Azure Queue Storage, base64 on the wire because the Functions queue trigger expects it.

A received message is leased by its pop receipt; `defer` renews the lease (and hands back the new
receipt), so a worker that dies simply lets the message reappear for the next one.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

from azure.core.exceptions import HttpResponseError
from azure.storage.queue import TextBase64DecodePolicy
from azure.storage.queue.aio import QueueClient

from gateway.core.ports import NotFound, QueueLease
from gateway.spool.azure_errors import mapped

#: Azure's ceiling for one message body, base64 included.
MAX_MESSAGE_BYTES = 64 * 1024
#: Azure's ceiling for visibility timeouts: seven days.
MAX_VISIBILITY = 7 * 24 * 3600


class LenientBase64DecodePolicy(TextBase64DecodePolicy):
    """Decode base64 like the Functions host, but hand over non-base64 text as is.

    A message put by a tool without base64 would otherwise fail every receive and never reach the
    worker, which is the one place that can recognise it as poison and move it aside.
    """

    def decode(self, content: Any, response: Any) -> Any:
        try:
            return base64.b64decode(content.encode("utf-8"), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return content


def _seconds(delay: float, low: int = 0) -> int:
    """Queue timeouts are whole seconds: round up so a message never comes back early."""
    return max(low, min(MAX_VISIBILITY, math.ceil(delay)))


class AzureJobQueue:
    def __init__(self, queue: QueueClient, poison: QueueClient) -> None:
        self._queue = queue
        self._poison = poison

    async def put(self, text: str, delay: float = 0) -> None:
        await self._send(self._queue, text, delay)

    async def put_poison(self, text: str) -> None:
        await self._send(self._poison, text, 0)

    @staticmethod
    async def _send(client: QueueClient, text: str, delay: float) -> None:
        # The base64 form is what counts against the limit; only blob names and metadata belong here.
        if math.ceil(len(text.encode("utf-8")) / 3) * 4 > MAX_MESSAGE_BYTES:
            raise ValueError(f"queue message of {len(text)} characters is over Azure's 64 KiB limit")
        with mapped(f"enqueue a message on {client.queue_name}"):
            # Never expire: a job must not vanish silently because it waited longer than seven days.
            await client.send_message(text, visibility_timeout=_seconds(delay) or None, time_to_live=-1)

    async def receive(self, visibility: float, max_messages: int = 1) -> list[QueueLease]:
        count = max(1, min(32, max_messages))
        with mapped(f"receive from {self._queue.queue_name}"):
            messages = self._queue.receive_messages(
                messages_per_page=count, max_messages=count, visibility_timeout=_seconds(visibility, low=1)
            )
            return [
                QueueLease(message.id, message.pop_receipt or "", message.content or "", message.dequeue_count or 1)
                async for message in messages
            ]

    async def delete(self, lease: QueueLease) -> None:
        with mapped(f"delete queue message {lease.message_id}"):
            try:
                await self._queue.delete_message(lease.message_id, lease.receipt)
            except HttpResponseError as exc:
                if _receipt_mismatch(exc):
                    raise NotFound(f"queue message {lease.message_id}: lease lost to another receive") from exc
                raise

    async def defer(self, lease: QueueLease, delay: float) -> QueueLease:
        with mapped(f"defer queue message {lease.message_id}"):
            try:
                updated = await self._queue.update_message(
                    lease.message_id, lease.receipt, visibility_timeout=_seconds(delay)
                )
            except HttpResponseError as exc:
                if _receipt_mismatch(exc):
                    raise NotFound(f"queue message {lease.message_id}: lease lost to another receive") from exc
                raise
        return QueueLease(lease.message_id, updated.pop_receipt or "", lease.text, lease.dequeue_count)

    async def close(self) -> None:
        await self._queue.close()
        await self._poison.close()


def _receipt_mismatch(exc: HttpResponseError) -> bool:
    """Azure answers a stale pop receipt with 400 PopReceiptMismatch (a gone message is a 404)."""
    return exc.status_code == 400 and getattr(exc, "error_code", None) == "PopReceiptMismatch"
