"""GraphTransport against the strict fake Graph and managed-identity endpoint, with the real msgraph-sdk,
azure-identity ManagedIdentityCredential and the embedded blob store.

A "crashed worker" is a new GraphTransport given the same checkpoint progress; grace periods, backoff and
the clock are injected so nothing here sleeps for long.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import multiprocessing
import os
import random
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from gateway.config import Settings
from gateway.core.errors import PermanentDeliveryError, TransientDeliveryError
from gateway.core.jobs import FileRef
from gateway.core.message import Address, OutgoingMessage
from gateway.core.ports import BlobStore
from gateway.delivery.graph.exactly_once import SEND_REQUESTED_AT, GraphTransport
from gateway.delivery.graph.mailbox_limits import MailboxLimits
from gateway.delivery.transport import MemoryCheckpoint
from gateway.spool.local import open_local_spool
from tests.fakes.graph import FakeGraph
from tests.fakes.identity import FakeIdentityEndpoint
from tests.support import run

MB = "scanner@contoso.com"
MIB = 1024 * 1024
FOUR_MIB = 4 * MIB


# -- factories ------------------------------------------------------------------------------------------


def settings(graph_url: str, **changes: Any) -> Settings:
    return Settings(graph_url=graph_url, mailbox_rate_per_min=0, **changes)


def transport(graph_url: str, blobs: BlobStore, **options: Any) -> GraphTransport:
    options.setdefault("backoff_base", 0.01)
    config = options.pop("settings", None) or settings(graph_url)
    return GraphTransport(config, blobs, **options)


async def store(
    blobs: BlobStore, name: str, size: int, seed: int = 1, content_type: str = "application/pdf"
) -> tuple[FileRef, str]:
    """Write `size` deterministic bytes as blob `job/<name>`; return its FileRef and sha256."""
    digest = hashlib.sha256()

    async def chunks() -> AsyncIterator[bytes]:
        rng, left = random.Random(seed), size
        while left:
            block = rng.randbytes(min(MIB, left))
            digest.update(block)
            left -= len(block)
            yield block

    await blobs.write(f"job/{name}", chunks())
    return FileRef(blob=f"job/{name}", name=name, content_type=content_type, size=size), digest.hexdigest()


def outgoing(files: tuple[FileRef, ...], job: str = "j1", **changes: Any) -> OutgoingMessage:
    values: dict[str, Any] = {
        "mailbox": MB,
        "internet_message_id": f"<scan.{job}@contoso.com>",
        "from_": Address(MB, "Alice Scanner"),
        "to": (Address("to@example.com"),),
        "cc": (Address("cc@example.com"),),
        "bcc": (Address("bcc@example.com"),),
        "reply_to": (Address("alice@contoso.com"),),
        "subject": f"Scan {job}",
        "body": "Scanned pages attached.",
        "body_type": "text",
        "attachments": files,
        "headers": (("X-Scangw-Job", job), ("X-Scangw-Device", "mfp1")),
    }
    values.update(changes)
    return OutgoingMessage(**values)


def graph_calls(graph: FakeGraph) -> list[str]:
    return [f"{r.method} {unquote(r.path.split('?')[0])}" for r in graph.requests]


def assert_clean(graph: FakeGraph) -> None:
    assert graph.violations == []
    assert graph.duplicate_internet_message_ids() == []


def spool_test(tmp_path: Path, scenario: Any) -> None:
    async def main() -> None:
        spool = await open_local_spool(tmp_path / "spool")
        try:
            await scenario(spool.blobs)
        finally:
            await spool.close()

    run(main())


# -- the typical scan -----------------------------------------------------------------------------------


def test_small_scan_takes_exactly_create_and_send(tmp_path: Path, graph: FakeGraph, idp: FakeIdentityEndpoint) -> None:
    async def scenario(blobs: BlobStore) -> None:
        pdf, pdf_sha = await store(blobs, "scan.pdf", 900_000)
        jpg, jpg_sha = await store(blobs, "page 2.jpg", 300_000, seed=2, content_type="image/jpeg")
        gateway = transport(graph.url, blobs)
        try:
            delivered = await gateway.deliver(outgoing((pdf, jpg)), MemoryCheckpoint())
        finally:
            await gateway.close()
        create, send = graph_calls(graph)
        assert create == f"POST /v1.0/users/{MB}/messages"
        assert send.startswith(f"POST /v1.0/users/{MB}/messages/") and send.endswith("/send")
        assert delivered.request_id == graph.requests[-1].request_id
        (sent,) = graph.sent
        assert (sent.to, sent.cc, sent.bcc) == (["to@example.com"], ["cc@example.com"], ["bcc@example.com"])
        assert (sent.from_address, sent.from_name, sent.reply_to) == (MB, "Alice Scanner", ["alice@contoso.com"])
        assert sent.subject == "Scan j1" and sent.internet_message_id == "<scan.j1@contoso.com>"
        assert sent.headers.get("X-Scangw-Job") == "j1"
        assert [(a.name, a.sha256) for a in sent.attachments] == [("scan.pdf", pdf_sha), ("page 2.jpg", jpg_sha)]
        assert idp.token_requests == 1
        assert_clean(graph)

    spool_test(tmp_path, scenario)


def test_large_attachments_go_through_upload_sessions_byte_identical(tmp_path: Path, graph: FakeGraph) -> None:
    async def scenario(blobs: BlobStore) -> None:
        eight, eight_sha = await store(blobs, "eight.pdf", 8 * MIB, seed=8)
        thirty, thirty_sha = await store(blobs, "thirty.pdf", 30 * MIB + 12345, seed=30)
        small, small_sha = await store(blobs, "cover.txt", 2000, seed=3, content_type="text/plain")
        graph.mailbox(MB).max_send_size = 150 * MIB  # Set-Mailbox -MaxSendSize 150MB
        gateway = transport(graph.url, blobs)
        try:
            await gateway.deliver(outgoing((eight, small, thirty)), MemoryCheckpoint())
        finally:
            await gateway.close()
        (sent,) = graph.sent
        assert {a.name: a.sha256 for a in sent.attachments} == {
            "eight.pdf": eight_sha,
            "cover.txt": small_sha,
            "thirty.pdf": thirty_sha,
        }
        puts = [r for r in graph.requests if r.method == "PUT"]
        assert puts and all(not r.had_auth and r.status in (200, 201) for r in puts)
        assert all(r.body_size < FOUR_MIB for r in graph.requests)
        assert len(puts) == 3 + 10  # ceil(8 MiB / 3,276,800) + ceil(30 MiB / 3,276,800)
        assert_clean(graph)

    spool_test(tmp_path, scenario)


def test_many_small_attachments_fill_the_draft_then_post_one_by_one(tmp_path: Path, graph: FakeGraph) -> None:
    async def scenario(blobs: BlobStore) -> None:
        files = [await store(blobs, f"part{i}.pdf", 2_500_000 + i, seed=i) for i in range(4)]
        gateway = transport(graph.url, blobs)
        try:
            await gateway.deliver(outgoing(tuple(f for f, _ in files)), MemoryCheckpoint())
        finally:
            await gateway.close()
        (sent,) = graph.sent
        assert sorted(a.sha256 for a in sent.attachments) == sorted(sha for _, sha in files)
        calls = graph_calls(graph)
        assert calls[0] == f"POST /v1.0/users/{MB}/messages" and calls[-1].endswith("/send")
        assert sum(c.endswith("/attachments") for c in calls) == 3
        for record in graph.requests:
            assert record.body_size <= FOUR_MIB or record.path.endswith("/attachments")
        assert_clean(graph)

    spool_test(tmp_path, scenario)


# -- throttling -----------------------------------------------------------------------------------------


def test_short_retry_after_is_waited_out_before_anything_else_goes_to_the_mailbox(
    tmp_path: Path, graph: FakeGraph
) -> None:
    async def scenario(blobs: BlobStore) -> None:
        pdf, _ = await store(blobs, "scan.pdf", 50_000)
        graph.fail_next("POST", r"/send$", 429, retry_after=1)
        gateway = transport(graph.url, blobs)
        try:
            await gateway.deliver(outgoing((pdf,)), MemoryCheckpoint())
        finally:
            await gateway.close()
        assert [r.status for r in graph.requests] == [201, 429, 202]
        assert len(graph.sent) == 1
        assert_clean(graph)  # a request inside the Retry-After window would be a violation

    spool_test(tmp_path, scenario)


def test_long_retry_after_requeues_the_job_and_holds_the_mailbox(tmp_path: Path, graph: FakeGraph) -> None:
    async def scenario(blobs: BlobStore) -> None:
        pdf, _ = await store(blobs, "scan.pdf", 50_000)
        graph.fail_next("POST", r"/messages$", 429, retry_after=30)
        gateway = transport(graph.url, blobs)
        try:
            with pytest.raises(TransientDeliveryError) as first:
                await gateway.deliver(outgoing((pdf,), job="a"), MemoryCheckpoint())
            assert first.value.retry_after is not None and first.value.retry_after > 29
            seen = len(graph.requests)
            with pytest.raises(TransientDeliveryError) as second:
                await gateway.deliver(outgoing((pdf,), job="b"), MemoryCheckpoint())
            assert second.value.retry_after is not None and second.value.retry_after > 28
            assert len(graph.requests) == seen  # nothing more went to the throttled mailbox
        finally:
            await gateway.close()
        assert graph.violations == [] and graph.sent == []

    spool_test(tmp_path, scenario)


def test_at_most_four_requests_in_flight_per_mailbox(tmp_path: Path, graph: FakeGraph) -> None:
    async def scenario(blobs: BlobStore) -> None:
        pdf, _ = await store(blobs, "scan.pdf", 20_000)
        gateway = transport(graph.url, blobs)
        try:
            with graph.hold():
                batch = asyncio.gather(
                    *(gateway.deliver(outgoing((pdf,), job=f"c{i}"), MemoryCheckpoint()) for i in range(8))
                )
                task = asyncio.ensure_future(batch)
                deadline = asyncio.get_running_loop().time() + 20
                while graph.in_flight(MB) < 4:
                    assert asyncio.get_running_loop().time() < deadline, "requests never reached the fake"
                    await asyncio.sleep(0.01)
            await task
        finally:
            await gateway.close()
        assert graph.max_concurrency_seen[MB] == 4
        assert len(graph.sent) == 8
        assert_clean(graph)

    spool_test(tmp_path, scenario)


# -- lost replies and crashed workers -------------------------------------------------------------------


class HookedBlobs:
    """The real blob store, calling `hook(name, offset)` before each read: to act at an exact upload point."""

    def __init__(self, inner: BlobStore, hook: Any) -> None:
        self.inner, self.hook = inner, hook

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def read_range(self, name: str, offset: int, length: int) -> bytes:
        self.hook(name, offset)
        return await self.inner.read_range(name, offset, length)


async def crash_then_resume(graph: FakeGraph, blobs: BlobStore, message: OutgoingMessage, **options: Any) -> Any:
    """First worker fails mid-way; a new worker resumes from the saved progress (a crash between the two)."""
    progress = MemoryCheckpoint()
    first = transport(graph.url, blobs, inline_retries=0, **options)
    try:
        with pytest.raises(TransientDeliveryError):
            await first.deliver(message, progress)
    finally:
        await first.close()
    second = transport(graph.url, blobs, **options)
    try:
        return await second.deliver(message, MemoryCheckpoint(progress.progress))
    finally:
        await second.close()


def assert_once(graph: FakeGraph, shas: list[str]) -> None:
    (sent,) = graph.sent
    assert sorted(a.sha256 for a in sent.attachments) == sorted(shas)
    assert graph.items(MB, "drafts") == []  # no orphan draft left behind
    assert_clean(graph)


def test_lost_reply_after_create_reuses_the_draft(tmp_path: Path, graph: FakeGraph) -> None:
    async def scenario(blobs: BlobStore) -> None:
        pdf, sha = await store(blobs, "scan.pdf", 700_000)
        graph.fail_next("POST", r"/messages$", 0, after_effect=True)
        await crash_then_resume(graph, blobs, outgoing((pdf,)))
        assert graph_calls(graph).count(f"POST /v1.0/users/{MB}/messages") == 1
        assert_once(graph, [sha])

    spool_test(tmp_path, scenario)


def test_lost_reply_after_attachment_post_does_not_attach_twice(tmp_path: Path, graph: FakeGraph) -> None:
    async def scenario(blobs: BlobStore) -> None:
        files = [await store(blobs, f"part{i}.pdf", 2_500_000, seed=i) for i in range(2)]
        graph.fail_next("POST", r"/attachments$", 0, after_effect=True)
        await crash_then_resume(graph, blobs, outgoing(tuple(f for f, _ in files)))
        assert_once(graph, [sha for _, sha in files])

    spool_test(tmp_path, scenario)


def test_lost_reply_after_send_is_found_sent_and_not_sent_again(tmp_path: Path, graph: FakeGraph) -> None:
    async def scenario(blobs: BlobStore) -> None:
        pdf, sha = await store(blobs, "scan.pdf", 100_000)
        graph.fail_next("POST", r"/send$", 0, after_effect=True)
        delivered = await crash_then_resume(graph, blobs, outgoing((pdf,)))
        assert "earlier send" in delivered.detail
        assert sum(c.endswith("/send") for c in graph_calls(graph)) == 1
        assert_once(graph, [sha])

    spool_test(tmp_path, scenario)


@pytest.mark.parametrize(
    ("send_lag", "search_lag"),
    [(0.0, 0.0), (30.0, 0.0), (0.0, 120.0), (30.0, 400.0)],
    ids=["instant", "async-send", "search-lag", "both"],
)
def test_lost_send_reply_under_exchange_lags_is_sent_exactly_once(
    tmp_path: Path, graph: FakeGraph, send_lag: float, search_lag: float
) -> None:
    """Exchange acts on a send after the 202 (the draft vanishes later) and indexes the Sent Items copy later
    still. A worker that lost the send's reply must neither send again while the draft lingers nor take the
    draft's disappearance, before the copy can be found, for a send that never happened."""

    async def scenario(blobs: BlobStore) -> None:
        pdf, sha = await store(blobs, "scan.pdf", 100_000)
        skew = [0.0]
        graph.clock = lambda: time.time() + skew[0]
        graph.send_lag, graph.search_lag = send_lag, search_lag
        options = {"clock": lambda: time.time() + skew[0]}
        graph.fail_next("POST", r"/send$", 0, after_effect=True)
        progress = MemoryCheckpoint()
        results: list[str] = []
        for step in (0.0, 60.0, 301.0, 200.0, 400.0, 400.0):  # workers retrying as the queue redelivers
            skew[0] += step
            worker = transport(graph.url, blobs, inline_retries=0, **options)
            try:
                results.append((await worker.deliver(outgoing((pdf,)), progress)).detail)
                break
            except TransientDeliveryError:
                pass  # the lost reply, then "waiting for Exchange to show the sent message"
            finally:
                await worker.close()
        assert results, "never confirmed as sent"
        skew[0] += send_lag + search_lag + 1  # let every send Exchange accepted go out
        assert_once(graph, [sha])
        assert sum(c.endswith("/send") for c in graph_calls(graph)) == 1

    spool_test(tmp_path, scenario)


