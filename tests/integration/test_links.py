"""Download links (SCANGW_LINK_HOURS): scans Graph cannot carry arrive as a link that needs no credential.

Embedded spool: links served by the gateway's own HTTP app with an HMAC token. Azurite: an account-key SAS
fetched with plain httpx. End to end (real `scangw http` and `scangw worker` against the strict fake Graph):
a cloud without upload sessions, and a mailbox whose MaxSendSize refuses the scan.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from gateway.config import Settings
from gateway.core.links import LinkClaim, sign_token
from gateway.delivery.links import HmacLinkSigner, link_signer
from gateway.intake.http import create_app
from gateway.services import Services
from gateway.spool.azure import open_azure_spool
from tests.fakes.graph import FakeGraph
from tests.fakes.identity import FakeIdentityEndpoint
from tests.integration.azurite import reset_azurite
from tests.integration.test_delivery_end_to_end import Stack, sha, stop
from tests.support import free_port, gateway_process, poll, run, services_for

MIB = 1024 * 1024
MAILBOX = "scanner@contoso.com"
PUBLIC = "https://scan.contoso.test"
_FOREIGN_IDENTITY = ("MSI_ENDPOINT", "MSI_SECRET", "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT", "AZURE_CLIENT_ID")


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), MIB):
        yield data[start : start + MIB]


async def _get(svc: Services, url: str) -> httpx.Response:
    """GET through the same ASGI app `scangw http` serves, with no Authorization header."""

    async def provide() -> Services:
        return svc

    app = httpx.ASGITransport(app=create_app(provide))
    async with httpx.AsyncClient(transport=app, base_url=PUBLIC) as client:
        return await client.get(url.removeprefix(PUBLIC))


def test_embedded_link_downloads_the_exact_bytes_without_credentials(tmp_path: Path) -> None:
    data = os.urandom(3 * MIB + 17)

    async def scenario() -> None:
        svc = await services_for(tmp_path, SCANGW_LINK_HOURS="1", SCANGW_PUBLIC_URL=PUBLIC)
        try:
            await svc.spool.blobs.write("job1/f0", _chunks(data))
            signer = link_signer(svc.settings, svc.spool.blobs)
            assert isinstance(signer, HmacLinkSigner)
            url = await signer.link("job1/f0", time.time() + 3600, "Größe 1.pdf")
            assert url.startswith(f"{PUBLIC}/api/links/v1.")
            got = await _get(svc, url)
            assert got.status_code == 200
            assert hashlib.sha256(got.content).hexdigest() == hashlib.sha256(data).hexdigest()
            assert "filename*=UTF-8''Gr%C3%B6%C3%9Fe%201.pdf" in got.headers["content-disposition"]
        finally:
            await svc.close()

    run(scenario())
    key = (tmp_path / "spool" / "link-signing.key").read_bytes()
    assert len(key) == 32 and oct((tmp_path / "spool" / "link-signing.key").stat().st_mode & 0o777) == "0o600"


def test_expired_tampered_or_foreign_links_are_refused_with_json(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc = await services_for(tmp_path, SCANGW_LINK_HOURS="1", SCANGW_PUBLIC_URL=PUBLIC)
        try:
            await svc.spool.blobs.write("job1/f0", _chunks(b"secret scan"))
            signer = HmacLinkSigner(svc.spool.blobs, PUBLIC)  # type: ignore[arg-type]
            expired = await signer.link("job1/f0", time.time() - 1, "a.pdf")
            good = await signer.link("job1/f0", time.time() + 3600, "a.pdf")
            prefix, payload, mac = good.rsplit(".", 2)
            other = sign_token(b"k" * 32, LinkClaim("job1/f0", "a.pdf", time.time() + 3600))
            cases = {
                expired: (403, "link_expired"),
                f"{prefix}.{payload}.{mac[:-2]}AA": (404, "not_found"),  # tampered MAC
                f"{PUBLIC}/api/links/{other}": (404, "not_found"),  # signed with someone else's key
                f"{PUBLIC}/api/links/nonsense": (404, "not_found"),
            }
            for url, (status, code) in cases.items():
                got = await _get(svc, url)
                assert (got.status_code, got.json()["error"]["code"]) == (status, code), url
                assert b"secret scan" not in got.content
            await svc.spool.blobs.delete_prefix("job1/")
            gone = await _get(svc, good)
            assert gone.status_code == 404
        finally:
            await svc.close()

    run(scenario())


def test_embedded_links_need_a_public_url(tmp_path: Path) -> None:
    from gateway.core.errors import ConfigError
    from tests.support import settings_for

    with pytest.raises(ConfigError, match="SCANGW_PUBLIC_URL"):
        settings_for(tmp_path, SCANGW_LINK_HOURS="1", SCANGW_OUTBOX="")
    with pytest.raises(ConfigError, match="SCANGW_PUBLIC_URL"):
        settings_for(tmp_path, SCANGW_PUBLIC_URL="ftp://x")


def test_azurite_account_key_sas_downloads_with_plain_httpx(azurite_connection_string: str) -> None:
    reset_azurite(azurite_connection_string)
    data = os.urandom(2 * MIB + 5)

    async def scenario() -> str:
        spool = await open_azure_spool(Settings(storage=azurite_connection_string), client_options={"retry_total": 0})
        try:
            await spool.blobs.write("job2/f0", _chunks(data))
            signer = link_signer(Settings(storage=azurite_connection_string, link_hours=1), spool.blobs)
            assert signer is spool.blobs
            return await signer.link("job2/f0", time.time() + 3600, "scan 1.pdf")
        finally:
            await spool.close()

    url = run(scenario())
    assert "sig=" in url and "se=" in url
    got = httpx.get(url, timeout=30)
    assert got.status_code == 200, got.text
    assert hashlib.sha256(got.content).digest() == hashlib.sha256(data).digest()
    assert "attachment" in got.headers.get("content-disposition", "")
    assert httpx.get(url.replace("sig=", "sig=A"), timeout=30).status_code == 403


# -- end to end ---------------------------------------------------------------------------------------------


def _stack(tmp_path: Path, graph: FakeGraph, idp: FakeIdentityEndpoint, port: int, **extra: str) -> Stack:
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_IDENTITY and not k.startswith("SCANGW_")}
    env.update(idp.env())
    env.update(
        {
            "SCANGW_STORAGE": f"local:{tmp_path / 'spool'}",
            "SCANGW_SENDER": MAILBOX,
            "SCANGW_GRAPH_URL": graph.url,
            "SCANGW_RETRY_BASE_SECONDS": "0.2",
            "SCANGW_SEND_GRACE_SECONDS": "3",
            "SCANGW_MAILBOX_RATE_PER_MIN": "0",
            "SCANGW_LINK_HOURS": "2",
            "SCANGW_PUBLIC_URL": f"http://127.0.0.1:{port}",
            **extra,
        }
    )
    return Stack(graph, env, tmp_path)


@pytest.fixture
def idp() -> Iterator[FakeIdentityEndpoint]:
    with FakeIdentityEndpoint() as endpoint:
        yield endpoint


def _deliver_as_link(stack: Stack, port: int, size: int) -> None:
    """Upload one scan, run a worker, and check the recipient can fetch it from the link in the body."""
    user, password = stack.device()
    data = os.urandom(size)
    url = f"http://127.0.0.1:{port}"
    with gateway_process("http", "--listen", f"127.0.0.1:{port}", env=stack.env, health_url=f"{url}/api/health"):
        r = httpx.put(f"{url}/api/scans/big scan.pdf", content=data, auth=(user, password), timeout=60)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        worker = stack.worker()
        try:
            [message] = stack.graph.wait_for_sent(1, timeout=60)
            poll(lambda: stack.jobs()[job_id]["state"] == "sent", timeout=30, what="job sent")
        finally:
            stop(worker)
        assert message.attachments == []
        assert "big scan.pdf" in message.body and " UTC" in message.body
        [link] = re.findall(r"https?://\S+/api/links/\S+", message.body)
        got = httpx.get(link, timeout=30)  # no Authorization: the token is the credential
        assert got.status_code == 200 and sha(got.content) == sha(data)
        assert stack.graph.violations == []
        assert (stack.tmp / "spool" / "scans" / job_id).exists(), "bytes kept while the link lives"


def test_cloud_without_upload_sessions_sends_a_5_mib_scan_as_a_link(tmp_path: Path, idp: FakeIdentityEndpoint) -> None:
    port = free_port()
    with FakeGraph(idp, audience="https://graph.microsoft.us") as graph:
        graph.add_mailbox(MAILBOX, max_send_size=150 * MIB)
        _deliver_as_link(_stack(tmp_path, graph, idp, port, SCANGW_CLOUD="usgov"), port, 5 * MIB)


def test_scan_over_max_send_size_is_resent_once_as_a_link(tmp_path: Path, idp: FakeIdentityEndpoint) -> None:
    port = free_port()
    with FakeGraph(idp) as graph:
        graph.add_mailbox(MAILBOX, max_send_size=4 * MIB)
        stack = _stack(tmp_path, graph, idp, port)
        _deliver_as_link(stack, port, 5 * MIB)
        [sent] = graph.sent
        assert ".links@" in sent.internet_message_id
        drafts = [i for i in graph.mailbox(MAILBOX).items.values() if i.is_draft]
        assert drafts == [], "the refused draft is deleted, never sent"
