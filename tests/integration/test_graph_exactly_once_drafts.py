"""The exactly-once path's draft bookkeeping against the strict fake Graph: duplicate drafts that lost create
replies leave behind under Exchange's search lag, and what a resumed worker does with each of them.

A "worker" is a new GraphTransport on the same checkpoint (what the agent does after a failure).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.core.message import OutgoingMessage
from gateway.core.ports import BlobStore
from gateway.delivery.graph.progress import DRAFT_ID, DRAFT_REQUESTED, SEND_REQUESTED_AT
from tests.fakes.graph import FakeGraph
from tests.integration.exactly_once_support import Workers, creates, sends
from tests.integration.test_graph_transport import MB, assert_once, graph_calls, outgoing, spool_test, store


async def two_lost_creates(graph: FakeGraph, blobs: BlobStore) -> tuple[Workers, OutgoingMessage, str]:
    """Two attempts whose create replies were lost, with Exchange's search lagging: two drafts of one scan
    exist and neither could be found yet. Returns the workers, the message and its attachment's hash."""
    pdf, sha = await store(blobs, "scan.pdf", 100_000)
    graph.search_lag = 120.0
    jobs = Workers(graph, blobs)
    message = outgoing((pdf,))
    for _ in range(2):
        graph.fail_next("POST", r"/messages$", 0, after_effect=True)
        await jobs.fails(message)
    return jobs, message, sha


def test_a_duplicate_draft_found_after_the_send_grace_is_deleted_and_the_scan_sent_once(
    tmp_path: Path, graph: FakeGraph
) -> None:
    """A lost create reply under search lag makes a second draft; a send whose outcome is unknown (503) is
    then resolved after the grace period: the recorded draft is sent, the duplicate deleted, never sent."""

    async def scenario(blobs: BlobStore) -> None:
        pdf, sha = await store(blobs, "scan.pdf", 100_000)
        graph.search_lag = 120.0
        jobs = Workers(graph, blobs)
        message = outgoing((pdf,))
        graph.fail_next("POST", r"/messages$", 0, after_effect=True)
        await jobs.fails(message)  # draft A made, reply lost
        graph.fail_next("POST", r"/send$", 503)
        await jobs.fails(message)  # A not searchable yet: draft B made; its send's outcome unknown
        assert creates(graph) == 2 and len(graph.items(MB, "drafts")) == 2
        recorded = jobs.progress.progress[DRAFT_ID]
        jobs.skew += 301.0
        delivered = await jobs.attempt(message)
        assert delivered.detail == f"sent from {MB}"
        assert [r for r in graph.requests if r.method == "DELETE" and recorded in r.path] == []
        assert sends(graph) == 2  # the refused one and the real one
        assert_once(graph, [sha])  # the duplicate draft is gone, one message delivered

    spool_test(tmp_path, scenario)


def test_two_lost_creates_leave_one_draft_that_is_sent_and_the_other_deleted(tmp_path: Path, graph: FakeGraph) -> None:
    """Two create replies lost while Exchange's index lags: once both drafts are searchable, one is kept and
    sent with its attachment, the other deleted; nothing is created a third time."""

    async def scenario(blobs: BlobStore) -> None:
        jobs, message, sha = await two_lost_creates(graph, blobs)
        assert creates(graph) == 2 and jobs.progress.progress[DRAFT_REQUESTED]
        jobs.skew += 121.0
        delivered = await jobs.attempt(message)
        assert delivered.detail == f"sent from {MB}"
        assert creates(graph) == 2 and sends(graph) == 1
        assert [r.status for r in graph.requests if r.method == "DELETE"] == [204]
        assert not jobs.progress.progress.get(DRAFT_REQUESTED)
        assert jobs.progress.progress[SEND_REQUESTED_AT]
        assert_once(graph, [sha])

    spool_test(tmp_path, scenario)


def test_a_duplicate_draft_someone_else_deleted_first_does_not_stop_the_send(tmp_path: Path, graph: FakeGraph) -> None:
    """Deleting a duplicate answered 404 ErrorItemNotFound (another worker or the sweep got there first):
    the duplicate is gone either way, and the scan is sent in the same attempt."""

    async def scenario(blobs: BlobStore) -> None:
        jobs, message, sha = await two_lost_creates(graph, blobs)
        jobs.skew += 121.0
        graph.fail_next("DELETE", r"/messages/", 404, code="ErrorItemNotFound", after_effect=True)
        delivered = await jobs.attempt(message)
        assert delivered.detail == f"sent from {MB}"
        assert [r.status for r in graph.requests if r.method == "DELETE"] == [404]
        assert_once(graph, [sha])

    spool_test(tmp_path, scenario)


