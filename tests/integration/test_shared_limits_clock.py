"""The shared mailbox limits with an injected clock and sleep, on the embedded spool's real ledger table: the
send pace to the second, the Retry-After margin, slots handed over and given back, in milliseconds of real
time. Every scenario runs under a wall-clock deadline, so a change that makes a wait loop spin fails here in
seconds instead of hanging (issue 15: mutation testing of delivery/graph/shared_limits.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import gateway.delivery.graph.shared_limits as shared_limits
from gateway.core.ports import Conflict, Record, Table
from gateway.delivery.graph.mailbox_limits import MARGIN, MailboxBusy
from gateway.delivery.graph.shared_limits import SLOT_LEASE, SharedMailboxLimits, _process_gone
from gateway.spool.local import open_local_spool

MB = "Scanner@Contoso.com"
KEY = MB.lower()
DEADLINE = 10.0


class Time:
    """One clock for the limiter's monotonic and wall time; `sleep` moves it instead of waiting."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


Scenario = Callable[[Table, Time], Awaitable[None]]


def run(tmp: Path, scenario: Scenario) -> None:
    async def main() -> None:
        spool = await open_local_spool(tmp / "spool")
        try:
            await asyncio.wait_for(scenario(spool.mailboxes, Time()), DEADLINE)
        finally:
            await spool.close()

    asyncio.run(main())


def limits(table: Any, clock: Time, rate: int = 0, max_wait: float = 5.0, **kw: Any) -> SharedMailboxLimits:
    return SharedMailboxLimits(table, rate, max_wait=max_wait, clock=clock, sleep=clock.sleep, wall_clock=clock, **kw)


async def slots(table: Table) -> dict[str, float]:
    record = await table.get(KEY)
    return dict(record.data["slots"]) if record else {}


async def until_empty(table: Table) -> None:
    deadline = time.monotonic() + 3.0
    while await slots(table):
        assert time.monotonic() < deadline, "the slot was never given back"
        await asyncio.sleep(0.01)


async def sends(pacer: SharedMailboxLimits, clock: Time, count: int) -> list[float]:
    """When each of `count` sends went out (the clock after pace_send let it go)."""
    at = []
    for _ in range(count):
        await pacer.pace_send(MB)
        at.append(clock.now)
    return at


def test_sends_are_paced_to_the_rate_even_when_the_wait_is_exactly_the_longest_allowed(tmp_path: Path) -> None:
    async def scenario(table: Table, clock: Time) -> None:
        start = clock.now
        pacer = limits(table, clock, rate=12, max_wait=5.0)  # one send per 5 s; waits of up to 5 s are slept
        assert [t - start for t in await sends(pacer, clock, 3)] == [0.0, 5.0, 10.0]
        assert clock.sleeps == [5.0, 5.0]

    run(tmp_path, scenario)


def test_sends_less_than_a_second_apart_still_wait_their_turn(tmp_path: Path) -> None:
    async def scenario(table: Table, clock: Time) -> None:
        start = clock.now
        pacer = limits(table, clock, rate=120)
        assert [t - start for t in await sends(pacer, clock, 3)] == [0.0, 0.5, 1.0]

    run(tmp_path, scenario)


def test_one_send_a_minute_is_paced_too(tmp_path: Path) -> None:
    async def scenario(table: Table, clock: Time) -> None:
        first, second = limits(table, clock, rate=1), limits(table, clock, rate=1)  # two processes
        await first.pace_send(MB)
        with pytest.raises(MailboxBusy) as busy:
            await second.pace_send(MB)
        assert busy.value.retry_after == 60.0
        assert str(busy.value) == f"Pacing sends from {MB} to 1 per minute."
        assert clock.sleeps == []

    run(tmp_path, scenario)


def test_a_retry_after_keeps_every_process_out_until_its_margin_has_passed(tmp_path: Path) -> None:
    async def scenario(table: Table, clock: Time) -> None:
        throttled, other = limits(table, clock), limits(table, clock)
        await throttled.throttled(MB, 1.0)
        clock.now += 1.0 + MARGIN / 2  # Retry-After has passed, its margin not yet
        async with other.request(MB):
            assert clock.sleeps == [pytest.approx(MARGIN / 2, abs=1e-6)]

    run(tmp_path, scenario)


