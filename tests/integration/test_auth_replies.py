"""`454 4.7.0` at AUTH means two different things, and the device's log must tell them apart (issue 12 item 11):
too many failed logins (check the password) and a device registry that storage could not reach (wait)."""

from __future__ import annotations

import base64
import json
import smtplib
from pathlib import Path

import httpx
import pytest

from tests.integration.azurite import required_azurite, running_azurite
from tests.support import free_port, gateway_process, listening, poll, scangw


@pytest.mark.slow
@pytest.mark.azurite
def test_registry_outage_and_too_many_failures_answer_distinguishable_454s(tmp_path: Path) -> None:
    binary = required_azurite()
    local = {"SCANGW_STORAGE": f"local:{tmp_path / 'spool'}", "SCANGW_OUTBOX": str(tmp_path / "outbox")}
    assert scangw("devices", "add", "mfp", env=local).returncode == 0
    port = free_port()
    with gateway_process("smtp", "--listen", f"127.0.0.1:{port}", env=local):
        poll(lambda: listening(port), timeout=30, what="the SMTP door")
        replies = []
        for _ in range(6):
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
                client.ehlo()
                replies.append(client.docmd("AUTH PLAIN", "AG1mcAB3cm9uZw=="))  # mfp / wrong
    throttled = replies[-1]
    assert throttled[0] == 454, replies
    port = free_port()
    with running_azurite(binary, tmp_path) as conn:
        env = {"SCANGW_STORAGE": conn, "SCANGW_OUTBOX": str(tmp_path / "outbox")}
        password = json.loads(scangw("devices", "add", "mfp", "--json", env=env).stdout)["password"]
        door = gateway_process("smtp", "--listen", f"127.0.0.1:{port}", env=env)
        proc = door.__enter__()
        poll(lambda: listening(port), timeout=30, what="the SMTP door")
    try:  # Azurite is gone: the registry cannot be read
        with smtplib.SMTP("127.0.0.1", port, timeout=120) as client:
            client.ehlo()
            outage = client.docmd("AUTH PLAIN", base64.b64encode(f"\0mfp\0{password}".encode()).decode())
    finally:
        door.__exit__(None, None, None)
    assert proc.returncode == 0
    assert outage[0] == 454, outage
    assert throttled[1] != outage[1]
    assert b"failed logins" in throttled[1] and b"password" in throttled[1]
    assert b"registry" in outage[1] and b"storage" in outage[1] and b"failed logins" not in outage[1]


def test_an_http_401_log_line_names_the_username_and_the_client_address(tmp_path: Path) -> None:
    env = {"SCANGW_STORAGE": f"local:{tmp_path / 'spool'}", "SCANGW_OUTBOX": str(tmp_path / "outbox")}
    assert scangw("devices", "add", "mfp", env=env).returncode == 0
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with gateway_process("http", "--listen", f"127.0.0.1:{port}", env=env, health_url=f"{url}/api/health") as proc:
        r = httpx.put(f"{url}/api/scans/a.pdf", content=b"%PDF", auth=("mfp", "Wrong-Secret-42"))
        assert r.status_code == 401
    assert proc.stderr is not None
    [line] = [line for line in proc.stderr.read().splitlines() if "http.auth" in line]
    assert "peer=127.0.0.1" in line and "mfp" in line and "result=failed" in line
    assert "Wrong-Secret-42" not in line
