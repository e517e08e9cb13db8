"""uvicorn's HTTP/1.1 protocol with a deadline for the request head.

uvicorn closes idle keep-alive connections but waits forever for the headers of a new connection's first
request, so a client that connects and says nothing (or half a header) holds a connection slot for good
(issue 9 item 11). The body has its own deadline per chunk (gateway.intake.http_body).
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol


class _HeadDeadline(H11Protocol):
    head_timeout = 60.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = self.loop.call_later(self.head_timeout, self._head_expired)

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and self._head_timer is not None:
            self._head_timer.cancel()  # the head arrived: the app and the body deadline take over
            self._head_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _head_expired(self) -> None:
        self._head_timer = None
        if self.cycle is None and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            self.transport.close()


def head_deadline_protocol(seconds: float) -> type[H11Protocol]:
    """The protocol class to give uvicorn.Config(http=...)."""
    return type("HeadDeadlineH11Protocol", (_HeadDeadline,), {"head_timeout": seconds})
