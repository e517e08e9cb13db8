"""A push parser that splits a MIME message into parts as the bytes stream by, without ever holding a part.

Feed it chunks cut anywhere (a boundary may straddle two chunks); it answers with events: `Start` (a part's
headers), `Data` (raw, still transfer-encoded body bytes of the current leaf part) and `End`. It keeps at most
one header block and one unfinished line, so a 100 MB message costs the same memory as a 1 MB one. It is
lenient the way mail readers are: LF-only line ends, boundaries right after the headers, missing close
delimiters, and outer boundaries that end inner parts early.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.core.mime.headers import (
    MAX_HEADER_BYTES,
    HeaderBlock,
    PartInfo,
    header_end,
    parse_header_block,
    part_info,
)

MAX_DEPTH = 20
_LINE_BREAK = re.compile(rb"\r?\n")
_TAILS = (b"\r\n-", b"\n-", b"\r\n", b"\n", b"\r")  # suffixes that may begin a delimiter line


@dataclass(frozen=True)
class Start:
    headers: HeaderBlock
    info: PartInfo
    depth: int
    parent: str | None  # content type of the enclosing multipart, None for the message itself
    leaf: bool  # False for a multipart whose children follow; True when `Data` events follow


@dataclass(frozen=True)
class Data:
    data: bytes


@dataclass(frozen=True)
class End:
    depth: int


Event = Start | Data | End


@dataclass
class _Open:
    boundary: bytes
    content_type: str
    closed: bool = False


class MimeSplitter:
    def __init__(self, max_depth: int = MAX_DEPTH, max_header_bytes: int = MAX_HEADER_BYTES) -> None:
        self._buf = bytearray()
        self._stack: list[_Open] = []
        self._state = "headers"  # headers | body | skip (preamble or epilogue)
        self._fresh = True  # the buffer starts where a body or preamble starts: a delimiter may sit at 0
        self._events: list[Event] = []
        self._max_depth = max_depth
        self._max_header = max_header_bytes

    def feed(self, data: bytes) -> list[Event]:
        self._buf += data
        while self._step(final=False):
            pass
        return self._take()

    def close(self) -> list[Event]:
        """End of input: whatever is open ends here (a missing close delimiter is common)."""
        while self._step(final=True):
            pass
        if self._state == "body":
            self._events.append(End(len(self._stack)))
        while self._stack:
            self._stack.pop()
            self._events.append(End(len(self._stack)))
        self._state = "done"
        return self._take()

    def _take(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    # -- headers -------------------------------------------------------------------------------------------

    def _step(self, final: bool) -> bool:
        if self._state == "headers":
            return self._headers(final)
        if self._state in ("body", "skip"):
            return self._scan(final)
        return False

    def _headers(self, final: bool) -> bool:
        buf = self._buf
        if final and not buf.strip():
            self._state = "skip"  # a delimiter at the very end announced a part that never came
            return False
        end, body = header_end(buf)
        cut = self._delimiter_in(bytes(buf[: end if end >= 0 else len(buf)]), complete=end >= 0 or final)
        if cut is not None:  # no blank line: the headers run straight into the next delimiter
            end = body = cut
            buf[cut:cut] = b"\r\n"
        elif end < 0:
            if not final and len(buf) <= self._max_header:
                return False
            end = body = (buf.rfind(b"\n") + 1) or len(buf)
        block = parse_header_block(bytes(buf[:end]))
        del buf[:body]
        parent = self._stack[-1].content_type if self._stack else None
        info = part_info(block, "message/rfc822" if parent == "multipart/digest" else "text/plain")
        container = info.is_multipart and len(self._stack) < self._max_depth
        self._events.append(Start(block, info, len(self._stack), parent, leaf=not container))
        if container:
            boundary = info.params["boundary"].encode("utf-8", errors="surrogateescape")
            self._stack.append(_Open(boundary, info.content_type))
            self._state = "skip"
        else:
            self._state = "body"
        self._fresh = True
        return True

    def _delimiter_in(self, region: bytes, complete: bool) -> int | None:
        if not self._stack or b"--" not in region:
            return None
        offset = 0
        while offset < len(region):
            newline = region.find(b"\n", offset)
            if newline < 0 and not complete:
                return None
            line = region[offset : newline if newline >= 0 else len(region)]
            if line.startswith(b"--") and self._match(line.rstrip())[0] is not None:
                return offset
            if newline < 0:
                return None
            offset = newline + 1
        return None

    # -- bodies --------------------------------------------------------------------------------------------

    def _match(self, line: bytes) -> tuple[int | None, bool]:
        for level in range(len(self._stack) - 1, -1, -1):
            entry = self._stack[level]
            if entry.closed:
                continue
            if line == b"--" + entry.boundary:
                return level, False
            if line == b"--" + entry.boundary + b"--":
                return level, True
        return None, False

    def _emit(self, count: int) -> None:
        if count <= 0:
            return
        if self._state == "body":
            self._events.append(Data(bytes(self._buf[:count])))
        del self._buf[:count]
        self._fresh = False

    def _scan(self, final: bool) -> bool:
        buf = self._buf
        longest = max((len(e.boundary) for e in self._stack), default=0) + 4 + 128
        pos = 0
        at_start = self._fresh and bool(self._stack)
        while True:
            if at_start and buf.startswith(b"--"):
                line_start = brk = 0
            else:
                i = buf.find(b"\n--", pos)
                if i < 0 or not self._stack:
                    keep = 0 if final else self._tail(buf, at_start)
                    self._emit(len(buf) - keep)
                    return False
                line_start, brk = i + 1, (i - 1 if i > 0 and buf[i - 1] == 13 else i)
            at_start = False
            eol = buf.find(b"\n", line_start)
            if eol < 0 and not final:
                if len(buf) - line_start > longest:
                    pos = line_start
                    continue
                self._emit(brk)
                return False
            end = len(buf) if eol < 0 else eol + 1
            level, closing = self._match(bytes(buf[line_start:end]).rstrip())
            if level is None:
                pos = line_start
                continue
            self._emit(brk)
            del buf[: end - brk]
            self._delimiter(level, closing)
            return True

    def _tail(self, buf: bytearray, at_start: bool) -> int:
        if at_start and len(buf) < 2 and b"--".startswith(bytes(buf)):
            return len(buf)
        for tail in _TAILS:
            if buf.endswith(tail):
                return len(tail)
        return 0

    def _delimiter(self, level: int, closing: bool) -> None:
        if self._state == "body":
            self._events.append(End(len(self._stack)))
        while len(self._stack) > level + 1:
            self._stack.pop()
            self._events.append(End(len(self._stack)))
        if closing:
            self._stack[level].closed = True
            self._state = "skip"
        else:
            self._state = "headers"
        self._fresh = True
