"""`make dev` as a newcomer meets it: one process, embedded storage, a demo device, scans end as .eml files."""

from __future__ import annotations

import email
import email.policy
import hashlib
import os
import smtplib
import subprocess
from email.message import EmailMessage
from pathlib import Path

import httpx

from tests.support import free_port, gateway_process, poll

ENV_KEEP = ("PATH", "HOME", "LANG", "PYTHONPATH", "VIRTUAL_ENV")


def _credentials(proc: subprocess.Popen[str]) -> tuple[str, str]:
    assert proc.stdout is not None
    fields: dict[str, str] = {}
    for line in proc.stdout:
        key, _, value = line.strip().partition(": ")
        if key in ("device username", "device password"):
            fields[key] = value
        if len(fields) == 2:
            return fields["device username"], fields["device password"]
    raise AssertionError("scangw dev printed no credentials")


def _delivered(outbox: Path) -> list[email.message.EmailMessage]:
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in sorted(outbox.glob("*.eml"))]  # type: ignore[misc]


def test_dev_runs_everything_with_no_azure(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k in ENV_KEEP}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")  # the per-user data folder, not the tester's own
    smtp_port, http_port = free_port(), free_port()
    args = ("dev", "--smtp-listen", f"127.0.0.1:{smtp_port}", "--http-listen", f"127.0.0.1:{http_port}")
    url = f"http://127.0.0.1:{http_port}"
    scan = os.urandom(50_000)
    with gateway_process(*args, env=env, cwd=tmp_path, health_url=f"{url}/api/health") as proc:
        user, password = _credentials(proc)
        assert user == "demo" and 8 <= len(password) <= 20
        r = httpx.put(f"{url}/api/scans/scan.pdf", params={"to": "me@example.com"}, content=scan, auth=(user, password))
        assert r.status_code == 202, r.text
        message = EmailMessage()
        message["From"] = "Scanner <scanner@printer.local>"
        message["To"] = "me@example.com"
        message["Subject"] = "Scan over SMTP"
        message.set_content("see attachment")
        message.add_attachment(scan, maintype="application", subtype="pdf", filename="smtp.pdf")
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
            client.login(user, password)
            client.send_message(message)
        outbox = tmp_path / "data" / "scangw" / "outbox"
        poll(lambda: len(list(outbox.glob("*.eml"))) == 2, timeout=60, what="two .eml files in the outbox")
    delivered = {m["Subject"]: m for m in _delivered(outbox)}
    assert set(delivered) == {"Scan from demo", "Scan over SMTP"}
    for subject, name in (("Scan from demo", "scan.pdf"), ("Scan over SMTP", "smtp.pdf")):
        [part] = list(delivered[subject].iter_attachments())
        assert part.get_filename() == name
        assert hashlib.sha256(part.get_content()).hexdigest() == hashlib.sha256(scan).hexdigest()
        assert delivered[subject]["To"] == "me@example.com"
    # A second start (from another folder: the store does not move) keeps the demo device but prints a fresh
    # password; the old one stops working.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with gateway_process(*args, env=env, cwd=elsewhere, health_url=f"{url}/api/health") as proc:
        user2, password2 = _credentials(proc)
        assert (user2, password2 != password) == ("demo", True)
        assert httpx.put(f"{url}/api/scans/a.pdf", content=b"x", auth=(user, password)).status_code == 401
        assert proc.poll() is None
    assert proc.returncode == 0  # SIGTERM: a clean stop
