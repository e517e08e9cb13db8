"""Trying the gateway with a real scanner (issue 12 item 9), through the real processes: `scangw dev --lan`
encrypts with its own certificate and prints the setup sheet with the password; `devices show NAME --sheet`
prints the same sheet later, never with the password. Listens on loopback here (tests stay off the LAN)."""

from __future__ import annotations

import json
import os
import smtplib
import ssl
import subprocess
from email.message import EmailMessage
from pathlib import Path

import httpx

from tests.support import free_port, gateway_process, local_env, poll, scangw


def test_devices_show_sheet_has_everything_but_the_password(tmp_path: Path) -> None:
    env = local_env(tmp_path, SCANGW_SMTP_TLS_SELF_SIGNED="scan.contoso.com")
    added = scangw(
        "devices",
        "add",
        "floor2",
        "--default-to",
        "reception@contoso.com",
        "--allow-to",
        "*@contoso.com",
        "--json",
        env=env,
    )
    password = json.loads(added.stdout)["password"]
    out = scangw("devices", "show", "floor2", "--sheet", env=env)
    assert out.returncode == 0, out.stderr
    sheet = out.stdout
    for expected in (
        "scan.contoso.com",
        "2525",
        "STARTTLS",
        "floor2",
        "LOGIN or PLAIN",
        "reception@contoso.com",
        "*@contoso.com",
        "Xerox",
        "Epson",
        "devices rotate floor2",
    ):
        assert expected in sheet, expected
    assert password not in sheet
    missing = scangw("devices", "show", "nobody", "--sheet", env=env)
    assert missing.returncode == 1 and "nobody" in missing.stderr


def _read_banner(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line)
        if "Other devices' sheets" in line:
            return "".join(lines)
    raise AssertionError("no setup sheet in: " + "".join(lines))


def test_dev_lan_encrypts_and_prints_a_sheet_with_the_password(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path / "data"), SCANGW_SMTP_TLS_SELF_SIGNED="127.0.0.1")
    smtp_port, tls_port, http_port = free_port(), free_port(), free_port()
    args = (
        "dev", "--lan",
        "--smtp-listen", f"127.0.0.1:{smtp_port}",
        "--implicit-tls-listen", f"127.0.0.1:{tls_port}",
        "--http-listen", f"127.0.0.1:{http_port}",
    )  # fmt: skip
    with gateway_process(*args, env=env, cwd=tmp_path) as proc:
        banner = _read_banner(proc)
        password = banner.split("device password: ", 1)[1].split()[0]
        assert "Password" in banner and banner.count(password) >= 2  # the banner and the sheet
        assert "devices show NAME --sheet" in banner and "Per-vendor notes" in banner
        assert "STARTTLS" in banner and str(tls_port) in banner and "Certificate SHA-256" in banner
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
            client.ehlo()
            assert client.docmd("AUTH", "PLAIN AGRlbW8AeA==")[0] == 538  # never a password in clear
            client.starttls(context=context)
            client.login("demo", password)
            message = EmailMessage()
            message["From"], message["To"], message["Subject"] = "mfp@lan", "me@example.com", "LAN trial"
            message.set_content("scan")
            client.send_message(message)
        with smtplib.SMTP_SSL("127.0.0.1", tls_port, timeout=30, context=context) as client:
            client.login("demo", password)
        health = httpx.get(f"https://127.0.0.1:{http_port}/api/health", verify=False)
        assert health.status_code == 200
        outbox = tmp_path / "data" / "scangw" / "outbox"
        poll(lambda: list(outbox.glob("*.eml")), timeout=60, what="the scan in the outbox")
