"""The mailbox sweep against the strict fake Graph with the real agent, transport and embedded spool:
a bounce after Graph's 202 fails the job and mails one notice; orphan drafts and abandoned upload sessions
are cleaned up; nothing that may still be sent is touched."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.config import load_settings
from gateway.core.accept import Envelope, IncomingFile
from gateway.core.jobs import Job, JobState
from gateway.delivery.agent import DeliveryAgent
from gateway.delivery.graph.exactly_once import GraphTransport
from gateway.delivery.outbox import OutboxTransport
from gateway.delivery.retention import mailbox_housekeeper, sweep
from gateway.delivery.transports import make_transport
from gateway.delivery.worker import Worker
from gateway.services import Services, build
from tests.fakes.graph import FakeGraph
from tests.fakes.graph_model import ndr_mime
from tests.fakes.identity import FakeIdentityEndpoint

MB = "scanner@contoso.com"
PDF = b"%PDF-1.7 scanned pages " * 500


async def one(data: bytes) -> AsyncIterator[IncomingFile]:
    async def chunks() -> AsyncIterator[bytes]:
        yield data

    yield IncomingFile("scan.pdf", "application/pdf", chunks())


class Gateway:
    """The delivery side as `scangw worker` wires it, plus the hourly sweep on demand."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.transport = make_transport(svc.settings, svc.spool)
        assert isinstance(self.transport, GraphTransport)
        self.worker = Worker(DeliveryAgent(svc, self.transport))

    async def scan(self, *to: str) -> Job:
        device = await self.svc.registry.require("mfp1")
        return await self.svc.intake().accept_files(device, one(PDF), lambda: Envelope(to))

    async def sweep(self, hours_later: float = 0.0) -> None:
        now = datetime.now(UTC) + timedelta(hours=hours_later)
        await sweep(self.svc, now, housekeeper=self.transport.sweep_mailboxes)

    async def drain_until(self, job: Job, state: JobState, timeout: float = 15.0) -> Job:
        """Run the worker until `job` reaches `state` (a bounced job is queued a couple of seconds ahead)."""
        deadline = time.monotonic() + timeout
        while (current := await self.state(job)).state != state:
            assert time.monotonic() < deadline, f"job {job.id} is {current.state}, not {state}"
            await self.worker.drain()
            await asyncio.sleep(0.1)
        return current

    async def state(self, job: Job) -> Job:
        found = await self.svc.jobs.get(job.id)
        assert found is not None
        return found


def with_gateway(tmp: Path, graph: FakeGraph, body: object) -> None:
    async def main() -> None:
        env = {
            "SCANGW_STORAGE": f"local:{tmp / 'spool'}",
            "SCANGW_GRAPH_URL": graph.url,
            "SCANGW_SENDER": MB,
            "SCANGW_ADMIN_EMAIL": "admin@contoso.com",
            "SCANGW_MAILBOX_RATE_PER_MIN": "0",
        }
        svc = await build(load_settings(env))
        await svc.registry.add("mfp1", reply_to="alice@contoso.com", allow_to=["*@example.com"])
        gw = Gateway(svc)
        try:
            await body(gw)  # type: ignore[operator]
        finally:
            await gw.transport.close()
            await svc.close()

    asyncio.run(main())


def notices(graph: FakeGraph) -> list[str]:
    return [m.internet_message_id for m in graph.sent if m.headers.get("X-Scangw-Notice") == "failure"]


