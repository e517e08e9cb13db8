"""One contract for every spool: the embedded twin and Azure Storage (through Azurite) must behave alike.

Each test body takes a `Spool`; the `open_spool` fixture runs it once per backend. Queue timing is
checked by polling with a deadline, never by sleeping a guessed time.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from gateway.config import POISON_QUEUE_NAME, QUEUE_NAME, Settings, StorageIdentity
from gateway.core.errors import StorageUnavailable
from gateway.core.ports import CHUNK, Conflict, NotFound, Spool
from gateway.spool.azure import open_azure_spool, storage_credential
from tests.integration.azurite import connection_string, reset_azurite
from tests.support import free_port

T = TypeVar("T")
Opener = Callable[[], Awaitable[Spool]]
Body = Callable[[Spool], Awaitable[None]]

#: Tests must not wait on the SDK's production retry budget.
FAST = {"retry_total": 0, "connection_timeout": 2, "read_timeout": 10}


@pytest.fixture(params=["local", pytest.param("azurite", marks=pytest.mark.azurite)])
def open_spool(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Open a fresh, empty spool of each kind inside the test's own event loop."""
    if request.param == "local":
        local = pytest.importorskip("gateway.spool.local", reason="local spool not yet available")
        return lambda: local.open_local_spool(tmp_path / "spool")
    conn: str = request.getfixturevalue("azurite_connection_string")
    reset_azurite(conn)
    return lambda: open_azure_spool(Settings(storage=conn), client_options=FAST)


def with_spool(opener: Opener, body: Body) -> None:
    async def main() -> None:
        spool = await opener()
        try:
            await body(spool)
        finally:
            await spool.close()

    asyncio.run(main())


