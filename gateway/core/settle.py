"""Steps that cannot be stopped half-way: a thread writing a file, a storage request already on the wire.

Cancelling the coroutine that awaits such a step does not stop the step; it only makes the caller forget it,
and the step then lands after the caller has cleaned up (a job record written after its bytes were removed).
`settled()` lets the step finish first, so whoever handles the cancellation knows what was done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def settled(step: Awaitable[T], on_cancel: Callable[[], None] | None = None) -> T:
    """Await `step` to its end even if the caller is cancelled meanwhile; then raise the cancellation.
    `on_cancel` is called at the first cancellation, while the step still runs (so it can take back what it can).

    Without a cancellation this is `await step`: its result or its exception.
    """
    task = asyncio.ensure_future(step)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            if not cancelled and on_cancel is not None:
                on_cancel()
            cancelled = True  # keep waiting: the step is running, in a thread or on the wire
    if cancelled:
        if not task.cancelled():
            task.exception()  # retrieved: the cancellation wins, the step's own error is moot
        raise asyncio.CancelledError
    return task.result()
