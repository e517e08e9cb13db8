"""Hostile input at the real `scangw http` process on loopback (issue 9 items 3, 4, 5, 11): floods, password
guessing, slow and vanishing clients and awkward file names each end in a clear refusal or a correct job,
with nothing half-stored and the process alive."""

from __future__ import annotations

import json
import socket
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import free_port, gateway_process, poll, run, scangw, services_for


@dataclass
class Door:
    url: str
    env: dict[str, str]
    tmp: Path
    password: str
    proc: object

    def device(self, name: str) -> str:
        out = scangw("devices", "add", name, "--allow-to", "*@example.com", "--json", env=self.env)
        assert out.returncode == 0, out.stderr
        return str(json.loads(out.stdout)["password"])

    def files(self) -> list[Path]:
        root = self.tmp / "spool"
        return [p for p in root.rglob("*") if p.is_file() and "scans" in p.parts] if root.exists() else []

    def job_files(self, job_id: str) -> list[str]:
        async def read() -> list[str]:
            svc = await services_for(self.tmp)
            try:
                job = await svc.jobs.get(job_id)
                assert job is not None
                return [f.name for f in job.files]
            finally:
                await svc.close()

        return run(read())

    def alive(self) -> bool:
        return httpx.get(f"{self.url}/api/health", timeout=5).status_code == 200


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    tmp = tmp_path_factory.mktemp("hostile-http")
    env = {
        "SCANGW_STORAGE": f"local:{tmp / 'spool'}",
        "SCANGW_OUTBOX": str(tmp / "outbox"),
        "SCANGW_MAX_MESSAGE_MB": "2",
        "SCANGW_SENDER": "scanner@example.com",
        "SCANGW_HTTP_TIMEOUT_SECONDS": "2",
    }
    added = scangw("devices", "add", "mfp1", "--allow-to", "*@example.com", "--json", env=env)
    assert added.returncode == 0, added.stderr
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with gateway_process("http", "--listen", f"127.0.0.1:{port}", env=env, health_url=f"{url}/api/health") as proc:
        yield Door(url, env, tmp, json.loads(added.stdout)["password"], proc)


def post(door: Door, files: list[tuple[str, tuple[str, bytes]]], data: dict[str, str], **kw: object) -> httpx.Response:
    return httpx.post(f"{door.url}/api/scans", files=files, data=data, auth=("mfp1", door.password), timeout=60, **kw)


def nothing_new(door: Door, before: list[Path]) -> bool:
    return sorted(door.files()) == sorted(before)


def test_thirty_thousand_recipients_are_refused_at_once(door: Door) -> None:
    before = door.files()
    started = time.monotonic()
    r = post(door, [("file", ("a.pdf", b"%PDF"))], {"to": ",".join(f"u{i}@example.com" for i in range(30_000))})
    assert r.status_code == 400, r.text  # one 600 kB field: too long before it is even split
    r = post(door, [("file", ("a.pdf", b"%PDF"))], {"to": [f"u{i}@example.com" for i in range(2000)]})  # type: ignore[dict-item]
    assert r.status_code == 400 and "at most 100" in r.json()["error"]["message"], r.text
    assert time.monotonic() - started < 10
    r = httpx.put(
        f"{door.url}/api/scans/a.pdf",
        params=[("to", f"u{i}@example.com") for i in range(101)],
        content=b"%PDF",
        auth=("mfp1", door.password),
    )
    assert r.status_code == 400 and "at most 100" in r.text
    assert nothing_new(door, before) and door.alive()


def test_more_than_five_hundred_files_are_refused_and_nothing_is_kept(door: Door) -> None:
    before = door.files()
    files = [("file", (f"p{i}.pdf", b"%PDF-1.4")) for i in range(501)]
    r = post(door, files, {"to": "a@example.com"})
    assert r.status_code == 400 and "at most 500" in r.json()["error"]["message"]
    poll(lambda: nothing_new(door, before), timeout=10, what="the partial upload to be removed")


