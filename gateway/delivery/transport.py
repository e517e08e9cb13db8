"""The seam between the delivery agent and whatever sends mail (Graph, or the .eml outbox).

A transport must make `deliver` safe to call again after any failure or crash: before each side effect it
records what it is about to do through the `Checkpoint`, and on the next call it reads that progress back
and resumes instead of repeating (exactly once).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.core.message import OutgoingMessage


class Checkpoint(Protocol):
    @property
    def progress(self) -> Mapping[str, Any]:
        """What earlier attempts recorded (empty on the first attempt)."""

    async def save(self, **changes: Any) -> None:
        """Merge `changes` into the progress durably; raises if another worker took the job over."""

    def stage(self, **changes: Any) -> None:
        """Merge `changes` into the progress now and write them with the next `save`, not before.

        For a step that a crash may forget because the protocol finds it again (a draft's id, by its
        internetMessageId): one storage write fewer per scan.
        """


@dataclass(frozen=True)
class Delivered:
    """Proof of sending for the job record and the logs."""

    request_id: str | None = None
    detail: str = ""


class Transport(Protocol):
    async def deliver(self, message: OutgoingMessage, checkpoint: Checkpoint) -> Delivered: ...

    async def close(self) -> None: ...


class MemoryCheckpoint:
    """A checkpoint kept in memory: for notices and tools where there is no job record to resume from."""

    def __init__(self, progress: Mapping[str, Any] | None = None) -> None:
        self._progress: dict[str, Any] = dict(progress or {})

    @property
    def progress(self) -> Mapping[str, Any]:
        return self._progress

    async def save(self, **changes: Any) -> None:
        self._progress.update(changes)

    def stage(self, **changes: Any) -> None:
        self._progress.update(changes)
