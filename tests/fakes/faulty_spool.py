"""A real spool with faults injected at named steps: the storage the gateway meets on a bad day.

Every call goes to the real adapter (embedded or Azure); a `Faults` script decides, per step, whether the
call fails before it reaches storage, fails after storage did the work (the reply was lost), or is held there
until the test releases it (a database lock another process holds, a slow request), so the caller can be
cancelled meanwhile (a client that went away, a shutdown). Steps are named `part.method`, for
example `blobs.write`, `jobs.insert`, `jobs.delete`, `queue.put`, `blobs.delete_prefix`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.core.ports import JobQueue, QueueLease, Record, Spool, Table


@dataclass
class _Fault:
    error: BaseException | None  # None: hold until cancelled
    after: bool  # True: storage did the work, then the fault


@dataclass
class Faults:
    faults: dict[str, _Fault] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    held: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def fail(self, step: str, error: BaseException, after: bool = False) -> None:
        """`step` raises `error`: before storage is touched, or `after` it did the work."""
        self.faults[step] = _Fault(error, after)

    def hold(self, step: str, after: bool = False) -> None:
        """`step` waits (`held` is set) until `release` is set, or until it is cancelled itself."""
        self.faults[step] = _Fault(None, after)

    async def _strike(self, step: str, after: bool) -> None:
        fault = self.faults.get(step)
        if fault is None or fault.after != after:
            return
        if fault.error is not None:
            raise fault.error
        self.held.set()
        await self.release.wait()

    async def around(self, step: str, call: Callable[[], Awaitable[Any]]) -> Any:
        self.calls.append(step)
        await self._strike(step, after=False)
        result = await call()
        await self._strike(step, after=True)
        return result


class FaultyBlobs:
    def __init__(self, real: Any, faults: Faults) -> None:
        self._real, self._faults = real, faults

    async def write(self, name: str, chunks: AsyncIterable[bytes]) -> int:
        fault = self._faults.faults.get("blobs.write.stream")
        if fault is not None and fault.error is not None:
            chunks = _broken(chunks, fault.error)
        return int(await self._faults.around("blobs.write", lambda: self._real.write(name, chunks)))

    def stream(self, name: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        return self._real.stream(name, offset, length)  # type: ignore[no-any-return]

    async def read_range(self, name: str, offset: int, length: int) -> bytes:
        return await self._faults.around("blobs.read_range", lambda: self._real.read_range(name, offset, length))  # type: ignore[no-any-return]

    async def size(self, name: str) -> int:
        return int(await self._faults.around("blobs.size", lambda: self._real.size(name)))

    async def delete_prefix(self, prefix: str) -> int:
        return int(await self._faults.around("blobs.delete_prefix", lambda: self._real.delete_prefix(prefix)))

    async def list(self, prefix: str) -> list[str]:
        return await self._faults.around("blobs.list", lambda: self._real.list(prefix))  # type: ignore[no-any-return]


async def _broken(chunks: AsyncIterable[bytes], error: BaseException) -> AsyncIterator[bytes]:
    """The first chunk arrives, then the stream fails (a client gone mid-upload, a reset connection)."""
    async for chunk in chunks:
        yield chunk
        raise error


class FaultyQueue(JobQueue):
    def __init__(self, real: JobQueue, faults: Faults) -> None:
        self._real, self._faults = real, faults

    async def put(self, text: str, delay: float = 0) -> None:
        await self._faults.around("queue.put", lambda: self._real.put(text, delay))

    async def receive(self, visibility: float, max_messages: int = 1) -> list[QueueLease]:
        return await self._faults.around("queue.receive", lambda: self._real.receive(visibility, max_messages))  # type: ignore[no-any-return]

    async def delete(self, lease: QueueLease) -> None:
        await self._faults.around("queue.delete", lambda: self._real.delete(lease))

    async def defer(self, lease: QueueLease, delay: float) -> QueueLease:
        return await self._faults.around("queue.defer", lambda: self._real.defer(lease, delay))  # type: ignore[no-any-return]

    async def put_poison(self, text: str) -> None:
        await self._faults.around("queue.put_poison", lambda: self._real.put_poison(text))


class FaultyTable(Table):
    def __init__(self, real: Table, faults: Faults, name: str) -> None:
        self._real, self._faults, self._name = real, faults, name

    async def get(self, key: str) -> Record | None:
        return await self._faults.around(f"{self._name}.get", lambda: self._real.get(key))  # type: ignore[no-any-return]

    async def insert(self, key: str, data: dict[str, Any]) -> str:
        return str(await self._faults.around(f"{self._name}.insert", lambda: self._real.insert(key, data)))

    async def replace(self, key: str, data: dict[str, Any], etag: str) -> str:
        return str(await self._faults.around(f"{self._name}.replace", lambda: self._real.replace(key, data, etag)))

    async def upsert(self, key: str, data: dict[str, Any]) -> str:
        return str(await self._faults.around(f"{self._name}.upsert", lambda: self._real.upsert(key, data)))

    async def delete(self, key: str) -> None:
        await self._faults.around(f"{self._name}.delete", lambda: self._real.delete(key))

    async def list(self) -> list[Record]:
        return await self._faults.around(f"{self._name}.list", lambda: self._real.list())  # type: ignore[no-any-return]


def faulty(spool: Spool, faults: Faults) -> Spool:
    """The same storage behind fault-injecting doors; closing it is left to the real spool's owner."""
    return Spool(
        blobs=FaultyBlobs(spool.blobs, faults),
        queue=FaultyQueue(spool.queue, faults),
        jobs=FaultyTable(spool.jobs, faults, "jobs"),
        devices=spool.devices,
        mailboxes=spool.mailboxes,
    )
