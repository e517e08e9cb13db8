"""What the SMTP door checks in a message while it streams by: only its top header block, only what the
delivery side could never handle. Today that is a `message/partial` fragment claiming more than the
reassembly allows (issue 9 item 1): refused before the `250`, so it never becomes a job that loops.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

from gateway.core.mime.headers import MAX_HEADER_BYTES, header_end, parse_header_block
from gateway.core.mime.partial import partial_info


def check_top_headers(raw: bytes) -> None:
    """Raise an InputError (BadFragment) for a header block the delivery side must not be handed."""
    partial_info(parse_header_block(raw))


async def screened(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """The message unchanged; its header block (at most MAX_HEADER_BYTES) is held until complete and checked."""
    held = bytearray()
    checked = False
    async for chunk in chunks:
        if checked:
            yield chunk
            continue
        held += chunk
        end, _ = header_end(held)
        if end < 0 and len(held) <= MAX_HEADER_BYTES:
            continue
        check_top_headers(bytes(held[: end if end >= 0 else MAX_HEADER_BYTES]))
        checked = True
        yield bytes(held)
        held.clear()
    if not checked and held:
        check_top_headers(bytes(held))
        yield bytes(held)
