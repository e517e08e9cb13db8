"""Incremental Content-Transfer-Encoding decoders: feed arbitrary chunks, get decoded bytes back.

A 100 MB scan arrives base64-encoded in chunks that cut lines, quanta and `=XX` escapes anywhere; each
decoder keeps only the few bytes it cannot decode yet, so memory stays flat whatever the message size.
"""

from __future__ import annotations

import binascii
import re
from typing import Protocol

_NOT_BASE64 = bytes(b for b in range(256) if not (chr(b).isalnum() and b < 128) and b not in b"+/=")
_LONG_LINE = 64 * 1024


class Decoder(Protocol):
    def feed(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


class Identity:
    """7bit, 8bit, binary and anything unknown: the bytes as they are."""

    def feed(self, data: bytes) -> bytes:
        return data

    def finish(self) -> bytes:
        return b""


class Base64:
    """Tolerant: ignores line breaks and junk characters, survives padding in mid-stream (concatenated blocks)."""

    def __init__(self) -> None:
        self._pending = b""

    @staticmethod
    def _decode(quanta: bytes) -> bytes:
        quanta = quanta[: len(quanta) - len(quanta) % 4] if len(quanta) % 4 == 1 else quanta
        quanta += b"=" * (-len(quanta) % 4)
        return binascii.a2b_base64(quanta) if quanta else b""

    def feed(self, data: bytes) -> bytes:
        data = self._pending + data.translate(None, _NOT_BASE64)
        out: list[bytes] = []
        while True:
            pad = data.find(b"=")
            if pad < 0:
                whole = len(data) - len(data) % 4
                out.append(self._decode(data[:whole]))
                self._pending = data[whole:]
                return b"".join(out)
            out.append(self._decode(data[:pad]))
            data = data[pad:].lstrip(b"=")

    def finish(self) -> bytes:
        rest, self._pending = self._pending, b""
        return self._decode(rest)


class QuotedPrintable:
    """Decodes whole lines; holds back an unfinished line (or the last bytes of a very long one)."""

    _TRAILING = re.compile(rb"[ \t]+(\r?\n)")

    def __init__(self) -> None:
        self._pending = b""

    @classmethod
    def _decode(cls, data: bytes) -> bytes:
        return binascii.a2b_qp(cls._TRAILING.sub(rb"\1", data))

    def feed(self, data: bytes) -> bytes:
        data = self._pending + data
        cut = data.rfind(b"\n") + 1
        if cut == 0 and len(data) > _LONG_LINE:
            escape = data.rfind(b"=", len(data) - 3)  # never split "=XX" or a soft line break
            cut = escape if escape >= 0 else len(data)
        self._pending = data[cut:]
        return self._decode(data[:cut])

    def finish(self) -> bytes:
        rest, self._pending = self._pending, b""
        return self._decode(rest)


def decoder_for(encoding: str) -> Decoder:
    if encoding == "base64":
        return Base64()
    if encoding == "quoted-printable":
        return QuotedPrintable()
    return Identity()
