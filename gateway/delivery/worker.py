"""`scangw worker`: drain the job queue with a few concurrent slots until told to stop.

A received message stays leased while its job runs (heartbeat); if this process dies the message
reappears within VISIBILITY seconds and another worker resumes the job from its record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gateway.core.errors import StorageUnavailable
from gateway.core.ports import NotFound, PutWaker, QueueLease
from gateway.delivery.agent import DeliveryAgent, Done, Retry

log = logging.getLogger("scangw.worker")

#: How long a received message stays hidden; renewed every third of it while its job runs.
VISIBILITY = 45.0
#: Failed runs of one message before it is set aside: host.json's `maxDequeueCount`, so a message gets the same
#: tries in `scangw worker` as in the Function host (whose runtime moves it to `scan-jobs-poison` itself).
MAX_DEQUEUE_COUNT = 10


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


class Worker:
    def __init__(
        self,
        agent: DeliveryAgent,
        concurrency: int = 4,
        poll_seconds: float = 1.0,
        lease_seconds: float = VISIBILITY,
        max_dequeue_count: int = MAX_DEQUEUE_COUNT,
    ) -> None:
        self.agent = agent
        self.max_dequeue_count = max_dequeue_count
        self.lease_seconds = lease_seconds
        self.queue = agent.services.spool.queue
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds

    async def run(self, stop: asyncio.Event) -> None:
        """Finish the jobs in hand when `stop` is set; take no new ones."""
        await asyncio.gather(*(self._slot(stop) for _ in range(self.concurrency)))

    async def _slot(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                leases = await self.queue.receive(self.lease_seconds, 1)
            except StorageUnavailable as exc:
                log.error("queue unavailable: %s", exc)
                await _wait(stop, 5)
                continue
            if not leases:
                await self._idle(stop)
                continue
            await self.process(leases[0])

    async def _idle(self, stop: asyncio.Event) -> None:
        """Until the next look at the queue: the poll interval, cut short by a put where the queue can tell
        (the embedded spool wakes its workers, so a scan on an idle system does not wait for the poll)."""
        if not isinstance(self.queue, PutWaker):
            await _wait(stop, self.poll_seconds)
            return
        stopping = asyncio.ensure_future(stop.wait())
        woken = asyncio.ensure_future(self.queue.wait_for_put(self.poll_seconds))
        try:
            await asyncio.wait({stopping, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stopping, woken):
                task.cancel()
            await asyncio.gather(stopping, woken, return_exceptions=True)

    async def process(self, lease: QueueLease) -> None:
        holder = [lease]
        beat = asyncio.create_task(self._heartbeat(holder))
        try:
            outcome = await self.agent.handle(lease.text)
        except StorageUnavailable as exc:
            log.error("storage unavailable while delivering; the message comes back: %s", exc)
            return
        except Exception as exc:  # noqa: BLE001 - a message that breaks the agent must not stop the worker
            await self._failed(holder, exc)
            return
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        try:
            if isinstance(outcome, Done):
                await self.queue.delete(holder[0])
            elif isinstance(outcome, Retry):
                await self.queue.defer(holder[0], outcome.delay)
        except (NotFound, StorageUnavailable) as exc:
            log.warning("queue message %s: %s (it will come back and be recognised)", lease.message_id, exc)

    async def _failed(self, holder: list[QueueLease], exc: Exception) -> None:
        """A failed run, as the Function host counts them: the message comes back after its lease, and after
        `max_dequeue_count` failed runs it goes to `scan-jobs-poison` (one line, matched by the poison alert)."""
        lease = holder[0]
        reason = f"{type(exc).__name__}: {exc}"
        if lease.dequeue_count < self.max_dequeue_count:
            log.warning(
                "event=queue.failed message=%s try=%d of %d reason=%s (it comes back after its lease)",
                lease.message_id,
                lease.dequeue_count,
                self.max_dequeue_count,
                reason[:300],
            )
            return
        try:
            await self.queue.put_poison(lease.text)
            await self.queue.delete(lease)
        except (NotFound, StorageUnavailable) as move_failed:
            log.warning("queue message %s could not be set aside yet: %s", lease.message_id, move_failed)
            return
        log.error(
            "event=queue.poison message=%s tries=%d reason=%s",
            lease.message_id,
            lease.dequeue_count,
            reason[:300],
        )

    async def _heartbeat(self, holder: list[QueueLease]) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                holder[0] = await self.queue.defer(holder[0], self.lease_seconds)
            except (NotFound, StorageUnavailable) as exc:
                log.warning("lease heartbeat failed: %s", exc)

    async def drain(self) -> None:
        """Deliver until no message is visible (for `scangw worker --once`, tests and cron-style runs)."""
        while True:
            leases = await self.queue.receive(self.lease_seconds, 1)
            if not leases:
                return
            await self.process(leases[0])