def test_a_finished_request_hands_its_slot_to_the_next_then_gives_it_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(table: Table, clock: Time) -> None:
        one = limits(table, clock)
        for _ in range(3):
            async with one.request(MB):
                assert len(await slots(table)) == 1
        assert one.writes == 1  # one claim served all three requests (a write for each would be 3)
        await until_empty(table)  # the kept slot is given back once no request came for it
        assert one.writes == 2

    with caplog.at_level(logging.WARNING):
        run(tmp_path, scenario)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


class Gated:
    """The real ledger table whose replaces wait for `open` (a slow store), counting those waiting."""

    def __init__(self, inner: Table) -> None:
        self.inner, self.open, self.waiting = inner, asyncio.Event(), 0
        self.open.set()

    async def get(self, key: str) -> Record | None:
        return await self.inner.get(key)

    async def insert(self, key: str, data: dict[str, Any]) -> str:
        return await self.inner.insert(key, data)

    async def replace(self, key: str, data: dict[str, Any], etag: str) -> str:
        self.waiting += 1
        try:
            await self.open.wait()
        finally:
            self.waiting -= 1
        return await self.inner.replace(key, data, etag)


def test_close_gives_back_the_kept_slot_and_waits_for_a_give_back_under_way(tmp_path: Path) -> None:
    async def scenario(table: Table, clock: Time) -> None:
        kept = limits(table, clock)
        async with kept.request(MB):
            pass
        await kept.close()
        assert await slots(table) == {}  # a stopping worker leaves no slot held for SLOT_LEASE seconds

        gated = Gated(table)
        slow = limits(gated, clock)
        async with slow.request(MB):
            pass
        gated.open.clear()
        deadline = time.monotonic() + 3.0
        while not gated.waiting:  # the kept slot lapsed: its give-back is on its way to the store
            assert time.monotonic() < deadline, "the kept slot was never given back"
            await asyncio.sleep(0.01)
        closing = asyncio.ensure_future(slow.close())
        for _ in range(10):
            await asyncio.sleep(0)
        assert not closing.done()  # close() waits for it: the process must not exit with the slot held
        gated.open.set()
        await closing
        assert await slots(table) == {}

    run(tmp_path, scenario)


class Refusing:
    """The real ledger table, refusing every replace (a store gone away after the claim)."""

    def __init__(self, inner: Table) -> None:
        self.inner = inner

    async def get(self, key: str) -> Record | None:
        return await self.inner.get(key)

    async def insert(self, key: str, data: dict[str, Any]) -> str:
        return await self.inner.insert(key, data)

    async def replace(self, key: str, data: dict[str, Any], etag: str) -> str:
        raise OSError("storage went away")


def test_a_slot_that_cannot_be_given_back_is_logged_with_when_it_lapses(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared_limits, "HANDOFF", 5.0)  # given back by close(), not by the handoff's lapse

    async def scenario(table: Table, clock: Time) -> None:
        stuck = limits(Refusing(table), clock)
        async with stuck.request(MB):
            pass
        await stuck.close()

    with caplog.at_level(logging.WARNING, logger="scangw.limits"):
        run(tmp_path, scenario)
    expected = f"could not release a request slot of {MB}; it lapses in {SLOT_LEASE:.0f} s"
    assert [m.lower() for m in caplog.messages] == [expected.lower()]


def test_a_kept_slot_is_checked_again_against_other_processes_windows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared_limits, "HANDOFF", 5.0)  # the kept slot stays for the whole scenario

    async def scenario(table: Table, clock: Time) -> None:
        one, other = limits(table, clock), limits(table, clock)
        for _ in range(3):  # each time long after this process last looked at the ledger
            clock.now += 1.0
            async with one.request(MB):
                pass
        assert one.writes == 1
        clock.now += 1.0
        await other.throttled(MB, 2.0)  # another process was told to wait meanwhile
        window_end = clock.now + 2.0 + MARGIN
        async with one.request(MB):
            assert window_end <= clock.now < window_end + 0.5  # not inside the window
        await one.close()
        assert await slots(table) == {}

    run(tmp_path, scenario)


def test_the_defaults_pace_thirty_sends_a_minute_and_wait_at_most_five_seconds(tmp_path: Path) -> None:
    async def scenario(table: Table, clock: Time) -> None:
        start = clock.now
        pacer = SharedMailboxLimits(table, clock=clock, sleep=clock.sleep, wall_clock=clock)
        assert [t - start for t in await sends(pacer, clock, 2)] == [0.0, 2.0]
        await pacer.throttled(MB, 4.9)  # slept out here...
        async with pacer.request(MB):
            pass
        await pacer.throttled(MB, 5.0)  # ...this one (5.05 s with the margin) goes back to the queue
        with pytest.raises(MailboxBusy):
            async with pacer.request(MB):
                pass
        await pacer.close()

    run(tmp_path, scenario)


