"""What one delivery attempt of the Graph transport does around the exactly-once protocol: how long it backs off
between inline retries, what it says when a scan's stored bytes are short, what `scangw doctor` reports, and a
second worker handed a job the first one already sent (the queue redelivered it while the first was busy)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from azure.identity.aio import ManagedIdentityCredential

from gateway.config import Settings
from gateway.core.errors import Deferred, PermanentDeliveryError, TransientDeliveryError
from gateway.core.jobs import FileRef
from gateway.core.ports import BlobStore
from gateway.delivery.graph.exactly_once import GraphTransport
from gateway.delivery.graph.progress import ATTACHED, DRAFT_ID, DRAFT_REQUESTED, INLINE, SEND_REQUESTED_AT
from gateway.delivery.transport import MemoryCheckpoint
from tests.fakes.graph import FakeGraph
from tests.integration.exactly_once_support import creates, sends
from tests.integration.test_graph_transport import (
    MB,
    MIB,
    HookedBlobs,
    assert_once,
    graph_calls,
    outgoing,
    spool_test,
    store,
    transport,
)


class HalfwayRandom(random.Random):
    """Every jitter draw lands in the middle of its range: the backoff becomes exact."""

    def random(self) -> float:
        return 0.5


def test_inline_retries_back_off_exponentially_with_jitter_up_to_the_cap(tmp_path: Path, graph: FakeGraph) -> None:
    """Three 503s on the create, then success: waits of base * 2^round (capped at max_inline_wait), each drawn
    from the upper half of that ceiling, so a Graph outage is not hammered by every worker at once."""

    async def scenario(blobs: BlobStore) -> None:
        pdf, sha = await store(blobs, "scan.pdf", 10_000)
        slept: list[float] = []

        async def sleep(seconds: float) -> None:
            slept.append(seconds)

        for _ in range(3):
            graph.fail_next("POST", r"/messages$", 503)
        gateway = transport(
            graph.url,
            blobs,
            sleep=sleep,
            rng=HalfwayRandom(),
            backoff_base=1.0,
            max_inline_wait=2.5,
            inline_retries=3,
        )
        try:
            await gateway.deliver(outgoing((pdf,)), MemoryCheckpoint())
        finally:
            await gateway.close()
        # ceilings 1, 2, then min(2.5, 4): half of each, plus half of the other half
        assert slept == [0.75, 1.5, 1.875]
        assert [r.status for r in graph.requests if r.method == "POST" and r.path.endswith("/messages")] == [
            503,
            503,
            503,
            201,
        ]
        assert_once(graph, [sha])

    spool_test(tmp_path, scenario)


def test_a_stored_file_shorter_than_its_record_fails_the_job_saying_so_with_nothing_sent(
    tmp_path: Path, graph: FakeGraph
) -> None:
    async def scenario(blobs: BlobStore) -> None:
        pdf, _ = await store(blobs, "scan.pdf", 1000)
        short = FileRef(blob=pdf.blob, name=pdf.name, content_type=pdf.content_type, size=1010)
        gateway = transport(graph.url, blobs)
        try:
            with pytest.raises(PermanentDeliveryError) as failed:
                await gateway.deliver(outgoing((short,)), MemoryCheckpoint())
        finally:
            await gateway.close()
        assert str(failed.value) == "Stored file scan.pdf has 1000 bytes, not 1010."
        assert failed.value.remedy == "Send the scan again."
        assert graph.requests == [] and graph.sent == []  # refused before anything reached the mailbox

    spool_test(tmp_path, scenario)


def test_check_mailbox_names_the_mailbox_it_could_not_read(tmp_path: Path, graph: FakeGraph) -> None:
    graph.add_mailbox("denied@contoso.com", access_denied=True)

    async def scenario(blobs: BlobStore) -> None:
        gateway = transport(graph.url, blobs)
        try:
            with pytest.raises(PermanentDeliveryError) as failed:
                await gateway.check_mailbox("denied@contoso.com")
        finally:
            await gateway.close()
        assert "mailbox denied@contoso.com" in str(failed.value)
        assert "-Mailbox denied@contoso.com" in failed.value.reason()

    spool_test(tmp_path, scenario)


class SnapshotCheckpoint(MemoryCheckpoint):
    """Keeps a copy of the progress as it was right after the create was announced: what a second worker,
    handed the same job by the queue at that moment, reads from the job record."""

    def __init__(self) -> None:
        super().__init__()
        self.after_create_announced: dict[str, Any] = {}

    async def save(self, **changes: Any) -> None:
        await super().save(**changes)
        if changes.get(DRAFT_REQUESTED) and not self.after_create_announced:
            self.after_create_announced = dict(self.progress)


def test_a_second_worker_on_a_job_the_first_already_sent_finds_it_sent_and_sends_nothing(
    tmp_path: Path, graph: FakeGraph
) -> None:
    async def scenario(blobs: BlobStore) -> None:
        pdf, sha = await store(blobs, "scan.pdf", 10_000)
        first_progress = SnapshotCheckpoint()
        first = transport(graph.url, blobs)
        try:
            await first.deliver(outgoing((pdf,)), first_progress)
        finally:
            await first.close()
        second = transport(graph.url, blobs)
        try:
            late = await second.deliver(outgoing((pdf,)), MemoryCheckpoint(first_progress.after_create_announced))
        finally:
            await second.close()
        assert late.detail == "found already sent"
        search = graph.requests[-1]
        assert graph_calls(graph)[-1] == f"GET /v1.0/users/{MB}/messages" and late.request_id == search.request_id
        assert creates(graph) == 1 and sends(graph) == 1
        assert_once(graph, [sha])

    spool_test(tmp_path, scenario)


def test_a_scan_whose_stored_bytes_are_gone_fails_the_job_saying_so_with_nothing_sent(
    tmp_path: Path, graph: FakeGraph
) -> None:
    async def scenario(blobs: BlobStore) -> None:
        gone = FileRef(blob="job/gone.pdf", name="gone.pdf", content_type="application/pdf", size=1000)
        gateway = transport(graph.url, blobs)
        try:
            with pytest.raises(PermanentDeliveryError) as failed:
                await gateway.deliver(outgoing((gone,)), MemoryCheckpoint())
        finally:
            await gateway.close()
        assert str(failed.value).startswith("The scan's bytes are missing from storage (")
        assert "job/gone.pdf" in str(failed.value)
        assert failed.value.remedy == "Send the scan again from the device."
        assert graph.requests == [] and graph.sent == []

    spool_test(tmp_path, scenario)


def test_a_refused_attachment_post_is_retried_without_listing_the_draft(tmp_path: Path, graph: FakeGraph) -> None:
    """A 429 on an attachment POST says nothing was attached: the retry posts it directly, once."""

    async def scenario(blobs: BlobStore) -> None:
        files = [await store(blobs, f"part{i}.pdf", 2_500_000, seed=i) for i in range(2)]
        graph.fail_next("POST", r"/attachments$", 429, retry_after=1)
        gateway = transport(graph.url, blobs, inline_retries=1)
        try:
            await gateway.deliver(outgoing(tuple(f for f, _ in files)), MemoryCheckpoint())
        finally:
            await gateway.close()
        assert [r.status for r in graph.requests if r.path.endswith("/attachments")] == [429, 201]
        assert not any(r.method == "GET" for r in graph.requests)
        assert_once(graph, [sha for _, sha in files])

    spool_test(tmp_path, scenario)


def test_a_resumed_worker_posts_only_the_attachments_not_yet_confirmed(tmp_path: Path, graph: FakeGraph) -> None:
    """The first file rides in the create, the second is POSTed and confirmed, the third's POST fails (503:
    maybe attached): the next worker checks the draft for the third only and never posts the second again."""

    async def scenario(blobs: BlobStore) -> None:
        files = [await store(blobs, f"part{i}.pdf", 2_500_000, seed=i) for i in range(3)]
        message = outgoing(tuple(f for f, _ in files))
        progress = MemoryCheckpoint()

        def fail_the_third_post(name: str, offset: int) -> None:
            if name == files[2][0].blob:  # read just before its POST
                graph.fail_next("POST", r"/attachments$", 503)

        first = transport(graph.url, HookedBlobs(blobs, fail_the_third_post), inline_retries=0)
        try:
            with pytest.raises(TransientDeliveryError):
                await first.deliver(message, progress)
        finally:
            await first.close()
        second = transport(graph.url, blobs)
        try:
            await second.deliver(message, progress)
        finally:
            await second.close()
        assert [r.status for r in graph.requests if r.path.endswith("/attachments")] == [201, 503, 201]
        assert_once(graph, [sha for _, sha in files])

    spool_test(tmp_path, scenario)


def test_a_graph_retry_after_over_five_seconds_requeues_the_job_at_once_as_a_failed_attempt(
    tmp_path: Path, graph: FakeGraph
) -> None:
    """The production transport's defaults: a worker holds a job through a Retry-After of at most 5 s; a
    longer one goes back to the queue at once as Graph's own transient failure (it counts as an attempt,
    unlike a wait our limiter imposes), carrying the Retry-After."""

    async def scenario(blobs: BlobStore) -> None:
        pdf, _ = await store(blobs, "scan.pdf", 10_000)
        waits: list[float] = []

        async def sleep(seconds: float) -> None:
            waits.append(seconds)

        graph.fail_next("POST", r"/messages$", 429, retry_after=6)
        gateway = transport(graph.url, blobs, sleep=sleep)
        try:
            with pytest.raises(TransientDeliveryError) as failed:
                await gateway.deliver(outgoing((pdf,)), MemoryCheckpoint())
        finally:
            await gateway.close()
        assert waits == []
        assert type(failed.value) is TransientDeliveryError
        assert str(failed.value).startswith(f"Graph is unavailable or busy for mailbox {MB}")
        assert failed.value.retry_after == 6
        assert graph.violations == [] and graph.sent == []

    spool_test(tmp_path, scenario)


def test_large_files_where_graph_has_no_upload_sessions_are_named_with_the_remedy(
    tmp_path: Path, graph: FakeGraph
) -> None:
    async def scenario(blobs: BlobStore) -> None:
        one, _ = await store(blobs, "one.pdf", 3 * MIB)
        two, _ = await store(blobs, "two.pdf", 4 * MIB)
        small, _ = await store(blobs, "small.pdf", 1000)
        config = Settings(graph_url=graph.url, mailbox_rate_per_min=0, cloud="usgovdod")
        gateway = transport(graph.url, blobs, settings=config)
        try:
            with pytest.raises(PermanentDeliveryError) as failed:
                await gateway.deliver(outgoing((one, small, two)), MemoryCheckpoint())
        finally:
            await gateway.close()
        assert str(failed.value) == (
            "one.pdf, two.pdf is 3 MiB or larger and Graph in the usgovdod cloud has no attachment upload "
            "sessions, so it cannot be attached."
        )
        assert failed.value.remedy == (
            "Scan at a lower resolution or in parts under 3 MiB, or enable download links (SCANGW_LINK_HOURS)."
        )
        assert graph.requests == []

    spool_test(tmp_path, scenario)


class CountingCheckpoint(MemoryCheckpoint):
    """Counts the durable writes: each is a job-record write in storage (an etag round trip)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[dict[str, Any]] = []

    async def save(self, **changes: Any) -> None:
        await super().save(**changes)
        self.writes.append(changes)


