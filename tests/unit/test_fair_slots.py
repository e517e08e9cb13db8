"""The argon2 slots are shared fairly (issue 9 item 5): one address flooding wrong passwords cannot take every
slot, and a real login from elsewhere is served next, not after the whole flood."""

from __future__ import annotations

import asyncio

import pytest

from gateway.core.fair_slots import FairSlots


def test_a_flood_from_one_address_leaves_a_slot_for_others_and_they_go_next() -> None:
    async def go() -> list[str]:
        slots = FairSlots(2)
        order: list[str] = []
        release = asyncio.Event()

        async def check(key: str, label: str) -> None:
            async with slots.slot(key):
                order.append(label)
                await release.wait()

        flood = [asyncio.create_task(check("192.0.2.66", f"flood{n}")) for n in range(50)]
        await asyncio.sleep(0)
        device = asyncio.create_task(check("203.0.113.10", "device"))
        for _ in range(20):  # let every task reach its slot or its queue (no time passes: the loop only turns)
            await asyncio.sleep(0)
        assert "device" in order  # the flood held one slot only: the other was free for the device
        assert slots.busy == 2
        release.set()
        await asyncio.gather(*flood, device)
        return order

    order = asyncio.run(go())
    assert order[:2] == ["flood0", "device"]
    assert len(order) == 51


def test_waiting_keys_are_served_in_turn() -> None:
    async def go() -> list[str]:
        slots = FairSlots(1)
        order: list[str] = []
        gate = asyncio.Event()

        async def check(key: str, label: str) -> None:
            async with slots.slot(key):
                order.append(label)
                await gate.wait()

        first = asyncio.create_task(check("a", "a0"))
        await asyncio.sleep(0)
        tasks = [asyncio.create_task(check("a", f"a{n}")) for n in range(1, 4)]
        tasks.append(asyncio.create_task(check("b", "b0")))
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(first, *tasks)
        return order

    order = asyncio.run(go())
    assert order.index("b0") <= 2, order  # not behind every waiting attempt of "a"


def test_a_cancelled_waiter_gives_its_turn_away() -> None:
    async def go() -> int:
        slots = FairSlots(1)
        gate = asyncio.Event()

        async def hold() -> None:
            async with slots.slot("a"):
                await gate.wait()

        holder = asyncio.create_task(hold())
        await asyncio.sleep(0)
        waiter = asyncio.create_task(hold())
        await asyncio.sleep(0)
        waiter.cancel()
        gate.set()
        await holder
        await asyncio.gather(waiter, return_exceptions=True)
        async with slots.slot("b"):
            return slots.busy

    assert asyncio.run(go()) == 1


def test_no_key_ever_holds_more_than_its_share_however_slots_are_given_back() -> None:
    """Four slots, two per key: an address flooding keeps at most two argon2 checks running, whichever of its
    own or others' checks end first, and nothing is left behind once all are done."""

    async def go() -> tuple[dict[str, int], FairSlots]:
        slots = FairSlots(4)
        active: dict[str, int] = {"a": 0, "b": 0}
        most: dict[str, int] = {"a": 0, "b": 0}
        done = {label: asyncio.Event() for label in [f"a{n}" for n in range(6)] + ["b0", "b1"]}

        async def check(label: str) -> None:
            key = label[0]
            async with slots.slot(key):
                active[key] += 1
                most[key] = max(most[key], active[key])
                await done[label].wait()
                active[key] -= 1

        tasks = [asyncio.create_task(check(label)) for label in done]

        async def turn() -> None:
            for _ in range(20):
                await asyncio.sleep(0)

        await turn()
        assert active == {"a": 2, "b": 2}
        for label in ["b0", "a0", "b1", "a1", "a2", "a3", "a4", "a5"]:
            done[label].set()  # another device's check ends, then one of the flood's, ...
            await turn()
            assert slots.busy <= 4
        await asyncio.gather(*tasks)
        return most, slots

    most, slots = asyncio.run(go())
    assert most == {"a": 2, "b": 2}
    assert slots.busy == 0 and not slots._held  # a spray of addresses leaves no counter behind


def test_a_cancelled_waiter_does_not_hold_up_the_next_key_in_turn() -> None:
    async def go() -> list[str]:
        slots = FairSlots(1)
        gate = asyncio.Event()
        order: list[str] = []

        async def check(key: str) -> None:
            async with slots.slot(key):
                order.append(key)
                await gate.wait()

        holder = asyncio.create_task(check("a"))
        await asyncio.sleep(0)
        gone = asyncio.create_task(check("b"))  # a client that hangs up while it waits
        waiting = asyncio.create_task(check("c"))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        gate.set()
        await asyncio.wait_for(asyncio.gather(holder, waiting), 5)
        return order

    assert asyncio.run(go()) == ["a", "c"]


@pytest.mark.parametrize(
    ("capacity", "per_key", "share"), [(2, None, 1), (3, None, 1), (4, None, 2), (5, None, 2), (4, 1, 1)]
)
def test_one_keys_share_is_half_the_slots_unless_set(capacity: int, per_key: int | None, share: int) -> None:
    async def go() -> int:
        slots = FairSlots(capacity, per_key)
        gate = asyncio.Event()

        async def check() -> None:
            async with slots.slot("192.0.2.66"):
                await gate.wait()

        flood = [asyncio.create_task(check()) for _ in range(capacity + 2)]
        for _ in range(20):
            await asyncio.sleep(0)
        busy = slots.busy
        gate.set()
        await asyncio.gather(*flood)
        return busy

    assert asyncio.run(go()) == share
