"""Streaming multipart/form-data: file parts flow straight into the spool, never whole into memory.

python-multipart's parser is push-style (callbacks); this turns it into a pull-style async iterator of
parts so `accept_files` can stream each file while the request body is still arriving.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from gateway.core.errors import MalformedInput
from gateway.core.mime.params import parse_structured

#: Text fields (to, subject, body) are small; a larger one is a malformed or hostile request.
MAX_FIELD_BYTES = 64 * 1024
#: RFC 2046: a boundary is 1 to 70 characters; python-multipart fails on much longer ones with a plain error.
MAX_BOUNDARY = 70


@dataclass
class _Event:
    kind: str  # "begin", "data", "end", "finish"
    data: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class _Collector:
    def __init__(self) -> None:
        self.events: list[_Event] = []
        self._headers: dict[str, str] = {}
        self._field = b""
        self._value = b""

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._begin,
            "on_part_data": lambda d, s, e: self.events.append(_Event("data", bytes(d[s:e]))),
            "on_part_end": lambda: self.events.append(_Event("end")),
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": lambda: self.events.append(_Event("begin", headers=self._headers)),
            "on_end": lambda: self.events.append(_Event("finish")),
        }

    def _begin(self) -> None:
        self._headers = {}

    def _header_field(self, d: bytes, s: int, e: int) -> None:
        self._field += d[s:e]

    def _header_value(self, d: bytes, s: int, e: int) -> None:
        self._value += d[s:e]

    def _header_end(self) -> None:
        # latin-1 keeps the raw bytes (browsers and devices send UTF-8 file names unescaped); the file name is
        # decoded from those bytes later, so nothing is lost to a wrong guess here.
        self._headers[self._field.decode("latin-1").lower()] = self._value.decode("latin-1")
        self._field = self._value = b""


@dataclass
class Part:
    name: str
    filename: str | None
    content_type: str | None
    chunks: AsyncIterator[bytes]


class MultipartReader:
    """Yields parts in order; each part's chunks must be consumed (or drained) before the next part."""

    def __init__(self, content_type: str, body: AsyncIterator[bytes]) -> None:
        ctype, params = parse_options_header(content_type)
        boundary = params.get(b"boundary")
        if ctype != b"multipart/form-data" or not boundary:
            raise MalformedInput("Expected multipart/form-data with a boundary, or use PUT with the file as the body.")
        if len(boundary) > MAX_BOUNDARY or any(b < 0x20 or b > 0x7E for b in boundary):
            raise MalformedInput(f"The multipart boundary must be 1 to {MAX_BOUNDARY} printable characters (RFC 2046).")
        self._collector = _Collector()
        self._parser = MultipartParser(boundary, self._collector.callbacks())  # type: ignore[arg-type]
        self._body = body
        self._finished = False

    async def _next_event(self) -> _Event:
        while not self._collector.events:
            if self._finished:
                raise MalformedInput("The multipart body ended early: the upload was cut off or malformed.")
            try:
                chunk = await anext(self._body)
            except StopAsyncIteration:
                self._finished = True
                self._parser.finalize()
                continue
            try:
                self._parser.write(chunk)
            except MultipartParseError as exc:
                raise MalformedInput(f"The multipart body is malformed: {exc}") from None
        return self._collector.events.pop(0)

    async def _part_chunks(self) -> AsyncIterator[bytes]:
        while True:
            event = await self._next_event()
            if event.kind == "data":
                yield event.data
            elif event.kind == "end":
                return
            else:
                raise MalformedInput("The multipart body is malformed: a part has no end.")

    async def parts(self) -> AsyncIterator[Part]:
        while True:
            event = await self._next_event()
            if event.kind == "finish":
                return
            if event.kind != "begin":
                raise MalformedInput("The multipart body is malformed.")
            # The MIME parameter parser: RFC 2231/5987 `filename*` (alone or beside `filename`), continuations,
            # charsets, encoded-words; a plain `filename` is taken as written (never URL-decoded).
            _, params = parse_structured(event.headers.get("content-disposition", "").encode("latin-1"))
            name = params.get("name", "")
            filename = params.get("filename")
            chunks = self._part_chunks()
            content_type = event.headers.get("content-type")
            yield Part(
                name,
                filename,
                content_type.encode("latin-1").decode("utf-8", "replace") if content_type else None,
                chunks,
            )
            async for _ in chunks:  # drain whatever the consumer left unread
                pass


async def read_field(part: Part) -> str:
    data = b""
    async for chunk in part.chunks:
        data += chunk
        if len(data) > MAX_FIELD_BYTES:
            raise MalformedInput(f"The form field '{part.name}' is too long.")
    return data.decode("utf-8", "replace").strip()
