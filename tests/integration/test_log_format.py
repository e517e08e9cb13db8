"""The real `scangw http` writes one JSON object per line with SCANGW_LOG_FORMAT=json, and a hostile request
(ESC, CR LF, a forged event in the URL path and the username) cannot add a line or a field (issues 9 and 12)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.support import free_port, gateway_process, local_env

#: The router refuses a LF in a path (404 before any log line), so CR and U+2028 carry the forged line here.
FORGED = "%1b[2J%0d%e2%80%a82026-12-01 ERROR scangw.delivery event=queue.poison"


def test_json_lines_with_hostile_input_stay_one_object_per_event(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = local_env(tmp_path, SCANGW_LOG_FORMAT="json")
    with gateway_process("http", "--listen", f"127.0.0.1:{port}", env=env, health_url=f"{url}/api/health") as proc:
        r = httpx.put(f"{url}/api/scans/{FORGED}.pdf", content=b"x", auth=("mfp\x1b\r\nevent=queue.poison", "pw"))
        assert r.status_code == 401
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    lines = [line for line in err.splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]  # every line parses: nothing broke out of its object
    assert not any(c in err for c in "\x1b\r\u2028")
    [refused] = [e for e in events if e.get("event") == "http.auth"]
    assert refused["level"] == "WARNING" and refused["result"] == "failed" and refused["method"] == "PUT"
    assert "\\x1b[2J" in refused["path"] and "\\u2028" in refused["path"] and "\\x1b" in refused["user"]
    assert not any(e.get("event") == "queue.poison" for e in events)