def test_a_send_answered_404_because_exchange_already_took_the_draft_is_found_sent(
    tmp_path: Path, graph: FakeGraph
) -> None:
    """Exchange acted on the send but the client hears 404 ErrorItemNotFound (the draft is gone): the
    transport must look in the mailbox and report the scan sent, never fail it or build it again."""

    async def scenario(blobs: BlobStore) -> None:
        pdf, sha = await store(blobs, "scan.pdf", 100_000)
        graph.fail_next("POST", r"/send$", 404, code="ErrorItemNotFound", after_effect=True)
        worker = transport(graph.url, blobs)
        try:
            delivered = await worker.deliver(outgoing((pdf,)), MemoryCheckpoint())
        finally:
            await worker.close()
        assert "earlier send" in delivered.detail
        assert_once(graph, [sha])

    spool_test(tmp_path, scenario)


def test_unknown_send_outcome_waits_for_the_grace_period_then_sends_once(tmp_path: Path, graph: FakeGraph) -> None:
    async def scenario(blobs: BlobStore) -> None:
        pdf, sha = await store(blobs, "scan.pdf", 100_000)
        skew = [0.0]
        options = {"clock": lambda: time.time() + skew[0], "send_grace": 300.0}
        graph.fail_next("POST", r"/send$", 503)  # Graph did not act, but a client cannot know that
        progress = MemoryCheckpoint()
        for _ in range(2):  # the failed send, then a retry inside the grace period
            worker = transport(graph.url, blobs, inline_retries=0, **options)
            with pytest.raises(TransientDeliveryError) as waiting:
                await worker.deliver(outgoing((pdf,)), progress)
            await worker.close()
        assert waiting.value.retry_after is not None and 290 < waiting.value.retry_after <= 300
        assert progress.progress[SEND_REQUESTED_AT] and graph.sent == []
        skew[0] = 301.0
        worker = transport(graph.url, blobs, **options)
        await worker.deliver(outgoing((pdf,)), progress)
        await worker.close()
        assert_once(graph, [sha])

    spool_test(tmp_path, scenario)


