"""The strict fake Graph (tests/fakes) in a child process, with a fixed latency per request.

A child process, so its CPU and memory never count as the gateway's; the latency stands for the network and
Graph's own work (20 ms per request), slept before the request is handled. The parent talks to it over a
pipe: counts, send times, violations, and fault knobs.
"""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

MIB = 1024 * 1024


def _serve(conn: Any, latency: float, mailboxes: list[str], throttle_rate: float) -> None:
    from tests.fakes.graph import FakeGraph
    from tests.fakes.identity import FakeIdentityEndpoint

    class SlowGraph(FakeGraph):  # type: ignore[misc]
        sent_at: dict[str, float] = {}

        def handle(self, request: Any) -> Any:
            if latency:
                time.sleep(latency)
            return super().handle(request)

        def _deliver(self, box: Any, item: Any, via: str, save: bool) -> None:
            super()._deliver(box, item, via, save)
            self.sent_at[self.sent[-1].internet_message_id] = time.time()

    with FakeIdentityEndpoint() as idp, SlowGraph(idp, throttle_rate=throttle_rate, retry_after=1, seed=7) as graph:
        for mailbox in mailboxes:
            graph.add_mailbox(mailbox, max_send_size=150 * MIB)
        conn.send((idp.env(), graph.url, idp.make_token()))
        while (command := conn.recv()) != "stop":
            if command == "count":
                conn.send(len(graph.sent))
            elif command == "requests":
                conn.send(len(graph.requests))
            elif command == "sent_at":
                conn.send(dict(graph.sent_at))
            elif command == "hashes":
                conn.send({m.internet_message_id: [a.sha256 for a in m.attachments] for m in graph.sent})
            elif command == "duplicates":
                conn.send(list(graph.duplicate_internet_message_ids()))
            elif command == "max_concurrency":
                conn.send(dict(graph.max_concurrency_seen))
            else:
                conn.send(list(graph.violations))


class FakeService:
    def __init__(self, latency: float = 0.02, mailboxes: list[str] | None = None, throttle_rate: float = 0.0) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, theirs = context.Pipe()
        boxes = mailboxes or ["scanner@contoso.com"]
        self.child = context.Process(target=_serve, args=(theirs, latency, boxes, throttle_rate), daemon=True)
        self.child.start()
        if not self.conn.poll(120):
            raise RuntimeError("the fake Graph did not start")
        self.env, self.url, self.token = self.conn.recv()

    def ask(self, command: str) -> Any:
        self.conn.send(command)
        return self.conn.recv()

    def wait_sent(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ask("count") >= n:
                return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        try:
            self.conn.send("stop")
        except OSError:
            pass
        self.child.join(timeout=30)
        if self.child.is_alive():
            self.child.kill()

    def __enter__(self) -> FakeService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
