"""PUT one attachment into an Outlook upload session, chunk by chunk, straight from the blob store.

Our own loop instead of msgraph-core's LargeFileUploadTask: that one uses 5 MiB chunks (Outlook wants
< 4 MiB), carries on after chunk errors and would send the Graph token to the opaque upload URL, which
Outlook refuses. Here each chunk is 10 x 320 KiB, read from storage just before its PUT (one chunk in
memory at a time), with an exact Content-Range and no Authorization header; the server's
`nextExpectedRanges` is the truth to resume from after any failure.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import httpx

from gateway.core.errors import PermanentDeliveryError
from gateway.core.jobs import FileRef
from gateway.core.ports import BlobStore
from gateway.delivery.graph.failures import (
    GraphCallError,
    GraphFailure,
    failure_from_exception,
    failure_from_response,
    parse_retry_after,
)
from gateway.delivery.graph.mailbox_limits import MailboxBusy, MailboxLimits
from gateway.telemetry import metrics
from gateway.telemetry.spans import graph_call

#: 3,276,800 bytes: under 4 MiB and a multiple of 320 KiB, which suits Outlook and OneDrive alike.
UPLOAD_CHUNK = 10 * 320 * 1024
#: Outlook answers these when the upload URL expired, was cancelled, or the session already completed.
SESSION_GONE = frozenset({401, 403, 404, 410})


class SessionGone(Exception):
    """The upload URL no longer works; the caller checks the draft and starts a new session if needed."""


def first_missing(ranges: Any) -> int | None:
    """The start of the first range in `nextExpectedRanges` (["2097152-"] or ["0-99", "200-"])."""
    if not isinstance(ranges, list) or not ranges:
        return None
    try:
        return int(str(ranges[0]).split("-", 1)[0])
    except ValueError:
        return None


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


class ChunkUploader:
    def __init__(
        self, http: httpx.AsyncClient, blobs: BlobStore, limits: MailboxLimits, wall_clock: Callable[[], float]
    ) -> None:
        self.http = http
        self.blobs = blobs
        self.limits = limits
        self._now = wall_clock

    @graph_call("uploadChunk")  # the span never records the upload URL: its query string is a credential
    async def _put(self, mailbox: str, url: str, holder: list[bytes], start: int, total: int) -> httpx.Response:
        """PUT the chunk in `holder`, handing it over so nothing keeps it once it is on the wire.

        httpx's Response and its stream reference each other, so a finished response (and the request body
        it points to) lives until the cyclic GC runs; given bytes directly, every chunk would pile up until
        then. A one-shot iterator with an explicit Content-Length lets the chunk go as soon as it is sent.
        """
        length = len(holder[0])
        headers = {
            "Content-Length": str(length),
            "Content-Range": f"bytes {start}-{start + length - 1}/{total}",
            "Content-Type": "application/octet-stream",
        }

        async def body() -> AsyncIterator[bytes]:
            yield holder.pop()

        try:
            async with self.limits.request(mailbox):
                response = await self.http.put(url, content=body(), headers=headers)
                retry_after = parse_retry_after(response.headers.get("Retry-After"), self._now())
                metrics.graph_throttled(mailbox, response.status_code)
                if response.status_code in (429, 503) and retry_after is not None:
                    # Before the slot is released: whoever takes it next must already see the window.
                    await self.limits.throttled(mailbox, retry_after)
                return response
        except httpx.HTTPError as exc:
            failure = failure_from_exception(exc, self._now()) or GraphFailure(status=None, message=str(exc))
            raise GraphCallError(failure) from exc
        except MailboxBusy as busy:
            failure = GraphFailure(None, "MailboxBusy", str(busy), retry_after=busy.retry_after, reached_server=False)
            raise GraphCallError(failure) from busy

    async def upload(
        self,
        mailbox: str,
        file: FileRef,
        url: str,
        offset: int,
        confirmed: Callable[[int], Awaitable[None]],
    ) -> None:
        """Send `file` from `offset` until the session completes; `confirmed(offset)` after each chunk.

        Raises SessionGone when the URL stopped working, GraphCallError for throttling and outages.
        """
        total = file.size
        while True:
            length = min(UPLOAD_CHUNK, total - offset)
            if length <= 0:  # everything sent, yet no 201 seen: only the draft can say if it is attached
                raise SessionGone(f"upload of {file.name} reached its end without completing")
            data = await self.blobs.read_range(file.blob, offset, length)
            if len(data) != length:
                raise PermanentDeliveryError(
                    f"Stored file {file.name} is shorter than its recorded size {total}.", "Send the scan again."
                )
            holder = [data]
            del data
            response = await self._put(mailbox, url, holder, offset, total)
            status = response.status_code
            if status == 201 or (
                status == 200 and not _json(response).get("nextExpectedRanges") and offset + length >= total
            ):
                return
            if status in (200, 202, 416):
                nxt = first_missing(_json(response).get("nextExpectedRanges"))
                if nxt is None:
                    if status == 416:
                        raise SessionGone(f"upload session answered 416 without nextExpectedRanges for {file.name}")
                    nxt = offset + length
                offset = nxt
                await confirmed(offset)
                continue
            if status in SESSION_GONE:
                raise SessionGone(f"upload URL answered {status} for {file.name}")
            raise GraphCallError(failure_from_response(response, self._now()))


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One verifying TLS context for every Graph client of the process: each httpx client would otherwise
    load the CA bundle again, tens of milliseconds apiece on a cold worker's way to its first scan."""
    return httpx.create_ssl_context()


def new_upload_client() -> httpx.AsyncClient:
    """A bare client: no auth, no Graph middleware, so the opaque upload URL is used exactly as given."""
    return httpx.AsyncClient(timeout=httpx.Timeout(120.0, connect=15.0), follow_redirects=False, verify=tls_context())


def expired(expires: str | None, now: float, margin: float = 60.0) -> bool:
    """True when the session's expirationDateTime is (nearly) past; unknown means not expired."""
    if not expires:
        return False
    try:
        moment = datetime.fromisoformat(expires.replace("Z", "+00:00"))
    except ValueError:
        return False
    return moment.timestamp() - margin <= now
