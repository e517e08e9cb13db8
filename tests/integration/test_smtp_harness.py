"""Test factories for the SMTP door: a real server on loopback in its own thread and event loop (so blocking
clients such as smtplib and swaks can talk to it), a test CA made with `cryptography`, and a raw-socket
dialogue for the exchanges libraries hide. Holds no tests itself."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from gateway.config import load_settings
from gateway.core.jobs import Job
from gateway.intake.smtp import SmtpServer, serve
from gateway.intake.smtp_limits import SmtpLimits
from gateway.services import Services, build

T = TypeVar("T")
USER = "scanner1"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


@dataclass
class Pki:
    """A throw-away CA and an RSA server certificate for localhost / 127.0.0.1 (RSA: legacy RSA key exchange)."""

    folder: Path
    ca_key: rsa.RSAPrivateKey
    ca_cert: x509.Certificate
    serial: int = 0

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def cert(self) -> Path:
        return self.folder / "server.pem"

    @property
    def key(self) -> Path:
        return self.folder / "server.key"

    def issue(self) -> int:
        """(Re)issue the server certificate in place, as a renewal would; returns its serial number."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = dt.datetime.now(dt.UTC)
        self.serial = x509.random_serial_number()
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("localhost"))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(self.serial)
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .sign(self.ca_key, hashes.SHA256())
        )
        self.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        self.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return self.serial

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        return context

    def env(self, **extra: str) -> dict[str, str]:
        return {"SCANGW_SMTP_TLS_CERT": str(self.cert), "SCANGW_SMTP_TLS_KEY": str(self.key), **extra}


def make_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("scangw test CA"))
        .issuer_name(_name("scangw test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(folder, ca_key, ca_cert)
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.issue()
    return pki


@dataclass
class SmtpRun:
    """A running SMTP door and handles on its storage, usable from the (blocking) test thread."""

    loop: asyncio.AbstractEventLoop
    services: Services
    password: str
    stop_event: asyncio.Event
    addresses: list[tuple[str, int]] = field(default_factory=list)
    plain_count: int = 1

    @property
    def plain(self) -> tuple[str, int]:
        return self.addresses[0]

    @property
    def implicit(self) -> tuple[str, int]:
        return self.addresses[self.plain_count]

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def jobs(self) -> list[Job]:
        return self.call(self.services.jobs.list())

    def queue_count(self) -> int:
        return int(self.call(self.services.spool.queue.count()))  # type: ignore[attr-defined]

    def blobs(self) -> list[str]:
        return self.call(self.services.spool.blobs.list(""))

    def message(self, job: Job) -> bytes:
        async def read() -> bytes:
            return b"".join([c async for c in self.services.spool.blobs.stream(job.files[0].blob)])

        return self.call(read())

    def add_device(self, name: str, **fields: Any) -> str:
        return self.call(self.services.registry.add(name, **fields))[1]

    def stop(self) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.stop_event.set)


def stored(tmp: Path) -> tuple[list[Job], int, dict[str, bytes]]:
    """What the spool in `tmp` holds (jobs, queue length, each job's message): usable after the door stopped."""

    async def look() -> tuple[list[Job], int, dict[str, bytes]]:
        services = await build(load_settings({"SCANGW_STORAGE": f"local:{tmp / 'spool'}"}))
        try:
            jobs = await services.jobs.list()
            messages = {}
            for job in jobs:
                messages[job.id] = b"".join([c async for c in services.spool.blobs.stream(job.files[0].blob)])
            return jobs, int(await services.spool.queue.count()), messages  # type: ignore[attr-defined]
        finally:
            await services.close()

    return asyncio.run(look())


@contextmanager
def running_smtp(
    tmp: Path,
    env: dict[str, str] | None = None,
    *,
    listen: int = 1,
    implicit: int = 0,
    limits: SmtpLimits | None = None,
    prepare: Callable[[Services], Awaitable[None] | None] | None = None,
) -> Iterator[SmtpRun]:
    """Start the door on 127.0.0.1 (port 0) with device `scanner1` (may send to *@contoso.com); stop it after."""
    started = threading.Event()
    holder: dict[str, Any] = {}

    async def main() -> None:
        settings = load_settings({"SCANGW_STORAGE": f"local:{tmp / 'spool'}", **(env or {})})
        services = await build(settings)
        _, password = await services.registry.add(USER, sender="scanner@contoso.com", allow_to=["*@contoso.com"])
        stop = asyncio.Event()
        run = SmtpRun(asyncio.get_running_loop(), services, password, stop, plain_count=listen)
        if prepare is not None:
            result = prepare(services)
            if result is not None:
                await result

        def ready(addresses: list[tuple[str, int]]) -> None:
            run.addresses = addresses
            holder["run"] = run
            started.set()

        try:
            plain = [("127.0.0.1", 0)] * listen
            tls = [("127.0.0.1", 0)] * implicit
            if limits is None:
                await serve(settings, plain, tls, stop, services=services, ready=ready)
            else:
                server = SmtpServer(settings, services, limits)
                ready(await server.start(plain, tls))
                holder["server"] = server
                try:
                    await stop.wait()
                finally:
                    await server.stop()
        finally:
            await services.close()

    def thread_main() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            holder["error"] = exc
        finally:
            started.set()

    thread = threading.Thread(target=thread_main, daemon=True)
    thread.start()
    started.wait(30)
    if "error" in holder:
        raise holder["error"]
    run: SmtpRun = holder["run"]
    run.server = holder.get("server")  # type: ignore[attr-defined]
    try:
        yield run
    finally:
        run.stop()
        thread.join(30)
        if "error" in holder:
            raise holder["error"]


class Dialogue:
    """A raw SMTP conversation: exactly the bytes a device sends, exactly the replies it gets."""

    def __init__(self, address: tuple[str, int], context: ssl.SSLContext | None = None, source: str = "") -> None:
        """`source`: another loopback address (127.0.0.2, ...) to connect from, as a second client would."""
        raw = socket.create_connection(address, timeout=10, source_address=(source, 0) if source else None)
        self.sock = context.wrap_socket(raw, server_hostname="localhost") if context else raw
        self.file = self.sock.makefile("rb")
        self.greeting = self.reply()

    def reply(self) -> str:
        """One whole reply (all lines of a multi-line one), as text."""
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("server closed the connection")
            lines.append(line.decode("utf-8").rstrip("\r\n"))
            if line[3:4] != b"-":
                return "\n".join(lines)

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode("utf-8") if isinstance(data, str) else data)

    def ask(self, line: str) -> str:
        self.send(line + "\r\n")
        return self.reply()

    def closed(self) -> bool:
        try:
            return self.file.readline() == b""
        except OSError:
            return True

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def logged_in(run: SmtpRun, helo: str = "EHLO scanner") -> Dialogue:
    """A session on the plain port past EHLO and AUTH PLAIN as USER: where most SMTP tests start."""
    talk = Dialogue(run.plain)
    talk.ask(helo)
    assert talk.ask("AUTH PLAIN " + base64.b64encode(f"\0{USER}\0{run.password}".encode()).decode()).startswith("235")
    return talk
