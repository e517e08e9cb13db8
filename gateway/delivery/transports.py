"""Pick the transport: the .eml outbox when SCANGW_OUTBOX is set, Microsoft Graph otherwise."""

from __future__ import annotations

from gateway.config import Settings
from gateway.core.ports import Spool
from gateway.delivery.transport import Transport


def make_transport(settings: Settings, spool: Spool) -> Transport:
    if settings.outbox is not None:
        from gateway.delivery.outbox import OutboxTransport

        return OutboxTransport(settings.outbox, spool.blobs)
    from gateway.delivery.graph.exactly_once import GraphTransport
    from gateway.delivery.graph.shared_limits import SharedMailboxLimits
    from gateway.delivery.links import make_link_fallback

    fallback = make_link_fallback(settings, spool.blobs)
    limits = SharedMailboxLimits(spool.mailboxes, settings.mailbox_rate_per_min)
    return GraphTransport(
        settings, spool.blobs, send_grace=settings.send_grace_seconds, link_fallback=fallback, limits=limits
    )
