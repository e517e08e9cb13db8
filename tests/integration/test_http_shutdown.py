"""`scangw http` stopping while an upload is still arriving (issue 9, item 12): at the stop deadline the upload
is cut with `503` and `Retry-After` (JSON, like every other error), nothing of it is kept, and the process exits
cleanly. Against the real process on loopback, stopped with SIGTERM.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

from gateway.config import BLOB_CONTAINER
from tests.support import added_device_auth, free_port, gateway_process, local_env, poll, scangw


def _read_response(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            piece = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not piece:
            break
        data += piece
        head, _, body = data.partition(b"\r\n\r\n")
        length = [
            int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        ]
        if length and len(body) >= length[0]:
            break
    return data


def test_an_upload_still_running_at_the_stop_deadline_gets_503_with_retry_after(tmp_path: Path) -> None:
    env = local_env(tmp_path, SCANGW_HTTP_STOP_SECONDS="1")
    auth = added_device_auth(env)
    port = free_port()
    blobs = tmp_path / "spool" / BLOB_CONTAINER
    url = f"http://127.0.0.1:{port}/api/health"
    with gateway_process("http", "--listen", f"127.0.0.1:{port}", env=env, health_url=url) as door:
        with socket.create_connection(("127.0.0.1", port)) as upload:
            upload.sendall(
                f"PUT /api/scans/scan.pdf HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n"
                "Content-Type: application/pdf\r\nContent-Length: 2000000\r\n\r\n".encode()
                + b"%PDF" * 25_000
            )
            poll(lambda: list(blobs.glob(".incoming/*.part")), what="the upload to be arriving")
            door.send_signal(signal.SIGTERM)
            answer = _read_response(upload, timeout=20)
        assert door.wait(timeout=30) == 0
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *headers = head.decode("latin-1").split("\r\n")
    assert status.startswith("HTTP/1.1 503"), answer[:500]
    fields = {name.lower(): value.strip() for name, _, value in (h.partition(":") for h in headers)}
    assert fields.get("retry-after", "").isdigit(), headers
    assert fields.get("content-type", "").startswith("application/json"), headers
    error = json.loads(body)["error"]
    assert error["code"] == "shutting_down" and "again" in error["message"]
    jobs = scangw("jobs", "list", "--json", env=env)
    assert json.loads(jobs.stdout) == []
    assert [p.name for p in blobs.iterdir()] == [".incoming"] and list(blobs.glob(".incoming/*")) == []
