"""Pick the transport: the .eml outbox when SCANGW_OUTBOX is set, Microsoft Graph otherwise."""

from __future__ import annotations

from gateway.config import Settings
from gateway.core.ports import BlobStore
from gateway.delivery.transport import Transport


def make_transport(settings: Settings, blobs: BlobStore) -> Transport:
    if settings.outbox is not None:
        from gateway.delivery.outbox import OutboxTransport

        return OutboxTransport(settings.outbox, blobs)
    from gateway.delivery.graph import GraphTransport
    from gateway.delivery.links import make_link_fallback

    fallback = make_link_fallback(settings, blobs)
    return GraphTransport(settings, blobs, send_grace=settings.send_grace_seconds, link_fallback=fallback)
