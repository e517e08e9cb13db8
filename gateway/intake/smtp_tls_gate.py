"""The first bytes of a TLS connection, seen before asyncio's TLS layer takes over.

Two things the door needs that asyncio's TLS layer does not give: what a client offered when its handshake
fails (read from its ClientHello, see smtp_tls_hello), and a quick, readable answer to a client that sends
nothing at all on the implicit-TLS port because it expects a plain SMTP greeting (a device set to STARTTLS
on port 465): without it both sides wait 30 s and the device reports a timeout. The gate is the connection's
protocol until the first bytes arrive, then hands the transport to `asyncio.sslproto.SSLProtocol` and steps
aside; from then on it costs nothing.
"""

from __future__ import annotations

import asyncio
from asyncio import sslproto
from collections.abc import Callable

#: The ClientHello is in the first few hundred bytes; more is not kept.
KEEP = 16 * 1024


class NoClientHello(ConnectionError):
    """The client sent nothing within the deadline (or closed first): it is not speaking TLS."""

    def __init__(self, seconds: float, closed: bool) -> None:
        self.closed = closed
        super().__init__("closed before sending a TLS ClientHello" if closed else f"no ClientHello in {seconds:g} s")


class HelloGate(asyncio.Protocol):
    """Stands in for `tls` until the client's first bytes arrive; `first` keeps them, `waiter` (the same future
    the TLS layer resolves when its handshake ends) fails with NoClientHello when nothing arrives."""

    def __init__(
        self,
        tls: sslproto.SSLProtocol,
        waiter: asyncio.Future[None],
        *,
        hello_seconds: float,
        silence_reply: bytes = b"",
        admit: Callable[[str], bool] | None = None,
    ) -> None:
        self.tls = tls
        self.admit = admit
        self.waiter = waiter
        self.hello_seconds = hello_seconds
        self.silence_reply = silence_reply
        self.first = b""
        self.peer_ip = ""
        self._transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._handed_over = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self.peer_ip = str(peer[0]) if peer else ""
        if self.admit is not None and not self.admit(self.peer_ip):
            transport.close()  # over the limits: no TLS work at all for it
            return
        self._timer = asyncio.get_running_loop().call_later(self.hello_seconds, self._silent)

    def data_received(self, data: bytes) -> None:
        if self._handed_over or self._transport is None:
            return
        self._stop_timer()
        self._handed_over = True
        self.first = bytes(data[:KEEP])
        self._transport.set_protocol(self.tls)
        self.tls.connection_made(self._transport)
        _feed(self.tls, data)

    def eof_received(self) -> bool:
        return False  # the transport closes; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        self._fail(NoClientHello(self.hello_seconds, closed=True))

    def _silent(self) -> None:
        self._timer = None
        if self._handed_over or self._transport is None:
            return
        self._fail(NoClientHello(self.hello_seconds, closed=False))
        if self.silence_reply:
            self._transport.write(self.silence_reply)  # type: ignore[attr-defined]
        self._transport.close()

    def _fail(self, error: Exception) -> None:
        if not self._handed_over and not self.waiter.done():
            self.waiter.set_exception(error)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _feed(protocol: sslproto.SSLProtocol, data: bytes) -> None:
    """Hand bytes received as `data_received` to a buffered protocol (what asyncio's transports do)."""
    view = memoryview(data)
    while view:
        buffer = protocol.get_buffer(len(view))
        size = min(len(buffer), len(view))
        buffer[:size] = view[:size]
        protocol.buffer_updated(size)
        view = view[size:]
