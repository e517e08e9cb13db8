"""Failed TLS handshakes are one findable log line (client address, what it offered, the legacy-profile hint),
on the STARTTLS port and on the implicit-TLS port, never a traceback; a client that speaks plain SMTP on the
implicit-TLS port is told so at once instead of hanging until a timeout."""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.intake.smtp_limits import SmtpLimits
from tests.integration.test_smtp_harness import Dialogue, Pki, SmtpRun, make_pki, running_smtp
from tests.integration.test_smtp_tls import tls10_client
from tests.support import free_port, gateway_process, poll


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def door(tmp_path: Path, pki: Pki) -> Iterator[SmtpRun]:
    with running_smtp(tmp_path, pki.env(), implicit=1) as run:
        yield run


def failure_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "event=smtp.tls_failed" in r.getMessage()]


def poll_lines(caplog: pytest.LogCaptureFixture, count: int = 1) -> list[str]:
    deadline = time.monotonic() + 10
    while len(failure_lines(caplog)) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return failure_lines(caplog)


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    assert [r.getMessage() for r in caplog.records if r.exc_info and r.levelno >= logging.INFO] == []


def test_tls_1_0_device_on_starttls_is_one_line_naming_what_it_offered(
    door: SmtpRun, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    old = tls10_client(pki)
    with caplog.at_level(logging.DEBUG, logger="scangw.smtp"):
        with smtplib.SMTP(*door.plain, timeout=10) as client:
            with pytest.raises((ssl.SSLError, OSError, smtplib.SMTPException)):
                client.starttls(context=old)
        [line] = poll_lines(caplog)
    assert "peer=127.0.0.1" in line and "port=starttls" in line
    assert "offered=TLSv1 " in line and "AES128-SHA" in line
    assert "SCANGW_SMTP_LEGACY_TLS=1" in line
    no_tracebacks(caplog)


def test_tls_1_0_device_on_the_implicit_port_is_logged_too(
    door: SmtpRun, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="scangw.smtp"):
        with pytest.raises((ssl.SSLError, OSError)):
            Dialogue(door.implicit, tls10_client(pki))
        [line] = poll_lines(caplog)
    assert "peer=127.0.0.1" in line and "port=implicit" in line and "offered=TLSv1 " in line
    assert "SCANGW_SMTP_LEGACY_TLS=1" in line
    no_tracebacks(caplog)


def test_a_client_that_rejects_the_certificate_is_logged(door: SmtpRun, caplog: pytest.LogCaptureFixture) -> None:
    strict = ssl.create_default_context()  # does not know the test CA, as a device without it
    with caplog.at_level(logging.DEBUG, logger="scangw.smtp"):
        with pytest.raises(ssl.SSLError):
            Dialogue(door.implicit, strict)
        [line] = poll_lines(caplog)
    assert "peer=127.0.0.1" in line and "offered=TLSv1.3" in line
    no_tracebacks(caplog)


def test_starttls_client_on_the_implicit_port_fails_fast_with_a_reason(
    door: SmtpRun, caplog: pytest.LogCaptureFixture
) -> None:
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG, logger="scangw.smtp"):
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            smtplib.SMTP(*door.implicit, timeout=30)  # waits for a greeting that a TLS port never sends
        assert time.monotonic() - started < 10
        [line] = poll_lines(caplog)
    assert refused.value.smtp_code == 421 and b"TLS" in refused.value.smtp_error
    assert "peer=127.0.0.1" in line and "port=implicit" in line and "offered=nothing" in line


def test_a_client_that_says_starttls_then_nothing_is_cut_and_logged(
    door: SmtpRun, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="scangw.smtp"):
        talk = Dialogue(door.plain)
        talk.ask("EHLO x")
        assert talk.ask("STARTTLS").startswith("220")
        started = time.monotonic()
        assert talk.closed()  # not after the 30 s handshake timeout
        assert time.monotonic() - started < 10
        [line] = poll_lines(caplog)
    assert "port=starttls" in line and "offered=nothing" in line and "never started TLS" in line
    no_tracebacks(caplog)


def test_the_real_scangw_smtp_process_logs_one_line_and_no_traceback(tmp_path: Path) -> None:
    plain, implicit = free_port(), free_port()
    env = {
        "SCANGW_STORAGE": f"local:{tmp_path / 'data'}",
        "SCANGW_SMTP_TLS_SELF_SIGNED": "localhost,127.0.0.1",
        "SCANGW_LOG_FORMAT": "",
    }
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1
    try:
        old.set_ciphers("AES128-SHA:@SECLEVEL=0")
    except ssl.SSLError:
        pytest.skip("the local OpenSSL cannot offer AES128-SHA at all")
    args = ("smtp", "--listen", f"127.0.0.1:{plain}", "--implicit-tls", f"127.0.0.1:{implicit}")
    with gateway_process(*args, env=env) as proc:

        def listening() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                socket.create_connection(("127.0.0.1", implicit), timeout=1).close()
            except OSError:
                return False
            return True

        poll(listening, what="scangw smtp to listen")
        with pytest.raises((ssl.SSLError, OSError)):
            with socket.create_connection(("127.0.0.1", implicit), timeout=10) as raw:
                old.wrap_socket(raw, server_hostname="localhost")
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    failed = [line for line in stderr.splitlines() if "smtp.tls_failed" in line]
    assert len(failed) == 1 and "offered=TLSv1" in failed[0] and "SCANGW_SMTP_LEGACY_TLS=1" in failed[0], stderr
    assert "Traceback" not in stderr


def test_stalled_implicit_tls_handshakes_count_against_the_address(tmp_path: Path, pki: Pki) -> None:
    """A flood of connections that never finish their TLS handshake cannot pile up past the per-address limit."""
    limits = SmtpLimits(max_per_address=2, tls_hello_seconds=20)
    with running_smtp(tmp_path, pki.env(), implicit=1, limits=limits) as run:
        stalled = [socket.create_connection(run.implicit, timeout=10) for _ in range(2)]
        third = socket.create_connection(run.implicit, timeout=10)
        started = time.monotonic()
        try:
            assert third.recv(100) == b""  # closed at once, not after the hello deadline
        except ConnectionResetError:
            pass
        assert time.monotonic() - started < 5
        for sock in stalled:
            sock.close()

        def served() -> bool:
            try:
                return Dialogue(run.implicit, pki.client_context()).greeting.startswith("220")
            except (OSError, ConnectionError):
                return False

        poll(served, timeout=10, what="the freed slots to serve a TLS client again")
        third.close()
