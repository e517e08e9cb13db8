"""Clients configured by URL or by a small config file, as README's relay section shows them: curl with the
password inside an `smtp://user:password@host` URL (generated passwords must survive it unencoded) and msmtp
with STARTTLS. Skipped, with the reason, where the client is not installed."""

from __future__ import annotations

import shutil
import string
import subprocess
from pathlib import Path

import pytest

from gateway.core.devices import PASSWORD_ALPHABET, generate_password
from gateway.intake.self_signed import load
from tests.integration.test_smtp_harness import USER, Pki, make_pki, running_smtp

SCAN = b"From: scanner@office.test\r\nTo: bob@contoso.com\r\nSubject: url client\r\n\r\nhello\r\n"
#: RFC 3986 "unreserved": the only characters that mean themselves everywhere in a URL, userinfo included.
UNRESERVED = set(string.ascii_letters + string.digits + "-._~")


def _curl_smtp() -> bool:
    if shutil.which("curl") is None:
        return False
    found = subprocess.run(["curl", "-V"], capture_output=True, text=True, timeout=10, check=False).stdout
    return " smtp " in found and " smtps " in found


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_every_generated_password_is_url_safe_as_is() -> None:
    assert set(PASSWORD_ALPHABET) <= UNRESERVED, set(PASSWORD_ALPHABET) - UNRESERVED
    assert all(set(generate_password()) <= UNRESERVED for _ in range(200))


@pytest.mark.skipif(not _curl_smtp(), reason="curl with smtp/smtps support not installed (apt-get install curl)")
@pytest.mark.parametrize("scheme", ["smtp", "smtps"])
def test_curl_with_the_password_in_the_url(tmp_path: Path, pki: Pki, scheme: str) -> None:
    scan = tmp_path / "scan.eml"
    scan.write_bytes(SCAN)
    with running_smtp(tmp_path, pki.env(SCANGW_SMTP_REQUIRE_TLS_AUTH="0"), implicit=1) as run:
        host, port = run.implicit if scheme == "smtps" else run.plain
        result = subprocess.run(
            ["curl", "--silent", "--show-error", "--cacert", str(pki.ca), "--max-time", "30",
             "--url", f"{scheme}://{USER}:{run.password}@localhost:{port}",
             "--mail-from", "scanner@office.test", "--mail-rcpt", "bob@contoso.com", "--upload-file", str(scan)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        [job] = run.jobs()
        assert job.to == ("bob@contoso.com",) and b"Subject: url client" in run.message(job)


@pytest.mark.skipif(shutil.which("msmtp") is None, reason="msmtp not installed (apt-get install msmtp)")
@pytest.mark.parametrize("trust", ["ca-file", "self-signed-fingerprint"])
def test_msmtp_recipe_from_the_readme(tmp_path: Path, pki: Pki, trust: str) -> None:
    env = pki.env() if trust == "ca-file" else {"SCANGW_SMTP_TLS_SELF_SIGNED": "localhost,127.0.0.1"}
    with running_smtp(tmp_path, env) as run:
        if trust == "ca-file":
            trusted = f"tls_trust_file {pki.ca}\n"
        else:  # the fingerprint the door logs at start (event=smtp.self_signed sha256=...)
            made = load(tmp_path / "spool" / "tls")
            assert made is not None
            trusted = f"tls_fingerprint {made.fingerprint}\n"
        config = tmp_path / "msmtprc"
        config.write_text(
            "account gateway\n"
            f"host {run.plain[0]}\nport {run.plain[1]}\n"
            "tls on\ntls_starttls on\n"
            f"{trusted}"
            "auth on\n"
            f"user {USER}\npassword {run.password}\n"
            "from scanner@office.test\n"
        )
        config.chmod(0o600)  # msmtp refuses a password file others can read
        result = subprocess.run(
            ["msmtp", "--file", str(config), "--account", "gateway", "bob@contoso.com"],
            input=SCAN, capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        [job] = run.jobs()
        assert job.to == ("bob@contoso.com",)
