"""Graceful stop for `scangw http`: uploads in progress get until the stop deadline, then an answer.

uvicorn's own deadline cancels what is still running and answers a plain-text 500, and may close storage
under a scan still being taken back. Instead, this middleware knows the requests in progress; at the deadline
it cancels them itself, lets accept() take back what each stored, and answers `503` with `Retry-After` in the
gateway's JSON error shape: the device sends the scan again once the gateway is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from gateway.intake.http import error_response

log = logging.getLogger("scangw.http")

#: What a cut upload is told: the restart is usually done within this many seconds.
RETRY_AFTER_SECONDS = 30
#: After cancelling, how long the cut requests get to take back what they stored and answer.
SETTLE_SECONDS = 30.0


class Draining:
    """ASGI middleware: tracks HTTP requests; `drain()` waits for them, then cuts the rest with a 503."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._requests: set[asyncio.Task[Any]] = set()
        self._cutting = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        task = asyncio.current_task()
        if scope["type"] != "http" or task is None:
            await self.app(scope, receive, send)
            return
        self._requests.add(task)
        started = False

        async def send_tracked(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except asyncio.CancelledError:
            if not self._cutting or started:
                raise
            task.uncancel()  # our own cut: this request still gets its answer
            log.warning(
                "event=http.stop_cut method=%s path=%s the upload was still arriving at the stop deadline: 503",
                scope.get("method"),
                scope.get("path"),
            )
            response = error_response(
                503,
                "shutting_down",
                "The gateway is restarting and nothing was accepted: send the scan again in a minute.",
                {"Retry-After": str(RETRY_AFTER_SECONDS), "Connection": "close"},
            )
            await response(scope, receive, send)
        finally:
            self._requests.discard(task)

    async def drain(self, deadline_seconds: float) -> None:
        """Wait up to `deadline_seconds` for requests in progress; cut those still running and wait for their
        answers (each one's accept() first takes back what it stored)."""
        deadline = time.monotonic() + deadline_seconds
        while self._requests and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        running = {task for task in self._requests if not task.done()}
        if not running:
            return
        self._cutting = True
        for task in running:
            task.cancel()
        await asyncio.wait(running, timeout=SETTLE_SECONDS)
