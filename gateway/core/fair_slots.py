"""A fair queue for scarce slots (the argon2 password checks: 64 MiB each, two at a time).

A plain semaphore serves waiters first come, first served, so one address flooding wrong passwords holds every
slot and real logins wait behind it (issue 9 item 5). Here each key (a client address, or the username behind a
proxy) holds at most `per_key` slots, and waiting keys are served in turn: a flood from one address only ever
delays its own attempts.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class FairSlots:
    def __init__(self, capacity: int, per_key: int | None = None) -> None:
        self.capacity = capacity
        self.per_key = per_key if per_key is not None else max(1, capacity // 2)
        self.busy = 0
        self._held: Counter[str] = Counter()
        self._waiting: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()

    def _can_take(self, key: str) -> bool:
        return self.busy < self.capacity and self._held[key] < self.per_key

    def _take(self, key: str) -> None:
        self.busy += 1
        self._held[key] += 1

    def _release(self, key: str) -> None:
        self.busy -= 1
        self._held[key] -= 1
        if self._held[key] <= 0:
            del self._held[key]
        self._grant()

    def _grant(self) -> None:
        """Hand free slots to waiting keys in turn; a served key goes to the back of the rotation."""
        progress = True
        while progress and self.busy < self.capacity and self._waiting:
            progress = False
            for key in list(self._waiting):
                queue = self._waiting[key]
                while queue and queue[0].done():  # cancelled while waiting
                    queue.popleft()
                if not queue:
                    del self._waiting[key]
                    continue
                if self._can_take(key):
                    self._take(key)
                    queue.popleft().set_result(None)
                    if queue:
                        self._waiting.move_to_end(key)
                    else:
                        del self._waiting[key]
                    progress = True
                    break

    @asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[None]:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, deque()).append(waiter)
        self._grant()  # a free slot this key may use is taken at once, whoever else is waiting
        if not waiter.done():
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._release(key)  # granted just as we were cancelled: give it back
                else:
                    self._grant()
                raise
        try:
            yield
        finally:
            self._release(key)