def test_form_fields_count_against_the_size_limit(door: Door) -> None:
    before = door.files()
    field = b'--b\r\nContent-Disposition: form-data; name="note"\r\n\r\n' + b"y" * 60_000 + b"\r\n"

    def chunked() -> Iterator[bytes]:  # no Content-Length: only counting the bytes as they come can refuse it
        yield b'--b\r\nContent-Disposition: form-data; name="to"\r\n\r\na@example.com\r\n'
        for _ in range(40):  # 2.4 MB of form fields past a 2 MB limit
            yield field
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.pdf"\r\n\r\n%PDF\r\n--b--\r\n'

    r = httpx.post(
        f"{door.url}/api/scans",
        content=chunked(),
        headers={"content-type": "multipart/form-data; boundary=b"},
        auth=("mfp1", door.password),
        timeout=60,
    )
    assert r.status_code == 413, r.text
    assert nothing_new(door, before) and door.alive()


def test_an_undeliverable_recipient_inside_the_policy_is_400_naming_it(door: Door) -> None:
    for bad, shown in [
        ("a\x01b@example.com", "a\\x01b@example.com"),
        ("j\u00fcrgen@example.com", "j\u00fcrgen@example.com"),
        ("a" * 5000 + "@example.com", "aaaa"),
    ]:
        r = httpx.put(f"{door.url}/api/scans/a.pdf", params={"to": bad}, content=b"%PDF", auth=("mfp1", door.password))
        assert r.status_code == 400 and shown in r.json()["error"]["message"], r.text


def test_password_guessing_gets_429_with_retry_after_and_checks_no_password(door: Door) -> None:
    password = door.device("guessed")
    for _ in range(5):
        r = httpx.get(f"{door.url}/api/scans/x", auth=("guessed", "wrong"), timeout=30)
        assert r.status_code == 401
    r = httpx.get(f"{door.url}/api/scans/x", auth=("guessed", password), timeout=30)
    assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60, r.text
    assert httpx.get(f"{door.url}/api/scans/x", auth=("mfp1", door.password)).status_code == 404  # others go on


def test_an_unknown_username_takes_as_long_as_a_wrong_password(door: Door) -> None:
    def timed(user: str) -> float:
        started = time.perf_counter()
        assert httpx.get(f"{door.url}/api/scans/x", auth=(user, "nope"), timeout=30).status_code == 401
        return time.perf_counter() - started

    known = [timed("mfp1") for _ in range(3)]
    unknown = [timed(f"nobody{i}") for i in range(3)]
    # Unknown names answered in 0.5 ms against 130 ms for a known one: device names could be enumerated.
    assert statistics.median(unknown) > 0.4 * statistics.median(known), (known, unknown)


def test_file_names_are_decoded_once_and_keep_their_extension(door: Door) -> None:
    auth = ("mfp1", door.password)
    r = httpx.put(f"{door.url}/api/scans/100%2541.pdf", params={"to": "a@example.com"}, content=b"%PDF", auth=auth)
    assert r.status_code == 202 and door.job_files(r.json()["id"]) == ["100%41.pdf"]
    long_name = "Quarterly report " + "x" * 300 + ".pdf"
    r = httpx.put(f"{door.url}/api/scans/{long_name}", params={"to": "a@example.com"}, content=b"%PDF", auth=auth)
    [name] = door.job_files(r.json()["id"])
    assert name.endswith(".pdf") and len(name) <= 200
    body = (
        b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename*=UTF-8''na%C3%AFve%20scan.pdf\r\n"
        b'Content-Type: application/pdf\r\n\r\n%PDF\r\n--b\r\nContent-Disposition: form-data; name="to"\r\n\r\n'
        b"a@example.com\r\n--b--\r\n"
    )
    r = httpx.post(
        f"{door.url}/api/scans", content=body, headers={"content-type": "multipart/form-data; boundary=b"}, auth=auth
    )
    assert r.status_code == 202 and door.job_files(r.json()["id"]) == ["na\u00efve scan.pdf"]