def test_only_claims_of_processes_gone_from_this_host_count_as_gone() -> None:
    here = socket.gethostname()
    # SIGHUP restored (a test run under nohup ignores it) before the child says it is ready.
    child = "import signal, time; signal.signal(signal.SIGHUP, signal.SIG_DFL); print(flush=True); time.sleep(60)"
    with subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE) as alive:
        try:
            assert alive.stdout is not None and alive.stdout.readline() == b"\n"
            assert not _process_gone(f"{here}|{alive.pid}|0badc0de|3")
            with pytest.raises(subprocess.TimeoutExpired):  # asking did not signal it (a signal kills it)
                alive.wait(0.3)
        finally:
            alive.kill()
        alive.wait(10)
        assert _process_gone(f"{here}|{alive.pid}|0badc0de|3")
    assert not _process_gone(f"{here}|{os.getpid()}|0badc0de|0")
    # Another host's worker cannot be asked: its claims lapse with their lease, they are never dropped.
    assert not _process_gone(f"other-{here}|{alive.pid}|0badc0de|3")
    assert not _process_gone(f"{here}|not-a-pid|0badc0de|3")


class Contended:
    """The real ledger table, where every conditional write loses its race (another process always wrote first)."""

    def __init__(self, inner: Table) -> None:
        self.inner, self.tries = inner, 0

    async def get(self, key: str) -> Record | None:
        return await self.inner.get(key)

    async def insert(self, key: str, data: dict[str, Any]) -> str:
        self.tries += 1
        raise Conflict(key)

    async def replace(self, key: str, data: dict[str, Any], etag: str) -> str:
        self.tries += 1
        raise Conflict(key)


def test_a_write_that_keeps_losing_its_race_backs_off_more_each_time_then_gives_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared_limits.random, "random", lambda: 0.5)  # the jitter fixed: a known schedule

    async def scenario(table: Table, clock: Time) -> None:
        contended = Contended(table)
        loser = limits(contended, clock)
        with pytest.raises(MailboxBusy) as busy:
            async with loser.request(MB):
                raise AssertionError("no slot was written, none may be used")
        assert str(busy.value) == f"Too many workers are updating the limits of mailbox {MB} at once."
        assert busy.value.retry_after == 1.0
        assert contended.tries == 50 and loser.conflicts == 50 and loser.writes == 0
        step = shared_limits.POLL / 4
        assert clock.sleeps == pytest.approx([step, 2 * step, 3 * step] + [4 * step] * 47)

    run(tmp_path, scenario)


def test_while_other_processes_hold_every_slot_a_request_waits_at_most_max_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared_limits.random, "random", lambda: 0.25)  # each look 0.75 poll intervals apart

    async def scenario(table: Table, clock: Time) -> None:
        other, one = limits(table, clock), limits(table, clock)
        release = asyncio.Event()
        holding = 0

        async def hold() -> None:
            nonlocal holding
            async with other.request(MB):
                holding += 1
                await release.wait()

        holders = [asyncio.ensure_future(hold()) for _ in range(4)]
        while holding < 4:
            await asyncio.sleep(0.01)
        started = clock.now
        with pytest.raises(MailboxBusy) as busy:
            async with one.request(MB):
                raise AssertionError("a fifth slot was granted")
        assert str(busy.value) == f"Other workers hold all 4 request slots of mailbox {MB}."
        assert busy.value.retry_after == pytest.approx(20 * shared_limits.POLL)
        assert 5.0 < clock.now - started <= 5.0 + shared_limits.POLL
        assert clock.sleeps == [pytest.approx(0.75 * shared_limits.POLL)] * len(clock.sleeps)
        release.set()
        await asyncio.gather(*holders)
        await other.close()

    run(tmp_path, scenario)


