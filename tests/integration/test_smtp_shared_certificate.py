"""On Azure every SMTP replica, and every restart, serves the same self-signed certificate: devices and relays
that trust its fingerprint (the README's Postfix and msmtp recipes pin it) keep working when Container Apps
adds a replica or starts a new container. Each replica's own folder is a different temporary directory here,
as it is in a container; the certificate they share lives in the spool (embedded and Azurite)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import ssl
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiosmtplib
import pytest

from gateway.config import Settings, load_settings
from gateway.core.jobstore import JobStore
from gateway.core.ports import Spool
from gateway.delivery.retention import sweep
from gateway.devices import DeviceRegistry
from gateway.intake.self_signed import generate, load
from gateway.intake.shared_certificate import BLOB_NAME, converge
from gateway.intake.smtp import SmtpServer
from gateway.services import Services, build
from tests.integration.azurite import reset_azurite
from tests.integration.test_spool_contract import Opener, open_spool, with_spool

__all__ = ["open_spool"]

HOSTS = ("localhost", "127.0.0.1")


async def stored(spool: Spool) -> bytes:
    return b"".join([chunk async for chunk in spool.blobs.stream(BLOB_NAME)])


async def one(data: bytes) -> AsyncIterator[bytes]:
    yield data


def test_a_new_replica_and_a_restarted_one_take_the_stored_certificate(open_spool: Opener, tmp_path: Path) -> None:
    async def body(spool: Spool) -> None:
        first = await converge(spool.blobs, HOSTS, tmp_path / "replica-a")
        assert load(tmp_path / "replica-a") == first
        second = await converge(spool.blobs, HOSTS, tmp_path / "replica-b")
        restarted = await converge(spool.blobs, HOSTS, tmp_path / "replica-a-restarted")
        assert second.fingerprint == restarted.fingerprint == first.fingerprint
        assert (tmp_path / "replica-b" / "self-signed.key").read_bytes() == first.key.read_bytes()
        assert await stored(spool) == first.key.read_bytes() + first.cert.read_bytes()
        # Retention sweeps blobs that belong to no job; the certificate is not one of them, however old.
        svc = Services(Settings(), spool, DeviceRegistry(spool.devices), JobStore(spool.jobs))
        report = await sweep(svc, datetime.now(UTC) + timedelta(days=400))
        assert report.orphans_deleted == 0 and await stored(spool) == first.key.read_bytes() + first.cert.read_bytes()

    with_spool(open_spool, body)


def test_replicas_that_start_together_agree_by_their_next_check(open_spool: Opener, tmp_path: Path) -> None:
    async def body(spool: Spool) -> None:
        folders = [tmp_path / f"replica-{n}" for n in range(3)]
        await asyncio.gather(*(converge(spool.blobs, HOSTS, folder) for folder in folders))
        again = await asyncio.gather(*(converge(spool.blobs, HOSTS, folder) for folder in folders))
        assert len({made.fingerprint for made in again}) == 1
        assert await stored(spool) == again[0].key.read_bytes() + again[0].cert.read_bytes()

    with_spool(open_spool, body)


@pytest.mark.parametrize("kind", ["other host names", "near expiry", "unreadable"])
def test_a_stored_certificate_unfit_to_serve_is_replaced_for_every_replica(
    open_spool: Opener, tmp_path: Path, kind: str
) -> None:
    async def body(spool: Spool) -> None:
        if kind == "unreadable":
            bad = b"not a certificate"
        else:
            cert, key = generate(["old.example.com"] if kind == "other host names" else list(HOSTS), days=5)
            bad = key + cert
        await spool.blobs.write(BLOB_NAME, one(bad))
        made = await converge(spool.blobs, HOSTS, tmp_path / "replica-a")
        assert set(made.hosts) == set(HOSTS) and not made.expires_within(300)
        assert await stored(spool) == made.key.read_bytes() + made.cert.read_bytes()
        assert (await converge(spool.blobs, HOSTS, tmp_path / "replica-b")).fingerprint == made.fingerprint

    with_spool(open_spool, body)


async def served_fingerprint(address: tuple[str, int]) -> str:
    """What a device sees after STARTTLS (it trusts the door by fingerprint, not by a CA)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    client = aiosmtplib.SMTP(hostname=address[0], port=address[1], start_tls=False, timeout=15)
    await client.connect()
    try:
        await client.ehlo()
        await client.starttls(tls_context=context)
        assert client.transport is not None
        der = client.transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        client.close()
    return hashlib.sha256(der).digest().hex(":").upper()


@pytest.mark.azurite
def test_smtp_doors_on_azure_storage_serve_one_certificate_across_replicas_and_restarts(
    azurite_connection_string: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    reset_azurite(azurite_connection_string)
    caplog.set_level(logging.INFO, "scangw.smtp")
    env = {"SCANGW_STORAGE": azurite_connection_string, "SCANGW_SMTP_TLS_SELF_SIGNED": ",".join(HOSTS)}
    settings = load_settings(env)
    assert settings.local_dir is None  # Azure Storage: each container's own folder is temporary

    async def replica(name: str, services: Services) -> tuple[SmtpServer, tuple[str, int]]:
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / name))  # a new container's /tmp
        server = SmtpServer(settings, services)
        (address,) = await server.start([("127.0.0.1", 0)], [])
        return server, address

    async def main() -> None:
        services = await build(settings)
        servers: list[SmtpServer] = []
        try:
            a, address_a = await replica("a", services)
            servers.append(a)
            b, address_b = await replica("b", services)
            servers.append(b)
            fingerprint = await served_fingerprint(address_a)
            assert await served_fingerprint(address_b) == fingerprint
            await a.stop()
            servers.remove(a)
            restarted, address_c = await replica("a-restarted", services)
            servers.append(restarted)
            assert await served_fingerprint(address_c) == fingerprint
            kept = load(tmp_path / "b" / f"scangw-tls-{os.getuid()}")  # the folder SmtpServer chose in container b
            assert kept is not None and kept.fingerprint == fingerprint
            # The fingerprint an admin copies from each door's start line is the one devices are served.
            announced = [
                r.getMessage() for r in caplog.records if r.getMessage().startswith("event=smtp.self_signed hosts=")
            ]
            assert len(announced) == 3 and all(line.endswith(f"sha256={fingerprint}") for line in announced), announced
        finally:
            for server in servers:
                await server.stop()
            await services.close()

    asyncio.run(main())
