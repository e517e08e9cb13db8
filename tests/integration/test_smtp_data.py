"""The streaming DATA reader against a line-by-line reference of aiosmtpd's rules, on random byte soups fed in
random slices through a tiny stream buffer: same content, same byte count, same leftover for the next command."""

from __future__ import annotations

import asyncio
import random

import pytest

from gateway.core.errors import MessageTooLarge
from gateway.intake.smtp_data import DataReader

PIECES = [b"a", b".", b"\r", b"\n", b"\r\n", b"\r\n.", b"\n.", b".\r\n", b"..", b"xyz" * 30]


def reference(stream: bytes) -> tuple[bytes, int, bytes]:
    """Lines end at CRLF only; a line that is exactly "." ends DATA; a leading "." is dropped; LF -> CRLF."""
    position, received = 0, 0
    out: list[bytes] = []
    while True:
        end = stream.index(b"\r\n", position) + 2
        line, position = stream[position:end], end
        if line == b".\r\n":
            return b"".join(out), received, stream[position:]
        received += len(line)
        line = line[1:] if line.startswith(b".") else line
        out.append(line[:-2].replace(b"\n", b"\r\n") + b"\r\n")


async def read(stream: bytes, slices: random.Random, limit: int = 10**9) -> tuple[bytes, int, bytes]:
    reader = asyncio.StreamReader(limit=64)

    async def feed() -> None:
        position = 0
        while position < len(stream):
            n = slices.randint(1, 100)
            reader.feed_data(stream[position : position + n])
            position += n
            await asyncio.sleep(0)
        reader.feed_eof()

    feeder = asyncio.create_task(feed())
    data = DataReader(reader, limit)
    try:
        content = b"".join([chunk async for chunk in data.chunks()])
    finally:
        if not data.ended:
            await data.drain(10**9)
        rest = await reader.read()
        await feeder
    return content, data.received, rest


def test_block_reader_matches_the_line_rules_on_random_input() -> None:
    rng = random.Random(2024)
    for _ in range(3000):
        stream = b"".join(rng.choice(PIECES) for _ in range(rng.randint(0, 40))) + b"\r\n.\r\nQUIT\r\n"
        assert asyncio.run(read(stream, rng)) == reference(stream), stream


def test_over_the_limit_raises_and_drain_still_finds_the_end() -> None:
    async def scenario() -> tuple[int, bytes]:
        reader = asyncio.StreamReader(limit=64)
        reader.feed_data(b"x" * 5000 + b"\r\n.\r\nNOOP\r\n")
        reader.feed_eof()
        data = DataReader(reader, 1000)
        with pytest.raises(MessageTooLarge):
            async for _ in data.chunks():
                pass
        assert await data.drain(10**9)
        return data.received, await reader.read()

    assert asyncio.run(scenario()) == (5002, b"NOOP\r\n")
