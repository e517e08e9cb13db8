"""Exchange's per-mailbox limits shared by every worker and Function instance through a storage table.

Exchange counts the 4 concurrent requests, the Retry-After windows and the 30-per-minute send rate per app
per mailbox, whichever process makes the calls. Each request therefore claims one of the mailbox's slots in
a ledger record (an etag-conditional write, so two processes never both take the fourth slot), a 429 or 503
closes the mailbox for every process, and sends are booked on a shared timetable. A claim lapses after
`lease` seconds, and a claim by a process on this host that no longer exists is dropped at once, so a
killed worker never starves the others. The in-process limits still apply first: a process never asks the
ledger for more than the 4 slots it could use.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from gateway.core.mailbox_ledger import Ledger
from gateway.core.ports import Conflict, Record, Table
from gateway.delivery.graph.mailbox_limits import CONCURRENT_PER_MAILBOX, MARGIN, MailboxBusy, MailboxLimits

log = logging.getLogger("scangw.limits")

#: Longer than any one Graph call may take (httpx's 120 s read timeout plus connect), so a live claim holds.
SLOT_LEASE = 150.0
#: How often a request waiting for a slot held by another process looks again.
POLL = 0.05
#: A claim that took longer than this to be granted (a stalled process, a slow store) is checked again
#: before use: a Retry-After window may have begun meanwhile, and a late request would fall inside it.
STALE_CLAIM = 0.2
_WRITE_ATTEMPTS = 50
#: A slot a request just finished with is kept this long for this process's next request to that mailbox.
HANDOFF = 0.05
#: ...and handed on at most this many times in a row, so a busy process cannot keep a slot from the others.
MAX_HANDOFFS = 8


def _process_gone(holder: str) -> bool:
    """True when `holder` names a process on this host that has exited (its claims can go at once)."""
    host, _, rest = holder.partition("|")
    pid = rest.split("|", 1)[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


class SharedMailboxLimits(MailboxLimits):
    def __init__(
        self,
        ledger: Table,
        rate_per_min: int = 30,
        concurrency: int = CONCURRENT_PER_MAILBOX,
        max_wait: float = 5.0,
        *,
        lease: float = SLOT_LEASE,
        poll: float = POLL,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        wall_clock: Callable[[], float] = time.time,
        process_gone: Callable[[str], bool] = _process_gone,
    ) -> None:
        super().__init__(rate_per_min, concurrency, max_wait, clock, sleep)
        self.ledger = ledger
        self.lease = lease
        self.poll = poll
        self._wall = wall_clock
        self._gone = process_gone
        self._me = f"{socket.gethostname()}|{os.getpid()}|{random.getrandbits(32):08x}"
        self._claims = itertools.count()
        self._last: dict[str, Record | None] = {}  # the record as this process last wrote or read it
        self._queued: dict[str, list[tuple[Callable[[Ledger, float], Ledger | None], asyncio.Future[Ledger]]]] = {}
        self._writers: dict[str, asyncio.Task[None]] = {}
        self._spare: dict[str, list[tuple[str, int, float]]] = {}  # slots kept for the next request (`_keep`)
        self._releasing: set[asyncio.Task[None]] = set()
        self._contact: dict[str, float] = {}  # when this process last read or wrote each ledger record
        #: Ledger writes that won and that lost an etag race (the benchmark reports them per scan).
        self.writes = 0
        self.conflicts = 0

    async def _change(self, mailbox: str, change: Callable[[Ledger, float], Ledger | None]) -> Ledger:
        """Apply `change` to the mailbox's ledger with the next conditional write; None means leave it.

        Changes asked for while a write is on its way wait and go together in the next one (claims, releases
        and bookings of every request of this process): one storage round trip serves several requests, and
        fewer writers means fewer lost etag races. Returns the ledger as written, or as freshly read when
        every change declined; a change that declined sees that ledger too and can tell (its claim is absent).
        """
        key = self._key(mailbox)
        future: asyncio.Future[Ledger] = asyncio.get_running_loop().create_future()
        self._queued.setdefault(key, []).append((change, future))
        if key not in self._writers:
            writer = asyncio.create_task(self._write_queued(key, mailbox))
            self._writers[key] = writer
        return await future

    async def _write_queued(self, key: str, mailbox: str) -> None:
        try:
            while batch := self._queued.pop(key, None):
                try:
                    ledger = await self._apply(key, mailbox, [change for change, _ in batch])
                except Exception as exc:  # noqa: BLE001 - every waiting request hears of it
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for _, future in batch:
                    if not future.done():
                        future.set_result(ledger)
        finally:
            del self._writers[key]
            for _, future in self._queued.pop(key, []):  # only after a cancellation: nobody writes them now
                if not future.done():
                    future.set_exception(MailboxBusy(f"The limits of mailbox {mailbox} were not updated."))

    async def _apply(self, key: str, mailbox: str, changes: list[Callable[[Ledger, float], Ledger | None]]) -> Ledger:
        """The changes in order on the current record, until the conditional write wins.

        The write is first tried against the record this process last saw: when nobody changed it since, no
        read is needed; a decline is only believed on a fresh read. A lost race waits a little (more after
        each loss) before reading again, so the processes that lost do not collide again at once.
        """
        record, fresh = self._last.get(key), False
        for attempt in range(_WRITE_ATTEMPTS):
            if record is None and not fresh:
                record, fresh = await self.ledger.get(key), True
                self._contact[key] = self._wall()
            now = self._wall()
            current = Ledger.from_record(record.data if record else None).live(now, self._gone)
            wanted, declined = current, False
            for change in changes:
                changed = change(wanted, now)
                if changed is None:
                    declined = True
                else:
                    wanted = changed
            if declined and not fresh:
                record = None
                continue
            if wanted is current and record is not None:  # nothing to change: no write
                self._last[key] = record
                return current
            data = wanted.to_record()
            try:
                if record is None:
                    etag = await self.ledger.insert(key, data)
                else:
                    etag = await self.ledger.replace(key, data, record.etag)
            except Conflict:
                record, fresh = None, False
                self.conflicts += 1
                await self._sleep(self.poll * min(attempt + 1, 4) * random.random() / 2)
                continue
            self.writes += 1
            self._contact[key] = self._wall()
            self._last[key] = Record(data, etag)
            return wanted
        raise MailboxBusy(f"Too many workers are updating the limits of mailbox {mailbox} at once.", retry_after=1.0)

    @asynccontextmanager
    async def request(self, mailbox: str) -> AsyncIterator[None]:
        async with super().request(mailbox):
            reused = await self._reuse(mailbox)
            if reused is None:
                holder, uses, claimed_at = f"{self._me}|{next(self._claims)}", 0, self._wall()
                await self._claim(mailbox, holder)
            else:
                holder, uses, claimed_at = reused
            try:
                # A request of this process may have been answered 429 while this one's claim was on its way:
                # the window is known here before the ledger has it, and a request inside it gets 429 again.
                await self._wait_unblocked(mailbox)
                yield
            finally:
                if uses + 1 < MAX_HANDOFFS and self.blocked_for(mailbox) <= 0:
                    self._keep(mailbox, holder, uses + 1, claimed_at)
                else:
                    await self._release(mailbox, holder)

    async def close(self) -> None:
        """Give back the slots kept for a next request that will not come (a stopping worker, a closed transport)."""
        for key, spare in list(self._spare.items()):
            while spare:
                holder, _, _ = spare.pop()
                await self._release(key, holder)
        if self._releasing:
            await asyncio.gather(*self._releasing, return_exceptions=True)

    async def _release(self, mailbox: str, holder: str) -> None:
        try:
            await self._change(mailbox, lambda ledger, _now: ledger.release(holder))
        except Exception:  # noqa: BLE001 - the claim lapses by itself; the Graph call's outcome matters more
            log.warning("could not release a request slot of %s; it lapses in %.0f s", mailbox, self.lease)

    def _keep(self, mailbox: str, holder: str, uses: int, claimed_at: float) -> None:
        """Keep a slot this process just finished with for HANDOFF seconds: the next request of this process
        (the same scan's send after its create, or another scan's) takes it without a ledger write."""
        key = self._key(mailbox)
        self._spare.setdefault(key, []).append((holder, uses, claimed_at))

        def lapse() -> None:
            spare = self._spare.get(key, [])
            for entry in spare:
                if entry[0] == holder:
                    spare.remove(entry)
                    task = asyncio.create_task(self._release(mailbox, holder))
                    self._releasing.add(task)
                    task.add_done_callback(self._releasing.discard)
                    return

        asyncio.get_running_loop().call_later(HANDOFF, lapse)

    async def _reuse(self, mailbox: str) -> tuple[str, int, float] | None:
        """A slot kept by `_keep`, still well inside its lease; checked against Retry-After windows other
        processes may have recorded since this one last looked at the ledger."""
        key = self._key(mailbox)
        spare = self._spare.get(key)
        while spare:
            holder, uses, claimed_at = spare.pop()
            if self._wall() - claimed_at > self.lease / 2:
                await self._release(mailbox, holder)
                continue
            if self._wall() - self._contact.get(key, 0.0) > STALE_CLAIM and await self._closed_since(mailbox):
                await self._release(mailbox, holder)
                return None
            return holder, uses, claimed_at
        return None

    async def _claim(self, mailbox: str, holder: str) -> None:
        started = self._clock()

        def take(ledger: Ledger, now: float) -> Ledger | None:
            if ledger.blocked_until > now:
                return None
            return ledger.claim(holder, now, self.lease, self.concurrency)

        while True:
            asked = self._wall()
            ledger = await self._change(mailbox, take)
            if holder in ledger.slots:
                if self._wall() - asked <= STALE_CLAIM or not await self._closed_since(mailbox):
                    return
                await self._change(mailbox, lambda current, _now: current.release(holder))
                continue
            blocked = ledger.blocked_until - self._wall()
            if blocked > self.max_wait:
                raise MailboxBusy(f"Graph asked to wait before calling mailbox {mailbox} again.", retry_after=blocked)
            waited = self._clock() - started
            if blocked <= 0 and waited > self.max_wait:
                raise MailboxBusy(
                    f"Other workers hold all {self.concurrency} request slots of mailbox {mailbox}.",
                    retry_after=self.poll * 20,
                )
            await self._sleep(blocked if blocked > 0 else self.poll * (0.5 + random.random()))

    async def _closed_since(self, mailbox: str) -> bool:
        """A fresh look: did another process record a Retry-After window while this one was granted a slot?"""
        record = await self.ledger.get(self._key(mailbox))
        self._contact[self._key(mailbox)] = self._wall()
        return Ledger.from_record(record.data if record else None).blocked_until > self._wall()

    async def throttled(self, mailbox: str, retry_after: float) -> None:
        await super().throttled(mailbox, retry_after)
        until = self._wall() + retry_after + MARGIN
        await self._change(mailbox, lambda ledger, _now: ledger.block(until))

    async def pace_send(self, mailbox: str) -> None:
        if self.rate_per_min <= 0:
            return
        interval = 60.0 / self.rate_per_min
        booked: list[float] = []

        def book(ledger: Ledger, now: float) -> Ledger | None:
            booked.clear()
            if max(now, ledger.next_send) - now > self.max_wait:
                booked.append(ledger.next_send - now)
                return None
            updated, at = ledger.reserve_send(now, interval)
            booked.append(at - now)
            return updated

        await self._change(mailbox, book)
        wait = booked[0] if booked else 0.0
        if wait > self.max_wait:
            raise MailboxBusy(f"Pacing sends from {mailbox} to {self.rate_per_min} per minute.", retry_after=wait)
        if wait > 0:
            await self._sleep(wait)
