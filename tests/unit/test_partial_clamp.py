"""message/partial memory bomb (issue 9 item 1): what a fragment may claim is clamped, at the door and again in
the worker's reassembly, so one hostile fragment can neither grow the worker nor loop its job forever."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.core.errors import MalformedInput, PermanentDeliveryError
from gateway.core.jobs import Job
from gateway.core.mime.headers import parse_header_block
from gateway.core.mime.partial import MAX_TOTAL, partial_info
from gateway.delivery.partial import PREFIX, Fragments, Wait
from tests.support import services_for


def header(params: str) -> bytes:
    return f"Content-Type: message/partial; {params}\r\n".encode()


@pytest.mark.parametrize(
    "params",
    [
        'id="a"; number=1; total=1000000000000',
        'id="a"; number=1; total=101',
        'id="a"; number=101',
        'id="a"; number=0; total=3',
        'id="a"; number=4; total=3',
        'id="a"; number=\u00b2; total=3',  # '²'.isdigit() is True, int('²') raises
        'id="a"; number=\u0661; total=3',  # Arabic-Indic one: isdigit() and int() both take it
        'id="a"; number=1; total=\uff13',  # fullwidth three
        'id="a"; number=-1; total=3',
        'id=""; number=1; total=3',
        "number=1; total=3",
    ],
)
def test_a_fragment_claiming_what_no_device_sends_is_refused(params: str) -> None:
    with pytest.raises(MalformedInput, match="message/partial"):
        partial_info(parse_header_block(header(params)))


def test_ordinary_fragments_are_still_recognised() -> None:
    info = partial_info(parse_header_block(header(f'id="set-1@mfp"; number=2; total={MAX_TOTAL}')))
    assert info is not None and (info.number, info.total) == (2, MAX_TOTAL)
    info = partial_info(parse_header_block(header('id="set-1@mfp"; number=1')))
    assert info is not None and info.total is None


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


def fragment(number: int, total: int | str) -> bytes:
    return (
        f'From: a@contoso.com\r\nSubject: [{number}/{total}]\r\nContent-Type: message/partial; id="bomb"; '
        f"number={number}; total={total}\r\n\r\nSubject: scan\r\n\r\nbody\r\n"
    ).encode()


async def accepted(tmp: Path, data: bytes) -> tuple[object, Job, Fragments]:
    """A job holding `data` as if accepted before the door checked fragments (the spool, not the door)."""
    svc = await services_for(tmp)
    device = (await svc.registry.add("fx", sender="scanner@contoso.com"))[0]
    job = await svc.intake().accept_mime(device, ("alice@contoso.com",), _chunks(data))
    return svc, job, Fragments(svc.spool.blobs, svc.jobs, 30, poll_seconds=0.1)


def test_the_worker_fails_an_already_queued_bomb_instead_of_waiting_or_growing(tmp_path: Path) -> None:
    async def go() -> None:
        svc, job, fragments = await accepted(tmp_path, fragment(1, 1000000000000))
        try:
            started = time.monotonic()
            with pytest.raises(PermanentDeliveryError, match="message/partial"):
                await fragments.explode(job)
            assert time.monotonic() - started < 2
        finally:
            await svc.close()  # type: ignore[attr-defined]

    asyncio.run(go())


def test_reassembly_ignores_markers_parked_before_the_clamp(tmp_path: Path) -> None:
    """A set whose marker (written by an older worker) claims two million parts: the reassembly must not build a
    set of two million numbers; the valid fragment 1 waits for its real siblings with flat memory."""

    async def go() -> None:
        svc, job, fragments = await accepted(tmp_path, fragment(1, 3))
        try:
            import hashlib

            key = hashlib.sha256(f"{job.device}\0bomb".encode()).hexdigest()[:32]
            await svc.spool.blobs.write(  # type: ignore[attr-defined]
                f"{PREFIX}/{key}/00002-2000000-{'f' * 24}-{int(time.time() * 1000)}", _chunks(b"")
            )
            tracemalloc.start()
            try:
                outcome = await fragments.explode(job)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert isinstance(outcome, Wait)
            assert peak < 20 * 1024 * 1024, peak
        finally:
            await svc.close()  # type: ignore[attr-defined]

    asyncio.run(go())


def test_a_charset_label_with_a_nul_is_an_unknown_charset_not_a_crash() -> None:
    """Found by the bad-input corpus: `charset="utf-8\\0"` raised ValueError from codecs.lookup, and the job
    was retried as an internal error for a day instead of being delivered."""
    from gateway.core.mime.charsets import decode_bytes

    assert decode_bytes(b"body", "utf-8\x00") == "body"
