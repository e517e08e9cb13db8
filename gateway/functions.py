"""What the Function app's triggers call: one Services per worker process, built on first use.

Transient delivery failures re-enqueue the job with a visibility delay and return normally, so the host
deletes the original message: the host's own retry (fixed `visibilityTimeout`, then `scan-jobs-poison`
after `maxDequeueCount`) is kept for crashes and storage outages, not for Graph throttling.
"""

from __future__ import annotations

import logging
import os

from gateway.config import load_settings
from gateway.delivery.agent import DeliveryAgent, Retry
from gateway.services import Services, build, lazy
from gateway.telemetry import configure_logging

log = logging.getLogger("scangw.functions")

#: FUNCTIONS_REQUEST_BODY_SIZE_LIMIT default: the worker buffers the whole request body.
PLATFORM_BODY_LIMIT = 104_857_600


async def _build() -> Services:
    settings = load_settings(os.environ)
    configure_logging(settings)
    return await build(settings)


services = lazy(_build)
_agents: list[DeliveryAgent] = []


async def _agent() -> DeliveryAgent:
    if not _agents:
        from gateway.delivery.transports import make_transport

        svc = await services()
        _agents.append(DeliveryAgent(svc, make_transport(svc.settings, svc.spool)))
    return _agents[0]


async def deliver_message(body: bytes) -> None:
    agent = await _agent()
    outcome = await agent.handle(body)
    if isinstance(outcome, Retry):
        # A new message with a delay; the host then deletes this one. A crash in between leaves a duplicate,
        # which the job record's state and lease make harmless.
        await agent.services.spool.queue.put(body.decode("utf-8", "replace"), delay=outcome.delay)


async def sweep_retention() -> None:
    from gateway.delivery.retention import mailbox_housekeeper, sweep

    agent = await _agent()
    housekeeper, problem = await mailbox_housekeeper(agent.transport, agent.services.settings)
    if problem:  # one line the no-identity alert and an admin can read, not a credential report per Graph call
        log.warning("mailboxes not swept this hour: %s", problem)
    await sweep(agent.services, housekeeper=housekeeper)


async def measure_queue() -> None:
    """The timer trigger that feeds scangw.queue.oldest_age every few minutes (the retention timer is hourly)."""
    from gateway.status import measure_queue as measure

    await measure(await services())
