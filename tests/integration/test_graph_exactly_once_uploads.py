"""Upload sessions on the exactly-once path against the strict fake Graph: sessions that expire or vanish,
workers that crash mid-upload, twin files, and refused session requests. Every test checks what reaches the
recipient: each file once, byte-identical.

Outlook upload URLs expire at their `expirationDateTime` (the fake: 900 s) and then refuse every PUT with 401;
the transport's clock and the fake's move together (tests/integration/exactly_once_support.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.core.ports import BlobStore
from gateway.delivery.graph.progress import ATTACHING, UPLOAD
from gateway.delivery.graph.upload import UPLOAD_CHUNK
from gateway.delivery.transport import MemoryCheckpoint
from tests.fakes.graph import FakeGraph
from tests.integration.exactly_once_support import Workers, calls_ending, creates
from tests.integration.test_graph_transport import MB, MIB, HookedBlobs, assert_once, outgoing, spool_test, store


class Crash(Exception):
    """The worker process dies here (nothing after this point of its attempt happens)."""


def put_statuses(graph: FakeGraph) -> list[int]:
    return [r.status for r in graph.requests if r.method == "PUT"]


def sessions(graph: FakeGraph) -> int:
    return calls_ending(graph, "/createUploadSession")


def test_a_worker_crashing_mid_upload_is_resumed_from_the_confirmed_offset(tmp_path: Path, graph: FakeGraph) -> None:
    """Two chunks confirmed, then the worker dies: the next one PUTs the third chunk, not the first again
    (a chunk sent twice costs the mailbox's 150 MB per 5 minutes upload budget)."""

    async def scenario(blobs: BlobStore) -> None:
        big, sha = await store(blobs, "big.pdf", 10 * MIB, seed=10)
        crashed = [False]

        def die_before_the_third_chunk(name: str, offset: int) -> None:
            if offset == 2 * UPLOAD_CHUNK and not crashed[0]:
                crashed[0] = True
                raise Crash()

        jobs = Workers(graph, HookedBlobs(blobs, die_before_the_third_chunk))
        with pytest.raises(Crash):
            await jobs.attempt(outgoing((big,)))
        assert jobs.progress.progress[UPLOAD]["offset"] == 2 * UPLOAD_CHUNK
        await jobs.attempt(outgoing((big,)))
        assert put_statuses(graph) == [200, 200, 200, 201]  # no chunk sent twice, no 416
        assert not any(r.method == "GET" for r in graph.requests)  # the open session says it all: no listing
        assert sessions(graph) == 1
        assert_once(graph, [sha])

    spool_test(tmp_path, scenario)


def test_a_resumed_upload_whose_session_expired_opens_a_new_one_without_using_the_dead_url(
    tmp_path: Path, graph: FakeGraph
) -> None:
    async def scenario(blobs: BlobStore) -> None:
        big, sha = await store(blobs, "big.pdf", 9 * MIB, seed=9)
        jobs = Workers(graph, blobs)
        graph.fail_next("PUT", r"AttachmentSessions", 503)
        await jobs.fails(outgoing((big,)))
        assert jobs.progress.progress[UPLOAD]["expires"]
        jobs.skew += graph.upload_session_lifetime + 1  # the queue redelivers the job after the URL expired
        await jobs.attempt(outgoing((big,)))
        assert sessions(graph) == 2
        assert 401 not in put_statuses(graph)  # nothing went to the expired URL
        assert_once(graph, [sha])

    spool_test(tmp_path, scenario)


def test_identical_twin_files_are_both_attached_when_the_second_ones_session_expires(
    tmp_path: Path, graph: FakeGraph
) -> None:
    """Two parts with the same name and size: when the second one's session dies mid-upload, the draft
    already holds a file of that name and size (the first twin), which must not count as the second."""

    async def scenario(blobs: BlobStore) -> None:
        one, sha1 = await store(blobs, "part-1.pdf", 4 * MIB, seed=1)
        two, sha2 = await store(blobs, "part-2.pdf", 4 * MIB, seed=2)
        one, two = (dataclasses.replace(f, name="scan.pdf") for f in (one, two))
        expired = [False]
        jobs: list[Workers] = []

        def expire_during_the_second(name: str, offset: int) -> None:
            if name == two.blob and offset > 0 and not expired[0]:
                expired[0] = True
                jobs[0].skew += graph.upload_session_lifetime + 1

        jobs.append(Workers(graph, HookedBlobs(blobs, expire_during_the_second)))
        await jobs[0].attempt(outgoing((one, two)))
        assert 401 in put_statuses(graph) and sessions(graph) == 3
        assert_once(graph, [sha1, sha2])
        (sent,) = graph.sent
        assert [a.name for a in sent.attachments] == ["scan.pdf", "scan.pdf"]

    spool_test(tmp_path, scenario)


def test_an_upload_session_that_keeps_dying_gives_up_the_attempt_with_the_reason(
    tmp_path: Path, graph: FakeGraph
) -> None:
    async def scenario(blobs: BlobStore) -> None:
        big, sha = await store(blobs, "big.pdf", 5 * MIB, seed=5)
        kill = [True]
        jobs: list[Workers] = []

        def expire_after_the_first_chunk(name: str, offset: int) -> None:
            if offset > 0 and kill[0]:
                jobs[0].skew += graph.upload_session_lifetime + 1

        jobs.append(Workers(graph, HookedBlobs(blobs, expire_after_the_first_chunk)))
        failed = await jobs[0].fails(outgoing((big,)))
        assert str(failed) == "The upload session for big.pdf keeps failing; trying again later."
        assert sessions(graph) == 2 and graph.sent == []
        kill[0] = False
        await jobs[0].attempt(outgoing((big,)))
        assert_once(graph, [sha])

    spool_test(tmp_path, scenario)


def test_a_refused_upload_session_request_is_retried_without_listing_the_draft(
    tmp_path: Path, graph: FakeGraph
) -> None:
    """A 429 on createUploadSession says nothing was created: the retry creates the session directly."""

    async def scenario(blobs: BlobStore) -> None:
        big, sha = await store(blobs, "big.pdf", 4 * MIB, seed=4)
        small, small_sha = await store(blobs, "cover.pdf", 1000, seed=3)
        graph.fail_next("POST", r"/createUploadSession$", 429, retry_after=1)
        jobs = Workers(graph, blobs)
        await jobs.attempt(outgoing((big, small)), inline_retries=1)
        assert [r.status for r in graph.requests if r.path.endswith("/createUploadSession")] == [429, 201]
        assert not any(r.method == "GET" for r in graph.requests)  # no doubt left to check
        assert creates(graph) == 1
        assert_once(graph, [sha, small_sha])

    spool_test(tmp_path, scenario)


def test_a_draft_deleted_while_its_upload_session_is_open_is_built_again_and_sent_once(
    tmp_path: Path, graph: FakeGraph
) -> None:
    """Someone empties Drafts while the scan is being attached: the session's PUT and the draft's attachment
    list answer 404, the transport starts over with a new draft, and the recipient gets every file once."""

    async def scenario(blobs: BlobStore) -> None:
        small, small_sha = await store(blobs, "cover.pdf", 1000, seed=3)
        big, sha = await store(blobs, "big.pdf", 4 * MIB, seed=4)
        deleted: list[str] = []

        def delete_the_draft(name: str, offset: int) -> None:
            if name == big.blob and not deleted:  # the big file's first read: its session is open
                (draft,) = graph.items(MB, "drafts")
                graph.remove(MB, draft.id)
                deleted.append(draft.id)

        jobs = Workers(graph, HookedBlobs(blobs, delete_the_draft))
        await jobs.attempt(outgoing((small, big)))
        assert deleted and creates(graph) == 2 and sessions(graph) == 2
        assert_once(graph, [small_sha, sha])

    spool_test(tmp_path, scenario)


class HookedCheckpoint(MemoryCheckpoint):
    """A checkpoint calling `hook(changes)` after each save: to act at an exact step of the protocol."""

    def __init__(self, hook: Callable[[dict[str, Any]], None]) -> None:
        super().__init__()
        self.hook = hook

    async def save(self, **changes: Any) -> None:
        await super().save(**changes)
        self.hook(changes)


def test_a_draft_gone_when_its_upload_session_is_requested_is_built_again_and_sent_once(
    tmp_path: Path, graph: FakeGraph
) -> None:
    async def scenario(blobs: BlobStore) -> None:
        small, small_sha = await store(blobs, "cover.pdf", 1000, seed=3)
        big, sha = await store(blobs, "big.pdf", 4 * MIB, seed=4)
        deleted: list[str] = []

        def delete_before_the_session(changes: dict[str, Any]) -> None:
            if changes.get(ATTACHING) == 1 and UPLOAD in changes and not deleted:  # createUploadSession is next
                (draft,) = graph.items(MB, "drafts")
                graph.remove(MB, draft.id)
                deleted.append(draft.id)

        jobs = Workers(graph, blobs)
        jobs.progress = HookedCheckpoint(delete_before_the_session)
        await jobs.attempt(outgoing((small, big)))
        statuses = [r.status for r in graph.requests if r.path.endswith("/createUploadSession")]
        assert deleted and statuses == [404, 201] and creates(graph) == 2
        assert_once(graph, [small_sha, sha])

    spool_test(tmp_path, scenario)


def test_a_draft_that_keeps_disappearing_gives_up_the_attempt_saying_so(tmp_path: Path, graph: FakeGraph) -> None:
    """Three drafts in a row deleted under the transport's feet (a hostile sweeper): the attempt stops with
    the reason instead of building drafts forever; the next attempt, left alone, sends the scan once."""

    async def scenario(blobs: BlobStore) -> None:
        small, small_sha = await store(blobs, "cover.pdf", 1000, seed=3)
        big, sha = await store(blobs, "big.pdf", 4 * MIB, seed=4)
        hostile = [True]

        def delete_before_the_session(changes: dict[str, Any]) -> None:
            if hostile[0] and changes.get(ATTACHING) == 1 and UPLOAD in changes:
                (draft,) = graph.items(MB, "drafts")
                graph.remove(MB, draft.id)

        jobs = Workers(graph, blobs)
        jobs.progress = HookedCheckpoint(delete_before_the_session)
        failed = await jobs.fails(outgoing((small, big)))
        assert str(failed) == f"The draft in {MB} keeps disappearing; trying again later."
        assert creates(graph) == 3 and graph.sent == []
        hostile[0] = False
        await jobs.attempt(outgoing((small, big)))
        assert creates(graph) == 4
        assert_once(graph, [small_sha, sha])

    spool_test(tmp_path, scenario)