def test_a_typical_scan_costs_two_checkpoint_writes(tmp_path: Path, graph: FakeGraph) -> None:
    """Announcing the create and the send are the only writes when every file rides in the create: the
    draft's id goes with the send's record (a crash before it finds the draft by its internetMessageId)."""

    async def scenario(blobs: BlobStore) -> None:
        pdf, sha = await store(blobs, "scan.pdf", 100_000)
        progress = CountingCheckpoint()
        gateway = transport(graph.url, blobs)
        try:
            await gateway.deliver(outgoing((pdf,)), progress)
        finally:
            await gateway.close()
        assert [sorted(k for k, v in w.items() if v is not None) for w in progress.writes] == [
            [ATTACHED, DRAFT_REQUESTED, INLINE],
            [SEND_REQUESTED_AT],
        ]
        assert progress.progress[DRAFT_ID]
        assert_once(graph, [sha])

    spool_test(tmp_path, scenario)


def test_with_the_defaults_an_outage_is_tried_four_times_in_the_worker_then_requeued(
    tmp_path: Path, graph: FakeGraph
) -> None:
    """The production defaults: three inline retries, backing off from 0.5 s (jitter at its midpoint here)."""

    async def scenario(blobs: BlobStore) -> None:
        pdf, _ = await store(blobs, "scan.pdf", 10_000)
        slept: list[float] = []

        async def sleep(seconds: float) -> None:
            slept.append(seconds)

        for _ in range(5):
            graph.fail_next("POST", r"/messages$", 503)
        config = Settings(graph_url=graph.url, mailbox_rate_per_min=0)
        gateway = GraphTransport(config, blobs, sleep=sleep, rng=HalfwayRandom())
        try:
            with pytest.raises(TransientDeliveryError):
                await gateway.deliver(outgoing((pdf,)), MemoryCheckpoint())
        finally:
            await gateway.close()
        assert slept == [0.375, 0.75, 1.5]
        assert [r.status for r in graph.requests if r.method == "POST"] == [503] * 4
        assert graph.sent == []

    spool_test(tmp_path, scenario)