def test_a_bounce_fails_the_job_and_mails_one_notice(tmp_path: Path, graph: FakeGraph) -> None:
    graph.bounce_recipients = {"typo@example.com"}

    async def scenario(gw: Gateway) -> None:
        bounced = await gw.scan("typo@example.com", "bob@example.com")
        fine = await gw.scan("bob@example.com")
        await gw.worker.drain()
        assert (await gw.state(bounced)).state == JobState.SENT  # Graph said 202: not yet known to bounce
        assert len(graph.items(MB, "inbox")) == 1

        await gw.sweep()
        assert (await gw.state(bounced)).state == JobState.QUEUED  # on its way to the agent's failure path
        failed = await gw.drain_until(bounced, JobState.FAILED)
        assert failed.error is not None and "typo@example.com" in failed.error and "5.1.10" in failed.error
        assert (await gw.state(fine)).state == JobState.SENT
        notice = [m for m in graph.sent if m.headers.get("X-Scangw-Notice") == "failure"]
        assert len(notice) == 1
        assert sorted(notice[0].to) == ["admin@contoso.com", "alice@contoso.com"]
        assert "typo@example.com" in notice[0].body and "scan it again" in notice[0].body  # bytes already deleted

        # The report stays in the Inbox; reading it again changes nothing and mails nothing more.
        await gw.sweep()
        await gw.worker.drain()
        assert (await gw.state(bounced)).state == JobState.FAILED
        assert len(notices(graph)) == 1

    with_gateway(tmp_path, graph, scenario)
    # The scan itself went out exactly once, to both recipients, byte-identical.
    scans = [m for m in graph.sent if not m.headers.get("X-Scangw-Notice")]
    assert sorted(m.to[0] for m in scans) == ["bob@example.com", "typo@example.com"]
    assert all(m.attachments[0].sha256 == hashlib.sha256(PDF).hexdigest() for m in scans)


def test_reports_that_are_not_ours_or_only_delayed_are_ignored(tmp_path: Path, graph: FakeGraph) -> None:
    async def scenario(gw: Gateway) -> None:
        job = await gw.scan("bob@example.com")
        await gw.worker.drain()
        sent = graph.sent[0]
        # A person's own bounce, a "delayed" report for our message, and ordinary mail in the Inbox.
        from tests.fakes.graph_model import Fields

        theirs = Fields(subject="lunch", internet_message_id="<abc@contoso.com>")
        graph.add_inbox_item(MB, ndr_mime(MB, theirs, ["x@example.com"], 0), "REPORT.IPM.Note.NDR")
        ours = Fields(subject=sent.subject, internet_message_id=sent.internet_message_id)
        delayed = ndr_mime(MB, ours, ["bob@example.com"], 0).replace(b"Action: failed", b"Action: delayed")
        graph.add_inbox_item(MB, delayed, "REPORT.IPM.Note.DR")
        graph.add_inbox_item(MB, delayed, "REPORT.IPM.Note.NDR")
        graph.add_inbox_item(MB, b"Subject: hello\r\n\r\nhi\r\n")
        await gw.sweep()
        await gw.worker.drain()
        assert (await gw.state(job)).state == JobState.SENT
        assert notices(graph) == []

    with_gateway(tmp_path, graph, scenario)


def test_each_message_class_is_read_or_left_as_exchange_classes_it(tmp_path: Path, graph: FakeGraph) -> None:
    """Exchange classes a plain-text or multipart/mixed report IPM.Note (only a top-level RFC 3464 report
    becomes REPORT.IPM.Note.NDR): those are read for what they say; delay and delivery classes never are."""
    corpus = Path(__file__).resolve().parents[1] / "data" / "bounces"

    def as_ours(name: str, job: Job, old: str) -> bytes:
        return (corpus / name).read_bytes().replace(old.encode(), job.id.encode())

    async def scenario(gw: Gateway) -> None:
        plain, replied, delayed = (
            await gw.scan("x@example.com"),
            await gw.scan("y@example.com"),
            await gw.scan("z@example.com"),
        )
        await gw.worker.drain()
        graph.add_inbox_item(MB, as_ours("qmail_plain_text.eml", plain, "018f3a2b4c5d000000000004"), "IPM.Note")
        graph.add_inbox_item(MB, as_ours("autoreply_out_of_office.eml", replied, "018f3a2b4c5d000000000008"))
        failure = as_ours("opensmtpd_mixed_failed.eml", delayed, "018f3a2b4c5d000000000007")
        graph.add_inbox_item(MB, failure, "REPORT.IPM.Note.Delayed.DR")  # class says delay: never fetched
        await gw.sweep()
        failed = await gw.drain_until(plain, JobState.FAILED)
        assert failed.error is not None and "nobody@fabrikam.com" in failed.error and "5.1.1" in failed.error
        assert (await gw.state(replied)).state == JobState.SENT
        assert (await gw.state(delayed)).state == JobState.SENT
        assert len(notices(graph)) == 1
        fetched = [r for r in graph.requests if r.path.endswith("/$value")]
        assert len(fetched) == 2  # the IPM.Note report and the auto-reply; not the Delayed.DR item

    with_gateway(tmp_path, graph, scenario)


