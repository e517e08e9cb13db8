"""The composition root: `build(settings)` wires storage, registry, intake and delivery once per process."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from gateway.config import Settings
from gateway.core.accept import Intake
from gateway.core.jobstore import JobStore
from gateway.core.login_limiter import LoginLimiter, LoginLimits
from gateway.core.ports import Spool
from gateway.devices import DeviceRegistry


async def open_spool(settings: Settings) -> Spool:
    """The embedded spool for `local:<dir>`, Azure Storage (or Azurite) otherwise."""
    local = settings.local_dir
    if local is not None:
        from gateway.spool.local import open_local_spool

        return await open_local_spool(local)
    from gateway.spool.azure import open_azure_spool

    return await open_azure_spool(settings)


@dataclass
class Services:
    settings: Settings
    spool: Spool
    registry: DeviceRegistry
    jobs: JobStore
    #: One failed-login limiter for both doors of the process (`scangw dev` runs both).
    logins: LoginLimiter = field(default_factory=LoginLimiter)

    def intake(self, max_bytes: int | None = None) -> Intake:
        from gateway.telemetry.spans import traceparent

        return Intake(
            self.spool, max_bytes or self.settings.max_message_bytes, self.settings.sender, trace_context=traceparent
        )

    async def close(self) -> None:
        from gateway.core.accept import settle_accepts

        await settle_accepts()  # a scan still being taken back must finish before storage closes under it
        await self.spool.close()


async def build(settings: Settings) -> Services:
    spool = await open_spool(settings)
    return Services(
        settings=settings,
        spool=spool,
        registry=DeviceRegistry(spool.devices, where=settings.store_label),
        jobs=JobStore(spool.jobs),
        logins=LoginLimiter(
            LoginLimits(
                settings.auth_failures,
                settings.auth_window_seconds,
                settings.auth_user_failures,
                settings.auth_user_window_seconds,
            )
        ),
    )


def lazy(factory: Callable[[], Awaitable[Services]]) -> Callable[[], Awaitable[Services]]:
    """Build on first use, once, inside the running event loop (Azure's aio clients bind to it)."""
    lock = asyncio.Lock()
    holder: list[Services] = []

    async def get() -> Services:
        if not holder:
            async with lock:
                if not holder:
                    holder.append(await factory())
        return holder[0]

    return get
