"""The SMTP door (`scangw smtp`): listeners, TLS, graceful stop. Scanners that only know "scan to email"
authenticate with their device credentials and hand over a message; it is acknowledged with
`250 2.0.0 Ok: queued as <job id>` only after `accept_mime()` stored it durably and queued the job.

Entry points: `serve()` (what the CLI runs) and `reload_tls()` (what the CLI calls on SIGHUP). The session
logic lives in `smtp_session`, the translation to the core in `smtp_door`, TLS profiles in `smtp_tls`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import tempfile
import time
from asyncio import sslproto
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.config import Settings
from gateway.core.errors import ConfigError, StorageUnavailable
from gateway.intake.smtp_door import Door
from gateway.intake.smtp_limits import SmtpLimits, limits_from
from gateway.intake.smtp_session import ScanSMTP
from gateway.intake.smtp_tls import TlsConfig
from gateway.intake.smtp_tls_gate import HelloGate
from gateway.services import Services, build
from gateway.telemetry import metrics

if TYPE_CHECKING:
    from gateway.intake.self_signed import SelfSigned

log = logging.getLogger("scangw.smtp")

Address = tuple[str, int]
#: Sent in plain text to a client that waits for a greeting on the implicit-TLS port (set to STARTTLS or none).
IMPLICIT_TLS_ONLY = (
    b"421 4.7.0 This port speaks TLS from the first byte: set the device to SSL/TLS here, "
    b"or use port 587 with STARTTLS\r\n"
)
_RUNNING: set[SmtpServer] = set()


def reload_tls() -> int:
    """Reload the certificate and key of every SMTP server running in this process (wire it to SIGHUP).

    New handshakes use the new certificate; sessions already up keep theirs. A bad file is logged and the old
    certificate keeps serving. Returns how many servers reloaded.
    """
    done = 0
    for server in list(_RUNNING):
        if server.reload_tls():
            done += 1
    return done


def self_signed_folder(settings: Settings) -> Path:
    """Beside the embedded spool's data (it survives restarts, so devices see the same certificate), or a
    per-user temporary folder with Azure Storage, filled from the copy every replica shares in the spool
    (gateway.intake.shared_certificate)."""
    if settings.local_dir is not None:
        return settings.local_dir / "tls"
    return Path(tempfile.gettempdir()) / f"scangw-tls-{os.getuid()}"


def _self_signed_tls(settings: Settings, folder: Path, announce: bool) -> TlsConfig:
    """`announce`: log the fingerprint now; a door that first takes the replicas' shared certificate says it
    once it serves that one (an admin pins what this line says)."""
    from gateway.intake.self_signed import ensure  # `cryptography` only for doors that need it

    try:
        made = ensure(settings.smtp_tls_self_signed, folder)
        tls = TlsConfig(made.cert, made.key, settings.smtp_legacy_tls)
    except (OSError, ValueError) as exc:
        raise ConfigError("SCANGW_SMTP_TLS_SELF_SIGNED", f"cannot make a certificate in {folder}: {exc}") from exc
    if announce:
        _announce(made)
    return tls


def _announce(made: SelfSigned) -> None:
    log.info(
        "event=smtp.self_signed hosts=%s cert=%s expires=%s sha256=%s",
        ",".join(made.hosts),
        made.cert,
        made.not_after.date().isoformat(),
        made.fingerprint,
    )


class SmtpServer:
    """All listeners of one SMTP door, sharing one handler, one limiter set and one TLS context."""

    def __init__(self, settings: Settings, services: Services, limits: SmtpLimits | None = None) -> None:
        self.settings = settings
        self.limits = limits or limits_from(settings)
        self.tls: TlsConfig | None = None
        #: Where the door keeps its own certificate when SCANGW_SMTP_TLS_SELF_SIGNED is used (else None).
        self.self_signed_dir: Path | None = None
        if settings.smtp_tls_cert and settings.smtp_tls_key:
            try:
                self.tls = TlsConfig(settings.smtp_tls_cert, settings.smtp_tls_key, settings.smtp_legacy_tls)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise ConfigError("SCANGW_SMTP_TLS_CERT", f"cannot load the certificate and key: {exc}") from exc
        elif settings.smtp_tls_self_signed:
            self.self_signed_dir = self_signed_folder(settings)
            self.tls = _self_signed_tls(settings, self.self_signed_dir, announce=settings.local_dir is not None)
        if settings.smtp_require_tls_auth and self.tls is None:
            raise ConfigError(
                "SCANGW_SMTP_REQUIRE_TLS_AUTH",
                "is 1 but no certificate is configured, so no device could log in; set SCANGW_SMTP_TLS_CERT and "
                "SCANGW_SMTP_TLS_KEY (or SCANGW_SMTP_TLS_SELF_SIGNED), or set SCANGW_SMTP_REQUIRE_TLS_AUTH=0 on a "
                "private network.",
            )
        #: With Azure Storage the door's folder is temporary and per replica: keep the certificate in the spool.
        self._certificate_store = (
            services.spool.blobs if self.self_signed_dir is not None and settings.local_dir is None else None
        )
        self.door = Door(settings, services, self.limits, settings.smtp_require_tls_auth)
        metrics.watch_certificate(self.tls.cert if self.tls else None)  # the self-signed one too
        self.hostname = socket.gethostname()
        self._servers: list[asyncio.Server] = []
        self._renewer: asyncio.Task[None] | None = None

    async def start(self, listen: list[Address], implicit_tls: list[Address]) -> list[Address]:
        """Open every listener (port 0 picks a free port); return the addresses actually bound, in order."""
        if implicit_tls and self.tls is None:
            raise ConfigError(
                "SCANGW_SMTP_TLS_CERT", "--implicit-tls needs a certificate: set SCANGW_SMTP_TLS_CERT/_KEY."
            )
        if self._certificate_store is not None and self.self_signed_dir is not None:
            from gateway.intake.self_signed import load

            await self.renew_self_signed()  # serve the certificate the other replicas serve from the first session
            served = load(self.self_signed_dir)
            if served is not None:
                _announce(served)
        loop = asyncio.get_running_loop()
        bound: list[Address] = []
        try:
            for (host, port), implicit in [(a, False) for a in listen] + [(a, True) for a in implicit_tls]:
                server = await loop.create_server(
                    self._implicit_factory() if implicit else self._factory(), host, port, reuse_address=True
                )
                self._servers.append(server)
                for sock in server.sockets:
                    address = sock.getsockname()
                    bound.append((str(address[0]), int(address[1])))
                    mode = "implicit-tls" if implicit else ("starttls" if self.tls else "plain")
                    profile = self.tls.profile if self.tls else "-"
                    log.info(
                        "event=smtp.listen address=%s:%d mode=%s tls_profile=%s", address[0], address[1], mode, profile
                    )
        except OSError as exc:
            await self._close_listeners()
            raise ConfigError("--listen", f"cannot listen: {exc.strerror or exc}") from exc
        _RUNNING.add(self)
        if self.self_signed_dir is not None:
            self._renewer = asyncio.create_task(self._renew_self_signed())
        return bound

    async def _renew_self_signed(self) -> None:
        """A door runs for months: renew its own certificate before it expires, as a restart would; with a
        shared one, check often (one small read) so replicas that started together agree within minutes."""
        from gateway.intake.shared_certificate import SYNC_SECONDS

        every = SYNC_SECONDS if self._certificate_store is not None else 12 * 3600
        while True:
            await asyncio.sleep(every)
            await self.renew_self_signed()

    async def renew_self_signed(self) -> bool:
        """Make a new self-signed certificate if the kept one is near expiry, or take the one stored for every
        replica (gateway.intake.shared_certificate); True when the door now serves a different one."""
        from gateway.intake.self_signed import ensure
        from gateway.intake.shared_certificate import converge

        assert self.self_signed_dir is not None and self.tls is not None
        hosts, folder = self.settings.smtp_tls_self_signed, self.self_signed_dir
        try:
            before = self.tls.cert.read_bytes()
            if self._certificate_store is not None:
                made = await converge(self._certificate_store, hosts, folder)
            else:
                made = await asyncio.to_thread(ensure, hosts, folder)
            if made.cert.read_bytes() == before:
                return False
        except (OSError, StorageUnavailable) as exc:
            log.error("event=smtp.self_signed result=renew_failed error=%s (the old certificate keeps serving)", exc)
            return False
        log.info(
            "event=smtp.self_signed result=renewed expires=%s sha256=%s",
            made.not_after.date().isoformat(),
            made.fingerprint,
        )
        return self.reload_tls()

    def _factory(self) -> Callable[[], ScanSMTP]:
        """Plain listeners (STARTTLS when a certificate is configured); implicit TLS is `_implicit_factory`."""
        context = self.tls.context if self.tls else None
        return lambda: ScanSMTP(self.door, implicit_tls=False, tls_context=context, hostname=self.hostname)

    def _implicit_factory(self) -> Callable[[], asyncio.BaseProtocol]:
        """Implicit TLS by hand rather than `create_server(ssl=...)`: a HelloGate sees the first bytes, so a failed
        handshake is logged with what the client offered (asyncio logs nothing) and a client that waits for a
        plain greeting is answered at once."""
        assert self.tls is not None
        context, limits, loop = self.tls.context, self.limits, asyncio.get_running_loop()

        def make() -> asyncio.BaseProtocol:
            session = ScanSMTP(self.door, implicit_tls=True, tls_context=None, hostname=self.hostname)
            waiter: asyncio.Future[None] = loop.create_future()
            tls = sslproto.SSLProtocol(
                loop, session, context, waiter, server_side=True, ssl_handshake_timeout=limits.tls_handshake_seconds
            )
            counted: list[str] = []

            def admit(peer_ip: str) -> bool:
                if not self.door.admission.handshake_started(peer_ip):
                    return False
                counted.append(peer_ip)
                return True

            gate = HelloGate(
                tls, waiter, hello_seconds=limits.tls_hello_seconds, silence_reply=IMPLICIT_TLS_ONLY, admit=admit
            )

            def done(future: asyncio.Future[None]) -> None:
                for peer_ip in counted:  # the session (if any) is counted by now; the handshake no longer
                    self.door.admission.handshake_ended(peer_ip)
                error = None if future.cancelled() else future.exception()
                if error is not None and counted:
                    self.door.tls_failed(gate.peer_ip, "implicit", gate.first, error)

            waiter.add_done_callback(done)
            return gate

        return make

    def reload_tls(self) -> bool:
        if self.tls is None:
            return False
        try:
            self.tls.reload()
        except (OSError, ValueError) as exc:
            log.error("event=smtp.tls_reload result=failed error=%s (the old certificate keeps serving)", exc)
            return False
        log.info("event=smtp.tls_reload result=ok cert=%s", self.tls.cert)
        return True

    async def _close_listeners(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)
        self._servers.clear()

    async def stop(self) -> None:
        """Stop accepting, say 421 to idle sessions, let sessions in DATA finish (up to the deadline), close."""
        if not self._servers:
            return
        _RUNNING.discard(self)
        if self._renewer is not None:
            self._renewer.cancel()
        self.door.stopping = True
        for server in self._servers:
            server.close()
        for session in list(self.door.sessions):
            if not session.busy:
                session.goodbye("421 4.3.2 Service shutting down; try again shortly")
        deadline = time.monotonic() + self.limits.stop_deadline_seconds
        while any(s.busy for s in self.door.sessions) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for session in list(self.door.sessions):
            if session.busy:
                log.warning(
                    "event=smtp.stop_cut peer=%s (its scan is not stored; the device will resend)", session.peer_ip
                )
                # A temporary refusal the device can read, so it sends the scan again (close() flushes it).
                session.goodbye("421 4.3.2 Service shutting down: this scan was not accepted; send it again shortly")
            elif session.transport is not None:
                session.transport.abort()  # type: ignore[attr-defined]
        cut = time.monotonic() + 2
        while self.door.sessions and time.monotonic() < cut:
            await asyncio.sleep(0.01)
        for session in list(self.door.sessions):  # peers that do not read: no more waiting for them
            if session.transport is not None:
                session.transport.abort()  # type: ignore[attr-defined]
        while self.door.sessions and time.monotonic() < cut + 3:
            await asyncio.sleep(0.01)
        await self._close_listeners()
        log.info("event=smtp.stopped")


async def serve(
    settings: Settings,
    listen: list[Address],
    implicit_tls: list[Address],
    stop: asyncio.Event,
    services: Services | None = None,
    ready: Callable[[list[Address]], None] | None = None,
) -> None:
    """Run the SMTP door until `stop` is set, then stop gracefully. `ready` gets the bound addresses (plain
    listeners first, then implicit TLS ones). Services built here are closed here; given ones are not."""
    own = services is None
    active = services if services is not None else await build(settings)
    server: SmtpServer | None = None
    try:
        server = SmtpServer(settings, active)
        addresses = await server.start(list(listen), list(implicit_tls))
        if ready is not None:
            ready(addresses)
        await stop.wait()
    finally:
        if server is not None:
            await server.stop()
        if own:
            await active.close()
