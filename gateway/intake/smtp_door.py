"""The aiosmtpd handler of the SMTP door: it translates between SMTP and the core, and decides nothing itself.

Credentials go to the device registry, recipients to the recipient policy, the message to `accept_mime()`;
the core's typed errors come back as SMTP replies a person can read on a scanner's small screen. One log line
per event (connect, TLS, auth, refused recipient, queued or rejected message).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiosmtpd.smtp import Envelope, Session

from gateway.config import Settings
from gateway.core.devices import Device, check_recipients
from gateway.core.errors import (
    AuthenticationFailed,
    BusyError,
    InputError,
    MalformedInput,
    MessageTooLarge,
    RecipientNotAllowed,
    StorageUnavailable,
)
from gateway.core.mime.screen import screened
from gateway.intake.smtp_admission import Admission
from gateway.intake.smtp_data import DataReader
from gateway.intake.smtp_limits import ConnectionLimiter, SmtpLimits, address_in, networks
from gateway.intake.smtp_tls import describe, is_legacy
from gateway.intake.smtp_tls_hello import failure_fields
from gateway.services import Services
from gateway.telemetry import metrics

if TYPE_CHECKING:
    from gateway.intake.smtp_session import ScanSMTP

log = logging.getLogger("scangw.smtp")

STORAGE_DOWN = "451 4.3.0 Storage is unavailable, nothing was accepted: the device should send again later"
INTERNAL = "451 4.3.0 Temporary gateway error, nothing was accepted: the device should send again later"


def reply(code: str, text: str) -> str:
    """One ASCII line: replies carry messages built from device input, which must not break the protocol."""
    clean = " ".join(text.split()).encode("ascii", errors="replace").decode("ascii")
    return f"{code} {clean}"[:510]


def _utf8(text: str) -> bool:
    """aiosmtpd keeps bytes that are not UTF-8 as lone surrogates (SMTPUTF8 mode): such an address can be
    neither delivered nor written anywhere."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _Refused(InputError):
    """A refusal decided at the end of DATA, carrying its SMTP reply."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class Door:
    def __init__(self, settings: Settings, services: Services, limits: SmtpLimits, require_tls_auth: bool) -> None:
        self.settings = settings
        self.services = services
        self.limits = limits
        self.max_bytes = settings.max_message_bytes
        self.require_tls_auth = require_tls_auth
        self.proxies = settings.smtp_proxy_cidrs
        self.connections = ConnectionLimiter(limits, self.proxies)
        self.login_limiter = services.logins  # shared with the HTTP door of the same process
        self.sessions: set[ScanSMTP] = set()
        self.admission = Admission(limits, self.proxies, self.connections, self.sessions)
        self.stopping = False
        self._warned_proxy = False

    # -- events from the session ---------------------------------------------------------------------------

    def connected(self, session: ScanSMTP, tls: dict[str, str] | None) -> None:
        log.debug("event=smtp.connect peer=%s implicit_tls=%s", session.peer_ip, session.implicit_tls)
        if tls is not None:
            self._log_tls(session, tls)

    def disconnected(self, session: ScanSMTP) -> None:
        """One summary line per session; health probes (no HELO) only at debug level."""
        helo = session.session.host_name if session.session is not None else None
        log.log(
            logging.INFO if helo else logging.DEBUG,
            "event=smtp.session peer=%s helo=%r device=%s tls=%s queued=%d seconds=%.1f",
            session.peer_ip,
            (helo or "")[:64],
            session.device.name if session.device else "-",
            session.tls_protocol,
            session.queued,
            time.monotonic() - session.started,
        )

    def _log_tls(self, session: ScanSMTP, tls: dict[str, str]) -> None:
        session.tls_protocol = tls["protocol"]
        level = logging.WARNING if is_legacy(tls) else logging.INFO
        log.log(
            level,
            "event=smtp.tls peer=%s protocol=%s cipher=%s bits=%s legacy=%s",
            session.peer_ip,
            tls["protocol"],
            tls["cipher"],
            tls.get("bits", ""),
            is_legacy(tls),
        )

    def tls_failed(self, peer_ip: str, port: str, first: bytes, error: BaseException) -> None:
        """One line per failed handshake, with what the client offered and the likely fix, so an admin can find
        the devices that need the legacy profile (or do not trust the certificate)."""
        fields = failure_fields(first, error, self.settings.smtp_legacy_tls, implicit=port == "implicit")
        if fields is None:  # closed before it said anything: a TCP health probe, not a failure
            log.debug("event=smtp.tls_closed peer=%s port=%s (closed before a ClientHello)", peer_ip, port)
            return
        log.warning("event=smtp.tls_failed peer=%s port=%s %s", peer_ip, port, fields)

    def handle_STARTTLS(self, server: ScanSMTP, session: Session, envelope: Envelope) -> bool:
        """aiosmtpd calls this (synchronously) once the STARTTLS handshake is done."""
        details = describe((session.ssl or {}).get("ssl_object"))
        self._log_tls(server, details)
        return True

    async def device_for_address(self, peer_ip: str) -> Device | None:
        """A device allow-listed by client address (`--from-ip`); never for addresses of a TCP proxy, where
        every client looks alike."""
        if not peer_ip:
            return None
        if address_in(peer_ip, self.proxies):
            if not self._warned_proxy and any(d.from_ip for d in await self.services.registry.list()):
                self._warned_proxy = True
                log.warning(
                    "event=smtp.from_ip_ignored peer=%s reason=behind SCANGW_SMTP_PROXY_CIDRS every client has the "
                    "proxy's address, so devices allow-listed by address must log in with SMTP AUTH",
                    peer_ip,
                )
            return None
        for device in await self.services.registry.list():
            if device.from_ip and not device.revoked and address_in(peer_ip, networks(device.from_ip)):
                log.info("event=smtp.auth result=ok method=address peer=%s device=%s", peer_ip, device.name)
                return device
        return None

    async def authenticate(
        self, session: ScanSMTP, mechanism: str, username: str, password: str
    ) -> tuple[str, Device | None]:
        key = None if address_in(session.peer_ip, self.proxies) else session.peer_ip
        fields = f"peer={session.peer_ip} user={username[:64]!r} mechanism={mechanism}"
        if self.login_limiter.blocked(username, key):
            log.warning("event=smtp.auth result=throttled %s", fields)
            await metrics.login_refused("smtp", username, self.services.registry)
            return "454 4.7.0 Too many failed logins: wait a minute, then check the device's password", None
        try:
            device = await self.services.registry.verify(username, password, key)
        except AuthenticationFailed as exc:
            self.login_limiter.failed(username, key, exc.known)
            log.warning("event=smtp.auth result=failed %s", fields)
            await metrics.login_refused("smtp", username, self.services.registry)
            return "535 5.7.8 Authentication failed: check the SMTP username and password on the device", None
        except StorageUnavailable as exc:
            log.error("event=smtp.auth result=unavailable %s error=%s", fields, exc)
            return (
                "454 4.7.0 Device registry unreachable (storage outage), password not checked: try again in a minute",
                None,
            )
        self.login_limiter.succeeded(username, key)
        log.info("event=smtp.auth result=ok %s device=%s tls=%s", fields, device.name, session.secure)
        return "235 2.7.0 Authentication successful", device

    async def recheck(self, server: ScanSMTP) -> str | None:
        """Read the device record again: a session keeps no right the admin took away since it logged in
        (`devices revoke`, a rotated password, a narrower `--from-ip`). One point read; returns the refusal, or
        None with `server.device` refreshed (a narrower `--allow-to` then applies through the policy)."""
        device = server.device
        assert device is not None
        try:
            fresh = await self.services.registry.get(device.name)
        except StorageUnavailable:
            return None  # cannot tell; storing the message needs the same storage and will answer 451
        fields = f"peer={server.peer_ip} device={device.name}"
        if fresh is None or fresh.revoked:
            log.warning("event=smtp.revoked %s (refused mid-session)", fields)
            return f"550 5.7.1 Device {device.name} was revoked by the admin: nothing more is accepted from it"
        if server.login_via == "password" and fresh.password_hash != device.password_hash:
            log.warning("event=smtp.rotated %s (logged out mid-session)", fields)
            server.device, server.login_via = None, ""
            return "530 5.7.0 The device's password was changed since this session logged in: log in again"
        if server.login_via == "address" and not address_in(server.peer_ip, networks(fresh.from_ip)):
            log.warning("event=smtp.from_ip_removed %s (refused mid-session)", fields)
            return f"550 5.7.1 Device {device.name} is no longer allowed from this address without a login"
        server.device = fresh
        return None

    async def handle_RCPT(
        self, server: ScanSMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        assert server.device is not None  # check_auth_needed ran first
        if not envelope.rcpt_tos:  # once per message here, and again at the end of DATA
            refusal = await self.recheck(server)
            if refusal is not None:
                return refusal
        device = server.device
        assert device is not None
        if len(envelope.rcpt_tos) >= self.limits.max_recipients:
            return f"452 4.5.3 Too many recipients: at most {self.limits.max_recipients} per message"
        if not _utf8(address):
            log.warning("event=smtp.rcpt result=refused reason=not_utf8 peer=%s device=%s", server.peer_ip, device.name)
            return "553 5.1.3 The recipient address is not valid UTF-8: check the address on the device"
        try:
            (normalised,) = check_recipients(device, [address], self.settings.sender)
        except RecipientNotAllowed as exc:
            log.warning("event=smtp.rcpt result=refused peer=%s device=%s to=%s", server.peer_ip, device.name, address)
            metrics.scan_refused("smtp", exc)
            return reply("550 5.7.1", str(exc))
        except MalformedInput as exc:
            return reply("553 5.1.3", str(exc))
        if normalised.lower() not in {r.lower() for r in envelope.rcpt_tos}:
            envelope.rcpt_tos.append(normalised)
        return "250 2.1.5 OK"

    async def receive(self, server: ScanSMTP, reader: DataReader) -> tuple[str, bool]:
        """Stream DATA into the spool; answer 250 only once accept_mime has stored and queued it.
        Returns (reply, keep the connection open)."""
        assert server.device is not None and server.envelope is not None
        device, to = server.device, tuple(server.envelope.rcpt_tos)
        fields = f"peer={server.peer_ip} device={device.name}"
        # The spool's own cap is a backstop: bare LF -> CRLF may grow a message that was within the limit.
        intake = self.services.intake(self.max_bytes * 2 + 1024)
        try:
            job = await metrics.accepting(
                "smtp", device.name, intake.accept_mime(device, to, self._checked(server, screened(reader.chunks())))
            )
        except _Refused as exc:
            status = exc.reply
        except RecipientNotAllowed as exc:
            status = reply("550 5.7.1", str(exc))
            log.warning("event=smtp.rejected reason=recipient_not_allowed %s to=%s", fields, exc.recipient)
        except MessageTooLarge as exc:
            status = reply("552 5.3.4", str(exc))
            log.warning("event=smtp.rejected reason=too_large %s limit=%d", fields, self.max_bytes)
        except StorageUnavailable as exc:
            status = STORAGE_DOWN
            log.error("event=smtp.rejected reason=storage %s error=%s", fields, exc)
        except BusyError:
            status = "452 4.3.1 The gateway is busy: the device should send again shortly"
            log.warning("event=smtp.rejected reason=busy %s", fields)
        except InputError as exc:
            status = reply("554 5.6.0", str(exc))
            log.warning("event=smtp.rejected reason=input %s error=%s", fields, exc)
        except (ConnectionError, OSError):
            raise
        except Exception:
            log.exception("event=smtp.rejected reason=internal %s", fields)
            status = INTERNAL
        else:
            log.info(
                "event=smtp.queued job=%s %s size=%d to=%s tls=%s",
                job.id,
                fields,
                reader.received,
                ",".join(to),
                server.secure,
            )
            server.queued += 1
            return f"250 2.0.0 Ok: queued as {job.id}", True
        try:
            async with asyncio.timeout(self.limits.oversize_drain_seconds):
                drained = await reader.drain(cap=max(self.limits.oversize_drain_bytes, self.max_bytes))
        except TimeoutError:
            drained = False
        if not drained:
            log.warning("event=smtp.drain_cut %s received=%d (closing: past the drain bound)", fields, reader.received)
            return reply("552 5.3.4", str(MessageTooLarge(self.max_bytes))), False
        return status, True

    async def _checked(self, server: ScanSMTP, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The message as received, then the device re-checked before the spool commits it: a refusal raised
        here leaves nothing stored."""
        async for chunk in chunks:
            yield chunk
        refusal = await self.recheck(server)
        if refusal is not None:
            raise _Refused(refusal)
        assert server.device is not None and server.envelope is not None
        check_recipients(server.device, list(server.envelope.rcpt_tos), self.settings.sender)

    async def handle_exception(self, error: Exception) -> str:
        """aiosmtpd's fallback for anything unexpected: log it here, never show a traceback to the device."""
        log.error("event=smtp.error error=%s", type(error).__name__, exc_info=error)
        return INTERNAL