def test_lost_reply_mid_upload_resumes_from_next_expected_ranges(tmp_path: Path, graph: FakeGraph) -> None:
    async def scenario(blobs: BlobStore) -> None:
        big, sha = await store(blobs, "big.pdf", 9 * MIB, seed=9)
        graph.fail_next("PUT", r"AttachmentSessions", 0, after_effect=True)
        await crash_then_resume(graph, blobs, outgoing((big,)))
        statuses = [r.status for r in graph.requests if r.method == "PUT"]
        assert statuses == [0, 416, 200, 201]
        assert_once(graph, [sha])

    spool_test(tmp_path, scenario)


def test_lost_reply_to_the_final_chunk_finds_the_attachment_on_the_draft(tmp_path: Path, graph: FakeGraph) -> None:
    async def scenario(blobs: BlobStore) -> None:
        big, sha = await store(blobs, "big.pdf", 5 * MIB, seed=5)

        def lose_final_reply(name: str, offset: int) -> None:
            if offset > 0 and not any(r.status == 0 for r in graph.requests):
                graph.fail_next("PUT", r"AttachmentSessions", 0, after_effect=True)

        await crash_then_resume(graph, HookedBlobs(blobs, lose_final_reply), outgoing((big,)))
        assert sum("createUploadSession" in c for c in graph_calls(graph)) == 1
        assert_once(graph, [sha])

    spool_test(tmp_path, scenario)


