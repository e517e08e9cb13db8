"""MailboxLimits (one process's share of Exchange's per-mailbox limits) with an injected clock and sleep.

What must hold: after a Retry-After nothing goes to that mailbox before it passes (plus a margin); at most
four requests are in flight per mailbox; sends are spread to the configured rate; and a wait longer than
`max_wait` re-queues the job (MailboxBusy, with the time left) instead of holding a worker. Mailbox names
are compared without case, as Exchange does (SMTP addresses are case-insensitive in Exchange Online).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.core.errors import Deferred
from gateway.delivery.graph.mailbox_limits import CONCURRENT_PER_MAILBOX, MARGIN, MailboxBusy, MailboxLimits
from gateway.delivery.graph.shared_limits import SharedMailboxLimits
from gateway.status import figures
from tests.support import run, services_for

MB = "scanner@contoso.com"
OTHER = "other@contoso.com"


class Clock:
    """A clock that only moves when the code under test sleeps (or the test says so)."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def limits(clock: Clock, **options: object) -> MailboxLimits:
    return MailboxLimits(clock=clock, sleep=clock.sleep, **options)  # type: ignore[arg-type]


def test_the_documented_limits() -> None:
    """Exchange Online: 4 concurrent requests per app per mailbox, 30 messages a minute (platform facts 2)."""
    assert CONCURRENT_PER_MAILBOX == 4
    defaults = MailboxLimits()
    assert (defaults.rate_per_min, defaults.concurrency, defaults.max_wait) == (30, 4, 5.0)
    assert 0 < MARGIN < 1


def test_a_retry_after_blocks_the_mailbox_until_it_passes_plus_a_margin() -> None:
    clock = Clock(1000.0)
    box = limits(clock)

    async def scenario() -> None:
        assert box.blocked_for(MB) == 0.0
        await box.throttled("Scanner@Contoso.com", 10)
        assert box.blocked_for(MB) == pytest.approx(10 + MARGIN)
        assert box.blocked_for(OTHER) == 0.0
        await box.throttled(MB, 3)  # a shorter wait later never shortens the window
        assert box.blocked_for(MB) == pytest.approx(10 + MARGIN)
        await box.throttled(MB, 20)  # a longer one extends it
        assert box.blocked_for(MB) == pytest.approx(20 + MARGIN)
        clock.now += 20
        assert box.blocked_for(MB) == pytest.approx(MARGIN)
        clock.now += MARGIN
        assert box.blocked_for(MB) == 0.0
        clock.now += 100
        assert box.blocked_for(MB) == 0.0  # never negative

    run(scenario())


def test_a_short_retry_after_is_slept_out_before_the_request() -> None:
    clock = Clock()
    box = limits(clock)

    async def scenario() -> None:
        await box.throttled(MB, 3)
        async with box.request(MB.upper()):
            entered = clock.now
        assert clock.slept == [pytest.approx(3 + MARGIN)] and entered == pytest.approx(3 + MARGIN)
        async with box.request(MB):
            pass
        assert len(clock.slept) == 1  # free again: no more waiting

    run(scenario())


def test_a_retry_after_of_exactly_max_wait_is_slept_and_a_longer_one_requeues_the_job() -> None:
    clock = Clock()
    box = limits(clock, max_wait=5.0 + MARGIN)

    async def scenario() -> None:
        await box.throttled(MB, 5.0)
        async with box.request(MB):
            pass
        assert clock.slept == [5.0 + MARGIN]
        await box.throttled(MB, 60)
        with pytest.raises(MailboxBusy) as busy:
            async with box.request(MB):
                raise AssertionError("a request went to a mailbox inside its Retry-After window")
        assert busy.value.retry_after == pytest.approx(60 + MARGIN)
        assert str(busy.value) == f"Graph asked to wait before calling mailbox {MB} again."
        assert isinstance(busy.value, Deferred)  # re-queued without spending one of the job's attempts
        assert len(clock.slept) == 1
        async with box.request(OTHER):  # another mailbox is not held back
            pass

    run(scenario())


def test_at_most_the_concurrency_in_flight_per_mailbox_whatever_the_case_of_its_name() -> None:
    box = MailboxLimits(rate_per_min=0)
    inside = {MB: 0, OTHER: 0}
    peak = {MB: 0, OTHER: 0}
    release = asyncio.Event()

    async def request(name: str) -> None:
        key = name.lower()
        async with box.request(name):
            inside[key] += 1
            peak[key] = max(peak[key], inside[key])
            await release.wait()
            inside[key] -= 1

    async def scenario() -> None:
        names = [MB, MB.upper(), "Scanner@Contoso.com"] * 2 + [OTHER] * 3
        tasks = [asyncio.ensure_future(request(n)) for n in names]
        deadline = asyncio.get_running_loop().time() + 5
        while inside[MB] < 4 or inside[OTHER] < 3:
            assert asyncio.get_running_loop().time() < deadline, f"stuck at {inside}"
            await asyncio.sleep(0.001)
        for _ in range(20):  # give the two queued requests every chance to get in
            await asyncio.sleep(0)
        assert inside == {MB: 4, OTHER: 3}
        release.set()
        await asyncio.gather(*tasks)
        assert peak == {MB: 4, OTHER: 3}

    run(scenario())


