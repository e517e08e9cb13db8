"""`scangw` / `python -m gateway`: parse the command line, load settings, hand over to the command.

Exit codes (contract section 2): 0 success, 2 usage or configuration error (one line naming the setting),
1 runtime failure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from gateway.config import Settings, load_settings
from gateway.core.errors import ConfigError, GatewayError, StorageUnavailable, UsageError
from gateway.status_cli import add_status_parser, export_for_command, status_command

Handler = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]


def _hostport(default_host: str) -> Callable[[str], tuple[str, int]]:
    def parse(text: str) -> tuple[str, int]:
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = default_host, text
        if not port.isdigit() or not 0 <= int(port) <= 65535:
            raise argparse.ArgumentTypeError(f"'{text}' is not HOST:PORT")
        return host.strip("[]") or default_host, int(port)

    return parse


def build_parser() -> argparse.ArgumentParser:
    from gateway import __version__

    parser = argparse.ArgumentParser(prog="scangw", description="Scan-to-email gateway for Microsoft 365.")
    parser.add_argument("--version", action="version", version=f"scangw {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = sub.add_parser("dev", help="all-in-one: SMTP + HTTP + worker on embedded storage")
    dev.add_argument("--smtp-listen", type=_hostport("127.0.0.1"), default=None, metavar="HOST:PORT")
    dev.add_argument("--http-listen", type=_hostport("127.0.0.1"), default=None, metavar="HOST:PORT")
    dev.add_argument(
        "--lan",
        action="store_true",
        help="listen on the LAN (0.0.0.0) with a self-signed certificate, for a real scanner; prints its setup sheet",
    )
    dev.add_argument(
        "--implicit-tls-listen", type=_hostport("0.0.0.0"), default=None, metavar="HOST:PORT", help="with --lan"
    )
    smtp = sub.add_parser("smtp", help="SMTP front door (the container sidecar)")
    smtp.add_argument("--listen", action="append", type=_hostport("0.0.0.0"), metavar="HOST:PORT")
    smtp.add_argument("--implicit-tls", action="append", type=_hostport("0.0.0.0"), metavar="HOST:PORT")
    http = sub.add_parser("http", help="HTTP intake as a plain ASGI server")
    http.add_argument("--listen", type=_hostport("127.0.0.1"), default=("127.0.0.1", 8080), metavar="HOST:PORT")
    worker = sub.add_parser("worker", help="delivery agent: drain the job queue until stopped")
    worker.add_argument("--concurrency", type=int, default=4, help="jobs delivered at once (default 4)")
    worker.add_argument("--once", action="store_true", help="exit when the queue is empty")
    worker.add_argument(
        "--lease-seconds", type=float, default=45.0, help="a dead worker's job reappears after this (default 45)"
    )
    sub.add_parser("sweep", help="apply retention once (what the timer trigger does)")

    devices = sub.add_parser("devices", help="manage devices").add_subparsers(dest="action", required=True)
    for name in ("add", "update"):
        p = devices.add_parser(
            name, help=f"{name} a device" + (" and print its password once" if name == "add" else "")
        )
        p.add_argument("name")
        p.add_argument("--sender", metavar="UPN", help="sender mailbox (default SCANGW_SENDER)")
        p.add_argument("--sender-name", metavar="TEXT", help="From display name (default: the device name)")
        p.add_argument("--reply-to", metavar="ADDR")
        p.add_argument("--default-to", metavar="ADDR", help="recipient when the device names none")
        p.add_argument("--allow-to", action="append", metavar="PATTERN", help="address or *@domain (repeatable)")
        p.add_argument("--from-ip", action="append", metavar="CIDR", help="accept SMTP without AUTH from here")
        p.add_argument(
            "--i-understand-open-relay-risk",
            dest="open_relay_risk",
            action="store_true",
            help="take a --from-ip range that is not private (anyone in it sends without a password)",
        )
        if name == "add":
            p.add_argument("--json", action="store_true")
        else:
            for verb in ("add", "remove"):
                p.add_argument(
                    f"--{verb}-allow-to",
                    action="append",
                    default=[],
                    metavar="PATTERN",
                    help=f"{verb} one allowed recipient, keeping the others (repeatable)",
                )
                p.add_argument(
                    f"--{verb}-from-ip",
                    action="append",
                    default=[],
                    metavar="CIDR",
                    help=f"{verb} one --from-ip range, keeping the others (repeatable)",
                )
    p = devices.add_parser("list", help="list devices")
    p.add_argument("--json", action="store_true")
    p = devices.add_parser("show", help="show a device")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.add_argument("--sheet", action="store_true", help="print the device's setup sheet (never the password)")
    devices.add_parser("revoke", help="revoke a device").add_argument("name")
    p = devices.add_parser("rotate", help="new password for a device")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")

    jobs = sub.add_parser("jobs", help="inspect jobs").add_subparsers(dest="action", required=True)
    p = jobs.add_parser("list", help="list jobs, newest first")
    p.add_argument("--state", choices=["queued", "sending", "sent", "failed"])
    p.add_argument("--json", action="store_true")
    p = jobs.add_parser("show", help="one job")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    p = jobs.add_parser("retry", help="re-queue a failed job")
    p.add_argument("id")
    p.add_argument("--now", action="store_true", help="run it at once; also a queued job waiting to retry")

    add_status_parser(sub)
    doctor = sub.add_parser("doctor", help="check settings, storage, identity, mail permission and mailbox")
    doctor.add_argument("--send-test", metavar="ADDR", help="also send a test message to ADDR")
    return parser


def _handler(args: argparse.Namespace) -> Handler:
    from gateway import admin, run

    table: dict[str, Handler] = {
        "dev": run.dev,
        "smtp": run.smtp,
        "http": run.http,
        "worker": run.worker,
        "sweep": admin.sweep,
        "devices": admin.devices,
        "jobs": admin.jobs,
        "status": status_command,
    }
    return table[args.command]


def main(argv: Sequence[str] | None = None, env: dict[str, str] | None = None) -> int:
    try:
        code = _main(argv, env)
        sys.stdout.flush()  # here, not at interpreter exit, where a closed pipe could not be handled
        return code
    except BrokenPipeError:
        return _reader_gone()


def _main(argv: Sequence[str] | None, env: dict[str, str] | None) -> int:
    args = build_parser().parse_args(argv)
    environ = dict(os.environ if env is None else env)
    if args.command == "dev":
        from gateway.run import dev_environment

        environ = dev_environment(environ, lan=args.lan)
        lan_host = "0.0.0.0" if args.lan else "127.0.0.1"
        args.smtp_listen = args.smtp_listen or (lan_host, 2525)
        args.http_listen = args.http_listen or (lan_host, 8443 if args.lan else 8080)
        if args.lan:
            args.implicit_tls_listen = args.implicit_tls_listen or (lan_host, 2465)
    if args.command == "doctor":
        from gateway.doctor import doctor_main

        return doctor_main(args, environ)
    try:
        settings = load_settings(environ)
        export_for_command(args.command, settings)
        return asyncio.run(_handler(args)(args, settings))
    except GatewayError as exc:
        print(f"scangw: {_describe(exc)}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError | UsageError) else 1
    except KeyboardInterrupt:
        return 0


def _reader_gone() -> int:
    """`scangw jobs list | head -1`: the reader left, which is its right; say nothing and exit 0.

    stdout is pointed at /dev/null so the interpreter's final flush does not fail a second time."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 0


def _describe(exc: GatewayError) -> str:
    """One line a person can act on; the error type decides only the prefix."""
    if isinstance(exc, ConfigError):
        return f"configuration error: {exc}"
    if isinstance(exc, StorageUnavailable):
        return f"storage unavailable: {exc}"
    return str(exc)