def test_a_duplicate_draft_that_cannot_be_deleted_holds_the_send_back(tmp_path: Path, graph: FakeGraph) -> None:
    """A 503 on the duplicate's delete is not swallowed: the attempt is retried later, and the duplicate
    is deleted then; nothing is sent while a duplicate draft may still be around."""

    async def scenario(blobs: BlobStore) -> None:
        jobs, message, sha = await two_lost_creates(graph, blobs)
        jobs.skew += 121.0
        graph.fail_next("DELETE", r"/messages/", 503)
        await jobs.fails(message)
        assert graph.sent == [] and len(graph.items(MB, "drafts")) == 2
        await jobs.attempt(message)
        assert [r.status for r in graph.requests if r.method == "DELETE"] == [503, 204]
        assert_once(graph, [sha])

    spool_test(tmp_path, scenario)


def test_a_lost_send_reply_while_exchange_indexes_late_says_what_it_waits_for_then_finds_the_copy(
    tmp_path: Path, graph: FakeGraph
) -> None:
    """The draft leaves Drafts at once but the Sent Items copy is searchable only after 4000 s: each retry
    says what it waits for (what `scangw jobs show` prints), with Graph's request id, and comes back when
    the next look is due; once the copy is found the job is sent, never sent again."""

    async def scenario(blobs: BlobStore) -> None:
        pdf, sha = await store(blobs, "scan.pdf", 100_000)
        graph.search_lag = 4000.0
        jobs = Workers(graph, blobs)
        message = outgoing((pdf,))
        graph.fail_next("POST", r"/send$", 0, after_effect=True)
        await jobs.fails(message)
        jobs.skew += 60.0
        waiting = await jobs.fails(message)
        assert re.fullmatch(r"Send requested 6\d s ago; waiting for Exchange to show the sent message\.", str(waiting))
        assert waiting.retry_after == pytest.approx(240.0, abs=5.0)
        assert waiting.request_id == graph.requests[-1].request_id and graph_calls(graph)[-1].endswith("/messages")
        jobs.skew += 3340.0  # 3400 s after the send: the draft is gone, the copy still not searchable
        indexing = await jobs.fails(message)
        assert str(indexing) == (
            f"The draft left {MB} after the send request, but the sent copy is not searchable yet; "
            "waiting for Exchange's index."
        )
        assert indexing.retry_after == pytest.approx(200.0, abs=5.0)  # the hour's end, not a full grace period
        assert indexing.request_id == graph.requests[-1].request_id
        jobs.skew += 601.0
        found = await jobs.attempt(message)
        assert found.detail == "found in the mailbox after an earlier send"
        assert found.request_id == graph.requests[-1].request_id
        assert sends(graph) == 1
        assert_once(graph, [sha])

    spool_test(tmp_path, scenario)


def test_a_send_answered_404_before_the_copy_is_searchable_waits_for_it_and_never_sends_again(
    tmp_path: Path, graph: FakeGraph
) -> None:
    """Exchange took the draft (the send answers 404 ErrorItemNotFound) but indexes the copy 120 s later:
    the attempt waits for the copy like after a lost reply, then the scan is found sent."""

    async def scenario(blobs: BlobStore) -> None:
        pdf, sha = await store(blobs, "scan.pdf", 100_000)
        graph.search_lag = 120.0
        jobs = Workers(graph, blobs)
        message = outgoing((pdf,))
        graph.fail_next("POST", r"/send$", 404, code="ErrorItemNotFound", after_effect=True)
        waiting = await jobs.fails(message)
        assert re.fullmatch(r"Send requested \d s ago; waiting for Exchange to show the sent message\.", str(waiting))
        jobs.skew += 121.0
        found = await jobs.attempt(message)
        assert found.detail == "found in the mailbox after an earlier send"
        assert sends(graph) == 1
        assert_once(graph, [sha])

    spool_test(tmp_path, scenario)
