"""End to end with real processes: `scangw http` and `scangw worker` (real msgraph-sdk, real azure-identity
ManagedIdentityCredential) against the strict fake Graph and fake managed-identity endpoint.

Outcomes asserted are the ones a user sees: what was delivered (recipients, sender, subject, attachment
bytes), each scan exactly once, the job state, and no Graph rule broken."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from tests.fakes.graph import FakeGraph
from tests.fakes.identity import FakeIdentityEndpoint
from tests.support import ROOT, free_port, gateway_process, listening, poll, scangw

MAILBOX = "scanner@contoso.com"
MIB = 1024 * 1024

#: Variables that would make azure-identity pick another identity source than the fake endpoint.
_FOREIGN_IDENTITY = ("MSI_ENDPOINT", "MSI_SECRET", "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT", "AZURE_CLIENT_ID")


@dataclass
class Stack:
    graph: FakeGraph
    env: dict[str, str]
    tmp: Path

    def jobs(self) -> dict[str, dict[str, object]]:
        out = scangw("jobs", "list", "--json", env=self.env)
        assert out.returncode == 0, out.stderr
        return {j["id"]: j for j in json.loads(out.stdout)}

    def worker(self, *extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", "worker", "--lease-seconds", "2", *extra],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=open(self.tmp / "worker.log", "a"),  # noqa: SIM115 - closed with the process
            text=True,
        )

    def upload(self, name: str, data: bytes) -> str:
        """PUT one scan through a short-lived `scangw http` (stopped before delivery starts); its job id."""
        user, password = self.device()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with gateway_process("http", "--listen", f"127.0.0.1:{port}", env=self.env, health_url=f"{url}/api/health"):
            r = httpx.put(f"{url}/api/scans/{name}", content=data, auth=(user, password), timeout=60)
            assert r.status_code == 202, r.text
        return str(r.json()["id"])

    def device(self, name: str = "mfp1") -> tuple[str, str]:
        out = scangw(
            "devices",
            "add",
            name,
            "--default-to",
            "alice@contoso.com",
            "--allow-to",
            "*@contoso.com",
            "--sender-name",
            "Floor 2 MFP",
            "--json",
            env=self.env,
        )
        assert out.returncode == 0, out.stderr
        creds = json.loads(out.stdout)
        return creds["username"], creds["password"]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with FakeIdentityEndpoint() as idp, FakeGraph(idp) as graph:
        graph.add_mailbox(MAILBOX, max_send_size=150 * MIB)
        env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_IDENTITY and not k.startswith("SCANGW_")}
        env.update(idp.env())
        env.update(
            {
                "SCANGW_STORAGE": f"local:{tmp_path / 'spool'}",
                "SCANGW_SENDER": MAILBOX,
                "SCANGW_ADMIN_EMAIL": "admin@contoso.com",
                "SCANGW_GRAPH_URL": graph.url,
                "SCANGW_RETRY_BASE_SECONDS": "0.2",
                "SCANGW_SEND_GRACE_SECONDS": "3",
                "SCANGW_MAILBOX_RATE_PER_MIN": "0",
                "SCANGW_MAX_MESSAGE_MB": "100",
            }
        )
        yield Stack(graph, env, tmp_path)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_http_upload_is_delivered_through_graph(stack: Stack) -> None:
    user, password = stack.device()
    small, large = os.urandom(200_000), os.urandom(5 * MIB + 123)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with gateway_process("http", "--listen", f"127.0.0.1:{port}", env=stack.env, health_url=f"{url}/api/health"):
        files = [("file", ("page 1.pdf", small, "application/pdf")), ("file", ("Größe.pdf", large, "application/pdf"))]
        data = {"to": "bob@contoso.com, carol@contoso.com", "subject": "Contract scans", "body": "Two files."}
        r = httpx.post(f"{url}/api/scans", files=files, data=data, auth=(user, password), timeout=60)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        worker = stack.worker()
        try:
            [message] = stack.graph.wait_for_sent(1, timeout=60)
            status = poll(
                lambda: (
                    (s := httpx.get(f"{url}/api/scans/{job_id}", auth=(user, password)).json())["status"] == "sent"
                    and s
                ),
                what="job sent",
            )
        finally:
            stop(worker)
    assert status == {"id": job_id, "status": "sent", "error": None}
    assert (message.mailbox.lower(), message.from_address, message.from_name) == (MAILBOX, MAILBOX, "Floor 2 MFP")
    assert sorted(message.to) == ["bob@contoso.com", "carol@contoso.com"] and not message.cc and not message.bcc
    assert message.subject == "Contract scans" and "Two files." in message.body
    assert message.internet_message_id == f"<scan.{job_id}@contoso.com>"
    assert sorted((a.name, a.sha256) for a in message.attachments) == sorted(
        [("page 1.pdf", sha(small)), ("Größe.pdf", sha(large))]
    )
    assert stack.graph.violations == []
    assert not list((stack.tmp / "spool" / "scans").glob(f"{job_id}/*"))  # delivered bytes are not kept


def test_worker_killed_repeatedly_mid_upload_still_delivers_exactly_once(stack: Stack) -> None:
    """SIGKILL the worker while it streams a 30 MiB scan through an upload session, three times over."""
    data = os.urandom(30 * MIB)
    job_id = stack.upload("big.pdf", data)

    def puts() -> int:
        return sum(1 for q in stack.graph.requests if q.method == "PUT")

    for kill in range(3):
        seen = puts()
        worker = stack.worker()
        poll(
            lambda seen=seen: puts() >= seen + 2 or stack.graph.sent,
            timeout=60,
            what=f"upload progress before kill {kill}",
        )
        worker.kill()
        worker.wait()
    worker = stack.worker()
    try:
        poll(lambda: stack.jobs()[job_id]["state"] == "sent", timeout=120, what="job sent after the kills")
    finally:
        stop(worker)
    [message] = stack.graph.sent
    assert [(a.name, a.size, a.sha256) for a in message.attachments] == [("big.pdf", len(data), sha(data))]
    assert stack.graph.duplicate_internet_message_ids() == []
    assert stack.graph.violations == []


def test_worker_killed_while_graph_acts_on_its_send_does_not_send_twice(stack: Stack) -> None:
    """The send reaches Graph, the worker is SIGKILLed before any reply, and only then does Exchange send:
    the next worker sees "send requested" in the job and finds the message in Sent Items instead of resending."""
    data = os.urandom(300_000)
    job_id = stack.upload("contract.pdf", data)
    with stack.graph.hold(r"/send$"):
        worker = stack.worker()
        poll(lambda: stack.graph.parked >= 1, timeout=60, what="the send to reach Graph")
        worker.kill()
        worker.wait()
    stack.graph.wait_for_sent(1, timeout=30)  # Graph acted on the request its client abandoned
    worker = stack.worker()
    try:
        poll(lambda: stack.jobs()[job_id]["state"] == "sent", timeout=60, what="job recognised as sent")
    finally:
        stop(worker)
    [message] = stack.graph.sent
    assert message.internet_message_id == f"<scan.{job_id}@contoso.com>"
    assert [(a.name, a.sha256) for a in message.attachments] == [("contract.pdf", sha(data))]
    sends = [q for q in stack.graph.requests if q.method == "POST" and q.path.lower().endswith("/send")]
    assert len(sends) == 1  # the abandoned one; the second worker searched instead of sending
    assert stack.graph.violations == []


def test_smtp_door_killed_right_after_its_250_loses_nothing(stack: Stack) -> None:
    """`250` is said only once the scan is durably stored and queued: SIGKILL the door the instant it is heard."""
    user, password = stack.device()
    port = free_port()
    scan = os.urandom(150_000)
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "mfp@contoso.com", "bob@contoso.com", "Invoice 42"
    message.set_content("Scanned.")
    message.add_attachment(scan, maintype="application", subtype="pdf", filename="invoice.pdf")
    with gateway_process("smtp", "--listen", f"127.0.0.1:{port}", env=stack.env) as door:
        poll(lambda: listening(port), timeout=30, what="scangw smtp to listen")
        client = smtplib.SMTP("127.0.0.1", port, timeout=30)
        client.ehlo("mfp")
        client.login(user, password)
        client.mail("mfp@contoso.com")
        client.rcpt("bob@contoso.com")
        code, _ = client.data(message.as_bytes())
        door.kill()
        door.wait()
        client.close()
    assert code == 250
    worker = stack.worker()
    try:
        [delivered] = stack.graph.wait_for_sent(1, timeout=60)
    finally:
        stop(worker)
    assert delivered.to == ["bob@contoso.com"] and delivered.subject == "Invoice 42"
    assert [(a.name, a.sha256) for a in delivered.attachments] == [("invoice.pdf", sha(scan))]
    assert stack.graph.duplicate_internet_message_ids() == [] and stack.graph.violations == []


def test_forty_scans_under_throttling_and_errors_each_delivered_once(stack: Stack) -> None:
    """25 % of Graph requests answer 429 with Retry-After and 5 % answer 503, with two workers draining."""
    user, password = stack.device()
    payloads: dict[str, bytes] = {}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with gateway_process("http", "--listen", f"127.0.0.1:{port}", env=stack.env, health_url=f"{url}/api/health"):
        with httpx.Client(auth=(user, password), timeout=30) as client:
            for n in range(40):
                body = os.urandom(20_000 + n)
                r = client.put(f"{url}/api/scans/scan-{n}.pdf", content=body)
                assert r.status_code == 202, r.text
                payloads[r.json()["id"]] = body
    stack.graph.retry_after = 1
    stack.graph.retry_after_grace = 0.6  # requests already on the wire when the 429 came are not the client's fault
    stack.graph.throttle_rate = 0.25
    stack.graph.error_rate = 0.05
    # Two worker processes: Exchange's limits (4 in flight, Retry-After) hold only if they share them.
    workers = [stack.worker("--concurrency", "4") for _ in range(2)]
    try:
        # Watch the fake first: polling `scangw jobs list` (a process each time) would starve the workers.
        stack.graph.wait_for_sent(40, timeout=240)
        poll(lambda: all(j["state"] == "sent" for j in stack.jobs().values()), timeout=60, what="all 40 jobs sent")
    finally:
        for worker in workers:
            stop(worker)
    delivered = {m.internet_message_id: m for m in stack.graph.sent}
    assert len(stack.graph.sent) == 40 and stack.graph.duplicate_internet_message_ids() == []
    for job_id, body in payloads.items():
        message = delivered[f"<scan.{job_id}@contoso.com>"]
        assert [a.sha256 for a in message.attachments] == [sha(body)]
    assert stack.graph.violations == []
    assert max(stack.graph.max_concurrency_seen.values()) <= 4


def test_permanent_failure_ends_failed_with_a_notice(stack: Stack) -> None:
    stack.graph.add_mailbox("locked@contoso.com", access_denied=True)
    user, password = stack.device()
    scangw(
        "devices", "update", "mfp1", "--sender", "locked@contoso.com", "--reply-to", "alice@contoso.com", env=stack.env
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with gateway_process("http", "--listen", f"127.0.0.1:{port}", env=stack.env, health_url=f"{url}/api/health"):
        r = httpx.put(f"{url}/api/scans/a.pdf", content=b"%PDF-1.7", auth=(user, password), timeout=30)
        job_id = r.json()["id"]
    worker = stack.worker()
    try:
        job = poll(lambda: (j := stack.jobs()[job_id])["state"] == "failed" and j, timeout=60, what="job failed")
        [notice] = stack.graph.wait_for_sent(1, timeout=30)
    finally:
        stop(worker)
    assert "locked@contoso.com" in str(job["error"]) and "Mail.Send" in str(job["error"])
    assert notice.from_address == MAILBOX and sorted(notice.to) == ["admin@contoso.com", "alice@contoso.com"]
    assert job_id in notice.body
