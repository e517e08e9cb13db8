"""Seeing what happens (issue 12 item 8) through the real processes: `jobs list` is a table with time, age,
device, subject (SMTP jobs too), state and reason; `jobs retry ID --now` runs a waiting job without its wait."""

from __future__ import annotations

import json
import smtplib
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import httpx

from tests.integration.identityless import identityless_env
from tests.support import ROOT, free_port, gateway_process, local_env, poll, scangw


def _json_jobs(env: dict[str, str]) -> list[dict[str, object]]:
    out = scangw("jobs", "list", "--json", env=env)
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout))


def test_jobs_list_is_a_table_with_the_subject_of_smtp_and_http_jobs(tmp_path: Path) -> None:
    env = local_env(tmp_path)
    password = json.loads(
        scangw("devices", "add", "floor2", "--default-to", "me@example.com", "--json", env=env).stdout
    )["password"]
    smtp_port, http_port = free_port(), free_port()
    args = ("dev", "--smtp-listen", f"127.0.0.1:{smtp_port}", "--http-listen", f"127.0.0.1:{http_port}")
    url = f"http://127.0.0.1:{http_port}"
    with gateway_process(*args, env=env, cwd=tmp_path, health_url=f"{url}/api/health"):
        r = httpx.put(
            f"{url}/api/scans/a.pdf", params={"subject": "Invoice 7"}, content=b"%PDF", auth=("floor2", password)
        )
        assert r.status_code == 202, r.text
        message = EmailMessage()
        message["From"] = "scanner@printer.local"
        message["To"] = "me@example.com"
        message["Subject"] = "Quarterly report"
        message.set_content("see attachment")
        message.add_attachment(b"%PDF", maintype="application", subtype="pdf", filename="q.pdf")
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
            client.login("floor2", password)
            client.send_message(message)
        poll(lambda: len([j for j in _json_jobs(env) if j["state"] == "sent"]) == 2, timeout=60, what="two sent")
    assert {j["subject"] for j in _json_jobs(env)} == {"Invoice 7", "Quarterly report"}
    table = scangw("jobs", "list", env=env).stdout.splitlines()
    assert table[0].split() == ["ID", "TIME", "(UTC)", "AGE", "DEVICE", "STATE", "SUBJECT", "REASON"]
    rows = table[1:]
    assert len(rows) == 2 and all("floor2" in row and " sent " in row for row in rows)
    assert any("Quarterly report" in row for row in rows) and any("Invoice 7" in row for row in rows)


def _worker_once(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "worker", "--once"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_jobs_retry_now_runs_a_waiting_job_at_once(tmp_path: Path) -> None:
    env = identityless_env(tmp_path)
    added = subprocess.run(
        [sys.executable, "-m", "gateway", "devices", "add", "mfp", "--default-to", "a@contoso.com", "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    password = json.loads(added.stdout)["password"]
    http_port = free_port()
    url = f"http://127.0.0.1:{http_port}"
    with gateway_process("http", "--listen", f"127.0.0.1:{http_port}", env=env, health_url=f"{url}/api/health"):
        r = httpx.put(f"{url}/api/scans/scan.pdf", content=b"%PDF-1.4", auth=("mfp", password))
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
    assert _worker_once(env).returncode == 0  # no identity: the job now waits a minute
    outbox_env = {**env, "SCANGW_OUTBOX": str(tmp_path / "outbox")}
    assert _worker_once(outbox_env).returncode == 0  # the identity is fixed, but the job still waits
    [job] = _json_jobs(env)
    assert job["state"] == "queued"
    plain = scangw("jobs", "retry", job_id, env=env)
    assert plain.returncode == 1 and "--now" in plain.stderr
    now = scangw("jobs", "retry", job_id, "--now", env=env)
    assert now.returncode == 0, now.stderr
    done = _worker_once(outbox_env)
    assert done.returncode == 0, done.stderr
    [job] = _json_jobs(env)
    assert job["state"] == "sent", job
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1
