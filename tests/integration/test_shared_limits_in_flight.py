"""A Retry-After this process has just heard stops its other requests at once, even those already waiting on a
ledger write: the shared ledger learns of the window a write later, and a request whose slot claim was on its
way meanwhile must not go out inside it. Graph answers such a request 429 again and may lengthen the window
(platform-facts: "requests during Retry-After"). The fake Graph saw this as "sent before Retry-After allowed"
under heavy load; here the ledger write is held deterministically, on the embedded spool's real table."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.delivery.graph.mailbox_limits import MARGIN, MailboxBusy
from gateway.delivery.graph.shared_limits import SharedMailboxLimits
from gateway.spool.local import open_local_spool
from tests.fakes.faulty_spool import Faults, FaultyTable
from tests.integration.test_shared_limits_clock import Time

MB = "scanner@contoso.com"
RETRY_AFTER = 2.0


def run(tmp: Path, max_wait: float) -> tuple[float, float | None, BaseException | None]:
    """A holds a slot and is answered 429 while B's slot claim is on its way to the ledger. Returns when A
    was throttled, when B went out (None if it did not), and what B raised."""

    async def main() -> tuple[float, float | None, BaseException | None]:
        spool = await open_local_spool(tmp / "spool")
        faults = Faults()
        clock = Time()
        limits = SharedMailboxLimits(
            FaultyTable(spool.mailboxes, faults, "mailboxes"),
            0,
            max_wait=max_wait,
            clock=clock,
            sleep=clock.sleep,
            wall_clock=clock,
        )
        in_flight, answered = asyncio.Event(), asyncio.Event()
        went: list[float] = []

        async def request_a() -> None:
            async with limits.request(MB):
                in_flight.set()
                await answered.wait()

        async def request_b() -> None:
            async with limits.request(MB):
                went.append(clock())

        try:
            a = asyncio.create_task(request_a())
            await asyncio.wait_for(in_flight.wait(), 5)
            faults.hold("mailboxes.replace")
            b = asyncio.create_task(request_b())
            await asyncio.wait_for(faults.held.wait(), 5)  # B's claim is at the ledger
            throttled_at = clock()
            block = asyncio.create_task(limits.throttled(MB, RETRY_AFTER))  # A's 429; its ledger write queues
            answered.set()
            faults.release.set()
            await asyncio.wait_for(asyncio.gather(a, block), 5)
            outcome = (await asyncio.wait_for(asyncio.gather(b, return_exceptions=True), 5))[0]
            await limits.close()
            return throttled_at, (went[0] if went else None), outcome if isinstance(outcome, BaseException) else None
        finally:
            await spool.close()

    return asyncio.run(main())


def test_a_request_claiming_a_slot_when_another_is_answered_429_waits_out_the_window(tmp_path: Path) -> None:
    throttled_at, went, error = run(tmp_path, max_wait=5.0)
    assert error is None
    assert went is not None and went >= throttled_at + RETRY_AFTER + MARGIN


def test_a_window_longer_than_the_wait_allowed_sends_the_request_back_to_the_queue(tmp_path: Path) -> None:
    throttled_at, went, error = run(tmp_path, max_wait=1.0)
    assert went is None
    assert isinstance(error, MailboxBusy) and error.retry_after is not None and error.retry_after > 1.0
