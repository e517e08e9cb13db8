"""What an admin reads of each accept() outcome, and a shutdown that waits for accepts still taking back
their scan (found unguarded by mutation testing, docs/mutation.md).

Each outcome leaves a log line whose structured fields (`job=`, `state=`, `event=`: what Application Insights
and `SCANGW_LOG_FORMAT=json` index) name the job; the failures an admin must act on are ERROR or WARNING.
A door's shutdown (`Services.close()`, `settle_accepts`) waits for accepts in progress in its own event loop,
for at most its timeout, and never for itself or for another loop's accepts.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.core import accept
from gateway.core.accept import Envelope, IncomingFile, Intake, settle_accepts
from gateway.core.devices import Device
from gateway.core.errors import StorageUnavailable
from gateway.core.ports import Spool
from gateway.spool.local import open_local_spool
from gateway.telemetry.fields import extract
from tests.fakes.faulty_spool import Faults, faulty
from tests.integration.test_accept_faults import left_in, until_held

DEVICE = Device(name="mfp1", password_hash="", sender="scanner@contoso.com")
TO = ("a@contoso.com", "b@contoso.com")
MESSAGE = b"Subject: scan\r\n\r\n" + b"%PDF-1.7 " * 1000
JOB_ID = re.compile(r"^[0-9a-f]{24}$")


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data[:100]
    await asyncio.sleep(0)
    yield data[100:]


def smtp(spool: Spool) -> asyncio.Task[Any]:
    return asyncio.ensure_future(Intake(spool, 10_000_000, None).accept_mime(DEVICE, TO, chunks(MESSAGE)))


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, dict[str, Any]]]:
    """(level, structured fields) of each line accept() logged."""
    return [(r.levelname, extract(r.msg, r.args)) for r in caplog.records if r.name == "scangw.accept"]


def one_job(logged: list[tuple[str, dict[str, Any]]]) -> str:
    ids = {fields.get("job") for _, fields in logged}
    assert len(ids) == 1, logged
    (job,) = ids
    assert isinstance(job, str) and JOB_ID.match(job), logged
    return job


def on_local_spool(tmp_path: Path, body: Callable[[Spool], Awaitable[None]]) -> None:
    async def main() -> None:
        spool = await open_local_spool(tmp_path / "spool")
        try:
            await body(spool)
        finally:
            await spool.close()

    asyncio.run(main())


def test_an_accepted_scan_is_logged_queued_with_its_device_size_and_recipients(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    async def body(spool: Spool) -> None:
        job = await smtp(spool)
        assert lines(caplog) == [
            ("INFO", {"job": job.id, "state": "queued", "device": "mfp1", "size": len(MESSAGE), "to": ",".join(TO)})
        ]

    on_local_spool(tmp_path, body)


def test_a_rollback_that_fails_is_an_error_naming_the_job_and_the_cause(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The record stays without a queue message (the sweep reconciles it): the admin must see which, and why."""
    caplog.set_level(logging.INFO)

    async def body(real: Spool) -> None:
        faults = Faults()
        faults.fail("queue.put", StorageUnavailable("injected: queue down"))
        faults.fail("jobs.delete", StorageUnavailable("injected: table unreachable"))
        with pytest.raises(StorageUnavailable, match="injected: queue down"):
            await smtp(faulty(real, faults))
        (record,) = [r for r in caplog.records if r.name == "scangw.accept"]
        assert record.levelname == "ERROR" and record.getMessage().endswith(": injected: table unreachable")
        assert one_job(lines(caplog)) == (await left_in(real)).records[0]["id"]

    on_local_spool(tmp_path, body)


def test_partial_bytes_that_cannot_be_removed_are_a_warning_and_the_failure_is_still_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    async def body(real: Spool) -> None:
        faults = Faults()
        faults.fail("jobs.insert", StorageUnavailable("injected: table down"))
        faults.fail("blobs.delete_prefix", StorageUnavailable("injected: blobs unreachable"))
        with pytest.raises(StorageUnavailable, match="injected: table down"):
            await smtp(faulty(real, faults))
        logged = lines(caplog)
        assert [level for level, _ in logged] == ["WARNING"]
        assert (await left_in(real)).blobs == [f"{one_job(logged)}/message.eml"]  # retention removes them later

    on_local_spool(tmp_path, body)


