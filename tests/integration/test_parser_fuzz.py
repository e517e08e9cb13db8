"""A bounded-time fuzz of the SMTP and HTTP parsers (issue 9, Tests): random sessions against the real SMTP door
on loopback and random multipart requests against the real HTTP app. Short by default so CI stays quick;
`SCANGW_FUZZ_EXAMPLES=5000` (or `-m fuzz` in a nightly run) makes it a long one. Every input must end in a
clear answer, and the door must still serve a good session afterwards."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.intake.http import create_app
from gateway.services import Services
from tests.integration.test_smtp_harness import USER, Dialogue, SmtpRun, running_smtp
from tests.support import run, services_for

EXAMPLES = int(os.environ.get("SCANGW_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)

VERBS = [
    b"EHLO",
    b"HELO",
    b"MAIL FROM:",
    b"RCPT TO:",
    b"DATA",
    b"RSET",
    b"NOOP",
    b"AUTH PLAIN",
    b"AUTH LOGIN",
    b"QUIT",
    b"BDAT",
    b"STARTTLS",
]
TOKENS = st.one_of(
    st.sampled_from(VERBS),
    st.binary(max_size=80),
    st.sampled_from([b"<a@contoso.com>", b"<>", b"\r\n", b"\n", b".\r\n", b"\x00", b" SIZE=999999999999", b"=" * 3]),
)
SESSIONS = st.lists(st.lists(TOKENS, max_size=6).map(b" ".join), min_size=1, max_size=12)


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpRun]:
    with running_smtp(tmp_path_factory.mktemp("fuzz-smtp")) as smtp:
        yield smtp


def session(address: tuple[str, int], lines: list[bytes]) -> list[bytes]:
    replies = []
    with socket.create_connection(address, timeout=10) as sock:
        sock.settimeout(2)
        reader = sock.makefile("rb")
        try:
            replies.append(reader.readline(100_000))
            for line in lines:
                sock.sendall(line + b"\r\n")
                replies.append(reader.readline(100_000))
        except OSError:
            pass  # a timeout (DATA waiting for its dot) or the door closing: both are answers
    return replies


def test_random_smtp_sessions_get_clear_replies_and_the_door_keeps_serving(door: SmtpRun) -> None:
    @FUZZ
    @given(SESSIONS)
    def fuzz(lines: list[bytes]) -> None:
        for reply in session(door.plain, lines):
            assert reply == b"" or (reply[:3].isdigit() and reply.isascii() and b"Traceback" not in reply), reply

    fuzz()
    talk = Dialogue(door.plain)
    talk.ask("EHLO x")
    assert talk.ask("AUTH PLAIN " + base64.b64encode(f"\0{USER}\0{door.password}".encode()).decode()).startswith("235")


PART = st.builds(
    lambda disposition, ctype, body: b"Content-Disposition: " + disposition + b"\r\n" + ctype + b"\r\n" + body,
    st.one_of(
        st.just(b'form-data; name="file"; filename="a.pdf"'),
        st.just(b'form-data; name="to"'),
        st.binary(max_size=120),
        st.builds(lambda v: b'form-data; name="file"; filename*=' + v, st.binary(max_size=60)),
    ),
    st.one_of(
        st.just(b""),
        st.just(b"Content-Type: application/pdf"),
        st.binary(max_size=60).map(lambda v: b"Content-Type: " + v),
    ),
    st.one_of(st.just(b"\r\n%PDF"), st.just(b"\r\na@contoso.com"), st.binary(max_size=300)),
)
BODIES = st.builds(
    lambda parts, end, junk: b"".join(b"--b\r\n" + p + b"\r\n" for p in parts) + end + junk,
    st.lists(PART, max_size=5),
    st.sampled_from([b"--b--\r\n", b"", b"--b", b"--c--\r\n"]),
    st.binary(max_size=50),
)


def test_random_multipart_requests_never_get_a_500(tmp_path: Path) -> None:
    async def prepare() -> tuple[Services, str]:
        svc = await services_for(tmp_path)
        _, password = await svc.registry.add("mfp1", allow_to=["*@contoso.com"], sender="scanner@contoso.com")
        return svc, password

    svc, password = run(prepare())

    async def provider() -> Services:
        return svc

    app = create_app(provider)

    async def send(body: bytes, ctype: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return await client.post(
                "/api/scans", content=body, headers={"content-type": ctype}, auth=("mfp1", password), timeout=30
            )

    loop = asyncio.new_event_loop()
    try:

        @FUZZ
        @given(
            BODIES,
            st.sampled_from(
                ["multipart/form-data; boundary=b", 'multipart/form-data; boundary="b"', "multipart/form-data"]
            ),
        )
        def fuzz(body: bytes, ctype: str) -> None:
            r = loop.run_until_complete(send(body, ctype))
            assert r.status_code in (202, 400, 403, 408, 413), (r.status_code, r.text[:300])

        fuzz()
    finally:
        loop.run_until_complete(svc.close())
        loop.close()
