"""HTTP intake against the real `scangw http` process on loopback (contract section 4)."""

from __future__ import annotations

import email
import email.policy
import hashlib
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway.core.jobs import JobState
from tests.support import free_port, gateway_process, run, scangw, services_for


@dataclass
class Gateway:
    url: str
    env: dict[str, str]
    tmp: Path
    user: str
    password: str

    def jobs(self) -> list[dict[str, object]]:
        out = scangw("jobs", "list", "--json", env=self.env)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def blobs(self) -> list[Path]:
        root = self.tmp / "spool" / "scans"
        return [p for p in root.rglob("*") if p.is_file() and ".incoming" not in p.parts] if root.exists() else []

    def queue_depth(self) -> int:
        async def count() -> int:
            svc = await services_for(self.tmp)
            try:
                return await svc.spool.queue.count()  # type: ignore[attr-defined,no-any-return]
            finally:
                await svc.close()

        return run(count())


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("http")
    env = {
        "SCANGW_STORAGE": f"local:{tmp / 'spool'}",
        "SCANGW_OUTBOX": str(tmp / "outbox"),
        "SCANGW_MAX_MESSAGE_MB": "2",
        "SCANGW_SENDER": "scanner@contoso.com",
    }
    added = scangw(
        "devices", "add", "mfp1", "--default-to", "me@example.com", "--allow-to", "*@example.com", "--json", env=env
    )
    assert added.returncode == 0, added.stderr
    creds = json.loads(added.stdout)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with gateway_process("http", "--listen", f"127.0.0.1:{port}", env=env, health_url=f"{url}/api/health"):
        yield Gateway(url, env, tmp, creds["username"], creds["password"])


def client(gw: Gateway, auth: bool = True) -> httpx.Client:
    return httpx.Client(base_url=gw.url, auth=(gw.user, gw.password) if auth else None, timeout=30)


def test_put_stores_the_scan_and_queues_a_job(gateway: Gateway) -> None:
    data = os.urandom(300_000)
    with client(gateway) as c:
        r = c.put(
            "/api/scans/Floor%202/scan%20001.pdf", params={"to": "a@example.com", "subject": "Invoice"}, content=data
        )
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "queued"
    job = next(j for j in gateway.jobs() if j["id"] == body["id"])
    assert (job["state"], job["device"], job["to"], job["size"]) == ("queued", "mfp1", ["a@example.com"], len(data))
    stored = [p for p in gateway.blobs() if p.parent.name == body["id"]]
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in stored] == [hashlib.sha256(data).hexdigest()]
    with client(gateway) as c:
        status = c.get(f"/api/scans/{body['id']}")
    assert status.json() == {"id": body["id"], "status": "queued", "error": None}


def test_multipart_post_puts_all_files_in_one_job(gateway: Gateway) -> None:
    """Every file of the form arrives, byte-identical and under its own name, in the one delivered message."""
    pages = {
        "p1.pdf": b"%PDF-1 one" + os.urandom(70_000),
        "p2.jpg": b"\xff\xd8two" + os.urandom(50_000),
        "p3.pdf": b"%PDF-1 three\r\n--not-a-boundary\r\n" + os.urandom(1000),
    }
    kinds = {"pdf": "application/pdf", "jpg": "image/jpeg"}
    files = [("file", (name, data, kinds[name[-3:]])) for name, data in pages.items()]
    with client(gateway) as c:
        r = c.post("/api/scans", files=files, data={"to": "x@example.com, y@example.com", "subject": "Two pages"})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    job = next(j for j in gateway.jobs() if j["id"] == job_id)
    assert job["to"] == ["x@example.com", "y@example.com"]
    assert job["size"] == sum(len(d) for d in pages.values())
    worker = scangw("worker", "--once", env=gateway.env)
    assert worker.returncode == 0, worker.stderr
    delivered = [p for p in (gateway.tmp / "outbox").glob("*.eml") if job_id in p.read_text("latin-1")]
    assert len(delivered) == 1
    message = email.message_from_bytes(delivered[0].read_bytes(), policy=email.policy.default)
    got = {
        part.get_filename(): hashlib.sha256(part.get_payload(decode=True)).hexdigest()
        for part in message.iter_attachments()
    }
    assert got == {name: hashlib.sha256(data).hexdigest() for name, data in pages.items()}


def test_default_recipient_when_to_is_omitted(gateway: Gateway) -> None:
    with client(gateway) as c:
        r = c.put("/api/scans/scan.pdf", content=b"%PDF-1.7 tiny")
    assert r.status_code == 202
    assert next(j for j in gateway.jobs() if j["id"] == r.json()["id"])["to"] == ["me@example.com"]


