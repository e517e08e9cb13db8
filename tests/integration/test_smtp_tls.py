"""TLS on the SMTP door: STARTTLS and implicit TLS with a test CA, SCANGW_SMTP_REQUIRE_TLS_AUTH, the legacy
profile for TLS 1.0 / RSA-key-exchange devices, the per-session log line, and certificate reload."""

from __future__ import annotations

import asyncio
import base64
import logging
import smtplib
import ssl
import warnings
from collections.abc import Iterator
from pathlib import Path

import aiosmtplib
import pytest
from cryptography import x509

from gateway.config import load_settings
from gateway.core.errors import ConfigError
from gateway.intake import smtp
from gateway.intake.self_signed import generate
from gateway.intake.smtp_limits import SmtpLimits
from gateway.services import build
from tests.integration.test_smtp_harness import USER, Dialogue, Pki, SmtpRun, make_pki, running_smtp

MESSAGE = b"From: alice@contoso.com\r\nTo: bob@contoso.com\r\nSubject: tls\r\n\r\nhello\r\n"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls10_client(pki: Pki) -> ssl.SSLContext:
    """A client that speaks only TLS 1.0 with AES128-SHA (RSA key exchange), like a 2010 multifunction printer."""
    context = pki.client_context()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1
    try:
        context.set_ciphers("AES128-SHA:@SECLEVEL=0")
    except ssl.SSLError:
        pytest.skip("the local OpenSSL cannot offer AES128-SHA at all")
    return context


@pytest.fixture
def starttls_door(tmp_path: Path, pki: Pki) -> Iterator[SmtpRun]:
    with running_smtp(tmp_path, pki.env(), implicit=1) as run:
        yield run