def test_orphan_drafts_go_once_their_job_is_finished_and_nothing_else_does(tmp_path: Path, graph: FakeGraph) -> None:
    async def scenario(gw: Gateway) -> None:
        sent = await gw.scan("bob@example.com")
        await gw.worker.drain()
        waiting = await gw.scan("bob@example.com")  # queued, not yet delivered: its draft may still be used
        domain = MB.rpartition("@")[2]
        transport = gw.transport
        assert isinstance(transport, GraphTransport)

        async def draft(message_id: str) -> str:
            body = json.dumps({"subject": "d", "internetMessageId": message_id}).encode()
            created, _ = await transport.api.create_draft(MB, body)
            return created

        lost_create = await draft(f"<scan.{sent.id}@{domain}>")  # a create whose reply was lost
        superseded = await draft(f"<scan.{sent.id}@{domain}>")
        in_progress = await draft(f"<scan.{waiting.id}@{domain}>")
        personal = await draft("<my-own-draft@contoso.com>")
        gone = await draft(f"<scan.{'0' * 24}@{domain}>")  # its job record was already deleted

        await gw.sweep()  # all of them are minutes old: nothing goes yet
        assert len(graph.items(MB, "drafts")) == 5
        await gw.sweep(hours_later=2)
        left = {i.id for i in graph.items(MB, "drafts")}
        assert left == {in_progress, personal}
        assert lost_create not in left and superseded not in left and gone not in left
        assert len(graph.sent) == 1  # nothing was sent by the sweep

    with_gateway(tmp_path, graph, scenario)


def test_a_failed_jobs_upload_session_is_cancelled(tmp_path: Path, graph: FakeGraph) -> None:
    """A big scan fails for good mid-upload (Graph rejects a chunk); its open upload session is cancelled."""

    async def scenario(gw: Gateway) -> None:
        big = b"%PDF" + bytes(5 * 1024 * 1024)
        device = await gw.svc.registry.require("mfp1")
        job = await gw.svc.intake().accept_files(device, one(big), lambda: Envelope(("bob@example.com",)))
        graph.fail_next("PUT", r"AttachmentSessions", 400, code="ErrorInvalidRequest")
        await gw.worker.drain()
        failed = await gw.state(job)
        assert failed.state == JobState.FAILED
        assert failed.progress["delivery"]["upload"]["url"]
        await gw.sweep(hours_later=2)
        cleaned = await gw.state(job)
        assert cleaned.progress["delivery"]["upload"] is None
        assert any(r.method == "DELETE" and "AttachmentSessions" in r.path for r in graph.requests)

    with_gateway(tmp_path, graph, scenario)


def test_the_sweep_touches_mailboxes_only_with_a_token_and_says_why_not(
    tmp_path: Path, graph: FakeGraph, idp: FakeIdentityEndpoint
) -> None:
    """`scangw sweep`, the worker and the timer ask mailbox_housekeeper() whether they may read and clean the
    mailboxes: with a token, yes; without one, no, with one line an admin can act on; the outbox, never."""

    async def scenario(gw: Gateway) -> None:
        housekeeper, problem = await mailbox_housekeeper(gw.transport, gw.svc.settings)
        assert problem is None and housekeeper == gw.transport.sweep_mailboxes
        outbox = OutboxTransport(tmp_path / "outbox", gw.svc.spool.blobs)
        assert await mailbox_housekeeper(outbox, gw.svc.settings) == (None, None)
        idp.fail_next(10, status=400)  # the identity endpoint refuses: as on a machine with no identity
        housekeeper, problem = await mailbox_housekeeper(gw.transport, gw.svc.settings)
        assert housekeeper is None and problem and "\n" not in problem

    with_gateway(tmp_path, graph, scenario)