def test_a_smaller_concurrency_is_honoured() -> None:
    box = MailboxLimits(rate_per_min=0, concurrency=2)
    inside = [0]
    release = asyncio.Event()

    async def request() -> None:
        async with box.request(MB):
            inside[0] += 1
            await release.wait()

    async def scenario() -> None:
        tasks = [asyncio.ensure_future(request()) for _ in range(3)]
        for _ in range(20):
            await asyncio.sleep(0)
        assert inside == [2]
        release.set()
        await asyncio.gather(*tasks)
        assert inside == [3]

    run(scenario())


def test_a_request_queued_for_a_slot_honours_a_retry_after_that_arrived_meanwhile() -> None:
    clock = Clock()
    box = limits(clock, rate_per_min=0)
    release = asyncio.Event()
    order: list[str] = []

    async def holder() -> None:
        async with box.request(MB):
            await release.wait()

    async def late() -> None:
        async with box.request(MB):
            order.append(f"entered at {clock.now:.2f}")

    async def scenario() -> None:
        holders = [asyncio.ensure_future(holder()) for _ in range(4)]
        for _ in range(10):
            await asyncio.sleep(0)
        waiting = asyncio.ensure_future(late())
        for _ in range(10):
            await asyncio.sleep(0)
        assert order == []  # queued behind the four slots
        await box.throttled(MB, 2)  # one of the four was answered 429 meanwhile
        release.set()
        await asyncio.gather(*holders, waiting)
        assert clock.slept == [pytest.approx(2 + MARGIN)]
        assert order == [f"entered at {2 + MARGIN:.2f}"]

    run(scenario())


def test_sends_are_spread_to_the_rate_per_mailbox() -> None:
    clock = Clock(500.0)
    box = limits(clock, rate_per_min=20, max_wait=10.0)

    async def scenario() -> None:
        await box.pace_send(MB)
        assert clock.slept == []  # the first send goes at once
        await box.pace_send(MB.upper())  # the same mailbox whatever the case
        await box.pace_send(MB)
        assert clock.slept == [3.0, 3.0]  # 60 / 20 s apart
        await box.pace_send(OTHER)
        assert clock.slept == [3.0, 3.0]  # another mailbox has its own pace
        clock.now += 100  # idle for a while: the next send goes at once, and the one after 3 s later
        await box.pace_send(MB)
        await box.pace_send(MB)
        assert clock.slept == [3.0, 3.0, 3.0]

    run(scenario())


def test_a_send_too_far_off_requeues_the_job_without_booking_a_turn() -> None:
    clock = Clock()
    box = limits(clock, rate_per_min=10, max_wait=6.0)

    async def scenario() -> None:
        await box.pace_send(MB)
        await box.pace_send(MB)  # 6 s: exactly max_wait is still waited for
        assert clock.slept == [6.0]
        clock.now -= 6.0  # as if the second send's wait had not happened yet: the next turn is 12 s off
        with pytest.raises(MailboxBusy) as busy:
            await box.pace_send(MB)
        assert busy.value.retry_after == pytest.approx(12.0)
        assert str(busy.value) == f"Pacing sends from {MB} to 10 per minute."
        with pytest.raises(MailboxBusy) as again:  # the refused send booked nothing
            await box.pace_send(MB)
        assert again.value.retry_after == pytest.approx(12.0)
        clock.now += 12.0
        await box.pace_send(MB)
        assert clock.slept == [6.0]

    run(scenario())


@pytest.mark.parametrize("rate", [0, -1])
def test_a_rate_of_zero_or_less_paces_nothing(rate: int) -> None:
    clock = Clock()
    box = limits(clock, rate_per_min=rate, max_wait=0.0)

    async def scenario() -> None:
        for _ in range(50):
            await box.pace_send(MB)
        assert clock.slept == [] and clock.now == 0.0

    run(scenario())


def test_close_gives_back_nothing_and_the_limits_keep_working() -> None:
    clock = Clock()
    box = limits(clock, rate_per_min=60)

    async def scenario() -> None:
        await box.pace_send(MB)
        await box.close()
        await box.pace_send(MB)
        assert clock.slept == [1.0]

    run(scenario())


def test_a_rate_of_one_a_minute_is_paced() -> None:
    clock = Clock()
    box = limits(clock, rate_per_min=1, max_wait=60.0)

    async def scenario() -> None:
        await box.pace_send(MB)
        await box.pace_send(MB)
        assert clock.slept == [60.0]

    run(scenario())


def test_the_last_fraction_of_a_retry_after_is_waited_out_too() -> None:
    """Half a second of the window left (the rest passed while the request queued for a slot): still waited."""
    clock = Clock()
    box = limits(clock)

    async def scenario() -> None:
        await box.throttled(MB, 1)
        clock.now += 0.5
        async with box.request(MB):
            assert box.blocked_for(MB) == 0.0
        assert clock.slept == [pytest.approx(0.5 + MARGIN)]

    run(scenario())


def test_a_retry_after_recorded_for_any_spelling_of_the_mailbox_shows_in_status(tmp_path: Path) -> None:
    """The shared ledger's row is the lower-cased address, which `scangw status` looks up (it reads the
    sender of every job lower-cased): the admin sees the Retry-After whatever case the device used."""

    async def scenario() -> None:
        svc = await services_for(tmp_path, SCANGW_SENDER="Scanner@Contoso.com")
        try:
            shared = SharedMailboxLimits(svc.spool.mailboxes, 0)
            await shared.throttled("SCANNER@contoso.COM", 90)
            await shared.close()
            shown = await figures(svc)
        finally:
            await svc.close()
        (mailbox,) = shown["mailboxes"]
        assert mailbox["mailbox"] == MB and 85 < mailbox["retry_after_seconds"] <= 90.1

    run(scenario())
