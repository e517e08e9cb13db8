"""Exchange's per-mailbox limits, kept in process: 4 concurrent requests, Retry-After, message rate.

Exchange throttles per app per mailbox, so one busy mailbox must not be hammered by every job at once,
and once Graph said "wait N seconds" nothing more goes to that mailbox before then. Short waits are
slept here; a wait longer than `max_wait` raises TransientDeliveryError so the job goes back to the queue
with a visibility delay instead of holding a worker. This class bounds one process; `shared_limits` adds a
ledger in storage so every worker and Function instance shares the same budget.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from gateway.core.errors import Deferred

#: Exchange Online: at most 4 concurrent requests per app per mailbox (platform facts, section 2).
CONCURRENT_PER_MAILBOX = 4
#: A Retry-After is honoured with a small margin: the server's clock and ours tick differently.
MARGIN = 0.05


class MailboxBusy(Deferred):
    """Refused before anything was sent: the mailbox is inside a Retry-After window or its send pace."""


class MailboxLimits:
    def __init__(
        self,
        rate_per_min: int = 30,
        concurrency: int = CONCURRENT_PER_MAILBOX,
        max_wait: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate_per_min = rate_per_min
        self.concurrency = concurrency
        self.max_wait = max_wait
        self._clock = clock
        self._sleep = sleep
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._blocked_until: dict[str, float] = {}
        self._next_send: dict[str, float] = {}

    @staticmethod
    def _key(mailbox: str) -> str:
        return mailbox.lower()

    def blocked_for(self, mailbox: str) -> float:
        """Seconds left before this mailbox may be called again (0 when free)."""
        return max(0.0, self._blocked_until.get(self._key(mailbox), 0.0) - self._clock())

    async def throttled(self, mailbox: str, retry_after: float) -> None:
        """Graph answered 429/503 with Retry-After: nothing more goes to this mailbox before then."""
        key = self._key(mailbox)
        until = self._clock() + retry_after + MARGIN
        self._blocked_until[key] = max(self._blocked_until.get(key, 0.0), until)

    async def _wait_unblocked(self, mailbox: str) -> None:
        while (left := self.blocked_for(mailbox)) > 0:
            if left > self.max_wait:
                raise MailboxBusy(f"Graph asked to wait before calling mailbox {mailbox} again.", retry_after=left)
            await self._sleep(left)

    @asynccontextmanager
    async def request(self, mailbox: str) -> AsyncIterator[None]:
        """Hold one of the mailbox's concurrent-request slots, after any Retry-After has passed."""
        await self._wait_unblocked(mailbox)
        slot = self._slots.setdefault(self._key(mailbox), asyncio.Semaphore(self.concurrency))
        async with slot:
            await self._wait_unblocked(mailbox)  # another request may have been throttled while we queued
            yield

    async def close(self) -> None:
        """Give back whatever is held beyond a request (nothing here; shared limits keep slots briefly)."""

    async def pace_send(self, mailbox: str) -> None:
        """Spread sends to `rate_per_min` per mailbox: reserve the next send time, or re-queue if far off."""
        if self.rate_per_min <= 0:
            return
        key = self._key(mailbox)
        interval = 60.0 / self.rate_per_min
        now = self._clock()
        at = max(now, self._next_send.get(key, 0.0))
        wait = at - now
        if wait > self.max_wait:
            raise MailboxBusy(f"Pacing sends from {mailbox} to {self.rate_per_min} per minute.", retry_after=wait)
        self._next_send[key] = at + interval
        if wait > 0:
            await self._sleep(wait)
