"""Exchange's per-mailbox limits hold across processes: two GraphTransports with their own limiters (as two
workers or Function instances would have) share the mailbox's ledger in the spool, embedded and Azurite.

The fake Graph counts requests in flight per mailbox and rejects a fifth with 429 as Exchange does.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Settings
from gateway.core.errors import TransientDeliveryError
from gateway.core.ports import Spool
from gateway.delivery.graph.exactly_once import GraphTransport
from gateway.delivery.graph.shared_limits import SharedMailboxLimits
from gateway.delivery.transport import MemoryCheckpoint
from gateway.spool.azure import open_azure_spool
from gateway.spool.local import open_local_spool
from tests.fakes.graph import FakeGraph
from tests.integration.azurite import reset_azurite
from tests.integration.test_graph_transport import MB, outgoing, store

Opener = Callable[[], Awaitable[Spool]]


@pytest.fixture(params=["local", pytest.param("azurite", marks=pytest.mark.azurite)])
def open_spool(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    if request.param == "local":
        return lambda: open_local_spool(tmp_path / "spool")
    conn: str = request.getfixturevalue("azurite_connection_string")
    reset_azurite(conn)
    return lambda: open_azure_spool(Settings(storage=conn), client_options={"retry_total": 0})


def worker(graph: FakeGraph, spool: Spool, rate_per_min: int = 0, **limits: Any) -> GraphTransport:
    """One "process": its own transport and limiter, sharing only the spool with the others."""
    shared = SharedMailboxLimits(spool.mailboxes, rate_per_min, **limits)
    wait = shared.max_wait  # the transport sleeps out what the limiter would, and re-queues the rest
    return GraphTransport(
        Settings(graph_url=graph.url), spool.blobs, backoff_base=0.01, limits=shared, max_inline_wait=wait
    )


async def until(probe: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def test_two_workers_never_have_more_than_four_requests_in_flight_to_one_mailbox(
    graph: FakeGraph, open_spool: Opener
) -> None:
    async def scenario() -> None:
        spool = await open_spool()
        workers = [worker(graph, spool), worker(graph, spool)]
        try:
            pdf, _ = await store(spool.blobs, "scan.pdf", 20_000)
            with graph.hold():
                batch = asyncio.gather(
                    *(workers[i % 2].deliver(outgoing((pdf,), job=f"w{i}"), MemoryCheckpoint()) for i in range(12))
                )
                task = asyncio.ensure_future(batch)
                await until(lambda: graph.in_flight(MB) >= 4, "four requests to reach Graph")
                # Both workers have asked for a fifth slot by now; none may have been granted.
                record = await spool.mailboxes.get(MB)
                assert record is not None and len(record.data["slots"]) == 4
            await task
        finally:
            for one in workers:
                await one.close()
            await spool.close()
        assert graph.max_concurrency_seen[MB] == 4
        assert graph.violations == []
        assert sorted(m.internet_message_id for m in graph.sent) == sorted(
            f"<scan.w{i}@contoso.com>" for i in range(12)
        )

    asyncio.run(scenario())


def test_a_retry_after_seen_by_one_worker_stops_the_others(graph: FakeGraph, open_spool: Opener) -> None:
    async def scenario() -> None:
        spool = await open_spool()
        first, second = worker(graph, spool), worker(graph, spool)
        try:
            pdf, _ = await store(spool.blobs, "scan.pdf", 20_000)
            graph.fail_next("POST", r"/messages$", 429, retry_after=30)
            with pytest.raises(TransientDeliveryError):
                await first.deliver(outgoing((pdf,), job="a"), MemoryCheckpoint())
            seen = len(graph.requests)
            with pytest.raises(TransientDeliveryError) as refused:
                await second.deliver(outgoing((pdf,), job="b"), MemoryCheckpoint())
            assert refused.value.retry_after is not None and refused.value.retry_after > 25
            assert len(graph.requests) == seen  # the other worker sent nothing into the window
        finally:
            await first.close()
            await second.close()
            await spool.close()
        assert graph.violations == [] and graph.sent == []

    asyncio.run(scenario())


def test_sends_from_all_workers_share_one_pace(graph: FakeGraph, open_spool: Opener) -> None:
    """At 10 a minute, a send by the other worker right after the first is due 6 s later: re-queued, not sent."""

    async def scenario() -> None:
        spool = await open_spool()
        workers = [worker(graph, spool, rate_per_min=10, max_wait=3.0) for _ in range(2)]
        try:
            pdf, _ = await store(spool.blobs, "scan.pdf", 20_000)
            await workers[0].deliver(outgoing((pdf,), job="p0"), MemoryCheckpoint())
            with pytest.raises(TransientDeliveryError) as later:
                await workers[1].deliver(outgoing((pdf,), job="p1"), MemoryCheckpoint())
            assert later.value.retry_after is not None and 3.0 < later.value.retry_after <= 6.0
        finally:
            for one in workers:
                await one.close()
            await spool.close()
        assert [m.internet_message_id for m in graph.sent] == ["<scan.p0@contoso.com>"]

    asyncio.run(scenario())


def test_slots_held_by_a_killed_worker_on_this_host_are_freed_at_once(graph: FakeGraph, open_spool: Opener) -> None:
    async def scenario() -> None:
        spool = await open_spool()
        # Four claims by a process that no longer exists, with minutes left on their leases.
        dead = {f"{socket.gethostname()}|999999999|dead|{n}": time.time() + 600 for n in range(4)}
        await spool.mailboxes.upsert(MB, {"slots": dead, "blocked_until": 0, "next_send": 0})
        one = worker(graph, spool, max_wait=1.0)
        try:
            pdf, _ = await store(spool.blobs, "scan.pdf", 20_000)
            await one.deliver(outgoing((pdf,), job="after-crash"), MemoryCheckpoint())
        finally:
            await one.close()
            await spool.close()
        assert [m.internet_message_id for m in graph.sent] == ["<scan.after-crash@contoso.com>"]

    asyncio.run(scenario())


class SlowAfterWrite:
    """The real ledger table, whose writes return `delay` seconds after they landed: a stalled process."""

    def __init__(self, inner: Any, delay: float) -> None:
        self.inner, self.delay = inner, delay

    async def get(self, key: str) -> Any:
        return await self.inner.get(key)

    async def insert(self, key: str, data: dict[str, Any]) -> str:
        etag = await self.inner.insert(key, data)
        await asyncio.sleep(self.delay)
        return etag

    async def replace(self, key: str, data: dict[str, Any], etag: str) -> str:
        new = await self.inner.replace(key, data, etag)
        await asyncio.sleep(self.delay)
        return new


def test_a_slot_granted_late_is_not_used_inside_a_window_that_began_meanwhile(open_spool: Opener) -> None:
    async def scenario() -> None:
        spool = await open_spool()
        try:
            fast = SharedMailboxLimits(spool.mailboxes, 0)
            stalled = SharedMailboxLimits(SlowAfterWrite(spool.mailboxes, 0.4), 0)  # type: ignore[arg-type]

            async def request() -> float:
                async with stalled.request(MB):
                    return time.time()

            task = asyncio.ensure_future(request())
            deadline = time.monotonic() + 10
            while not ((record := await spool.mailboxes.get(MB)) and record.data["slots"]):
                assert time.monotonic() < deadline, "the claim never landed"
                await asyncio.sleep(0.01)
            await fast.throttled(MB, 1.0)  # Graph answered 429 to the other process meanwhile
            window_end = time.time() + 1.0
            started = await task
            assert started >= window_end
        finally:
            await spool.close()

    asyncio.run(scenario())
