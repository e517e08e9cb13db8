"""Helpers for the exactly-once tests: workers of one job taking turns on one checkpoint, as the agent runs
them after each failure, with the transport's clock and the fake Graph's moving together (grace periods and
upload-session expiry pass without sleeping)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from gateway.core.errors import TransientDeliveryError
from gateway.core.message import OutgoingMessage
from gateway.core.ports import BlobStore
from gateway.delivery.transport import Delivered, MemoryCheckpoint
from tests.fakes.graph import FakeGraph
from tests.integration.test_graph_transport import MB, graph_calls, transport


class Workers:
    """Workers of one job on one checkpoint, with a clock shared with the fake Graph."""

    def __init__(self, graph: FakeGraph, blobs: BlobStore, **options: Any) -> None:
        self.graph, self.blobs, self.options = graph, blobs, options
        self.skew = 0.0
        graph.clock = self.now
        self.progress = MemoryCheckpoint()

    def now(self) -> float:
        return time.time() + self.skew

    async def attempt(self, message: OutgoingMessage, **options: Any) -> Delivered:
        options = {"inline_retries": 0, "clock": self.now, **self.options, **options}
        worker = transport(self.graph.url, self.blobs, **options)
        try:
            return await worker.deliver(message, self.progress)
        finally:
            await worker.close()

    async def fails(self, message: OutgoingMessage, **options: Any) -> TransientDeliveryError:
        with pytest.raises(TransientDeliveryError) as failed:
            await self.attempt(message, **options)
        return failed.value


def creates(graph: FakeGraph) -> int:
    return graph_calls(graph).count(f"POST /v1.0/users/{MB}/messages")


def sends(graph: FakeGraph) -> int:
    return sum(c.endswith("/send") for c in graph_calls(graph))


def calls_ending(graph: FakeGraph, suffix: str) -> int:
    return sum(c.endswith(suffix) for c in graph_calls(graph))