async def eventually(probe: Callable[[], Awaitable[T]], timeout: float = 15.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


async def source(data: bytes, sizes: tuple[int, ...] = (65_536, 1_000_003, 7, CHUNK + 1)) -> AsyncIterator[bytes]:
    """Uneven chunks, as an SMTP or HTTP body arrives."""
    pos, turn = 0, 0
    while pos < len(data):
        size = sizes[turn % len(sizes)]
        yield data[pos : pos + size]
        pos, turn = pos + size, turn + 1


async def failing_source(good: bytes) -> AsyncIterator[bytes]:
    yield good
    raise RuntimeError("client went away mid-upload")


async def collect(stream: AsyncIterator[bytes]) -> list[bytes]:
    return [piece async for piece in stream]


# Blobs


def test_blob_round_trip_of_10_mb_streams_in_bounded_chunks(open_spool: Opener) -> None:
    data = random.Random(7).randbytes(10_000_000)

    async def body(spool: Spool) -> None:
        assert await spool.blobs.write("job1/scan.pdf", source(data)) == len(data)
        assert await spool.blobs.size("job1/scan.pdf") == len(data)
        digest, seen = hashlib.sha256(), 0
        async for piece in spool.blobs.stream("job1/scan.pdf"):
            assert 0 < len(piece) <= CHUNK
            digest.update(piece)
            seen += len(piece)
        assert seen == len(data) and digest.hexdigest() == hashlib.sha256(data).hexdigest()
        start = CHUNK - 5
        assert await spool.blobs.read_range("job1/scan.pdf", start, CHUNK + 10) == data[start : start + CHUNK + 10]
        tail = await collect(spool.blobs.stream("job1/scan.pdf", offset=len(data) - 100))
        assert b"".join(tail) == data[-100:]

    with_spool(open_spool, body)


def test_reading_past_the_end_returns_what_is_there(open_spool: Opener) -> None:
    async def body(spool: Spool) -> None:
        await spool.blobs.write("job1/a.txt", source(b"0123456789"))
        assert await spool.blobs.read_range("job1/a.txt", 6, 100) == b"6789"
        assert await spool.blobs.read_range("job1/a.txt", 10, 5) == b""
        assert await spool.blobs.write("job1/empty", source(b"")) == 0
        assert await spool.blobs.size("job1/empty") == 0
        assert b"".join(await collect(spool.blobs.stream("job1/empty"))) == b""

    with_spool(open_spool, body)


def test_failing_source_stream_leaves_no_blob_and_keeps_an_older_one(open_spool: Opener) -> None:
    async def body(spool: Spool) -> None:
        with pytest.raises(RuntimeError, match="went away"):
            await spool.blobs.write("job1/scan.pdf", failing_source(b"x" * (CHUNK * 2 + 1)))
        assert await spool.blobs.list("job1/") == []
        with pytest.raises(NotFound):
            await spool.blobs.size("job1/scan.pdf")
        await spool.blobs.write("job2/scan.pdf", source(b"first version"))
        with pytest.raises(RuntimeError):
            await spool.blobs.write("job2/scan.pdf", failing_source(b"y" * (CHUNK + 3)))
        assert await spool.blobs.read_range("job2/scan.pdf", 0, 100) == b"first version"

    with_spool(open_spool, body)


def test_missing_blob_raises_not_found(open_spool: Opener) -> None:
    async def body(spool: Spool) -> None:
        with pytest.raises(NotFound):
            await spool.blobs.size("nope/x")
        with pytest.raises(NotFound):
            await spool.blobs.read_range("nope/x", 0, 10)
        with pytest.raises(NotFound):
            await collect(spool.blobs.stream("nope/x"))

    with_spool(open_spool, body)


def test_list_and_delete_prefix(open_spool: Opener) -> None:
    async def body(spool: Spool) -> None:
        for name in ("a/1", "a/2", "ab/3", "b/1"):
            await spool.blobs.write(name, source(name.encode()))
        assert await spool.blobs.list("a") == ["a/1", "a/2", "ab/3"]
        assert await spool.blobs.delete_prefix("a/") == 2
        assert await spool.blobs.list("") == ["ab/3", "b/1"]
        assert await spool.blobs.delete_prefix("zzz/") == 0

    with_spool(open_spool, body)


# Queue


def test_queue_put_receive_delete(open_spool: Opener) -> None:
    async def body(spool: Spool) -> None:
        await spool.queue.put('{"job": "1"}')
        await spool.queue.put('{"job": "2"}')
        first = await spool.queue.receive(30, max_messages=1)
        assert len(first) == 1 and first[0].dequeue_count == 1
        rest = await spool.queue.receive(30, max_messages=5)
        assert sorted(lease.text for lease in first + rest) == ['{"job": "1"}', '{"job": "2"}']
        for lease in first + rest:
            await spool.queue.delete(lease)
        assert await spool.queue.receive(1, max_messages=32) == []

    with_spool(open_spool, body)


def test_received_message_reappears_after_visibility_with_higher_dequeue_count(open_spool: Opener) -> None:
    async def body(spool: Spool) -> None:
        await spool.queue.put("job-a")
        (lease,) = await spool.queue.receive(2)
        assert await spool.queue.receive(2) == []
        again = await eventually(lambda: spool.queue.receive(30), what="redelivery")
        assert again[0].message_id == lease.message_id and again[0].text == "job-a"
        assert again[0].dequeue_count == lease.dequeue_count + 1
        with pytest.raises(NotFound):
            await spool.queue.delete(lease)  # the first receipt died with the redelivery
        await spool.queue.delete(again[0])

    with_spool(open_spool, body)


def test_defer_returns_a_new_receipt_and_voids_the_old_one(open_spool: Opener) -> None:
    async def body(spool: Spool) -> None:
        await spool.queue.put("job-b")
        (lease,) = await spool.queue.receive(30)
        renewed = await spool.queue.defer(lease, 1)
        assert renewed.receipt != lease.receipt and renewed.message_id == lease.message_id
        assert renewed.text == "job-b"
        with pytest.raises(NotFound):
            await spool.queue.delete(lease)
        with pytest.raises(NotFound):
            await spool.queue.defer(lease, 5)
        again = await eventually(lambda: spool.queue.receive(30), what="the deferred message")
        assert again[0].dequeue_count == 2
        await spool.queue.delete(again[0])
        assert await spool.queue.receive(1) == []

    with_spool(open_spool, body)


def test_put_with_delay_hides_the_message_until_then(open_spool: Opener) -> None:
    async def body(spool: Spool) -> None:
        started = time.monotonic()
        await spool.queue.put("later", delay=2)
        assert await spool.queue.receive(30) == []
        (lease,) = await eventually(lambda: spool.queue.receive(30), what="the delayed message")
        assert lease.text == "later" and time.monotonic() - started >= 1.5

    with_spool(open_spool, body)


def test_poison_messages_stay_out_of_the_job_queue(open_spool: Opener) -> None:
    async def body(spool: Spool) -> None:
        await spool.queue.put_poison('{"job": "bad"}')
        assert await spool.queue.receive(1, max_messages=32) == []

    with_spool(open_spool, body)


@pytest.mark.azurite
def test_queue_messages_are_base64_on_the_wire(azurite_connection_string: str) -> None:
    """The Functions queue trigger decodes base64: a raw client must see base64 of the JSON."""
    from azure.storage.queue import TextBase64DecodePolicy
    from azure.storage.queue.aio import QueueClient

    conn = azurite_connection_string
    reset_azurite(conn)
    text = '{"id": "0193abc", "blob": "0193abc/message.eml", "note": "é ✓"}'

    async def main() -> None:
        spool = await open_azure_spool(Settings(storage=conn), client_options=FAST)
        try:
            await spool.queue.put(text)
            await spool.queue.put_poison(text)
        finally:
            await spool.close()
        async with QueueClient.from_connection_string(conn, QUEUE_NAME) as raw:
            message = await raw.receive_message()
            assert message is not None and base64.b64decode(message.content).decode("utf-8") == text
        async with QueueClient.from_connection_string(
            conn, POISON_QUEUE_NAME, message_decode_policy=TextBase64DecodePolicy()
        ) as decoded:
            message = await decoded.receive_message()
            assert message is not None and message.content == text

    asyncio.run(main())


@pytest.mark.azurite
def test_a_message_put_without_base64_still_reaches_the_worker(azurite_connection_string: str) -> None:
    """Received as is, so the worker can recognise it as poison instead of every receive failing."""
    from azure.storage.queue.aio import QueueClient

    conn = azurite_connection_string
    reset_azurite(conn)

    async def main() -> None:
        spool = await open_azure_spool(Settings(storage=conn), client_options=FAST)
        try:
            async with QueueClient.from_connection_string(conn, QUEUE_NAME) as raw:
                await raw.send_message('{"not": "base64"}')
            (lease,) = await spool.queue.receive(30)
            assert lease.text == '{"not": "base64"}'
        finally:
            await spool.close()

    asyncio.run(main())


# Tables


def test_table_insert_get_replace_with_etags(open_spool: Opener) -> None:
    async def body(spool: Spool) -> None:
        assert await spool.jobs.get("j1") is None
        etag = await spool.jobs.insert("j1", {"state": "queued", "to": ["a@example.com"]})
        record = await spool.jobs.get("j1")
        assert record is not None and record.data == {"state": "queued", "to": ["a@example.com"]}
        assert record.etag == etag
        newer = await spool.jobs.replace("j1", {"state": "sending"}, etag)
        assert newer != etag
        with pytest.raises(Conflict):
            await spool.jobs.replace("j1", {"state": "sent"}, etag)  # stale etag loses
        with pytest.raises(Conflict):
            await spool.jobs.insert("j1", {"state": "queued"})  # duplicate key loses
        record = await spool.jobs.get("j1")
        assert record is not None and record.data == {"state": "sending"} and record.etag == newer
        assert await spool.devices.get("j1") is None  # tables are separate

    with_spool(open_spool, body)


def test_replace_of_a_vanished_record_is_a_conflict(open_spool: Opener) -> None:
    async def body(spool: Spool) -> None:
        etag = await spool.jobs.insert("j2", {"state": "queued"})
        await spool.jobs.delete("j2")
        with pytest.raises(Conflict):
            await spool.jobs.replace("j2", {"state": "sending"}, etag)
        assert await spool.jobs.get("j2") is None

    with_spool(open_spool, body)


def test_upsert_delete_and_list(open_spool: Opener) -> None:
    async def body(spool: Spool) -> None:
        first = await spool.devices.upsert("printer-1", {"name": "printer-1", "n": 1})
        second = await spool.devices.upsert("printer-1", {"name": "printer-1", "n": 2})
        assert first != second
        await spool.devices.insert("printer-2", {"name": "printer-2"})
        await spool.jobs.insert("other", {"kind": "job"})
        listed = await spool.devices.list()
        assert sorted(r.data["name"] for r in listed) == ["printer-1", "printer-2"]
        assert {r.data.get("n") for r in listed} == {2, None}
        await spool.devices.delete("printer-1")
        await spool.devices.delete("printer-1")  # deleting twice is fine
        assert [r.data["name"] for r in await spool.devices.list()] == ["printer-2"]

    with_spool(open_spool, body)


def test_a_200_kb_record_round_trips_and_shrinks(open_spool: Opener) -> None:
    big = {"progress": {f"part{i}": "é" * 10 + "x" * 90 + str(i) for i in range(1500)}, "note": "n" * 20_000}
    assert 190_000 < len(json.dumps(big, ensure_ascii=False).encode()) < 230_000

    async def body(spool: Spool) -> None:
        etag = await spool.jobs.insert("big", big)
        record = await spool.jobs.get("big")
        assert record is not None and record.data == big
        etag = await spool.jobs.replace("big", {"small": True}, etag)
        record = await spool.jobs.get("big")
        assert record is not None and record.data == {"small": True} and record.etag == etag
        await spool.jobs.upsert("big", big)
        assert [r.data for r in await spool.jobs.list()] == [big]

    with_spool(open_spool, body)


# Azure-only: failures and credentials (no emulator needed)


def test_unreachable_storage_raises_storage_unavailable_quickly() -> None:
    port = free_port()  # bound and released: nothing listens there
    settings = Settings(storage=connection_string(port, port, port))

    async def main() -> None:
        started = time.monotonic()
        with pytest.raises(StorageUnavailable, match="unreachable"):
            await open_azure_spool(settings, client_options=FAST)
        spool = await open_azure_spool(settings, ensure_resources=False, client_options=FAST)
        try:
            calls: list[Callable[[], Awaitable[object]]] = [
                lambda: spool.blobs.write("j/x", source(b"data")),
                lambda: spool.blobs.size("j/x"),
                lambda: collect(spool.blobs.stream("j/x")),
                lambda: spool.blobs.list(""),
                lambda: spool.queue.put("m"),
                lambda: spool.queue.receive(30),
                lambda: spool.jobs.get("k"),
                lambda: spool.jobs.insert("k", {}),
                lambda: spool.devices.list(),
            ]
            for call in calls:
                with pytest.raises(StorageUnavailable):
                    await call()
        finally:
            await spool.close()
        assert time.monotonic() - started < 10

    asyncio.run(main())


def test_managed_identity_is_used_where_the_platform_provides_it() -> None:
    from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

    async def main() -> None:
        hosted = storage_credential("client-id", {"IDENTITY_ENDPOINT": "http://localhost:1/msi"})
        laptop = storage_credential(None, {})
        try:
            assert isinstance(hosted, ManagedIdentityCredential)
            assert isinstance(laptop, DefaultAzureCredential)
        finally:
            await hosted.close()
            await laptop.close()

    asyncio.run(main())


def test_identity_endpoints_open_without_any_key() -> None:
    identity = StorageIdentity(
        blob_uri="https://acct.blob.core.windows.net",
        queue_uri="https://acct.queue.core.windows.net",
        table_uri="https://acct.table.core.windows.net",
        client_id="00000000-0000-0000-0000-000000000001",
    )

    async def main() -> None:
        spool = await open_azure_spool(
            Settings(storage="", storage_identity=identity),
            ensure_resources=False,
            env={"IDENTITY_ENDPOINT": "http://localhost:1/msi", "IDENTITY_HEADER": "h"},
        )
        try:
            from azure.identity.aio import ManagedIdentityCredential

            assert isinstance(spool.credential, ManagedIdentityCredential)  # type: ignore[attr-defined]
            clients = [
                spool.blobs._container,  # type: ignore[attr-defined]
                spool.queue._queue,  # type: ignore[attr-defined]
                spool.queue._poison,  # type: ignore[attr-defined]
                spool.jobs._client,  # type: ignore[attr-defined]
                spool.devices._client,  # type: ignore[attr-defined]
                spool.mailboxes._client,  # type: ignore[attr-defined]
            ]
            hosts = sorted({c.url.split("/")[2] for c in clients})
            assert hosts == ["acct.blob.core.windows.net", "acct.queue.core.windows.net", "acct.table.core.windows.net"]
            for c in clients:  # every client signs with the identity's token: no account key anywhere
                assert c.credential is spool.credential  # type: ignore[attr-defined]
        finally:
            await spool.close()

    asyncio.run(main())