def test_an_unexpected_failure_is_logged_with_its_traceback_and_answered_as_storage_unavailable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    bug = RuntimeError("injected: a bug in an adapter")

    async def body(real: Spool) -> None:
        faults = Faults()
        faults.fail("jobs.insert", bug)
        with pytest.raises(StorageUnavailable) as refused:
            await smtp(faulty(real, faults))
        assert str(refused.value) == "could not store the scan: injected: a bug in an adapter"
        assert refused.value.__cause__ is bug
        (record,) = [r for r in caplog.records if r.name == "scangw.accept"]
        assert record.levelname == "ERROR" and record.exc_info is not None and record.exc_info[1] is bug
        one_job(lines(caplog))

    on_local_spool(tmp_path, body)


@pytest.mark.parametrize(("step", "after"), [("jobs.insert", False), ("queue.put", True)], ids=["storing", "queued"])
def test_a_client_gone_while_storing_is_logged_and_a_scan_queued_anyway_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, step: str, after: bool
) -> None:
    caplog.set_level(logging.INFO)

    async def body(real: Spool) -> None:
        faults = Faults()
        faults.hold(step, after=after)
        task = smtp(faulty(real, faults))
        await until_held(faults, task)
        task.cancel()
        for _ in range(5):
            await asyncio.sleep(0)
        faults.release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        logged = lines(caplog)
        job = one_job(logged)
        expected = [("INFO", {"job": job, "event": "accept.cut"})]
        if after:  # the message was out: the scan goes, and a resend by the device may repeat it
            expected.append(("WARNING", {"job": job, "state": "queued"}))
        assert logged == expected

    on_local_spool(tmp_path, body)


def test_shutdown_waits_for_an_accept_taking_back_its_scan(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    async def body(real: Spool) -> None:
        faults = Faults()
        faults.hold("jobs.insert")
        task = smtp(faulty(real, faults))
        await until_held(faults, task)
        task.cancel()  # the client went away: the record being written must be taken back
        settling = asyncio.ensure_future(settle_accepts(timeout=30))
        for _ in range(10):
            await asyncio.sleep(0)
        assert not settling.done(), "shutdown did not wait for the accept still storing its scan"
        faults.release.set()
        await asyncio.wait_for(settling, 10)
        assert task.done()
        assert (await left_in(real)).nothing
        assert "waiting for 1 scan(s) still being stored or taken back" in [r.getMessage() for r in caplog.records]
        assert not accept._COMMITS  # a finished accept is not kept (a long-running door would grow without end)

    on_local_spool(tmp_path, body)


def test_shutdown_waits_no_longer_than_its_timeout(tmp_path: Path) -> None:
    async def body(real: Spool) -> None:
        faults = Faults()
        faults.hold("jobs.insert")  # a request that never answers
        task = smtp(faulty(real, faults))
        await until_held(faults, task)
        await asyncio.wait_for(settle_accepts(timeout=0.05), 10)
        assert not task.done()
        faults.release.set()
        await task

    on_local_spool(tmp_path, body)


def test_shutdown_never_waits_for_itself_or_for_another_event_loop(tmp_path: Path) -> None:
    """An accept that settles others (a door closing from inside a request) must not wait for itself, and a
    door in another thread (another event loop, as the test harnesses run them) is not this door's business."""
    other_held, other_release = threading.Event(), threading.Event()
    failed: list[BaseException] = []

    def other_door() -> None:
        async def held_upload() -> None:
            spool = await open_local_spool(tmp_path / "other")
            faults = Faults()
            faults.hold("jobs.insert")
            task = smtp(faulty(spool, faults))
            await until_held(faults, task)
            other_held.set()
            await asyncio.get_running_loop().run_in_executor(None, other_release.wait, 30)
            faults.release.set()
            await task
            await spool.close()

        try:
            asyncio.run(held_upload())
        except BaseException as exc:  # noqa: BLE001 - reported by the test's own thread
            failed.append(exc)
            other_held.set()

    thread = threading.Thread(target=other_door, daemon=True)
    thread.start()

    async def body(real: Spool) -> None:
        assert await asyncio.get_running_loop().run_in_executor(None, other_held.wait, 30)
        assert not failed, failed
        try:

            async def files() -> AsyncIterator[IncomingFile]:
                await settle_accepts(timeout=30)  # inside this accept's own task
                yield IncomingFile("scan.pdf", "application/pdf", chunks(MESSAGE))

            intake = Intake(real, 10_000_000, None)
            job = await asyncio.wait_for(intake.accept_files(DEVICE, files(), lambda: Envelope(TO)), 10)
            assert [r["id"] for r in (await left_in(real)).records] == [job.id]
        finally:
            other_release.set()

    on_local_spool(tmp_path, body)
    thread.join(timeout=30)
    assert not thread.is_alive()
