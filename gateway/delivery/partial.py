"""Reassembly of RFC 2046 `message/partial` fragments (Canon, Fuji Xerox) that arrive as separate jobs.

Every fragment is its own job. Its explode step parks it (an empty marker blob under `partial/<set>/`) and
one job speaks for the set: the job of fragment 1, which carries the enclosed message's headers. Once every
fragment is parked, or SCANGW_PARTIAL_WAIT_MINUTES after the first one was received, it writes a decision
blob naming the jobs it takes and delivers them as one message: reassembled when complete, otherwise the
raw fragments attached with a note. The other jobs end as `Merged` only once the owner's explode is
recorded, so their bytes are never deleted before the owner holds its copy. A fragment nobody will take
(fragment 1 never came) first writes an "alone" note, looks again, and is then delivered on its own with a
note; the owner leaves out any fragment with such a note. Write-then-look on both sides means no fragment is
delivered twice and none is lost, whatever the timing or the workers' clocks.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, replace

from gateway.core.errors import PermanentDeliveryError
from gateway.core.jobs import FileRef, Job
from gateway.core.jobstore import JobStore
from gateway.core.message import ParsedMessage
from gateway.core.mime.headers import MAX_HEADER_BYTES, HeaderBlock, header_end, parse_header_block
from gateway.core.mime.partial import MAX_TOTAL, BadFragment, PartialInfo, merged_headers, partial_info
from gateway.core.ports import BlobStore
from gateway.delivery.explode import explode_stream, received_at

PREFIX = "partial"
#: How often a waiting fragment job looks again.
POLL_SECONDS = 20.0
#: After the deadline, fragments without a live fragment-1 job wait this much longer before going alone,
#: giving a late fragment 1 the chance to join them (a preference, not needed for correctness).
GRACE_SECONDS = 120.0


@dataclass(frozen=True)
class Wait:
    """Nothing to send yet: look again after `seconds` (not a failure, not a delivery attempt)."""

    seconds: float
    reason: str


@dataclass(frozen=True)
class Merged:
    """This fragment travels in job `into`; this job sends nothing and may end (its bytes may go)."""

    into: str


Outcome = ParsedMessage | Wait | Merged


@dataclass(frozen=True)
class _Marker:
    number: int
    total: int
    job_id: str
    parked: float  # when the marker became visible (seconds)

    @property
    def name(self) -> str:
        return f"{self.number:05d}-{self.total:05d}-{self.job_id}-{int(self.parked * 1000)}"

    @property
    def created(self) -> float:
        return int(self.job_id[:12], 16) / 1000

    @classmethod
    def parse(cls, name: str) -> _Marker | None:
        try:
            number, total, job_id, parked = name.rsplit("/", 1)[-1].split("-")
            marker = cls(int(number), int(total), job_id, int(parked) / 1000) if len(job_id) == 24 else None
        except ValueError:
            return None
        if marker is None or not (1 <= marker.number <= MAX_TOTAL and 0 <= marker.total <= MAX_TOTAL):
            return None  # parked before the clamp (or not ours): never let it size a set of numbers
        return marker


def _markers(names: list[str]) -> list[_Marker]:
    return [m for m in map(_Marker.parse, names) if m is not None]


def _owner(markers: list[_Marker]) -> str | None:
    """The job of fragment 1 speaks for the set (it carries the enclosed message's headers)."""
    firsts = sorted(m.job_id for m in markers if m.number == 1)
    return firsts[0] if firsts else None


def _fragment_name(number: int, total: int) -> str:
    return f"scan-part-{number}-of-{total}.eml" if total else f"scan-part-{number}.eml"


def _merged(decision: dict[str, object]) -> list[str]:
    taken = decision.get("merged")
    return [str(j) for j in taken] if isinstance(taken, list) else []


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _split_headers(chunks: AsyncIterable[bytes]) -> tuple[HeaderBlock, AsyncGenerator[bytes, None]]:
    """Read one header block off a stream; return it and the stream of what follows."""
    iterator = chunks.__aiter__()
    buf = bytearray()
    end = body = -1
    async for chunk in iterator:
        buf += chunk
        end, body = header_end(buf)
        if end >= 0 or len(buf) > MAX_HEADER_BYTES:
            break
    if end < 0:
        end = body = len(buf)
    rest = bytes(buf[body:])

    async def remainder() -> AsyncGenerator[bytes, None]:
        try:
            if rest:
                yield rest
            async for chunk in iterator:
                yield chunk
        finally:
            closer = getattr(iterator, "aclose", None)
            if closer is not None:
                await closer()

    return parse_header_block(bytes(buf[:end])), remainder()


class Fragments:
    """What the delivery agent calls instead of `explode_mime`: the same result for ordinary messages."""

    def __init__(
        self,
        blobs: BlobStore,
        jobs: JobStore,
        wait_minutes: float,
        clock: Callable[[], float] = time.time,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.poll = poll_seconds
        self.blobs = blobs
        self.jobs = jobs
        self.wait = wait_minutes * 60
        self.clock = clock

    async def explode(self, job: Job) -> Outcome:
        head = await self.blobs.read_range(job.files[0].blob, 0, MAX_HEADER_BYTES)
        end, _ = header_end(head)
        headers = parse_header_block(head[: end if end >= 0 else len(head)])
        try:
            info = partial_info(headers)
        except BadFragment as exc:  # accepted before the door refused such fragments: fail it, do not loop
            raise PermanentDeliveryError(str(exc), "Ask the device to send scans unsplit or in fewer parts.") from None
        if info is None:
            return await explode_stream(job.id, received_at(job), self._rest(job.files[0].blob, head), self.blobs)
        return await self._fragment(job, info)

    async def _rest(self, name: str, head: bytes) -> AsyncIterator[bytes]:
        """The whole blob, its head already in hand: a scan under MAX_HEADER_BYTES is read once, not twice."""
        yield head
        if len(head) >= MAX_HEADER_BYTES:
            async for chunk in self.blobs.stream(name, len(head)):
                yield chunk

    async def _fragment(self, job: Job, info: PartialInfo) -> Outcome:
        key = hashlib.sha256(f"{job.device}\0{info.id}".encode()).hexdigest()[:32]
        folder = f"{PREFIX}/{key}/"
        names = await self.blobs.list(folder)
        if not any(m.job_id == job.id for m in _markers(names)):
            await self.blobs.write(
                f"{folder}{_Marker(info.number, info.total or 0, job.id, self.clock()).name}", _one(b"")
            )
            names = await self.blobs.list(folder)  # write first, then look: see "alone" below
        markers = _markers(names)
        known_total = max((m.total for m in markers), default=0)
        if info.total is None and known_total:
            info = replace(info, total=known_total)  # only the last fragment must say how many there are
        alone = {n.rsplit("alone-", 1)[1] for n in names if "/alone-" in n}
        decision = await self._decision(folder, names)
        if decision is not None and (job.id not in alone or job.id in _merged(decision)):
            return await self._follow(job, info, decision, markers)
        if job.id in alone:  # decided on an earlier run, and no owner took it (see below)
            return await self._alone(job, info, "no part 1 arrived to join it to")
        now = self.clock()
        deadline = min(m.created for m in markers) + self.wait
        owner = _owner(markers)
        if owner == job.id:
            candidates = [m for m in markers if m.job_id not in alone]
            if not (self._complete(candidates) or now >= deadline):
                return Wait(
                    max(min(1.0, self.poll), min(self.poll, deadline - now)),
                    f"fragment 1 waits for the rest of set {key}",
                )
            chosen: dict[int, str] = {}
            for m in sorted(candidates, key=lambda m: m.job_id):
                chosen.setdefault(m.number, m.job_id)
            decision = {"owner": job.id, "merged": sorted(chosen.values()), "complete": self._complete(candidates)}
            await self.blobs.write(f"{folder}decision", _one(json.dumps(decision).encode()))
            return await self._follow(job, info, decision, markers)
        waiting = Wait(self.poll, f"fragment {info.number} waits for fragment 1 of set {key}")
        if now < deadline + GRACE_SECONDS:
            return waiting
        if owner is not None:
            owner_job = await self.jobs.get(owner)
            if owner_job is not None and not owner_job.state.final:
                return waiting  # fragment 1's job decides at the deadline; it will take this one
        # Nobody will take this fragment. Say so first, then look again: an owner that wrote its marker
        # before our second look may have listed before our note, so we then follow its decision; an owner
        # that writes its marker after our second look is bound to see our note and leaves us out.
        await self.blobs.write(f"{folder}alone-{job.id}", _one(b""))
        names = await self.blobs.list(folder)
        decision = await self._decision(folder, names)
        if decision is not None:
            return await self._follow(job, info, decision, markers)
        if _owner(_markers(names)) not in (None, owner):
            return waiting
        return await self._alone(job, info, "no part 1 arrived to join it to")

    @staticmethod
    def _complete(markers: list[_Marker]) -> bool:
        total = max((m.total for m in markers), default=0)
        return total > 0 and {m.number for m in markers} >= set(range(1, total + 1))

    async def _decision(self, folder: str, names: list[str]) -> dict[str, object] | None:
        if f"{folder}decision" not in names:
            return None
        raw = b"".join([chunk async for chunk in self.blobs.stream(f"{folder}decision")])
        return dict(json.loads(raw))

    async def _follow(
        self, job: Job, info: PartialInfo, decision: dict[str, object], markers: list[_Marker]
    ) -> Outcome:
        merged = _merged(decision)
        owner = str(decision["owner"])
        if job.id == owner:
            if decision.get("complete"):
                return await self._owner(job, merged, markers, True)
            if merged == [job.id]:
                return await self._alone(job, info, "no other part arrived in time")
            return await self._owner(job, merged, markers, False)
        if job.id not in merged:
            return await self._alone(job, info, "it arrived too late to be joined with the other parts")
        owner_job = await self.jobs.get(owner)
        if owner_job is None or owner_job.state.final or owner_job.progress.get("parsed"):
            return Merged(owner)
        return Wait(self.poll, f"fragment {info.number} waits for job {owner} to take it")

    async def _owner(self, job: Job, merged: list[str], markers: list[_Marker], complete: bool) -> ParsedMessage:
        numbers = {m.job_id: m.number for m in markers}
        total = max((m.total for m in markers), default=0)
        sources = []
        for member in sorted(merged, key=lambda j: numbers.get(j, 0)):
            record = job if member == job.id else await self.jobs.get(member)
            if record is not None and record.files:
                sources.append((numbers.get(member, 0), record.files[0]))
        if complete:
            return await explode_stream(job.id, received_at(job), self._joined([s for _, s in sources]), self.blobs)
        if total:
            missing = ", ".join(map(str, sorted(set(range(1, total + 1)) - {n for n, _ in sources})))
            what = f"This scan was sent in {total} parts and part {missing} did not arrive"
        else:
            what = "This scan was sent in parts and the last part did not arrive"
        note = f"{what} within {self.wait / 60:g} minutes. The parts that arrived are attached as received."
        copies = []
        for number, ref in sources:
            blob = f"{job.id}/fragment-{number}"
            size = await self.blobs.write(blob, self.blobs.stream(ref.blob))
            copies.append(FileRef(blob, _fragment_name(number, total), "application/octet-stream", size))
        return await self._with_headers(job, note, tuple(copies))

    async def _joined(self, refs: list[FileRef]) -> AsyncIterator[bytes]:
        """The reassembled message: merged headers, then each fragment's body in order (RFC 2046 5.2.2.1)."""
        for index, ref in enumerate(refs):
            outer, body = await _split_headers(self.blobs.stream(ref.blob))
            if index == 0:
                inner, body = await _split_headers(body)
                yield merged_headers(outer, inner)
            async for chunk in body:
                yield chunk

    async def _alone(self, job: Job, info: PartialInfo, why: str) -> ParsedMessage:
        of = f" of {info.total}" if info.total else ""
        note = (
            f"This is part {info.number}{of} of a scan the device split up; it is delivered on its own "
            f"because {why}. The part is attached as received."
        )
        ref = job.files[0]
        name = _fragment_name(info.number, info.total or 0)
        return await self._with_headers(job, note, (FileRef(ref.blob, name, "application/octet-stream", ref.size),))

    async def _with_headers(self, job: Job, note: str, attachments: tuple[FileRef, ...]) -> ParsedMessage:
        """Subject, From and the rest from the fragment's headers (the enclosed ones for fragment 1)."""
        outer, body = await _split_headers(self.blobs.stream(job.files[0].blob))
        inner = HeaderBlock()
        try:
            info = partial_info(outer)
        except BadFragment:
            info = None
        if info is not None and info.number == 1:
            inner, body = await _split_headers(body)
        await body.aclose()
        parsed = await explode_stream(job.id, received_at(job), _one(merged_headers(outer, inner)), self.blobs, (note,))
        return replace(parsed, attachments=attachments)


async def sweep_partials(blobs: BlobStore, now: float, keep_hours: float) -> int:
    """Drop the bookkeeping (markers, notes, decision) of sets whose newest fragment is older than
    `keep_hours`; the fragments' bytes belong to their jobs and go with them. For retention."""
    newest: dict[str, float] = {}
    for name in await blobs.list(f"{PREFIX}/"):
        marker = _Marker.parse(name)
        folder = name.rsplit("/", 1)[0]
        newest.setdefault(folder, 0.0)
        if marker is not None:
            newest[folder] = max(newest[folder], marker.created)
    swept = 0
    for folder, created in newest.items():
        if created and now - created > keep_hours * 3600:
            await blobs.delete_prefix(folder + "/")
            swept += 1
    return swept
