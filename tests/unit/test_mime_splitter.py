"""The incremental MIME splitter and transfer decoders give the same result however the bytes are chunked."""

from __future__ import annotations

import base64
import quopri
import random
from collections.abc import Callable

import pytest

from gateway.core.mime.splitter import Data, End, MimeSplitter, Start
from gateway.core.mime.transfer import Base64, QuotedPrintable

NESTED = (
    b'From: a@b.c\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\npreamble --XX not a delimiter\r\n--XX\r\n'
    b"Content-Type: multipart/alternative; boundary=YY\r\n\r\n--YY\r\nContent-Type: text/plain\r\n\r\n"
    b"hello\r\n-- \r\nsignature\r\n--YYY not ours\r\n--YY\r\nContent-Type: text/html\r\n\r\n<b>hi</b>\r\n--YY--\r\n"
    b"--XX\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0x\r\nLjQK\r\n"
    b"--XX\r\nContent-Type: text/plain\r\n--XX--\r\nepilogue\r\n--XX\r\nafter the end\r\n"
)


def split(message: bytes, size: Callable[[], int]) -> list[tuple[str, object]]:
    splitter = MimeSplitter()
    events = []
    position = 0
    while position < len(message):
        n = size()
        events += splitter.feed(message[position : position + n])
        position += n
    events += splitter.close()
    merged: list[tuple[str, object]] = []
    for event in events:
        if isinstance(event, Data):
            if merged and merged[-1][0] == "data":
                merged[-1] = ("data", merged[-1][1] + event.data)  # type: ignore[operator]
            else:
                merged.append(("data", event.data))
        elif isinstance(event, Start):
            merged.append(("start", (event.info.content_type, event.depth, event.leaf)))
        elif isinstance(event, End):
            merged.append(("end", event.depth))
    return merged


def test_nested_multiparts_split_into_leaf_bodies_without_delimiter_line_breaks() -> None:
    assert split(NESTED, lambda: 10**9) == [
        ("start", ("multipart/mixed", 0, False)),
        ("start", ("multipart/alternative", 1, False)),
        ("start", ("text/plain", 2, True)),
        ("data", b"hello\r\n-- \r\nsignature\r\n--YYY not ours"),
        ("end", 2),
        ("start", ("text/html", 2, True)),
        ("data", b"<b>hi</b>"),
        ("end", 2),
        ("end", 1),
        ("start", ("application/pdf", 1, True)),
        ("data", b"JVBERi0x\r\nLjQK"),
        ("end", 1),
        ("start", ("text/plain", 1, True)),  # a part whose headers run into the next delimiter
        ("end", 1),
        ("end", 0),
    ]


@pytest.mark.parametrize("largest", [1, 2, 3, 5, 17, 64])
def test_boundaries_across_chunk_edges_change_nothing(largest: int) -> None:
    rng = random.Random(largest)
    expected = split(NESTED, lambda: 10**9)
    for _ in range(50):
        assert split(NESTED, lambda: rng.randint(1, largest)) == expected
    lf = NESTED.replace(b"\r\n", b"\n")
    assert split(lf, lambda: rng.randint(1, largest)) == split(lf, lambda: 10**9)


def test_missing_close_delimiter_and_single_part_messages() -> None:
    unterminated = b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n\r\nbody\r\n"
    assert split(unterminated, lambda: 4) == [
        ("start", ("multipart/mixed", 0, False)),
        ("start", ("text/plain", 1, True)),
        ("data", b"body\r\n"),
        ("end", 1),
        ("end", 0),
    ]
    single = b"Content-Type: application/pdf\r\n\r\n--not a boundary\r\n%PDF"
    assert split(single, lambda: 3) == [
        ("start", ("application/pdf", 0, True)),
        ("data", b"--not a boundary\r\n%PDF"),
        ("end", 0),
    ]


def test_base64_decoder_survives_any_chunking_and_padding_in_mid_stream() -> None:
    data = random.Random(1).randbytes(50_000)
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
    rng = random.Random(2)
    for _ in range(20):
        decoder, out, position = Base64(), [], 0
        while position < len(encoded):
            n = rng.randint(1, 3000)
            out.append(decoder.feed(encoded[position : position + n]))
            position += n
        assert b"".join(out) + decoder.finish() == data
    joined = Base64()
    assert (
        joined.feed(base64.b64encode(b"ab") + b"\r\n" + base64.b64encode(b"cde") + b"\r\n!*\r\n") + joined.finish()
        == b"abcde"
    )


def test_quoted_printable_decoder_keeps_escapes_and_soft_breaks_whole() -> None:
    text = ("Grüße = Straße, ligne très longue " * 40 + "\n") * 30
    encoded = quopri.encodestring(text.encode()).replace(b"\n", b"\r\n")
    rng = random.Random(3)
    for _ in range(20):
        decoder, out, position = QuotedPrintable(), [], 0
        while position < len(encoded):
            n = rng.randint(1, 200)
            out.append(decoder.feed(encoded[position : position + n]))
            position += n
        assert b"".join(out) + decoder.finish() == text.encode().replace(b"\n", b"\r\n")
