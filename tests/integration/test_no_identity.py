"""No Azure identity is a setup problem, not the scan's fault (issue 12 item 5): through the real `scangw`
processes, the worker keeps running and the job waits `queued` with one line naming the remedy, the sweep
says the same in one line, and doctor understands the local .eml mode (its --send-test writes a test .eml)."""

from __future__ import annotations

import email
import email.policy
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.integration.identityless import identityless_env
from tests.support import ROOT, free_port, gateway_process, poll


@pytest.fixture
def no_identity(tmp_path: Path) -> dict[str, str]:
    return identityless_env(tmp_path)


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:

    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def _jobs(env: dict[str, str]) -> list[dict[str, object]]:
    out = _run("jobs", "list", "--json", env=env)
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout))


def test_without_an_identity_the_job_waits_with_the_remedy_and_the_worker_keeps_running(
    no_identity: dict[str, str],
) -> None:
    env = no_identity
    added = _run("devices", "add", "mfp", "--default-to", "a@contoso.com", "--json", env=env)
    password = json.loads(added.stdout)["password"]
    http_port = free_port()
    url = f"http://127.0.0.1:{http_port}"
    worker_env = {**env, "SCANGW_RETRY_BASE_SECONDS": "0.1"}
    with (
        gateway_process("http", "--listen", f"127.0.0.1:{http_port}", env=env, health_url=f"{url}/api/health"),
        gateway_process("worker", "--lease-seconds", "5", env=worker_env) as worker,
    ):
        r = httpx.put(f"{url}/api/scans/scan.pdf", content=b"%PDF-1.4", auth=("mfp", password))
        assert r.status_code == 202, r.text
        [job] = poll(lambda: [j for j in _jobs(env) if j["error"]], timeout=60, what="the job's reason")
        assert job["state"] == "queued" and job["attempts"] == 0
        reason = str(job["error"])
        assert "identity" in reason and "az login" in reason and "SCANGW_OUTBOX" in reason
        assert "\n" not in reason and len(reason) < 400
        assert worker.poll() is None, "the worker must keep running"
    assert worker.stderr is not None
    log = worker.stderr.read()
    assert "Traceback" not in log and "ClientAuthenticationError" not in log
    assert worker.returncode == 0, log
    [job] = _jobs(env)
    assert job["state"] == "queued" and job["attempts"] == 0  # nothing burnt towards `failed`


def test_sweep_without_an_identity_is_one_line_with_the_remedy(no_identity: dict[str, str]) -> None:
    env = no_identity
    assert _run("devices", "add", "mfp", "--default-to", "a@contoso.com", env=env).returncode == 0
    out = _run("sweep", env=env)
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == 1
    [line] = out.stderr.splitlines()
    assert "identity" in line and "az login" in line and "SCANGW_OUTBOX" in line
    assert out.stdout.startswith("retention:")  # retention still ran


def test_doctor_send_test_writes_a_test_eml_in_outbox_mode(no_identity: dict[str, str], tmp_path: Path) -> None:
    env = {**no_identity, "SCANGW_OUTBOX": str(tmp_path / "outbox")}
    out = _run("doctor", "--send-test", "alice@contoso.com", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OK   send-test" in out.stdout and str(tmp_path / "outbox") in out.stdout
    [written] = list((tmp_path / "outbox").glob("*.eml"))
    message = email.message_from_bytes(written.read_bytes(), policy=email.policy.default)
    assert message["To"] == "alice@contoso.com" and "doctor" in str(message["Subject"])
    swept = _run("sweep", env=env)
    assert swept.returncode == 0 and "Traceback" not in swept.stderr


def test_doctor_without_sender_or_outbox_names_both_remedies(no_identity: dict[str, str]) -> None:
    env = {k: v for k, v in no_identity.items() if k != "SCANGW_SENDER"}
    out = _run("doctor", env=env)
    assert out.returncode == 1
    [line] = [line for line in out.stdout.splitlines() if line.startswith("FAIL")]
    assert "SCANGW_SENDER" in line and "SCANGW_OUTBOX" in line


def test_doctor_without_an_identity_is_one_line_with_the_remedy(no_identity: dict[str, str]) -> None:
    out = _run("doctor", env=no_identity)
    assert out.returncode == 1
    [line] = [line for line in out.stdout.splitlines() if line.startswith("FAIL")]
    assert line.startswith("FAIL identity:") and "az login" in line and "SCANGW_OUTBOX" in line
    assert len(out.stdout.splitlines()) == 3 + 0  # settings, storage, identity: one line each
