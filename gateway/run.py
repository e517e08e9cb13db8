"""Long-running commands: `dev`, `smtp`, `http`, `worker`. Each stops cleanly on SIGTERM/SIGINT: no new work,
the work in hand finished, nothing lost (whatever is not finished is still in the queue)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

from gateway.config import Settings, default_data_dir
from gateway.core.devices import Device
from gateway.core.errors import UsageError
from gateway.dev_lock import dev_lock
from gateway.services import Services, build
from gateway.setup_sheet import Endpoints, default_host, sheet
from gateway.status import keep_measuring
from gateway.telemetry import configure_logging

log = logging.getLogger("scangw")

DEMO_DEVICE = "demo"
#: A long-running worker sweeps (retention, bounces, orphan drafts) this soon after starting, then hourly,
#: as the timer trigger does in Azure; several workers sweeping is harmless (every step is idempotent).
FIRST_SWEEP_SECONDS, SWEEP_SECONDS = 60.0, 3600.0


def dev_environment(env: dict[str, str], lan: bool = False) -> dict[str, str]:
    """`make dev` needs no Azure: embedded storage (the per-user data folder unless SCANGW_STORAGE says
    otherwise), and the .eml outbox in that folder unless a sender mailbox is set. On the LAN (`--lan`) the
    SMTP door makes its own certificate for this machine's names unless one is configured."""
    env = dict(env)
    if lan and not env.get("SCANGW_SMTP_TLS_CERT") and not env.get("SCANGW_SMTP_TLS_SELF_SIGNED"):
        env["SCANGW_SMTP_TLS_SELF_SIGNED"] = ",".join(lan_names())
    if not env.get("SCANGW_SENDER") and not env.get("SCANGW_OUTBOX"):
        direct = env.get("SCANGW_STORAGE", "").strip()
        folder = Path(direct[len("local:") :]) if direct.startswith("local:") else default_data_dir(env)
        env["SCANGW_OUTBOX"] = str(folder.resolve() / "outbox")
    return env


def lan_names() -> list[str]:
    """This machine's names and LAN address, for the self-signed certificate devices will see."""
    from gateway.intake.self_signed import parse_hosts

    names = [default_host(), socket.gethostname()]
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # a UDP "connect" sends nothing: it only picks the outgoing address
        names.append(probe.getsockname()[0])
    valid: list[str] = []
    for name in names:
        with contextlib.suppress(ValueError):
            valid.extend(h for h in parse_hosts(name) if h not in valid)
    return valid or ["localhost"]


class PortBusy(UsageError):
    """A listener could not bind: another program (or another scangw) has the port."""


