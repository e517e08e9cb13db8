"""message/partial fragments (tests/data/partial_*of3.eml), each its own job, come out as one message, or,
when a fragment never arrives, as what did arrive with a note. No part is ever lost or delivered twice."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from gateway.core.jobs import Job
from gateway.core.message import ParsedMessage, parsed_to_json
from gateway.delivery.partial import GRACE_SECONDS, Fragments, Merged, Wait, sweep_partials
from gateway.services import Services
from tests.support import services_for

DATA = Path(__file__).resolve().parent.parent / "data"
MANIFEST: dict[str, dict[str, Any]] = json.loads((DATA / "manifest.json").read_text(encoding="utf-8"))
WAIT_MINUTES = 30


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def accept(svc: Services, number: int) -> Job:
    device = await svc.registry.get("fx") or (await svc.registry.add("fx", sender="scanner@contoso.com"))[0]
    data = (DATA / f"partial_{number}of3.eml").read_bytes()
    return await svc.intake().accept_mime(device, ("alice@contoso.com",), _chunks(data))


async def record_parsed(svc: Services, job: Job, parsed: ParsedMessage) -> None:
    """What the delivery agent does with a ParsedMessage before sending it."""
    found = await svc.jobs.get_record(job.id)
    assert found is not None
    await svc.jobs.save(found[0], found[1], progress={"parsed": parsed_to_json(parsed)})


async def sha(svc: Services, blob: str) -> str:
    digest = hashlib.sha256()
    async for chunk in svc.spool.blobs.stream(blob):
        digest.update(chunk)
    return digest.hexdigest()


async def setup(tmp: Path) -> tuple[Services, Clock, Fragments]:
    svc = await services_for(tmp)
    clock = Clock()
    clock.now = time.time() + 1  # fragments are dated by their job ids, i.e. by the real clock
    return svc, clock, Fragments(svc.spool.blobs, svc.jobs, WAIT_MINUTES, clock)


def test_complete_set_in_any_order_is_delivered_once_by_fragment_one(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc, clock, fragments = await setup(tmp_path)
        third, second, first = await accept(svc, 3), await accept(svc, 2), await accept(svc, 1)
        assert isinstance(await fragments.explode(third), Wait)
        assert isinstance(await fragments.explode(second), Wait)
        parsed = await fragments.explode(first)
        assert isinstance(parsed, ParsedMessage)
        meta = MANIFEST["partial_1of3.eml"]
        assert parsed.subject == meta["subject"] and parsed.message_id == meta["message_id"]
        assert meta["body"] in parsed.body
        [pdf] = parsed.attachments
        assert (pdf.name, pdf.size) == (meta["attachments"][0]["name"], meta["attachments"][0]["size"])
        assert await sha(svc, pdf.blob) == meta["attachments"][0]["sha256"]
        assert pdf.blob.startswith(first.id + "/")  # the owner holds its own copy
        # The others wait until the owner's result is recorded, then end without sending anything.
        assert isinstance(await fragments.explode(second), Wait)
        await record_parsed(svc, first, parsed)
        assert await fragments.explode(second) == Merged(first.id)
        assert await fragments.explode(third) == Merged(first.id)
        again = await fragments.explode(first)  # a retry of the owner reproduces the same message
        assert isinstance(again, ParsedMessage) and [a.blob for a in again.attachments] == [pdf.blob]
        await svc.close()

    asyncio.run(scenario())


def test_missing_fragment_after_the_wait_delivers_what_arrived_with_a_note(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc, clock, fragments = await setup(tmp_path)
        first, third = await accept(svc, 1), await accept(svc, 3)
        assert isinstance(await fragments.explode(third), Wait)
        waiting = await fragments.explode(first)
        assert isinstance(waiting, Wait) and waiting.seconds > 0
        clock.now += WAIT_MINUTES * 60 + 1
        parsed = await fragments.explode(first)
        assert isinstance(parsed, ParsedMessage)
        assert "part 2 did not arrive" in parsed.body and parsed.subject == "Big scan"
        assert [a.name for a in parsed.attachments] == ["scan-part-1-of-3.eml", "scan-part-3-of-3.eml"]
        for attachment, number in zip(parsed.attachments, (1, 3), strict=True):
            raw = (DATA / f"partial_{number}of3.eml").read_bytes()
            assert await sha(svc, attachment.blob) == hashlib.sha256(raw).hexdigest()
        await record_parsed(svc, first, parsed)
        assert await fragments.explode(third) == Merged(first.id)
        late = await fragments.explode(await accept(svc, 2))  # arrives after the set was delivered
        assert isinstance(late, ParsedMessage) and "on its own" in late.body
        assert [a.name for a in late.attachments] == ["scan-part-2-of-3.eml"]
        await svc.close()

    asyncio.run(scenario())


def test_without_fragment_one_each_fragment_is_delivered_on_its_own(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc, clock, fragments = await setup(tmp_path)
        second, third = await accept(svc, 2), await accept(svc, 3)
        assert isinstance(await fragments.explode(second), Wait)
        clock.now += WAIT_MINUTES * 60 + 1
        assert isinstance(await fragments.explode(third), Wait)  # still inside the grace period
        clock.now += GRACE_SECONDS
        alone = [await fragments.explode(job) for job in (second, third)]
        assert all(isinstance(p, ParsedMessage) for p in alone)
        names = [p.attachments[0].name for p in alone if isinstance(p, ParsedMessage)]
        assert names == ["scan-part-2-of-3.eml", "scan-part-3-of-3.eml"]
        assert all(p.subject == "Big scan" for p in alone if isinstance(p, ParsedMessage))
        late_first = await fragments.explode(await accept(svc, 1))  # the others went alone: it must not take them
        assert isinstance(late_first, ParsedMessage) and [a.name for a in late_first.attachments] == [
            "scan-part-1-of-3.eml"
        ]
        assert [await fragments.explode(job) for job in (second, third)] == alone  # retries repeat, never merge
        assert await sweep_partials(svc.spool.blobs, clock.now, keep_hours=0) == 1
        assert await svc.spool.blobs.list("partial/") == []
        await svc.close()

    asyncio.run(scenario())


def test_ordinary_messages_pass_straight_through(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc, _clock, fragments = await setup(tmp_path)
        device, _ = await svc.registry.add("mfp", sender="scanner@contoso.com")
        data = (DATA / "inline_pdf.eml").read_bytes()
        job = await svc.intake().accept_mime(device, ("alice@contoso.com",), _chunks(data))
        parsed = await fragments.explode(job)
        assert isinstance(parsed, ParsedMessage) and [a.name for a in parsed.attachments] == ["scan.pdf"]
        await svc.close()

    asyncio.run(scenario())


class _Interleave:
    """The embedded blob store, with a hook run just before a fragment writes its "alone" note: the worst
    moment for fragment 1's job to appear and decide."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.hook: Any = None

    async def write(self, name: str, chunks: Any) -> int:
        if "/alone-" in name and self.hook is not None:
            hook, self.hook = self.hook, None
            await hook()
        return int(await self.inner.write(name, chunks))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_fragment_one_deciding_while_another_gives_up_still_delivers_each_part_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc, clock, _ = await setup(tmp_path)
        store = _Interleave(svc.spool.blobs)
        fragments = Fragments(store, svc.jobs, WAIT_MINUTES, clock)
        first, second = await accept(svc, 1), await accept(svc, 2)
        assert isinstance(await fragments.explode(second), Wait)
        clock.now += WAIT_MINUTES * 60 + GRACE_SECONDS + 1
        owner_result: list[Any] = []

        async def owner_runs_now() -> None:
            parsed = await fragments.explode(first)  # lists before the note exists: takes fragment 2
            assert isinstance(parsed, ParsedMessage)
            await record_parsed(svc, first, parsed)
            owner_result.append(parsed)

        store.hook = owner_runs_now
        outcome = await fragments.explode(second)
        assert [a.name for a in owner_result[0].attachments] == ["scan-part-1.eml", "scan-part-2.eml"]
        assert "the last part did not arrive" in owner_result[0].body
        assert outcome == Merged(first.id)  # so it is not delivered a second time on its own
        assert await fragments.explode(second) == Merged(first.id)
        await svc.close()

    asyncio.run(scenario())
