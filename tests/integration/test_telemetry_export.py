"""Telemetry from the real processes to Application Insights (issue 11): `scangw smtp`, `scangw http` and
`scangw worker`, each with the real azure-monitor-opentelemetry exporter authenticating with the managed
identity (Entra, local auth disabled), sending to a TLS stand-in for the ingestion endpoint.

Scans: one delivered over SMTP after Graph throttled it once, one failing for good over HTTP (its sender
mailbox does not exist), refused logins at both doors. Asserted: the contract's metrics with their
dimensions, one trace per scan across the door and the worker with a child per Graph call, and that no
password, body, recipient or upload-session URL reaches telemetry.
"""

from __future__ import annotations

import json
import os
import smtplib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from tests.fakes.graph import FakeGraph
from tests.fakes.identity import FakeIdentityEndpoint
from tests.fakes.ingestion import FakeIngestion
from tests.integration.test_smtp_harness import Pki, make_pki
from tests.support import free_port, gateway_process, listening, poll, scangw

pytestmark = pytest.mark.slow

MAILBOX = "scanner@contoso.com"
GHOST = "ghost@contoso.com"  # a sender mailbox Graph does not know: a permanent failure
RECIPIENT = "alice@contoso.com"
BODY_SECRET = "BODY-MARKER-7f3a91"
_FOREIGN = ("MSI_ENDPOINT", "MSI_SECRET", "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT", "AZURE_CLIENT_ID")


@dataclass
class Site:
    env: dict[str, str]
    graph: FakeGraph
    ingestion: FakeIngestion
    idp: FakeIdentityEndpoint
    pki: Pki
    tmp: Path

    def device(self, name: str, *extra: str) -> str:
        out = scangw("devices", "add", name, "--allow-to", "*@contoso.com", "--json", *extra, env=self.env)
        assert out.returncode == 0, out.stderr
        return str(json.loads(out.stdout)["password"])


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    pki = make_pki(tmp_path / "pki")
    with (
        FakeIdentityEndpoint() as idp,
        FakeGraph(idp) as graph,
        FakeIngestion(pki.cert, pki.key) as ingestion,
    ):
        graph.add_mailbox(MAILBOX)
        env = {k: v for k, v in os.environ.items() if k not in _FOREIGN and not k.startswith(("SCANGW_", "OTEL_"))}
        env.update(idp.env())
        env.update(
            {
                "SCANGW_STORAGE": f"local:{tmp_path / 'spool'}",
                "SCANGW_SENDER": MAILBOX,
                "SCANGW_ADMIN_EMAIL": "admin@contoso.com",
                "SCANGW_GRAPH_URL": graph.url,
                "SCANGW_RETRY_BASE_SECONDS": "0.2",
                "SCANGW_MAILBOX_RATE_PER_MIN": "0",
                "APPLICATIONINSIGHTS_CONNECTION_STRING": ingestion.connection_string(),
                "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
                "REQUESTS_CA_BUNDLE": str(pki.ca),
                "SSL_CERT_FILE": str(pki.ca),
                "OTEL_METRIC_EXPORT_INTERVAL": "500",
                "OTEL_BSP_SCHEDULE_DELAY": "200",
                "OTEL_BLRP_SCHEDULE_DELAY": "200",
                "TMPDIR": str(tmp_path),  # the exporter's retry files
            }
        )
        yield Site(env, graph, ingestion, idp, pki, tmp_path)


def _smtp_scan(port: int, pki: Pki, password: str) -> str:
    """Send one scan through the SMTP door with STARTTLS and AUTH; the job id from the 250 reply."""
    message = EmailMessage()
    message["From"] = "mfp1@printers.local"
    message["To"] = RECIPIENT
    message["Subject"] = "Scan 42"
    message.set_content(f"Scanned page. {BODY_SECRET}")
    message.add_attachment(b"%PDF-1.4 scan", maintype="application", subtype="pdf", filename="scan.pdf")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.starttls(context=pki.client_context())
        smtp.login("mfp1", password)
        smtp.mail("mfp1@printers.local")
        smtp.rcpt(RECIPIENT)
        code, reply = smtp.data(message.as_bytes())
    assert code == 250, reply
    return reply.decode().rsplit(" ", 1)[-1]


def _refused_smtp_login(port: int, pki: Pki) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.starttls(context=pki.client_context())
        smtp.ehlo()
        smtp.user, smtp.password = "mfp1", "not-the-password"
        with pytest.raises(smtplib.SMTPAuthenticationError):  # one attempt (login() would try PLAIN, then LOGIN)
            smtp.auth("PLAIN", smtp.auth_plain)


def _points(site: Site, name: str) -> list[tuple[float, str, dict[str, str]]]:
    return [(v, role, dims) for n, v, role, dims in site.ingestion.metrics() if n == name]


def _total(site: Site, name: str, **dims: str) -> float:
    return sum(v for v, _, d in _points(site, name) if all(d.get(k) == want for k, want in dims.items()))


