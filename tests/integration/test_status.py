"""`scangw status` (also --json): the workbook's figures for a site without Azure, from the spool itself."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from gateway.core.mailbox_ledger import Ledger
from tests.integration.test_smtp_harness import make_pki
from tests.support import free_port, gateway_process, local_env, run, scangw, services_for


def test_status_shows_queue_mailbox_budget_jobs_devices_and_certificate(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    env = local_env(tmp_path, SCANGW_SENDER="scanner@contoso.com", **pki.env(SCANGW_SMTP_REQUIRE_TLS_AUTH="0"))
    added = scangw("devices", "add", "mfp1", "--default-to", "a@contoso.com", "--json", env=env)
    password = json.loads(added.stdout)["password"]
    scangw("devices", "add", "quiet", "--default-to", "a@contoso.com", env=env)
    port = free_port()
    with gateway_process(
        "http", "--listen", f"127.0.0.1:{port}", env=env, health_url=f"http://127.0.0.1:{port}/api/health"
    ):
        r = httpx.put(f"http://127.0.0.1:{port}/api/scans/a.pdf", content=b"%PDF", auth=("mfp1", password))
        assert r.status_code == 202
    job_id = r.json()["id"]

    async def throttle() -> None:  # as a worker records Graph's Retry-After for the mailbox
        svc = await services_for(tmp_path)
        ledger = Ledger(slots={"w1": time.time() + 30}, blocked_until=time.time() + 90, next_send=time.time() + 2)
        await svc.spool.mailboxes.insert("scanner@contoso.com", ledger.to_record())
        await svc.close()

    run(throttle())
    out = scangw("status", "--json", env=env)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["queue"]["depth"] == 1 and data["queue"]["oldest_job"] == job_id
    assert data["jobs_last_24h"] == {"queued": 1, "sending": 0, "sent": 0, "failed": 0}
    devices = {d["name"]: d for d in data["devices"]}
    assert devices["mfp1"]["last_seen"] and devices["quiet"]["last_seen"] is None
    [mailbox] = data["mailboxes"]
    assert mailbox["mailbox"] == "scanner@contoso.com" and mailbox["slots_in_use"] == 1
    assert 80 < mailbox["retry_after_seconds"] <= 90 and mailbox["next_send"]
    assert 1.5 < data["tls"]["days_left"] <= 2.0

    text = scangw("status", env=env)
    assert text.returncode == 0 and "1 unfinished job" in text.stdout and job_id in text.stdout
    assert "1/4 slots in use" in text.stdout and "Retry-After" in text.stdout and "days left" in text.stdout