def test_a_non_ascii_link_token_is_404(door: Door) -> None:
    r = httpx.get(f"{door.url}/api/links/v1.%C3%A9%C3%A9.%C3%A9")
    assert r.status_code == 404 and door.alive()


def test_a_silent_upload_times_out_and_leaves_no_temp_file(door: Door) -> None:
    before = door.files()
    with socket.create_connection(("127.0.0.1", int(door.url.rsplit(":", 1)[1])), timeout=15) as sock:
        auth = httpx.BasicAuth("mfp1", door.password)._auth_header  # type: ignore[attr-defined]
        sock.sendall(
            b"PUT /api/scans/slow.pdf?to=a@example.com HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
            + f"Authorization: {auth}\r\n\r\n".encode()
            + b"%PDF-1.4 partial"
        )
        started = time.monotonic()
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - started < 10
    poll(lambda: nothing_new(door, before), timeout=10, what="the temp file to go")


def test_a_connection_that_never_finishes_its_headers_is_closed(door: Door) -> None:
    with socket.create_connection(("127.0.0.1", int(door.url.rsplit(":", 1)[1])), timeout=15) as sock:
        sock.sendall(b"PUT /api/scans/x.pdf HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        answer = sock.recv(4096)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - started < 10
    assert door.alive()


def test_a_client_vanishing_mid_upload_stores_nothing_and_is_no_storage_error(door: Door) -> None:
    before = door.files()
    with socket.create_connection(("127.0.0.1", int(door.url.rsplit(":", 1)[1])), timeout=15) as sock:
        auth = httpx.BasicAuth("mfp1", door.password)._auth_header  # type: ignore[attr-defined]
        sock.sendall(
            b"PUT /api/scans/gone.pdf?to=a@example.com HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n"
            + f"Authorization: {auth}\r\n\r\n".encode()
            + b"x" * 200_000
        )
        # The door has begun storing the upload (so the test cannot pass by never starting); then the client goes.
        poll(lambda: not nothing_new(door, before), timeout=10, what="the upload to begin")
    poll(lambda: nothing_new(door, before), timeout=10, what="the partial upload to go")
    assert door.alive()


def test_a_disconnect_mid_upload_is_logged_as_the_clients_doing_not_a_storage_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Through the ASGI app in process, so the log records can be read: the client's `http.disconnect` arrives
    after the first chunk. It used to surface as StorageUnavailable, logged at ERROR with a traceback."""
    import asyncio
    import base64
    import logging

    from gateway.intake.http import create_app

    async def go() -> list[dict[str, object]]:
        svc = await services_for(tmp_path)
        _, password = await svc.registry.add("mfp1", allow_to=["*@example.com"], sender="s@example.com")

        async def provider() -> object:
            return svc

        app = create_app(provider)  # type: ignore[arg-type]
        events = [
            {"type": "http.request", "body": b"%PDF-1.4 first chunk", "more_body": True},
            {"type": "http.disconnect"},
        ]
        sent: list[dict[str, object]] = []

        async def receive() -> dict[str, object]:
            return events.pop(0) if events else {"type": "http.disconnect"}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        token = base64.b64encode(f"mfp1:{password}".encode())
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "PUT",
            "scheme": "http",
            "path": "/api/scans/gone.pdf",
            "raw_path": b"/api/scans/gone.pdf",
            "query_string": b"to=a@example.com",
            "root_path": "",
            "headers": [(b"authorization", b"Basic " + token), (b"content-length", b"100000")],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 80),
        }
        try:
            await app(scope, receive, send)
            assert await svc.spool.blobs.list("") == []
            assert await svc.jobs.list() == []
        finally:
            await svc.close()
        return sent

    with caplog.at_level(logging.INFO):
        sent = asyncio.run(go())
    assert sent[0]["status"] == 400
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    assert "StorageUnavailable" not in caplog.text
