"""Streaming reader for one SMTP DATA section: the bytes go to the spool as they arrive.

Only CRLF `.` CRLF ends DATA; `\\n.\\n`, `\\r.\\n` and `\\n.\\r\\n` are content (SMTP smuggling,
GHSA-pr2m-px7j-xg65), the rule of aiosmtpd >= 1.4.6. Instead of one Python call per line, the stream is searched
for `\\n.\\r\\n` in blocks of the reader's buffer size and a hit counts only when a CR precedes it; the few
bytes at a line start right after a consumed CRLF are looked at one by one. Lines have no length limit here
(bare-LF devices send the whole message as one "line"); the message size limit bounds everything.
Dot-stuffing is undone at CRLF line starts, then bare LF becomes CRLF.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from gateway.core.errors import MessageTooLarge

#: Bytes handed to the spool per write: large enough for few writes, small enough for flat memory.
BATCH = 256 * 1024
_SEARCH = b"\n.\r\n"


def _unstuff(raw: bytes, tail: bytes) -> bytes:
    if tail.endswith(b"\r") and raw.startswith(b"\n."):
        raw = b"\n" + raw[2:]
    return raw.replace(b"\r\n.", b"\r\n")


def _normalise(data: bytes, tail: bytes) -> bytes:
    """Bare LF -> CRLF; a LF whose CR ended the previous piece is not bare."""
    if tail.endswith(b"\r") and data.startswith(b"\n"):
        return b"\n" + _normalise(data[1:], b"")
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") if b"\n" in data else data


class DataReader:
    def __init__(self, reader: asyncio.StreamReader, limit: int, on_progress: Callable[[], None] | None = None) -> None:
        self._reader = reader
        self.limit = limit
        self._on_progress = on_progress or (lambda: None)
        self._tail = b"\r\n"  # last raw bytes consumed: DATA starts right after the command's CRLF
        self.received = 0  # DATA bytes as received (dot-stuffing included, the final ".\r\n" not)
        self.ended = False

    async def _exact(self, n: int) -> bytes:
        try:
            return await self._reader.readexactly(n)
        except asyncio.IncompleteReadError as exc:
            raise ConnectionResetError("connection closed during DATA") from exc

    async def _pieces(self) -> AsyncIterator[bytes]:
        """Raw pieces with dot-stuffing undone (line ends untouched) until the end of DATA."""
        while not self.ended:
            tail = self._tail
            if tail.endswith(b"\r\n"):  # at a line start: "." CRLF here is the end
                first = await self._exact(1)
                raw = first + await self._exact(2) if first == b"." else first
                if raw == b".\r\n":
                    self.ended = True
                    return
                piece = raw[1:] if first == b"." else raw
            else:
                try:
                    raw = await self._reader.readuntil(_SEARCH)
                except asyncio.LimitOverrunError as exc:  # no end in a full buffer: pass on all but its last bytes
                    raw = await self._reader.read(exc.consumed)
                except asyncio.IncompleteReadError as exc:
                    raise ConnectionResetError("connection closed during DATA") from exc
                else:
                    before = raw[-5:-4] or tail[-1:]
                    if before == b"\r":  # CRLF . CRLF: the end (the CRLF is the last line's own)
                        raw = raw[:-3]
                        self.ended = True
                if not raw:
                    raise ConnectionResetError("connection closed during DATA")
                piece = _unstuff(raw, tail)
            self.received += len(raw)
            self._tail = (tail + raw)[-2:]
            yield _normalise(piece, tail)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The message as it will be spooled; raises MessageTooLarge as soon as the limit is passed."""
        out = bytearray()
        async for piece in self._pieces():
            if self.received > self.limit:
                raise MessageTooLarge(self.limit)
            out += piece
            if len(out) >= BATCH:
                self._on_progress()
                yield bytes(out)
                out.clear()
        if out:
            yield bytes(out)

    async def drain(self, cap: int) -> bool:
        """Read and drop the rest of DATA so the reply lands after it; False if it runs past `cap` bytes."""
        mark = self.received
        async for _ in self._pieces():
            if self.received > cap:
                return False
            if self.received - mark >= BATCH:
                mark = self.received
                self._on_progress()
        return True
