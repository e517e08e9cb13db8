"""One SMTP session: aiosmtpd's protocol with the few commands scanners need done differently.

Overridden on purpose: AUTH (also after HELO; TLS required only when SCANGW_SMTP_REQUIRE_TLS_AUTH says so;
challenges exactly `Username:`/`Password:`; the device registry is async), MAIL (any sender, `SIZE=` checked
with a 552 5.3.4 a person can read), DATA (streamed to the spool instead of collected in memory), STARTTLS
(a HelloGate sees the ClientHello, so a failed handshake is one log line) and the authentication check
(devices allow-listed by address). SMTPUTF8 is offered. A session that has not logged in within
`preauth_seconds` is closed (NOOP and RSET do not extend that), and may be evicted to make room (see
Door.admit). Everything else, including the command loop and its line handling, is aiosmtpd's own.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from asyncio import sslproto
from typing import TYPE_CHECKING

from aiosmtpd.smtp import MISSING, SMTP, TLSSetupException, syntax

from gateway.core.devices import Device
from gateway.core.errors import MessageTooLarge
from gateway.intake.smtp_auth import decode_base64, split_plain
from gateway.intake.smtp_data import DataReader
from gateway.intake.smtp_tls import describe
from gateway.intake.smtp_tls_gate import HelloGate
from gateway.telemetry import metrics

if TYPE_CHECKING:
    from gateway.intake.smtp_door import Door

log = logging.getLogger("scangw.smtp")

#: Stream buffer: bounds memory per session and the longest command line read before it is refused.
READ_LIMIT = 64 * 1024
_SIZE = re.compile(r"(?:^|\s)SIZE=(\d{1,20})(?:\s|$)", re.IGNORECASE)


class ScanSMTP(SMTP):
    AuthLoginUsernameChallenge = "Username:"
    AuthLoginPasswordChallenge = "Password:"
    line_length_limit = READ_LIMIT

    def __init__(self, door: Door, *, implicit_tls: bool, tls_context: ssl.SSLContext | None, hostname: str) -> None:
        super().__init__(
            door,
            data_size_limit=door.max_bytes,  # advertised as SIZE; enforced by our DATA
            hostname=hostname,
            ident="ESMTP scangw",  # some devices send EHLO only when the greeting says ESMTP
            tls_context=None if implicit_tls else tls_context,
            timeout=door.limits.idle_timeout_seconds,
            auth_required=False,  # our check_auth_needed decides (password or allow-listed address)
            auth_require_tls=door.require_tls_auth and not implicit_tls,
            loop=asyncio.get_running_loop(),
            # RFC 6531: relays (Postfix) bounce mail with raw UTF-8 headers when this is not offered. The door
            # stores raw UTF-8 headers as they come; addresses go through the recipient policy like any other.
            enable_SMTPUTF8=True,
        )
        self.door = door
        self.implicit_tls = implicit_tls
        self.device: Device | None = None
        self.login_via = ""
        self.peer_ip = ""
        self.busy = False  # in DATA or storing: graceful stop waits for it
        self.started = time.monotonic()
        self.queued = 0  # messages accepted in this session
        self.tls_protocol = "none"
        self._counted = False
        self._refused = False
        self._preauth_timer: asyncio.TimerHandle | None = None
        self.authenticating = False  # a password check is running: not idle, never evicted
        self._address_checked = False

    @property
    def secure(self) -> bool:
        return self.implicit_tls or self._tls_protocol is not None

    # -- connection lifecycle ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        if first:
            peer = transport.get_extra_info("peername")
            self.peer_ip = str(peer[0]) if peer else ""
            refusal = self.door.admission.admit(self)
            if refusal is not None:
                self._refused = True
                log.warning("event=smtp.refused peer=%s reason=%s", self.peer_ip, refusal[4:9])
                transport.write(refusal.encode("ascii") + b"\r\n")  # type: ignore[attr-defined]
                transport.close()
                return
            self._counted = True
            self.door.sessions.add(self)
            self._preauth_timer = asyncio.get_running_loop().call_later(
                self.door.limits.preauth_seconds, self._preauth_expired
            )
        else:  # STARTTLS finished: RFC 3207 says forget everything learnt before
            self.device = None
            self.login_via = ""
            self._address_checked = False
        super().connection_made(transport)
        if first:
            tls = describe(transport.get_extra_info("ssl_object")) if self.implicit_tls else None
            self.door.connected(self, tls)

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        self._release()
        super().connection_lost(error)

    def _release(self) -> None:
        if self._preauth_timer is not None:
            self._preauth_timer.cancel()
            self._preauth_timer = None
        if self._counted:
            self._counted = False
            self.door.connections.release(self.peer_ip)
            self.door.sessions.discard(self)
            self.door.disconnected(self)

    def _logged_in(self, device: Device, via: str) -> None:
        self.device, self.login_via = device, via
        if self._preauth_timer is not None:
            self._preauth_timer.cancel()
            self._preauth_timer = None

    def _preauth_expired(self) -> None:
        """NOOP and RSET reset aiosmtpd's idle timer, not this one: a session gets this long to log in."""
        self._preauth_timer = None
        if self.device is None and not self.authenticating:
            log.info("event=smtp.preauth_timeout peer=%s seconds=%g", self.peer_ip, self.door.limits.preauth_seconds)
            self.goodbye(
                f"421 4.7.0 No login within {self.door.limits.preauth_seconds:g} seconds: closing the connection"
            )

    def evict(self, reply: str) -> None:
        """Close to make room for a new connection; its slot is free at once, not when the close completes."""
        self.goodbye(reply)
        self._release()

    def eof_received(self) -> bool | None:
        if self._refused:
            return False
        return super().eof_received()

    def goodbye(self, reply: str) -> None:
        """Close from outside (graceful stop): best-effort reply, then close."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(reply.encode("ascii") + b"\r\n")  # type: ignore[attr-defined]
            self.transport.close()

    # -- authentication ------------------------------------------------------------------------------------

    async def check_auth_needed(self, caller_method: str) -> bool:
        if self.device is not None:
            return False
        if not self._address_checked:
            self._address_checked = True
            device = await self.door.device_for_address(self.peer_ip)
            if device is not None:
                self._logged_in(device, "address")
                return False
        await self.push("530 5.7.0 Authentication required: set the SMTP username and password on the device")
        return True

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str | None) -> None:
        if await self.check_helo_needed("HELO or EHLO"):
            return
        if self.door.require_tls_auth and not self.secure:
            await self.push("538 5.7.11 Encryption required: turn on STARTTLS (or SSL/TLS on port 465) on the device")
            return
        if self.login_via == "password":
            await self.push("503 5.5.1 Already authenticated")
            return
        words = (arg or "").split()
        if not words or len(words) > 2:
            await self.push("501 5.5.4 Syntax: AUTH PLAIN|LOGIN [initial-response]")
            return
        mechanism = words[0].upper()
        if mechanism == "PLAIN":
            credentials = await self._plain(words[1:])
        elif mechanism == "LOGIN":
            credentials = await self._login(words[1:])
        else:
            await self.push("504 5.5.4 Unrecognized authentication type: use PLAIN or LOGIN")
            return
        if credentials is None:
            return  # the reply was sent already
        self.authenticating = True
        try:
            reply, device = await self.door.authenticate(self, mechanism, *credentials)
        finally:
            self.authenticating = False
        if device is not None:
            self._logged_in(device, "password")
            assert self.session is not None
            self.session.authenticated = True
        await self.push(reply)

    async def _response(self, initial: list[str], challenge: str) -> bytes | None:
        if initial:
            data = decode_base64(initial[0])
            if data is None:
                await self.push("501 5.5.2 Cannot decode base64")
            return data
        answer = await self.challenge_auth(challenge)
        return None if answer is MISSING else answer

    async def _plain(self, initial: list[str]) -> tuple[str, str] | None:
        blob = await self._response(initial, "")
        if blob is None:
            return None
        credentials = split_plain(blob)
        if credentials is None:
            await self.push("501 5.5.2 Malformed PLAIN response: expected authzid NUL username NUL password")
        return credentials

    async def _login(self, initial: list[str]) -> tuple[str, str] | None:
        username = await self._response(initial, self.AuthLoginUsernameChallenge)
        if username is None:
            return None
        password = await self._response([], self.AuthLoginPasswordChallenge)
        if password is None:
            return None
        return username.decode("utf-8", errors="replace"), password.decode("utf-8", errors="replace")

    # -- envelope and data ---------------------------------------------------------------------------------

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        """aiosmtpd's STARTTLS with a HelloGate in front of the TLS layer, so a failed handshake is one log line
        naming what the device offered (aiosmtpd logs two tracebacks and no peer)."""
        if self.secure:
            await self.push("503 5.5.1 TLS already active")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: STARTTLS")
            return
        assert self.tls_context is not None and self.transport is not None
        await self.push("220 2.0.0 Ready to start TLS")
        waiter: asyncio.Future[None] = self.loop.create_future()
        tls = sslproto.SSLProtocol(
            self.loop,
            self,
            self.tls_context,
            waiter,
            server_side=True,
            ssl_handshake_timeout=self.door.limits.tls_handshake_seconds,
        )
        gate = HelloGate(tls, waiter, hello_seconds=self.door.limits.tls_hello_seconds)
        self._tls_protocol = tls
        self._original_transport = self.transport
        self._original_transport.set_protocol(gate)
        gate.connection_made(self._original_transport)
        self.transport = tls._app_transport  # what aiosmtpd does: the session now writes through TLS
        try:
            await waiter
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self.door.tls_failed(self.peer_ip, "starttls", gate.first, error)
            raise TLSSetupException() from error  # aiosmtpd closes the connection and releases the session

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            return ""  # logged once by tls_failed; aiosmtpd closes the connection without a reply
        return await super().handle_exception(error)

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        """Any sender is fine (the From is rewritten anyway), `<>` and odd device values included."""
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("MAIL"):
            return
        assert self.envelope is not None
        if self.envelope.mail_from:
            await self.push("503 5.5.1 Error: nested MAIL command")
            return
        if not arg or arg[:5].upper() != "FROM:":
            await self.push("501 5.5.4 Syntax: MAIL FROM:<address>")
            return
        rest = arg[5:].strip()
        address, _, params = rest.partition(">") if rest.startswith("<") else rest.partition(" ")
        size = _SIZE.search(params)
        if size and int(size.group(1)) > self.door.max_bytes:
            metrics.scan_refused("smtp", "size")
            await self.push(f"552 5.3.4 {MessageTooLarge(self.door.max_bytes)}")
            return
        self.envelope.mail_from = address.lstrip("<").strip() or "<>"
        self.envelope.mail_options.extend(params.upper().split())
        await self.push("250 2.1.0 OK")

    @syntax("DATA")
    async def smtp_DATA(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self.busy = True
        try:
            reader = DataReader(self._reader, self.door.max_bytes, on_progress=self._reset_timeout)
            reply, keep = await self.door.receive(self, reader)
        finally:
            self.busy = False
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(reply)
        if not keep or self.door.stopping:
            if self.door.stopping:
                await self.push("421 4.3.2 Service shutting down; send the next scan again shortly")
            assert self.transport is not None
            self.transport.close()
            # Whatever of the refused body is still buffered must never reach the command loop.
            self._reader._buffer.clear()  # type: ignore[attr-defined]