def test_token_revoked_mid_upload_is_refreshed_once(
    tmp_path: Path, graph: FakeGraph, idp: FakeIdentityEndpoint
) -> None:
    async def scenario(blobs: BlobStore) -> None:
        first, sha1 = await store(blobs, "first.pdf", 4 * MIB, seed=41)
        second, sha2 = await store(blobs, "second.pdf", 4 * MIB, seed=42)

        def revoke_during_first_upload(name: str, offset: int) -> None:
            if name == first.blob and offset > 0:
                idp.revoke()

        gateway = transport(graph.url, HookedBlobs(blobs, revoke_during_first_upload))
        try:
            await gateway.deliver(outgoing((first, second)), MemoryCheckpoint())
        finally:
            await gateway.close()
        assert idp.token_requests == 2
        assert [r.status for r in graph.requests].count(401) == 1
        assert_once(graph, [sha1, sha2])

    spool_test(tmp_path, scenario)


@pytest.mark.slow
def test_a_burst_under_throttling_outages_and_lost_replies_is_delivered_exactly_once(
    tmp_path: Path, idp: FakeIdentityEndpoint
) -> None:
    """Each job is retried like the agent would: a new transport on the same progress after every failure."""
    seed = int(os.environ.get("SCANGW_TEST_SEED", "7"))
    # A request already past the limiter (e.g. fetching its token) when another one got the 429 cannot be
    # recalled; on a loaded 2-core runner that window can exceed the fake's default 0.25 s.
    with FakeGraph(
        idp, seed=seed, throttle_rate=0.25, error_rate=0.05, lose_reply_rate=0.05, retry_after_grace=0.6
    ) as graph:
        graph.add_mailbox(MB)
        skew = [0.0]  # the grace period passes by moving our clock, not by sleeping
        limits = MailboxLimits(rate_per_min=0)  # one process: its workers share the mailbox limits

        async def until_sent(blobs: BlobStore, message: OutgoingMessage) -> None:
            progress = MemoryCheckpoint()
            for _ in range(30):
                worker = transport(graph.url, blobs, clock=lambda: time.time() + skew[0], limits=limits)
                try:
                    await worker.deliver(message, progress)
                    return
                except TransientDeliveryError as exc:
                    if exc.retry_after is not None and exc.retry_after > 5:
                        skew[0] += exc.retry_after
                finally:
                    await worker.close()
            raise AssertionError(f"{message.internet_message_id} was never delivered")

        async def scenario(blobs: BlobStore) -> None:
            files = [await store(blobs, f"scan{i}.pdf", 200_000 + i, seed=i) for i in range(12)]
            jobs = [outgoing((f,), job=f"burst{i}") for i, (f, _) in enumerate(files)]
            await asyncio.gather(*(until_sent(blobs, m) for m in jobs))
            assert sorted(m.internet_message_id for m in graph.sent) == sorted(m.internet_message_id for m in jobs)
            assert all(len(m.attachments) == 1 for m in graph.sent)
            assert graph.items(MB, "drafts") == []
            assert_clean(graph)
            assert graph.max_concurrency_seen[MB] <= 4

        spool_test(tmp_path, scenario)