def test_auth_waits_for_starttls_when_a_certificate_is_configured(
    starttls_door: SmtpRun, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    run = starttls_door
    talk = Dialogue(run.plain)
    before = talk.ask("EHLO scanner")
    assert "250-STARTTLS" in before.split("\n") and "AUTH" not in before
    assert talk.ask("AUTH LOGIN").startswith("538 5.7.11")  # devices that try AUTH before STARTTLS
    with caplog.at_level(logging.INFO, logger="scangw.smtp"):
        with smtplib.SMTP(*run.plain, timeout=10) as client:
            client.starttls(context=pki.client_context())
            client.ehlo("scanner")
            assert "auth" in client.esmtp_features and "starttls" not in client.esmtp_features
            client.login(USER, run.password)
            client.sendmail("s@contoso.com", ["bob@contoso.com"], MESSAGE)
    assert len(run.jobs()) == 1
    tls_lines = [r.getMessage() for r in caplog.records if "event=smtp.tls " in r.getMessage()]
    assert any("protocol=TLSv1.3" in line and "cipher=TLS_" in line and "legacy=False" in line for line in tls_lines)


def test_implicit_tls_with_aiosmtplib_and_smtplib(starttls_door: SmtpRun, pki: Pki) -> None:
    run = starttls_door
    host, port = run.implicit

    async def send() -> str:
        response, message = await aiosmtplib.send(
            MESSAGE,
            sender="s@contoso.com",
            recipients=["bob@contoso.com"],
            hostname=host,
            port=port,
            use_tls=True,
            tls_context=pki.client_context(),
            username=USER,
            password=run.password,
        )
        return message

    assert asyncio.run(send()).startswith("2.0.0 Ok: queued as ")
    with smtplib.SMTP_SSL(host, port, context=pki.client_context(), timeout=10) as client:
        client.ehlo("scanner")
        assert "starttls" not in client.esmtp_features  # already encrypted
        client.login(USER, run.password)
        client.sendmail("s@contoso.com", ["bob@contoso.com"], MESSAGE)
    assert len(run.jobs()) == 2 and run.queue_count() == 2


def test_aiosmtplib_starttls(starttls_door: SmtpRun, pki: Pki) -> None:
    run = starttls_door

    async def send() -> str:
        client = aiosmtplib.SMTP(
            hostname=run.plain[0], port=run.plain[1], start_tls=False, tls_context=pki.client_context()
        )
        await client.connect()
        await client.starttls()
        await client.login(USER, run.password)
        _, message = await client.sendmail("s@contoso.com", ["bob@contoso.com"], MESSAGE)
        await client.quit()
        return message

    assert asyncio.run(send()).startswith("2.0.0 Ok: queued as ")


def test_modern_profile_refuses_tls_1_0(starttls_door: SmtpRun, pki: Pki, tmp_path: Path) -> None:
    """A refusal proves something only if this client can speak TLS 1.0 at all: show that first, against the
    legacy profile of the same door, then see the modern profile refuse the very same client."""
    with running_smtp(tmp_path / "legacy", pki.env(SCANGW_SMTP_LEGACY_TLS="1"), implicit=1) as legacy:
        try:
            talk = Dialogue(legacy.implicit, tls10_client(pki))
        except ssl.SSLError as exc:
            pytest.skip(f"this client cannot complete a TLS 1.0 handshake here ({exc}), so a refusal proves nothing")
        assert talk.sock.version() == "TLSv1" and talk.greeting.startswith("220")  # type: ignore[attr-defined]
        talk.close()
    with pytest.raises(ssl.SSLError) as refused:
        Dialogue(starttls_door.implicit, tls10_client(pki))
    assert any(word in str(refused.value).upper() for word in ("VERSION", "PROTOCOL")), refused.value


def test_legacy_profile_serves_a_tls_1_0_rsa_key_exchange_device_and_logs_it(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    context = tls10_client(pki)
    with caplog.at_level(logging.INFO, logger="scangw.smtp"):
        with running_smtp(tmp_path, pki.env(SCANGW_SMTP_LEGACY_TLS="1"), implicit=1) as run:
            try:
                talk = Dialogue(run.implicit, context)
            except ssl.SSLError as exc:
                pytest.skip(f"the local OpenSSL cannot complete a TLS 1.0 handshake: {exc}")
            assert talk.sock.version() == "TLSv1" and talk.sock.cipher()[0] == "AES128-SHA"  # type: ignore[attr-defined]
            talk.ask("EHLO old")
            assert talk.ask("AUTH LOGIN").startswith("334")
            talk.ask(base64.b64encode(USER.encode()).decode())
            assert talk.ask(base64.b64encode(run.password.encode()).decode()).startswith("235")
            with smtplib.SMTP(*run.plain, timeout=10) as client:  # STARTTLS gets the legacy profile too
                client.starttls(context=tls10_client(pki))
                client.login(USER, run.password)
    lines = [r.getMessage() for r in caplog.records if "event=smtp.tls " in r.getMessage()]
    assert sum("protocol=TLSv1 cipher=AES128-SHA" in line and "legacy=True" in line for line in lines) == 2


def test_require_tls_auth_off_offers_auth_before_tls(tmp_path: Path, pki: Pki) -> None:
    with running_smtp(tmp_path, pki.env(SCANGW_SMTP_REQUIRE_TLS_AUTH="0")) as run:
        talk = Dialogue(run.plain)
        assert "250-AUTH LOGIN PLAIN" in talk.ask("EHLO x").split("\n")
        with smtplib.SMTP(*run.plain, timeout=10) as client:
            client.login(USER, run.password)


def test_reload_swaps_the_certificate_for_new_sessions_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pki = make_pki(tmp_path / "pki")
    with running_smtp(tmp_path, pki.env(), implicit=1) as run:
        old = Dialogue(run.implicit, pki.client_context())
        old.ask("EHLO x")
        first_serial = pki.serial
        new_serial = pki.issue()
        assert smtp.reload_tls() == 1
        fresh = Dialogue(run.implicit, pki.client_context())
        der = fresh.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
        assert x509.load_der_x509_certificate(der).serial_number == new_serial != first_serial
        assert old.ask("NOOP").startswith("250")  # the session from before the reload is still up
        pki.key.write_text("not a key")
        with caplog.at_level(logging.ERROR, logger="scangw.smtp"):
            assert smtp.reload_tls() == 0  # a broken renewal keeps the old certificate serving
        assert Dialogue(run.implicit, pki.client_context()).ask("NOOP").startswith("250")


def test_configuration_mistakes_are_reported_by_setting(tmp_path: Path, pki: Pki) -> None:
    settings = load_settings({"SCANGW_STORAGE": f"local:{tmp_path}", "SCANGW_SMTP_REQUIRE_TLS_AUTH": "1"})
    with pytest.raises(ConfigError, match="SCANGW_SMTP_REQUIRE_TLS_AUTH"):
        asyncio.run(smtp.serve(settings, [("127.0.0.1", 0)], [], asyncio.Event()))
    plain = load_settings({"SCANGW_STORAGE": f"local:{tmp_path}"})
    with pytest.raises(ConfigError, match="SCANGW_SMTP_TLS_CERT"):
        asyncio.run(smtp.serve(plain, [], [("127.0.0.1", 0)], asyncio.Event()))


def test_self_signed_door_offers_starttls_and_implicit_tls_and_refuses_auth_before_tls(tmp_path: Path) -> None:
    """SCANGW_SMTP_TLS_SELF_SIGNED with no certificate files: the door makes its own, keeps it across restarts."""
    env = {"SCANGW_SMTP_TLS_SELF_SIGNED": "localhost,127.0.0.1"}
    with running_smtp(tmp_path, env, implicit=1) as run:
        cert = tmp_path / "spool" / "tls" / "self-signed.pem"
        trusting = ssl.create_default_context(cafile=str(cert))  # what an admin does after reading the fingerprint
        talk = Dialogue(run.plain)
        assert "250-STARTTLS" in talk.ask("EHLO scanner").split("\n")
        assert talk.ask("AUTH LOGIN").startswith("538 5.7.11")
        with smtplib.SMTP(*run.plain, timeout=10) as client:
            client.starttls(context=trusting)
            client.login(USER, run.password)
            client.sendmail("s@contoso.com", ["bob@contoso.com"], MESSAGE)
        with smtplib.SMTP_SSL(*run.implicit, context=trusting, timeout=10) as client:
            client.login(USER, run.password)
            client.sendmail("s@contoso.com", ["bob@contoso.com"], MESSAGE)
        assert len(run.jobs()) == 2
        first = cert.read_bytes()

    async def restart() -> None:
        settings = load_settings({"SCANGW_STORAGE": f"local:{tmp_path / 'spool'}", **env})
        services = await build(settings)
        try:
            smtp.SmtpServer(settings, services)
        finally:
            await services.close()

    asyncio.run(restart())
    assert cert.read_bytes() == first  # devices that were told to trust it keep working after a restart


def test_given_certificate_files_win_over_self_signed(tmp_path: Path, pki: Pki) -> None:
    with running_smtp(tmp_path, pki.env(SCANGW_SMTP_TLS_SELF_SIGNED="localhost")) as run:
        with smtplib.SMTP(*run.plain, timeout=10) as client:
            client.starttls(context=pki.client_context())
            client.login(USER, run.password)
    assert not (tmp_path / "spool" / "tls").exists()


def test_a_running_self_signed_door_renews_its_certificate_near_expiry(tmp_path: Path) -> None:
    env = {"SCANGW_SMTP_TLS_SELF_SIGNED": "localhost,127.0.0.1"}
    with running_smtp(tmp_path, env, limits=SmtpLimits()) as run:
        folder = tmp_path / "spool" / "tls"
        cert_pem, key_pem = generate(["localhost", "127.0.0.1"], days=5)  # as if the door had run for a year
        (folder / "self-signed.key").write_bytes(key_pem)
        (folder / "self-signed.pem").write_bytes(cert_pem)
        assert run.call(run.server.renew_self_signed())  # type: ignore[attr-defined]
        renewed = ssl.create_default_context(cafile=str(folder / "self-signed.pem"))
        talk = Dialogue(run.plain)
        talk.ask("EHLO x")
        talk.ask("STARTTLS")
        tls = renewed.wrap_socket(talk.sock, server_hostname="localhost")
        served = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True) or b"")
        assert (served.not_valid_after_utc - served.not_valid_before_utc).days > 300
        assert not run.call(run.server.renew_self_signed())  # type: ignore[attr-defined]


def test_commands_pipelined_after_starttls_are_discarded_not_run_inside_tls(starttls_door: SmtpRun, pki: Pki) -> None:
    """STARTTLS command injection (GHSA-wgjv-9j3q-jhg8): plain-text bytes sent with STARTTLS never count."""
    talk = Dialogue(starttls_door.plain)
    talk.ask("EHLO x")
    talk.send(b"STARTTLS\r\nNOOP\r\nRSET\r\n")
    assert talk.reply().startswith("220")
    tls = pki.client_context().wrap_socket(talk.sock, server_hostname="localhost")
    tls.sendall(b"EHLO x\r\n")
    first = tls.recv(4096).decode()
    assert first.startswith("250-") and "250 OK" not in first  # the EHLO's answer, not the injected NOOP's
