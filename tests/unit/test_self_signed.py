"""The door's own certificate: names the hosts it was asked for, is kept while it is good, renewed when it is
not, loadable by the SMTP door's TLS profiles (modern and legacy), and the key is readable by its owner only."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.config import load_settings
from gateway.core.errors import ConfigError
from gateway.intake.self_signed import ensure, load, parse_hosts
from gateway.intake.smtp_tls import server_context


def test_certificate_names_the_hosts_is_rsa_2048_and_valid_for_about_a_year(tmp_path: Path) -> None:
    made = ensure(["smtp.contoso.com", "10.0.0.5", "::1"], tmp_path)
    cert = x509.load_pem_x509_certificate(made.cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["smtp.contoso.com"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5"), ipaddress.ip_address("::1")]
    key = cert.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048
    days = (cert.not_valid_after_utc - dt.datetime.now(dt.UTC)).days
    assert 360 <= days <= 366
    assert cert.issuer == cert.subject
    assert stat.S_IMODE(made.key.stat().st_mode) == 0o600
    assert len(made.fingerprint.split(":")) == 32


@pytest.mark.parametrize("legacy", [False, True])
def test_the_door_can_serve_it_in_both_profiles(tmp_path: Path, legacy: bool) -> None:
    made = ensure(["localhost"], tmp_path)
    assert isinstance(server_context(made.cert, made.key, legacy), ssl.SSLContext)


def test_kept_while_good_and_remade_for_other_hosts_or_near_expiry(tmp_path: Path) -> None:
    first = ensure(["a.example"], tmp_path)
    assert ensure(["A.example"], tmp_path).fingerprint == first.fingerprint  # restart: devices see the same one
    other = ensure(["b.example"], tmp_path)
    assert other.fingerprint != first.fingerprint and other.hosts == ("b.example",)
    short = ensure(["b.example", "c.example"], tmp_path, days=10)
    renewed = ensure(["b.example", "c.example"], tmp_path)  # 10 days left < 30: renew
    assert renewed.fingerprint != short.fingerprint and not renewed.expires_within(300)


def test_an_unreadable_certificate_is_replaced(tmp_path: Path) -> None:
    ensure(["a.example"], tmp_path)
    (tmp_path / "self-signed.pem").write_text("not a certificate")
    assert load(tmp_path) is None
    assert ensure(["a.example"], tmp_path).hosts == ("a.example",)


def test_parse_hosts() -> None:
    assert parse_hosts(" SMTP.contoso.com., 10.0.0.5 ;smtp.contoso.com") == ("smtp.contoso.com", "10.0.0.5")
    assert parse_hosts("*.contoso.com") == ("*.contoso.com",)
    for bad in ("", " , ", "smtp contoso", "-bad.example", "a_b.example", "x" * 64 + ".example"):
        with pytest.raises(ValueError):
            parse_hosts(bad)


def test_setting_parses_names_and_turns_on_tls_before_auth() -> None:
    settings = load_settings({"SCANGW_SMTP_TLS_SELF_SIGNED": "smtp.contoso.com,10.0.0.5"})
    assert settings.smtp_tls_self_signed == ("smtp.contoso.com", "10.0.0.5")
    assert settings.smtp_require_tls_auth
    relaxed = load_settings({"SCANGW_SMTP_TLS_SELF_SIGNED": "x.example", "SCANGW_SMTP_REQUIRE_TLS_AUTH": "0"})
    assert not relaxed.smtp_require_tls_auth
    assert not load_settings({}).smtp_require_tls_auth
    with pytest.raises(ConfigError) as error:
        load_settings({"SCANGW_SMTP_TLS_SELF_SIGNED": "smtp contoso"})
    assert "SCANGW_SMTP_TLS_SELF_SIGNED" in str(error.value)