def test_the_send_pace_is_kept_by_the_transports_own_limiter_within_its_inline_wait(
    tmp_path: Path, graph: FakeGraph
) -> None:
    """Without shared limits (`scangw doctor`, one-off tools) the transport paces sends itself: it sleeps
    (through the injected sleep) up to its `max_inline_wait`, and re-queues a job whose turn is further off."""

    async def scenario(blobs: BlobStore) -> None:
        pdf, _ = await store(blobs, "scan.pdf", 10_000)
        slept: list[float] = []

        async def sleep(seconds: float) -> None:
            slept.append(seconds)

        config = Settings(graph_url=graph.url, mailbox_rate_per_min=15)  # a send every 4 s
        patient = GraphTransport(config, blobs, sleep=sleep)
        hurried = GraphTransport(config, blobs, sleep=sleep, max_inline_wait=0.5)
        try:
            await patient.deliver(outgoing((pdf,), job="a"), MemoryCheckpoint())
            await patient.deliver(outgoing((pdf,), job="b"), MemoryCheckpoint())
            assert len(slept) == 1 and 2.0 < slept[0] <= 4.0  # the next turn, 4 s after the first send
            await hurried.deliver(outgoing((pdf,), job="c"), MemoryCheckpoint())
            with pytest.raises(Deferred) as later:
                await hurried.deliver(outgoing((pdf,), job="d"), MemoryCheckpoint())
            assert later.value.retry_after is not None and 2.0 < later.value.retry_after <= 4.0
        finally:
            await patient.close()
            await hurried.close()
        assert len(slept) == 1
        assert [m.internet_message_id for m in graph.sent] == [f"<scan.{j}@contoso.com>" for j in "abc"]

    spool_test(tmp_path, scenario)


class CountedCredential:
    """A caller's own credential (what `scangw doctor` passes): the transport may use it, never close it."""

    def __init__(self) -> None:
        self.inner = ManagedIdentityCredential()
        self.closed = 0

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        return await self.inner.get_token(*scopes, **kwargs)

    async def close(self) -> None:
        self.closed += 1
        await self.inner.close()


def test_a_credential_given_to_the_transport_stays_open_for_its_owner(tmp_path: Path, graph: FakeGraph) -> None:
    async def scenario(blobs: BlobStore) -> None:
        pdf, sha = await store(blobs, "scan.pdf", 10_000)
        credential = CountedCredential()
        gateway = transport(graph.url, blobs, credential=credential)
        try:
            await gateway.deliver(outgoing((pdf,)), MemoryCheckpoint())
        finally:
            await gateway.close()
        assert credential.closed == 0
        await credential.close()
        assert_once(graph, [sha])

    spool_test(tmp_path, scenario)