def _bind(host: str, port: int) -> socket.socket:
    """Bind before serving, so a busy port is one line and exit 2 (uvicorn would log and exit 1 itself)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortBusy(f"cannot listen on {host}:{port}: {exc.strerror}; {_PORT_REMEDY}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


_PORT_REMEDY = "stop the program using it, or choose another port (--listen, --smtp-listen, --http-listen)."


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return stop


async def _serve_http(
    svc: Services, sock: socket.socket, stop: asyncio.Event, tls: tuple[Path, Path] | None = None
) -> None:
    import uvicorn

    from gateway.intake.http import create_app
    from gateway.intake.http_drain import SETTLE_SECONDS, Draining
    from gateway.intake.http_server import head_deadline_protocol

    async def provider() -> Services:
        return svc

    host, port = sock.getsockname()[:2]
    app = Draining(create_app(provider))
    stop_seconds = svc.settings.http_stop_seconds
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        # A backstop only: Draining answers the uploads still running at the deadline (503, not uvicorn's 500).
        timeout_graceful_shutdown=int(stop_seconds + SETTLE_SECONDS + 5),
        h11_max_incomplete_event_size=32 * 1024,
        ssl_certfile=str(tls[0]) if tls else None,
        ssl_keyfile=str(tls[1]) if tls else None,
        http=head_deadline_protocol(svc.settings.http_timeout_seconds),
    )

    class Server(uvicorn.Server):
        def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
            return contextlib.nullcontext()  # this process owns SIGTERM/SIGINT: one stop for every part

    server = Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    scheme = "https" if tls else "http"
    log.info("http listening on %s://%s:%d (health /api/health, uploads /api/scans/NAME)", scheme, host, port)
    await stop.wait()
    server.should_exit = True  # no new connections; requests in progress go on until the deadline
    await app.drain(stop_seconds)
    await task


async def _serve_smtp(
    svc: Services,
    listen: list[tuple[str, int]],
    implicit: list[tuple[str, int]],
    stop: asyncio.Event,
    ready: Callable[[list[tuple[str, int]]], None] | None = None,
) -> None:
    from gateway.intake import smtp as smtp_server

    # A renewed certificate is picked up on SIGHUP without dropping sessions (a bad renewal keeps the old one).
    with contextlib.suppress(NotImplementedError, RuntimeError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, smtp_server.reload_tls)
    await smtp_server.serve(svc.settings, listen, implicit, stop, services=svc, ready=ready)


async def _run_worker(
    svc: Services, stop: asyncio.Event, concurrency: int = 4, once: bool = False, lease_seconds: float = 45.0
) -> None:
    from gateway.delivery.agent import DeliveryAgent
    from gateway.delivery.transports import make_transport
    from gateway.delivery.worker import Worker

    transport = make_transport(svc.settings, svc.spool)
    agent = DeliveryAgent(
        svc, transport, fallback_sender="scangw@gateway.localhost"
    )  # outbox mode: a domain with a dot (RFC 6761)
    target = f"outbox {svc.settings.outbox}" if svc.settings.outbox else f"Graph {svc.settings.graph_url}"
    log.info("worker delivering to %s", target)
    if svc.settings.outbox is None:
        from gateway.delivery.graph.identity import identity_problem

        problem = await identity_problem(svc.settings)
        if problem:  # said once here; each job then waits with the same reason instead of failing
            log.warning("worker has no Graph token yet; jobs wait until it has: %s", problem)
    sweeper = None if once else asyncio.create_task(_sweep_hourly(svc, transport, stop))
    gauge = None if once else asyncio.create_task(keep_measuring(svc, stop))  # scangw.queue.oldest_age
    try:
        worker = Worker(agent, concurrency, lease_seconds=lease_seconds)
        await (worker.drain() if once else worker.run(stop))
    finally:
        if gauge is not None:
            gauge.cancel()
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        await transport.close()


async def _sweep_hourly(svc: Services, transport: object, stop: asyncio.Event) -> None:
    from gateway.delivery.retention import mailbox_housekeeper, sweep

    delay = FIRST_SWEEP_SECONDS
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        if stop.is_set():
            return
        delay = SWEEP_SECONDS
        try:
            housekeeper, problem = await mailbox_housekeeper(transport, svc.settings)
            if problem:
                log.warning("mailboxes not swept this hour: %s", problem)
            await sweep(svc, housekeeper=housekeeper)
        except Exception:  # noqa: BLE001 - housekeeping must never stop deliveries; the next hour tries again
            log.exception("sweep failed; trying again in an hour")


async def _main(settings: Settings, body: Callable[[Services, asyncio.Event], Awaitable[None]]) -> int:
    configure_logging(settings)
    stop = _stop_event()
    log.info("store: %s", settings.store_label)
    svc = await build(settings)
    try:
        await body(svc, stop)
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise
        raise PortBusy(f"cannot listen: {exc.strerror or exc}; {_PORT_REMEDY} ({exc})") from None
    finally:
        await svc.close()
    return 0


async def smtp(args: argparse.Namespace, settings: Settings) -> int:
    listen = args.listen or ([] if args.implicit_tls else [("0.0.0.0", 2525)])
    return await _main(settings, lambda svc, stop: _serve_smtp(svc, listen, args.implicit_tls or [], stop))


async def http(args: argparse.Namespace, settings: Settings) -> int:
    sock = _bind(*args.listen)
    return await _main(settings, lambda svc, stop: _serve_http(svc, sock, stop))


async def worker(args: argparse.Namespace, settings: Settings) -> int:
    return await _main(
        settings, lambda svc, stop: _run_worker(svc, stop, args.concurrency, args.once, args.lease_seconds)
    )


async def _demo_device(svc: Services) -> tuple[Device, str | None]:
    """Create `demo` once; print a fresh password at every start (the old one is never stored in clear).
    A demo device the admin revoked stays revoked: restarting dev is not a way around `devices revoke`."""
    existing = await svc.registry.get(DEMO_DEVICE)
    if existing is None:
        device, password = await svc.registry.add(
            DEMO_DEVICE, default_to="me@example.com", allow_to=["*@example.com"], sender_name="Demo scanner"
        )
        return device, password
    if existing.revoked:
        return existing, None
    device, password = await svc.registry.rotate(DEMO_DEVICE)
    return device, password


def _banner(
    settings: Settings, args: argparse.Namespace, device: Device, password: str | None, lan: Endpoints | None
) -> str:
    (smtp_host, smtp_port), (http_host, http_port) = args.smtp_listen, args.http_listen
    url = lan.upload_url if lan and lan.upload_url else f"http://{http_host}:{http_port}"
    target = f"{settings.outbox.resolve()} (.eml files)" if settings.outbox else f"Microsoft Graph as {settings.sender}"
    lines = [
        "",
        "scangw dev is running",
        f"  store: {settings.store_label}",
        f"  HTTP  {url}/api/health   SMTP  {smtp_host}:{smtp_port}",
        f"  delivering to: {target}",
    ]
    if password is None:
        return "\n".join(
            [
                *lines,
                f"  device {device.name} is revoked (scangw devices revoke); restarting dev does not re-activate it.",
                "  add a device of your own: scangw devices add NAME --default-to ADDR",
                "",
            ]
        )
    insecure = "-k " if lan else ""
    lines += [
        f"  device username: {device.username}",
        f"  device password: {password}",
        f"  try: curl {insecure}-T scan.pdf -u '{device.username}:{password}' "
        f"'{url}/api/scans/scan.pdf?to=me@example.com'",
    ]
    if lan:
        lines += [
            "",
            sheet(device, lan, password),
            "",
            "  Other devices' sheets: scangw devices show NAME --sheet (their passwords were shown when made).",
        ]
    return "\n".join(lines) + "\n"


def _lan_endpoints(settings: Settings, args: argparse.Namespace) -> tuple[Endpoints, tuple[Path, Path]]:
    """Where a device on the LAN reaches this dev instance, and the certificate the SMTP door uses (made by it)."""
    from gateway.intake.self_signed import load
    from gateway.intake.smtp import self_signed_folder

    if settings.smtp_tls_cert and settings.smtp_tls_key:
        tls, fingerprint = (settings.smtp_tls_cert, settings.smtp_tls_key), None
        host = default_host()
    else:
        made = load(self_signed_folder(settings))
        if made is None:
            raise UsageError(f"no certificate in {self_signed_folder(settings)}; set SCANGW_SMTP_TLS_SELF_SIGNED")
        tls, fingerprint, host = (made.cert, made.key), made.fingerprint, made.hosts[0]
    http_host, http_port = args.http_listen
    shown = host if http_host in ("0.0.0.0", "::") else http_host
    endpoints = Endpoints(
        host=host if args.smtp_listen[0] in ("0.0.0.0", "::") else args.smtp_listen[0],
        starttls_port=args.smtp_listen[1],
        implicit_tls_port=args.implicit_tls_listen[1],
        upload_url=f"https://{shown}:{http_port}",
        fingerprint=fingerprint,
        note="Trial only: `scangw dev` keeps its data in the store above; see the README to run it for real.",
    )
    return endpoints, tls


async def dev(args: argparse.Namespace, settings: Settings) -> int:
    folder = settings.local_dir
    with dev_lock(folder) if folder is not None else contextlib.nullcontext():
        http_sock = _bind(*args.http_listen)

        async def body(svc: Services, stop: asyncio.Event) -> None:
            listening = asyncio.Event()
            implicit = [args.implicit_tls_listen] if args.lan else []
            smtp = asyncio.create_task(_serve_smtp(svc, [args.smtp_listen], implicit, stop, lambda _: listening.set()))
            ready = asyncio.create_task(listening.wait())
            await asyncio.wait({smtp, ready}, return_when=asyncio.FIRST_COMPLETED)
            if smtp.done():
                ready.cancel()
                await smtp  # raises the bind error: nothing else started, the demo password unchanged
                return
            lan, tls = _lan_endpoints(svc.settings, args) if args.lan else (None, None)
            device, password = await _demo_device(svc)
            print(_banner(svc.settings, args, device, password, lan), flush=True)
            await asyncio.gather(smtp, _serve_http(svc, http_sock, stop, tls), _run_worker(svc, stop))

        return await _main(settings, body)