# -- permanent failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mailbox", "sender", "remedy"),
    [
        ("denied@contoso.com", None, "grant-mailbox-access.ps1 -Mailbox denied@contoso.com"),
        ("ghost@contoso.com", None, "ghost@contoso.com must be an Exchange Online mailbox"),
        (MB, "boss@contoso.com", "grant-mailbox-access.ps1 -Mailbox " + MB),
    ],
    ids=["access-denied", "mailbox-missing", "send-as-denied"],
)
def test_permanent_failures_name_the_mailbox_and_the_fix(
    tmp_path: Path, graph: FakeGraph, mailbox: str, sender: str | None, remedy: str
) -> None:
    graph.add_mailbox("denied@contoso.com", access_denied=True)

    async def scenario(blobs: BlobStore) -> None:
        pdf, _ = await store(blobs, "scan.pdf", 10_000)
        message = outgoing((pdf,), mailbox=mailbox, from_=Address(sender or mailbox, "Someone"))
        gateway = transport(graph.url, blobs)
        try:
            with pytest.raises(PermanentDeliveryError) as failed:
                await gateway.deliver(message, MemoryCheckpoint())
        finally:
            await gateway.close()
        assert remedy in failed.value.reason()
        assert failed.value.request_id
        assert graph.sent == []

    spool_test(tmp_path, scenario)