def test_a_kept_slot_is_reused_only_in_the_first_half_of_its_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared_limits, "HANDOFF", 5.0)  # kept for the whole scenario

    async def scenario(table: Table, clock: Time) -> None:
        one = limits(table, clock)
        async with one.request(MB):
            pass
        clock.now += SLOT_LEASE / 2  # exactly half: still reused, no write
        async with one.request(MB):
            assert one.writes == 1
        clock.now += 10  # past half its lease: claimed again, with a whole lease ahead
        async with one.request(MB):
            assert list((await slots(table)).values()) == [pytest.approx(clock.now + SLOT_LEASE)]
        await one.close()
        assert await slots(table) == {}

    run(tmp_path, scenario)


class Counting:
    """The real ledger table, counting its reads."""

    def __init__(self, inner: Table) -> None:
        self.inner, self.reads = inner, 0

    async def get(self, key: str) -> Record | None:
        self.reads += 1
        return await self.inner.get(key)

    async def insert(self, key: str, data: dict[str, Any]) -> str:
        return await self.inner.insert(key, data)

    async def replace(self, key: str, data: dict[str, Any], etag: str) -> str:
        return await self.inner.replace(key, data, etag)


def test_a_kept_slot_is_reused_without_a_read_while_this_process_looked_at_the_ledger_recently(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared_limits, "HANDOFF", 5.0)

    async def scenario(table: Table, clock: Time) -> None:
        counting = Counting(table)
        one = limits(counting, clock)
        async with one.request(MB):
            pass
        reads = counting.reads
        assert (reads, one.writes) == (1, 1)  # a claim costs one look and one write, no second look
        clock.now += shared_limits.STALE_CLAIM / 2
        async with one.request(MB):
            assert counting.reads == reads and one.writes == 1  # neither a read nor a write
        clock.now += shared_limits.STALE_CLAIM * 2
        async with one.request(MB):
            assert counting.reads == reads + 1 and one.writes == 1  # a fresh look for Retry-After windows
        await one.close()
        assert (counting.reads, one.writes) == (reads + 1, 2)  # given back on the record last written: no read
        await one.throttled(MB, 1.0)
        await one.throttled(MB, 1.0)  # the same window again: nothing to change, nothing written
        assert (counting.reads, one.writes) == (reads + 1, 3)
        await one.throttled(MB, 2.0)
        assert (counting.reads, one.writes) == (reads + 1, 4)

    run(tmp_path, scenario)


def test_an_expired_kept_slot_is_given_back_and_a_fresher_one_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared_limits, "HANDOFF", 5.0)

    async def scenario(table: Table, clock: Time) -> None:
        one = limits(table, clock)
        first_done, second_done = asyncio.Event(), asyncio.Event()

        async def held(done: asyncio.Event) -> None:
            async with one.request(MB):
                await done.wait()

        first = asyncio.ensure_future(held(first_done))
        while len(await slots(table)) < 1:
            await asyncio.sleep(0.01)
        clock.now += SLOT_LEASE / 2 + 5  # the first claim is now past half its lease
        second = asyncio.ensure_future(held(second_done))
        while len(await slots(table)) < 2:
            await asyncio.sleep(0.01)
        second_done.set()
        await second
        first_done.set()
        await first  # both kept, the old one last
        assert one.writes == 2
        async with one.request(MB):
            assert one.writes == 3  # the old one given back, the fresh one reused: no new claim
            assert list((await slots(table)).values()) == [pytest.approx(clock.now + SLOT_LEASE)]
        await one.close()

    run(tmp_path, scenario)


def test_a_long_retry_after_recorded_by_another_process_sends_the_job_back_to_the_queue(tmp_path: Path) -> None:
    async def scenario(table: Table, clock: Time) -> None:
        throttled, other = limits(table, clock), limits(table, clock)
        await throttled.throttled(MB, 30.0)
        with pytest.raises(MailboxBusy) as busy:
            async with other.request(MB):
                raise AssertionError("a request went into the Retry-After window")
        assert str(busy.value) == f"Graph asked to wait before calling mailbox {MB} again."
        assert busy.value.retry_after == pytest.approx(30.0 + MARGIN)
        assert clock.sleeps == []

    run(tmp_path, scenario)


def test_each_process_claims_under_its_own_name_on_this_host(tmp_path: Path) -> None:
    """Two processes' requests are two slots, and each claim names this host and process (so a killed worker's
    claims can be recognised and dropped)."""

    async def scenario(table: Table, clock: Time) -> None:
        first, second = limits(table, clock), limits(table, clock)
        async with first.request(MB), second.request(MB):
            holders = sorted(await slots(table))
        assert len(holders) == 2
        assert all(h.startswith(f"{socket.gethostname()}|{os.getpid()}|") for h in holders)
        await first.close()
        await second.close()

    run(tmp_path, scenario)


