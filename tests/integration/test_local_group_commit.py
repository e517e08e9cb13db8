"""The embedded spool commits concurrent calls together: each caller still gets its own outcome, and what it
was told is stored survives reopening the database (another process, or a restart)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.core.ports import Conflict
from gateway.spool.local import open_local_spool
from tests.support import run


def test_concurrent_writes_commit_together_and_a_losing_one_takes_back_only_its_own(tmp_path: Path) -> None:
    async def scenario() -> list[object]:
        spool = await open_local_spool(tmp_path)
        try:
            await spool.jobs.insert("taken", {"n": -1})
            writes = [spool.jobs.insert(f"job{n}", {"n": n}) for n in range(20)]
            writes.insert(7, spool.jobs.insert("taken", {"n": 99}))  # loses: the key exists
            writes += [spool.queue.put(f"message {n}") for n in range(5)]
            return await asyncio.gather(*writes, return_exceptions=True)
        finally:
            await spool.close()

    outcomes = run(scenario())
    assert isinstance(outcomes[7], Conflict)
    assert not [o for i, o in enumerate(outcomes) if i != 7 and isinstance(o, BaseException)]

    async def reopened() -> tuple[dict[str, int], int]:
        spool = await open_local_spool(tmp_path)
        try:
            records = {r.data.get("n"): 1 for r in await spool.jobs.list()}
            leases = await spool.queue.receive(30, 32)
            return records, len(leases)
        finally:
            await spool.close()

    records, queued = run(reopened())
    assert sorted(records) == [-1, *range(20)]  # the first "taken" kept its data; every other insert landed
    assert queued == 5


def test_a_call_cancelled_while_waiting_for_its_group_still_reports_after_the_commit(tmp_path: Path) -> None:
    async def scenario() -> bool:
        spool = await open_local_spool(tmp_path)
        try:
            task = asyncio.create_task(spool.jobs.insert("j", {"n": 1}))
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # Settled: by the time the cancellation reached the caller, the write had committed.
            return await spool.jobs.get("j") is not None
        finally:
            await spool.close()

    assert run(scenario())
