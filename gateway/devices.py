"""The device registry: per-device credentials (argon2-hashed), sender mailbox and recipient policy.

Verification re-reads the device on every call, so a revoke or rotate takes effect at the next connection
or request; only the argon2 computation is cached briefly, keyed by an HMAC that never leaves the process.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from gateway.core.devices import (
    Device,
    check_name,
    check_pattern,
    edited,
    generate_password,
    normalise_address,
    same_network,
    same_pattern,
)
from gateway.core.errors import AuthenticationFailed, MalformedInput
from gateway.core.fair_slots import FairSlots
from gateway.core.jobs import iso
from gateway.core.ports import Conflict, Table

#: How long a successful verification spares a busy device the argon2 cost.
VERIFY_CACHE_SECONDS = 300.0
#: Each argon2 computation takes 64 MiB: ten scanners logging in at once would take 640 MiB without a cap.
MAX_CONCURRENT_HASHES = 2


class DeviceRegistry:
    def __init__(self, table: Table, clock: Callable[[], float] = time.monotonic, where: str = "") -> None:
        self._table = table
        #: Which store this is, named in "no such device" errors (a typo in SCANGW_STORAGE looks just like it).
        self._missing = f" in the store at {where}" if where else ""
        self._clock = clock
        self._hasher = PasswordHasher()
        self._cache_key = secrets.token_bytes(32)
        self._verified: dict[str, tuple[bytes, str, float]] = {}
        self._hashing = FairSlots(MAX_CONCURRENT_HASHES)
        self._dummy_hash: str | None = None

    async def get(self, name: str) -> Device | None:
        record = await self._table.get(name.lower())
        return Device.from_record(record.data) if record else None

    async def require(self, name: str) -> Device:
        device = await self.get(name)
        if device is None:
            raise MalformedInput(f"No device named '{name}'{self._missing}. See: scangw devices list")
        return device

    async def list(self) -> builtins.list[Device]:
        return sorted((Device.from_record(r.data) for r in await self._table.list()), key=lambda d: d.name)

    async def add(
        self,
        name: str,
        *,
        sender: str | None = None,
        sender_name: str | None = None,
        reply_to: str | None = None,
        default_to: str | None = None,
        allow_to: Sequence[str] = (),
        from_ip: Sequence[str] = (),
    ) -> tuple[Device, str]:
        """Register a device; return it with its password, which is shown once and never stored."""
        check_name(name)
        password = generate_password()
        device = Device(
            name=name,
            password_hash=await asyncio.to_thread(self._hasher.hash, password),
            sender=normalise_address(sender) if sender else None,
            sender_name=sender_name,
            reply_to=normalise_address(reply_to) if reply_to else None,
            default_to=normalise_address(default_to) if default_to else None,
            allow_to=tuple(check_pattern(p) for p in allow_to),
            from_ip=tuple(from_ip),
            created=iso(datetime.now(UTC)),
        )
        try:
            await self._table.insert(name.lower(), device.to_record())
        except Conflict:
            raise MalformedInput(f"A device named '{name}' exists already; use rotate or revoke.") from None
        return device, password

    async def update(
        self,
        name: str,
        *,
        add_allow_to: Sequence[str] = (),
        remove_allow_to: Sequence[str] = (),
        add_from_ip: Sequence[str] = (),
        remove_from_ip: Sequence[str] = (),
        **changes: Any,
    ) -> Device:
        """Change a device's policy (not its password) with an etag-checked write. `add_*`/`remove_*` change
        one entry of a list against the record as read, so the rest of the list is kept."""
        record = await self._table.get(name.lower())
        if record is None:
            raise MalformedInput(f"No device named '{name}'{self._missing}. See: scangw devices list")
        for key in ("sender", "reply_to", "default_to"):
            if changes.get(key):
                changes[key] = normalise_address(changes[key])
        if "allow_to" in changes:
            changes["allow_to"] = tuple(check_pattern(p) for p in changes["allow_to"])
        if "from_ip" in changes:
            changes["from_ip"] = tuple(changes["from_ip"])
        current = Device.from_record(record.data)
        if add_allow_to or remove_allow_to:
            adding = [check_pattern(p) for p in add_allow_to]
            changes["allow_to"] = edited(current.allow_to, adding, list(remove_allow_to), same_pattern, "allow-to")
        if add_from_ip or remove_from_ip:
            changes["from_ip"] = edited(
                current.from_ip, list(add_from_ip), list(remove_from_ip), same_network, "from-ip"
            )
        device = replace(current, **changes)
        await self._table.replace(name.lower(), device.to_record(), record.etag)
        return device

    async def rotate(self, name: str) -> tuple[Device, str]:
        password = generate_password()
        password_hash = await asyncio.to_thread(self._hasher.hash, password)
        device = await self.update(name, password_hash=password_hash, revoked=False)
        return device, password

    async def revoke(self, name: str) -> Device:
        return await self.update(name, revoked=True, password_hash="revoked")

    async def verify(self, username: str, password: str, client: str | None = None) -> Device:
        """Return the device for valid credentials, else raise AuthenticationFailed (same message either way).

        An unknown or revoked username costs one argon2 verification too (of a dummy hash), so the answer's
        timing does not tell which device names exist. `client` (the address, or None behind a proxy) keys
        the fair queue for the argon2 slots: one address flooding wrong passwords waits behind its own."""
        device = await self.get(username) if username else None
        known = device is not None and not device.revoked
        failure = AuthenticationFailed("Authentication failed: check the device's username and password.", known)
        if device is None or device.revoked:
            async with self._hashing.slot(client or f"user:{username.lower()}"):
                await asyncio.to_thread(self._verify_dummy, password)
            raise failure
        tag = hmac.new(self._cache_key, f"{device.name}\0{password}".encode(), hashlib.sha256).digest()
        cached = self._verified.get(device.name)
        now = self._clock()
        if cached and hmac.compare_digest(cached[0], tag) and cached[1] == device.password_hash and cached[2] > now:
            return device
        try:
            async with self._hashing.slot(client or f"user:{device.name}"):
                await asyncio.to_thread(self._hasher.verify, device.password_hash, password)
        except (VerificationError, InvalidHashError):
            raise failure from None
        self._verified[device.name] = (tag, device.password_hash, now + VERIFY_CACHE_SECONDS)
        return device

    def _verify_dummy(self, password: str) -> None:
        if self._dummy_hash is None:
            self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        try:
            self._hasher.verify(self._dummy_hash, password)
        except (VerificationError, InvalidHashError):
            pass