class FailingOnce:
    """The real ledger table, whose next replace waits for `open` and then fails (a storage blip)."""

    def __init__(self, inner: Table) -> None:
        self.inner, self.open, self.armed, self.waiting = inner, asyncio.Event(), False, 0

    async def get(self, key: str) -> Record | None:
        return await self.inner.get(key)

    async def insert(self, key: str, data: dict[str, Any]) -> str:
        return await self.inner.insert(key, data)

    async def replace(self, key: str, data: dict[str, Any], etag: str) -> str:
        if self.armed:
            self.armed, self.waiting = False, 1
            await self.open.wait()
            raise OSError("storage blip")
        return await self.inner.replace(key, data, etag)


def test_a_failed_ledger_write_fails_only_the_changes_it_carried(tmp_path: Path) -> None:
    async def scenario(table: Table, clock: Time) -> None:
        blip = FailingOnce(table)
        one = limits(blip, clock, rate=30)
        await one.pace_send(MB)  # the record exists
        blip.armed = True
        failing = asyncio.ensure_future(one.throttled(MB, 1.0))
        while not blip.waiting:
            await asyncio.sleep(0.01)
        queued = asyncio.ensure_future(one.pace_send(MB))  # asked while the failing write is under way
        await asyncio.sleep(0)
        blip.open.set()
        with pytest.raises(OSError):
            await failing
        await queued  # written by the next write, not failed with the one before
        record = await table.get(KEY)
        assert record is not None and record.data["next_send"] == pytest.approx(clock.now + 2.0)

    run(tmp_path, scenario)


def test_a_window_another_process_already_recorded_leaves_the_next_request_working(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This process hears of a shorter Retry-After than another one already recorded: its write loses the race,
    the fresh record needs no change, and its kept slot is still checked and used afterwards."""
    monkeypatch.setattr(shared_limits, "HANDOFF", 5.0)

    async def scenario(table: Table, clock: Time) -> None:
        one, other = limits(table, clock), limits(table, clock)
        async with one.request(MB):
            pass
        await other.throttled(MB, 2.0)
        await one.throttled(MB, 1.0)  # shorter: nothing to write once the fresh record is read
        assert one.conflicts == 1 and one.writes == 1
        clock.now += 3.0
        async with one.request(MB):
            assert len(await slots(table)) == 1
        await one.close()

    run(tmp_path, scenario)


def test_a_retry_after_of_exactly_max_wait_is_slept_out_here(tmp_path: Path) -> None:
    async def scenario(table: Table, clock: Time) -> None:
        throttled, other = limits(table, clock), limits(table, clock)
        await throttled.throttled(MB, 5.0 - MARGIN)  # the window ends max_wait (5 s) from now, to the bit
        async with other.request(MB):
            assert clock.sleeps == [5.0]

    run(tmp_path, scenario)


def test_a_request_that_waited_its_longest_still_sits_out_a_short_window_and_takes_the_slot_freed_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared_limits.random, "random", lambda: 0.25)

    async def scenario(table: Table, clock: Time) -> None:
        other = limits(table, clock)
        release = [asyncio.Event() for _ in range(4)]
        holding = 0

        async def hold(done: asyncio.Event) -> None:
            nonlocal holding
            async with other.request(MB):
                holding += 1
                await done.wait()

        holders = [asyncio.ensure_future(hold(done)) for done in release]
        while holding < 4:
            await asyncio.sleep(0.01)
        started, fired = clock.now, False
        plain_sleep = clock.sleep

        async def sleep(seconds: float) -> None:
            nonlocal fired
            await plain_sleep(seconds)
            if not fired and clock.now - started > 5.0:  # the request has waited its longest...
                fired = True
                await other.throttled(MB, 0.5)  # ...when Graph asks for half a second
                release[0].set()  # and a slot is given back
                await holders[0]
                await other.close()

        one = SharedMailboxLimits(table, 0, max_wait=5.0, clock=clock, sleep=sleep, wall_clock=clock)
        async with one.request(MB):
            assert fired and clock.now - started > 5.5
        await one.close()
        for done in release:
            done.set()
        await asyncio.gather(*holders)
        await other.close()

    run(tmp_path, scenario)