def test_health_needs_no_auth_and_reveals_nothing(gateway: Gateway) -> None:
    r = httpx.get(f"{gateway.url}/api/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


@pytest.mark.parametrize(("method", "status"), [("OPTIONS", 200), ("HEAD", 200), ("PROPFIND", 207), ("MKCOL", 201)])
def test_webdav_probes(gateway: Gateway, method: str, status: int) -> None:
    with client(gateway) as c:
        r = c.request(method, "/api/scans/folder/")
    assert r.status_code == status
    if method == "OPTIONS":
        assert r.headers["DAV"] == "1" and "PUT" in r.headers["Allow"]
    if method == "PROPFIND":
        assert "multistatus" in r.text


def _refused(gateway: Gateway, response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and len(error["message"]) > 20
    assert "Traceback" not in response.text


def test_bad_input_is_refused_clearly_and_nothing_is_stored(gateway: Gateway) -> None:
    before_jobs, before_blobs, before_queue = len(gateway.jobs()), len(gateway.blobs()), gateway.queue_depth()
    with client(gateway, auth=False) as c:
        r = c.put("/api/scans/a.pdf", content=b"x")
        _refused(gateway, r, 401, "unauthorized")
        assert r.headers["WWW-Authenticate"].startswith("Basic")
        _refused(gateway, c.put("/api/scans/a.pdf", content=b"x", auth=("mfp1", "wrong")), 401, "unauthorized")
        _refused(gateway, c.put("/api/scans/a.pdf", content=b"x", auth=("ghost", "pw")), 401, "unauthorized")
        _refused(gateway, c.get("/api/scans/abc"), 401, "unauthorized")
    with client(gateway) as c:
        _refused(
            gateway,
            c.put("/api/scans/a.pdf", params={"to": "evil@elsewhere.net"}, content=b"x"),
            403,
            "recipient_not_allowed",
        )
        _refused(gateway, c.put("/api/scans/a.pdf", content=b""), 400, "bad_request")
        _refused(gateway, c.put("/api/scans/a.pdf", params={"to": "not an address"}, content=b"x"), 400, "bad_request")
        _refused(gateway, c.put("/api/scans/a.pdf", content=os.urandom(3 * 1024 * 1024)), 413, "too_large")
        broken = c.post(
            "/api/scans",
            content=b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.pdf"\r\n\r\nabc',
            headers={"Content-Type": "multipart/form-data; boundary=xyz"},
        )
        _refused(gateway, broken, 400, "bad_request")
        _refused(gateway, c.post("/api/scans", data={"to": "a@example.com"}), 400, "bad_request")
        _refused(gateway, c.get("/api/scans/000000000000000000000000"), 404, "not_found")
    assert (len(gateway.jobs()), len(gateway.blobs()), gateway.queue_depth()) == (
        before_jobs,
        before_blobs,
        before_queue,
    )


def test_oversize_upload_is_stopped_while_streaming(gateway: Gateway) -> None:
    """No Content-Length (chunked): the limit is enforced on the stream, and the process keeps serving."""

    def body() -> Iterator[bytes]:
        for _ in range(64):  # 4 MiB in all, over the 2 MiB limit
            yield b"\0" * 65536

    before = len(gateway.blobs())
    with client(gateway) as c:
        r = c.put("/api/scans/big.pdf", content=body())
    _refused(gateway, r, 413, "too_large")
    assert len(gateway.blobs()) == before
    assert httpx.get(f"{gateway.url}/api/health").status_code == 200


def test_path_traversal_in_file_name_stays_a_file_name(gateway: Gateway) -> None:
    with client(gateway) as c:
        r = c.put("/api/scans/..%2F..%2Fetc%2Fpasswd", content=b"data")
        r2 = c.post("/api/scans", files=[("file", ("../../evil.sh", b"echo", "text/plain"))])
    assert r.status_code == 202 and r2.status_code == 202
    out = scangw("jobs", "show", r2.json()["id"], "--json", env=gateway.env)
    assert json.loads(out.stdout)["files"] == ["evil.sh"]
    assert not (gateway.tmp / "etc").exists()
    assert all(gateway.tmp / "spool" in p.parents for p in gateway.blobs())


def test_huge_headers_are_refused_and_the_server_keeps_serving(gateway: Gateway) -> None:
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"PUT /api/scans/a.pdf HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
        reply = s.recv(1024)
    assert reply.startswith(b"HTTP/1.1 4") or reply == b""
    assert httpx.get(f"{gateway.url}/api/health").status_code == 200


def test_revoked_device_is_refused_at_the_next_request(gateway: Gateway) -> None:
    added = scangw("devices", "add", "temp1", "--default-to", "me@example.com", "--json", env=gateway.env)
    creds = json.loads(added.stdout)
    auth = (creds["username"], creds["password"])
    assert httpx.put(f"{gateway.url}/api/scans/a.pdf", content=b"1", auth=auth).status_code == 202
    assert scangw("devices", "revoke", "temp1", env=gateway.env).returncode == 0
    assert httpx.put(f"{gateway.url}/api/scans/a.pdf", content=b"1", auth=auth).status_code == 401


def test_status_is_private_to_the_device(gateway: Gateway) -> None:
    other = json.loads(
        scangw("devices", "add", "other1", "--default-to", "me@example.com", "--json", env=gateway.env).stdout
    )
    with client(gateway) as c:
        job_id = c.put("/api/scans/a.pdf", content=b"mine").json()["id"]
    theirs = httpx.get(f"{gateway.url}/api/scans/{job_id}", auth=(other["username"], other["password"]))
    unknown = httpx.get(f"{gateway.url}/api/scans/{'f' * len(job_id)}", auth=(other["username"], other["password"]))
    assert theirs.status_code == unknown.status_code == 404
    assert job_id not in theirs.text and "mine" not in theirs.text
    assert theirs.json().keys() == unknown.json().keys()  # a job of another device looks like no job at all
    with client(gateway) as c:
        own = c.get(f"/api/scans/{job_id}")
    assert own.status_code == 200 and own.json()["id"] == job_id
    assert JobState(own.json()["status"]) in (JobState.QUEUED, JobState.SENDING, JobState.SENT)