def test_scans_become_metrics_and_one_trace_each_without_secrets(site: Site) -> None:
    password1 = site.device("mfp1", "--default-to", RECIPIENT)
    password2 = site.device("mfp2", "--default-to", RECIPIENT, "--sender", GHOST)
    smtp_port, http_port = free_port(), free_port()
    http_url = f"http://127.0.0.1:{http_port}"
    site.graph.fail_next("POST", r"/messages$", 429, retry_after=1)  # Exchange throttles the first draft
    smtp_env = {**site.env, **site.pki.env()}
    logs = {name: open(site.tmp / f"{name}.log", "w") for name in ("smtp", "worker")}  # noqa: SIM115
    try:
        smtp = subprocess.Popen(
            [*_cmd(), "smtp", "--listen", f"127.0.0.1:{smtp_port}"], env=smtp_env, stderr=logs["smtp"], text=True
        )
        worker = subprocess.Popen([*_cmd(), "worker", "--lease-seconds", "5"], env=site.env, stderr=logs["worker"])
        with gateway_process(
            "http", "--listen", f"127.0.0.1:{http_port}", env=site.env, health_url=f"{http_url}/api/health"
        ) as http:
            poll(lambda: listening(smtp_port), what="the SMTP door")
            smtp_job = _smtp_scan(smtp_port, site.pki, password1)
            _refused_smtp_login(smtp_port, site.pki)
            r = httpx.put(f"{http_url}/api/scans/report.pdf", content=b"%PDF-1.4 x", auth=("mfp2", password2))
            assert r.status_code == 202, r.text
            http_job = r.json()["id"]
            r = httpx.put(f"{http_url}/api/scans/x.pdf", content=b"x", auth=("mfp2", "wrong-password"))
            assert r.status_code == 401
            site.graph.wait_for_sent(1, timeout=60)
            poll(lambda: _state(site, http_job) == "failed", timeout=60, what="the ghost mailbox's scan to fail")
            poll(lambda: _state(site, smtp_job) == "sent", timeout=60, what="the SMTP scan to be sent")
            poll(lambda: _total(site, "scangw.scans.delivered") >= 1, timeout=30, what="delivered metric")
            poll(lambda: _total(site, "scangw.scans.failed") >= 1, timeout=30, what="failed metric")
            http.terminate()
            http.wait(timeout=30)
        for proc in (smtp, worker):
            proc.terminate()
            proc.wait(timeout=30)
    finally:
        for f in logs.values():
            f.close()

    # Metrics with the contract's dimensions, from the process that saw the event.
    assert _total(site, "scangw.scans.accepted", door="smtp", device="mfp1") == 1
    assert _total(site, "scangw.scans.accepted", door="http", device="mfp2") == 1
    assert _total(site, "scangw.scans.refused", door="smtp", reason="auth") == 1
    assert _total(site, "scangw.scans.refused", door="http", reason="auth") == 1
    assert _total(site, "scangw.auth.failures", door="smtp", device="mfp1") == 1  # a username that exists
    assert _total(site, "scangw.auth.failures", door="http", device="mfp2") == 1
    assert _total(site, "scangw.scans.delivered", device="mfp1", mailbox=MAILBOX) == 1
    assert _total(site, "scangw.scans.failed", device="mfp2", mailbox=GHOST, reason="mailbox") == 1
    assert _total(site, "scangw.graph.throttled", mailbox=MAILBOX, status="429") >= 1
    latency = _points(site, "scangw.delivery.latency")
    assert latency and all(dims == {"mailbox": MAILBOX} for _, _, dims in latency)
    assert all(role == "scangw-worker" for _, role, _ in latency) and max(v for v, _, _ in latency) > 0
    days = [v for v, role, d in _points(site, "scangw.tls.cert_days_left") if d.get("door") == "smtp"]
    assert days and 1.5 < days[-1] <= 2.0  # the test certificate is valid for two days
    assert {role for _, role, _ in _points(site, "scangw.tls.cert_days_left")} == {"scangw-smtp"}
    assert _points(site, "scangw.queue.oldest_age"), "the worker reads the queue's age"
    for name, _, role, _ in site.ingestion.metrics():
        if name == "scangw.scans.accepted":
            assert role in ("scangw-smtp", "scangw-http")

    # One trace per scan: the door's scan.accept, the worker's scan.deliver under it, Graph calls under that.
    spans = site.ingestion.spans()
    for job, door_role in ((smtp_job, "scangw-smtp"), (http_job, "scangw-http")):
        mine = [s for s in spans if s["properties"].get("scangw.job_id") == job]
        accept = [s for s in mine if s["name"] == "scan.accept"]
        deliver = [s for s in mine if s["name"] == "scan.deliver"]
        assert len(accept) == 1 and accept[0]["role"] == door_role, mine
        assert deliver and all(s["role"] == "scangw-worker" for s in deliver)
        assert {s["operation"] for s in mine} == {accept[0]["operation"]}, "one trace per scan"
        assert deliver[0]["parent"] == accept[0]["id"]
        assert all(s["properties"].get("scangw.device") in ("mfp1", "mfp2") for s in mine)
        graph_calls = [s for s in mine if str(s["name"]).startswith("graph.")]
        assert graph_calls and {s["parent"] for s in graph_calls} <= {d["id"] for d in deliver}
    smtp_graph = {s["name"] for s in spans if s["properties"].get("scangw.job_id") == smtp_job}
    assert {"graph.createDraft", "graph.send"} <= smtp_graph, smtp_graph
    assert {s["name"].split(".")[0] for s in spans} == {"scan", "graph"}, "library spans (kiota...) stay off"

    # Entra authentication, and nothing secret in anything sent.
    assert site.ingestion.batches and all(b.authorization.startswith("Bearer ") for b in site.ingestion.batches)
    raw = site.ingestion.raw()
    for secret in (password1, password2, "wrong-password", "not-the-password", BODY_SECRET, RECIPIENT, "authtoken"):
        assert secret not in raw, secret
    assert not any(s["kind"] == "RemoteDependencyData" and "127.0.0.1" in json.dumps(s) for s in spans), (
        "library instrumentations (httpx, requests) stay off: they would record URLs"
    )


def _cmd() -> list[str]:
    import sys

    return [sys.executable, "-m", "gateway"]


def _state(site: Site, job_id: str) -> str | None:
    out = scangw("jobs", "show", job_id, "--json", env=site.env)
    return json.loads(out.stdout).get("state") if out.returncode == 0 else None