def test_token_for_the_wrong_cloud_fails_after_one_refresh(
    tmp_path: Path, graph: FakeGraph, idp: FakeIdentityEndpoint
) -> None:
    async def scenario(blobs: BlobStore) -> None:
        pdf, _ = await store(blobs, "scan.pdf", 10_000)
        gateway = transport(graph.url, blobs, settings=settings(graph.url, cloud="usgov"))
        try:
            with pytest.raises(PermanentDeliveryError) as failed:
                await gateway.deliver(outgoing((pdf,)), MemoryCheckpoint())
        finally:
            await gateway.close()
        assert "SCANGW_CLOUD" in failed.value.reason()
        assert [r.status for r in graph.requests] == [401, 401]
        assert idp.token_requests == 2

    spool_test(tmp_path, scenario)


def test_large_scan_where_graph_has_no_upload_sessions_fails_with_the_reason(tmp_path: Path, graph: FakeGraph) -> None:
    async def scenario(blobs: BlobStore) -> None:
        big, _ = await store(blobs, "big.pdf", 3 * MIB)
        gateway = transport(graph.url, blobs, settings=settings(graph.url, cloud="usgovdod"))
        try:
            with pytest.raises(PermanentDeliveryError) as failed:
                await gateway.deliver(outgoing((big,)), MemoryCheckpoint())
        finally:
            await gateway.close()
        assert "big.pdf" in str(failed.value) and "usgovdod" in str(failed.value)
        assert graph.requests == []

    spool_test(tmp_path, scenario)


def test_link_fallback_hook_replaces_what_graph_cannot_carry(tmp_path: Path, graph: FakeGraph) -> None:
    class Links:
        async def replace_attachments(self, message: OutgoingMessage, files: tuple[FileRef, ...]) -> OutgoingMessage:
            kept = tuple(f for f in message.attachments if f not in files)
            links = "\n".join(f"https://storage.example/{f.name}" for f in files)
            return dataclasses.replace(message, attachments=kept, body=f"{message.body}\n{links}")

    async def scenario(blobs: BlobStore) -> None:
        big, _ = await store(blobs, "big.pdf", 3 * MIB)
        small, sha = await store(blobs, "small.pdf", 1000, seed=2)
        config = settings(graph.url, cloud="usgov")
        gateway = transport(graph.url, blobs, settings=config, link_fallback=Links())
        graph.audience = "https://graph.microsoft.us"  # the fake stands in for the US Gov Graph here
        try:
            await gateway.deliver(outgoing((big, small)), MemoryCheckpoint())
        finally:
            await gateway.close()
        (sent,) = graph.sent
        assert "https://storage.example/big.pdf" in sent.body
        assert [a.sha256 for a in sent.attachments] == [sha]

    spool_test(tmp_path, scenario)


