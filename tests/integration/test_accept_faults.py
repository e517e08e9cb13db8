"""accept() under failure, on the embedded spool and on Azure Storage (Azurite): every step may fail, lose its
reply, or be cut by a cancellation (a client gone, a shutdown), and the answer is never "accepted" unless the
bytes, the job record and the queue message are all stored, and nothing is left behind otherwise (issue 15).

Faults are injected by `tests.fakes.faulty_spool` in front of the real storage, and the outcome is read back
from that storage: blobs, job records, queue messages.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from gateway.core.accept import Envelope, IncomingFile, Intake
from gateway.core.devices import Device
from gateway.core.errors import StorageUnavailable
from gateway.core.ports import Spool
from tests.fakes.faulty_spool import Faults, faulty
from tests.integration.test_spool_contract import Opener, open_spool, with_spool

__all__ = ["open_spool"]  # the fixture: one run per storage backend

DEVICE = Device(name="mfp1", password_hash="", sender="scanner@contoso.com")
MESSAGE = b"Subject: scan\r\n\r\n" + b"%PDF-1.7 " * 20_000


@dataclass(frozen=True)
class Left:
    """What one accept() left in storage."""

    blobs: list[str]
    records: list[dict[str, object]]
    messages: list[str]  # the job ids the queue messages name

    @property
    def nothing(self) -> bool:
        record_ids = {r["id"] for r in self.records}
        return not self.blobs and not self.records and not record_ids & set(self.messages)

    @property
    def everything(self) -> bool:
        if len(self.records) != 1:
            return False
        job = self.records[0]
        return job["state"] == "queued" and self.messages == [job["id"]] and bool(self.blobs)


async def left_in(spool: Spool) -> Left:
    leases = await spool.queue.receive(30, max_messages=32)
    return Left(
        blobs=await spool.blobs.list(""),
        records=[r.data for r in await spool.jobs.list()],
        messages=[json.loads(lease.text)["id"] for lease in leases],
    )


async def one(data: bytes) -> AsyncIterator[bytes]:
    half = len(data) // 2
    yield data[:half]
    await asyncio.sleep(0)
    yield data[half:]


def smtp(spool: Spool) -> asyncio.Task[object]:
    intake = Intake(spool, 10_000_000, None)
    return asyncio.ensure_future(intake.accept_mime(DEVICE, ("a@example.com",), one(MESSAGE)))


def upload(spool: Spool) -> asyncio.Task[object]:
    intake = Intake(spool, 10_000_000, None)

    async def files() -> AsyncIterator[IncomingFile]:
        yield IncomingFile("scan.pdf", "application/pdf", one(MESSAGE))
        yield IncomingFile("page2.pdf", "application/pdf", one(MESSAGE))

    return asyncio.ensure_future(intake.accept_files(DEVICE, files(), lambda: Envelope(("a@example.com",))))


DOORS = {"smtp": smtp, "http": upload}


async def until_held(faults: Faults, task: asyncio.Task[object]) -> None:
    """Wait until accept() reaches the held step; fail at once if it ended before (a broken accept() must not
    cost a 30-second wait per test, as it did for every mutant of it)."""
    held = asyncio.ensure_future(faults.held.wait())
    await asyncio.wait([held, task], timeout=30, return_when=asyncio.FIRST_COMPLETED)
    held.cancel()
    assert faults.held.is_set(), f"accept() never reached the held step: {task}"


#: (step, the fault strikes after storage did the work)
STEPS = [
    ("blobs.write", False),
    ("blobs.write.stream", False),
    ("blobs.write", True),
    ("jobs.insert", False),
    ("jobs.insert", True),
    ("queue.put", False),
    ("queue.put", True),
]
ERRORS = {
    "storage_down": lambda: StorageUnavailable("injected: storage unavailable"),
    "unexpected": lambda: RuntimeError("injected: a bug in an adapter"),
}


@pytest.mark.parametrize("door", sorted(DOORS))
@pytest.mark.parametrize("error", sorted(ERRORS))
@pytest.mark.parametrize(("step", "after"), STEPS, ids=[f"{s}{'-reply-lost' if a else ''}" for s, a in STEPS])
def test_a_failed_step_answers_unavailable_and_leaves_nothing(
    open_spool: Opener, door: str, error: str, step: str, after: bool
) -> None:
    async def body(real: Spool) -> None:
        faults = Faults()
        faults.fail(step, ERRORS[error](), after=after)
        with pytest.raises(StorageUnavailable):
            await DOORS[door](faulty(real, faults))
        left = await left_in(real)
        assert left.nothing, f"a failed {step} left {left}"

    with_spool(open_spool, body)


CANCEL_STEPS = [
    ("blobs.write", False),
    ("blobs.write", True),
    ("jobs.insert", False),
    ("jobs.insert", True),
    ("queue.put", False),
    ("queue.put", True),
]


@pytest.mark.parametrize("door", sorted(DOORS))
@pytest.mark.parametrize(("step", "after"), CANCEL_STEPS, ids=[f"{s}{'-done' if a else ''}" for s, a in CANCEL_STEPS])
def test_cancelled_at_any_step_leaves_nothing_or_everything(
    open_spool: Opener, door: str, step: str, after: bool
) -> None:
    async def body(real: Spool) -> None:
        faults = Faults()
        faults.hold(step, after=after)
        task = DOORS[door](faulty(real, faults))
        await until_held(faults, task)
        task.cancel()
        for _ in range(5):
            await asyncio.sleep(0)  # the cancellation lands while the step is still held...
        faults.release.set()  # ...which then completes, as a lock wait or a request on the wire does
        with pytest.raises(asyncio.CancelledError):
            await task
        left = await left_in(real)
        if step == "queue.put":
            # The message is on its way (a request on the wire, a thread waiting for the database lock) and
            # cannot be called back: the scan is stored whole and will be delivered.
            assert left.everything, f"cancelled once its message was queued, accept() left {left}"
        else:
            assert left.nothing, f"cancelled at {step}, accept() left {left}"

    with_spool(open_spool, body)


def test_a_failed_rollback_is_reported_as_unavailable_never_as_accepted(open_spool: Opener) -> None:
    """The queue write fails and so does removing the record: the device must still hear 451/503."""

    async def body(real: Spool) -> None:
        faults = Faults()
        faults.fail("queue.put", StorageUnavailable("injected: queue down"))
        faults.fail("jobs.delete", StorageUnavailable("injected: table unreachable"))
        with pytest.raises(StorageUnavailable):
            await smtp(faulty(real, faults))
        left = await left_in(real)
        assert not left.blobs and not left.messages  # the record stays: the sweep reconciles it

    with_spool(open_spool, body)
