"""Real clients end to end: every device-shaped message of tests/data sent over SMTP exactly as the device
would (bare LF included), delivered by the worker to the .eml outbox, and read back: names and bytes match.
Plus aiosmtplib and, when installed, swaks (Debian package `swaks`)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import shutil
import subprocess
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from gateway.config import load_settings
from gateway.delivery.agent import DeliveryAgent
from gateway.delivery.outbox import OutboxTransport
from gateway.delivery.worker import Worker
from gateway.services import build
from tests.integration.test_smtp_harness import USER, Dialogue, make_pki, running_smtp

DATA = Path(__file__).resolve().parent.parent / "data"
MANIFEST: dict[str, dict[str, Any]] = json.loads((DATA / "manifest.json").read_text(encoding="utf-8"))
WHOLE = sorted(name for name, meta in MANIFEST.items() if "partial" not in meta)


def deliver_all(tmp: Path) -> list[EmailMessage]:
    """Run the delivery agent over the queue into an outbox until it is empty; return what was delivered."""
    outbox = tmp / "outbox"

    async def drain() -> None:
        settings = load_settings({"SCANGW_STORAGE": f"local:{tmp / 'spool'}", "SCANGW_OUTBOX": str(outbox)})
        services = await build(settings)
        try:
            agent = DeliveryAgent(services, OutboxTransport(outbox, services.spool.blobs), partial_poll_seconds=0.05)
            deadline = asyncio.get_running_loop().time() + 30
            while await services.spool.queue.count():  # type: ignore[attr-defined]
                assert asyncio.get_running_loop().time() < deadline, "queue did not drain"
                await Worker(agent).drain()
                await asyncio.sleep(0.05)  # deferred fragment jobs become visible again
        finally:
            await services.close()

    asyncio.run(drain())
    return [message_from_bytes(p.read_bytes(), policy=policy.default) for p in sorted(outbox.glob("*.eml"))]  # type: ignore[misc]


def files(message: EmailMessage) -> list[tuple[str, str]]:
    return [
        (part.get_filename() or "", hashlib.sha256(part.get_payload(decode=True) or b"").hexdigest())
        for part in message.iter_attachments()
    ]


def test_device_corpus_over_smtp_arrives_with_names_and_bytes_intact(tmp_path: Path) -> None:
    with running_smtp(tmp_path) as run:
        talk = Dialogue(run.plain)
        talk.ask("HELO corpus")
        talk.ask("AUTH PLAIN " + base64.b64encode(f"\0{USER}\0{run.password}".encode()).decode())
        for name in WHOLE:
            raw = (DATA / name).read_bytes()
            assert talk.ask("MAIL FROM:<scanner@contoso.com>").startswith("250")
            assert talk.ask("RCPT TO:<alice@contoso.com>").startswith("250")
            assert talk.ask("DATA").startswith("354")
            stuffed = raw.replace(b"\r\n.", b"\r\n..")
            talk.send(stuffed + (b"" if stuffed.endswith(b"\r\n") else b"\r\n") + b".\r\n")
            assert talk.reply().startswith("250 2.0.0"), name
    delivered = deliver_all(tmp_path)
    assert len(delivered) == len(WHOLE)
    for name in WHOLE:
        meta = MANIFEST[name]
        expected = [(a["name"], a["sha256"]) for a in meta["attachments"]]
        message = next((m for m in delivered if files(m) == expected), None)
        assert message is not None, f"{name}: no delivered message has exactly {expected}"
        assert message["Subject"] == meta["subject"]
        assert message["From"].addresses[0].addr_spec == "scanner@contoso.com"  # rewritten to the sender mailbox
        assert message["Date"] is not None


def test_aiosmtplib_plain_login(tmp_path: Path) -> None:
    with running_smtp(tmp_path) as run:

        async def send() -> str:
            _, text = await aiosmtplib.send(
                b"Subject: a\r\n\r\nb\r\n",
                sender="s@contoso.com",
                recipients=["bob@contoso.com"],
                hostname=run.plain[0],
                port=run.plain[1],
                username=USER,
                password=run.password,
                start_tls=False,
            )
            return text

        assert asyncio.run(send()).startswith("2.0.0 Ok: queued as ")
        assert run.queue_count() == 1


def _swaks_tls() -> bool:
    if shutil.which("swaks") is None:
        return False
    found = subprocess.run(["swaks", "--support"], capture_output=True, text=True, timeout=30, check=False)
    return "=== TLS supported" in found.stdout + found.stderr


@pytest.mark.parametrize(
    "tls",
    [
        pytest.param(False, id="plain"),
        pytest.param(
            True,
            id="starttls",
            marks=pytest.mark.skipif(not _swaks_tls(), reason="swaks without TLS (apt-get install libnet-ssleay-perl)"),
        ),
    ],
)
@pytest.mark.skipif(
    shutil.which("swaks") is None, reason="swaks not installed (apt-get install swaks libnet-ssleay-perl)"
)
def test_swaks_auth_login_with_an_attachment(tmp_path: Path, tls: bool) -> None:
    pki = make_pki(tmp_path / "pki")
    scan = DATA / "single_part_pdf.eml"
    with running_smtp(tmp_path, pki.env(SCANGW_SMTP_REQUIRE_TLS_AUTH="0")) as run:
        result = subprocess.run(
            ["swaks", "--server", f"{run.plain[0]}:{run.plain[1]}", "--auth", "LOGIN", "--auth-user", USER,
             "--auth-password", run.password, "--from", "scanner@contoso.com", "--to", "bob@contoso.com",
             "--attach", f"@{scan}", *(["--tls", "--tls-verify", "--tls-ca-path", str(pki.ca)] if tls else [])],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert "334 VXNlcm5hbWU6" in result.stdout and "250 2.0.0 Ok: queued as" in result.stdout
        assert run.queue_count() == 1


def test_message_partial_fragments_are_delivered_as_one_reassembled_scan(tmp_path: Path) -> None:
    """Canon / Fuji Xerox split big scans into message/partial fragments; recipients get one message."""
    fragments = ["partial_3of3.eml", "partial_1of3.eml", "partial_2of3.eml"]  # out of order, as networks do
    with running_smtp(tmp_path) as run:
        talk = Dialogue(run.plain)
        talk.ask("EHLO fx")
        talk.ask("AUTH PLAIN " + base64.b64encode(f"\0{USER}\0{run.password}".encode()).decode())
        for name in fragments:
            assert talk.ask("MAIL FROM:<scanner@contoso.com>").startswith("250")
            assert talk.ask("RCPT TO:<alice@contoso.com>").startswith("250")
            assert talk.ask("DATA").startswith("354")
            raw = (DATA / name).read_bytes().replace(b"\r\n.", b"\r\n..")
            talk.send(raw + (b"" if raw.endswith(b"\r\n") else b"\r\n") + b".\r\n")
            assert talk.reply().startswith("250 2.0.0"), name
    delivered = deliver_all(tmp_path)
    meta = MANIFEST["partial_1of3.eml"]
    [message] = delivered
    assert files(message) == [(a["name"], a["sha256"]) for a in meta["attachments"]]
    assert message["Subject"] == meta["subject"]

    async def states() -> list[str]:
        services = await build(load_settings({"SCANGW_STORAGE": f"local:{tmp_path / 'spool'}"}))
        try:
            return [j.state.value for j in await services.jobs.list()]
        finally:
            await services.close()

    assert asyncio.run(states()) == ["sent"] * 3