def test_check_mailbox_reads_drafts_with_a_token_and_names_the_fix(tmp_path: Path, graph: FakeGraph) -> None:
    graph.add_mailbox("denied@contoso.com", access_denied=True)

    async def scenario(blobs: BlobStore) -> None:
        gateway = transport(graph.url, blobs)
        try:
            await gateway.check_mailbox(MB)
            with pytest.raises(PermanentDeliveryError) as failed:
                await gateway.check_mailbox("denied@contoso.com")
        finally:
            await gateway.close()
        assert "Mail.ReadWrite" in failed.value.reason()
        assert graph_calls(graph)[0] == f"GET /v1.0/users/{MB}/mailFolders/drafts"

    spool_test(tmp_path, scenario)


# -- memory ---------------------------------------------------------------------------------------------


def _serve_fakes(conn: Any) -> None:
    """Child process: the fakes keep every uploaded byte, so they must not count in our tracemalloc peak."""
    with FakeIdentityEndpoint() as idp, FakeGraph(idp) as graph:
        graph.add_mailbox(MB, max_send_size=150 * MIB)
        conn.send((idp.env(), graph.url))
        conn.recv()
        conn.send(([(a.name, a.sha256) for m in graph.sent for a in m.attachments], graph.violations))


@pytest.mark.slow
def test_a_110_mb_scan_uses_no_more_memory_than_a_1_mb_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """110 MB is what Exchange's 150 MB message cap leaves for files after base64; it must stream."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(target=_serve_fakes, args=(theirs,), daemon=True)
    child.start()
    try:
        assert ours.poll(60), "the fakes did not start"
        env, url = ours.recv()
        for name, value in env.items():
            monkeypatch.setenv(name, value)

        async def scenario(blobs: BlobStore) -> list[int]:
            small, _ = await store(blobs, "warm-up.pdf", 1000, seed=1)
            one, one_sha = await store(blobs, "one.pdf", 1_000_000, seed=2)
            big, big_sha = await store(blobs, "big.pdf", 110_000_000, seed=110)
            gateway = transport(url, blobs)
            # A worker's first message imports msgraph's model modules (tens of MiB, once per process).
            await gateway.deliver(outgoing((small,), job="warm"), MemoryCheckpoint())
            peaks = []
            try:
                for ref, job in ((one, "one"), (big, "big")):
                    tracemalloc.start()
                    try:
                        await gateway.deliver(outgoing((ref,), job=job), MemoryCheckpoint())
                        peaks.append(tracemalloc.get_traced_memory()[1])
                    finally:
                        tracemalloc.stop()
            finally:
                await gateway.close()
            ours.send("report")
            assert ours.poll(60)
            delivered, violations = ours.recv()
            assert delivered[1:] == [("one.pdf", one_sha), ("big.pdf", big_sha)] and violations == []
            return peaks

        peaks: list[int] = []

        async def measure(blobs: BlobStore) -> None:
            peaks.extend(await scenario(blobs))

        spool_test(tmp_path, measure)
        one_peak, big_peak = peaks
        # A 1 MB scan goes inline (its base64 JSON in memory); the 110 MB one through 3.1 MiB chunks.
        assert big_peak < max(one_peak, 4 * MIB) + 4 * MIB, (
            f"1 MB: {one_peak / MIB:.1f} MiB, 110 MB: {big_peak / MIB:.1f} MiB"
        )
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()


# -- mailbox limits (pure) ------------------------------------------------------------------------------


def test_sends_are_paced_per_mailbox_and_far_waits_requeue() -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    async def scenario() -> None:
        limits = MailboxLimits(rate_per_min=30, max_wait=5.0, clock=lambda: now[0], sleep=sleep)
        for _ in range(3):
            await limits.pace_send(MB)
        await limits.pace_send("other@contoso.com")
        assert slept == [2.0, 2.0]
        await limits.throttled(MB, 60)
        with pytest.raises(TransientDeliveryError) as waiting:
            async with limits.request(MB):
                pass
        assert waiting.value.retry_after is not None and waiting.value.retry_after > 59

    run(scenario())
