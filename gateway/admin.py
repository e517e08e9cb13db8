"""Admin commands: devices, jobs and retention, printed for people or as JSON for scripts."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from gateway.config import Settings
from gateway.core.devices import Device, check_from_ip, check_name
from gateway.core.errors import ConfigError, MalformedInput, UsageError
from gateway.core.jobs import JobState
from gateway.job_table import job_table
from gateway.services import Services, build


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=None, ensure_ascii=False))


def _credentials(device: Device, password: str, as_json: bool) -> None:
    if as_json:
        _print_json({"username": device.username, "password": password})
    else:
        print(f"username: {device.username}")
        print(f"password: {password}")
        print("Store the password in the device now: it is shown only once.")


def _device_fields(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    risk = getattr(args, "open_relay_risk", False)
    fields = {
        "sender": args.sender,
        "sender_name": args.sender_name,
        "reply_to": args.reply_to,
        "default_to": args.default_to,
        "allow_to": args.allow_to,
        "from_ip": _check_from_ip(settings, args.from_ip, risk),
    }
    if args.action == "update":
        for option in ("allow_to", "from_ip"):
            if getattr(args, option) and (getattr(args, f"add_{option}") or getattr(args, f"remove_{option}")):
                flag = option.replace("_", "-")
                raise UsageError(
                    f"--{flag} replaces the whole list; give either it or --add-{flag}/--remove-{flag}, not both."
                )
        fields["add_allow_to"] = args.add_allow_to or None
        fields["remove_allow_to"] = args.remove_allow_to or None
        fields["add_from_ip"] = _check_from_ip(settings, args.add_from_ip, risk)
        fields["remove_from_ip"] = _check_from_ip(settings, args.remove_from_ip, True, adding=False)
    return {k: v for k, v in fields.items() if v is not None}


def _check_from_ip(
    settings: Settings, cidrs: list[str] | None, allow_public: bool, adding: bool = True
) -> list[str] | None:
    """Behind a TCP proxy every client has the proxy's address: trusting it would open the relay; and a range
    that is not private opens it to the internet unless the admin says it is theirs."""
    if not cidrs:
        return None
    if adding and settings.smtp_proxy_cidrs:
        raise ConfigError(
            "SCANGW_SMTP_PROXY_CIDRS",
            "--from-ip cannot be used while it is set: behind a TCP proxy (e.g. Container Apps ingress) every "
            "client appears with the proxy's address. Use device credentials instead.",
        )
    return [check_from_ip(cidr, allow_public) for cidr in cidrs]


async def _with_services(settings: Settings) -> Services:
    return await build(settings)


def store_missing(settings: Settings) -> bool:
    """True when the embedded spool's folder holds no store: admin commands then report, never create one."""
    local = settings.local_dir
    return local is not None and not (local / "spool.db").is_file()


def no_store(settings: Settings) -> str:
    return (
        f"there is no store at {settings.store_label} yet (`scangw dev` or `scangw devices add` creates it; "
        "SCANGW_STORAGE chooses another)"
    )


async def devices(args: argparse.Namespace, settings: Settings) -> int:
    if args.action != "add" and store_missing(settings):
        if args.action != "list":
            raise MalformedInput(f"No device named '{args.name}': {no_store(settings)}.")
        if args.json:
            _print_json([])
        print(f"No devices: {no_store(settings)}.", file=sys.stderr)
        return 0
    svc = await _with_services(settings)
    try:
        registry = svc.registry
        if args.action == "add":
            check_name(args.name)
            device, password = await registry.add(args.name, **_device_fields(args, settings))
            _credentials(device, password, args.json)
        elif args.action == "update":
            device = await registry.update(args.name, **_device_fields(args, settings))
            print(json.dumps(device.public(), indent=2))
        elif args.action == "rotate":
            device, password = await registry.rotate(args.name)
            _credentials(device, password, args.json)
        elif args.action == "revoke":
            await registry.revoke(args.name)
            print(f"device {args.name} revoked")
        elif args.action == "show" and args.sheet:
            from gateway.setup_sheet import endpoints_from_settings, sheet

            print(sheet(await registry.require(args.name), endpoints_from_settings(settings)))
        elif args.action == "show":
            print(json.dumps((await registry.require(args.name)).public(), indent=None if args.json else 2))
        else:
            listed = [d.public() for d in await registry.list()]
            if args.json:
                _print_json(listed)
            elif not listed:
                print(f"No devices in the store at {settings.store_label}: scangw devices add NAME", file=sys.stderr)
            else:
                for d in listed:
                    state = "revoked" if d["revoked"] else "active"
                    to = d["default_to"] or "-"
                    print(f"{d['name']:<24} {state:<8} sender={d['sender'] or '(default)'} default_to={to}")
        return 0
    finally:
        await svc.close()


async def jobs(args: argparse.Namespace, settings: Settings) -> int:
    if store_missing(settings):
        if args.action != "list":
            raise MalformedInput(f"No job {args.id}: {no_store(settings)}.")
        if args.json:
            _print_json([])
        print(f"No jobs: {no_store(settings)}.", file=sys.stderr)
        return 0
    svc = await _with_services(settings)
    try:
        if args.action == "list":
            listed = await svc.jobs.list(JobState(args.state) if args.state else None)
            if args.json:
                _print_json([j.summary() for j in listed])
            elif not listed:
                print(f"No jobs in the store at {settings.store_label}.", file=sys.stderr)
            else:
                print(job_table(listed, datetime.now(UTC)))
        elif args.action == "show":
            found = await svc.jobs.get(args.id)
            if found is None:
                raise MalformedInput(f"No job {args.id} in the store at {settings.store_label}. See: scangw jobs list")
            detail = {**found.summary(), "files": [f.name for f in found.files]}
            print(json.dumps(detail, indent=None if args.json else 2, ensure_ascii=False))
        else:
            from gateway.delivery.requeue import retry_job

            retried = await retry_job(svc, args.id, now=args.now)
            print(f"job {retried.id} queued again" + (" to run now" if args.now else ""))
        return 0
    finally:
        await svc.close()


async def sweep(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.delivery.retention import mailbox_housekeeper
    from gateway.delivery.retention import sweep as run_sweep
    from gateway.delivery.transports import make_transport

    if store_missing(settings):
        print(f"Nothing to sweep: {no_store(settings)}.")
        return 0

    svc = await _with_services(settings)
    transport = make_transport(svc.settings, svc.spool)
    housekeeper, problem = await mailbox_housekeeper(transport, settings)
    try:
        report = await run_sweep(svc, housekeeper=housekeeper)
        if problem:
            print(f"scangw: mailboxes not swept (bounces, orphan drafts): {problem}", file=sys.stderr)
        if report.mail is not None:
            print(
                f"mailboxes: {report.mail.bounced} bounced jobs, {report.mail.drafts_deleted} orphan drafts deleted, "
                f"{report.mail.uploads_cancelled} upload sessions cancelled"
            )
        print(
            f"retention: {report.bytes_deleted} scans' bytes, {report.records_deleted} job records, "
            f"{report.orphans_deleted} orphans, {report.temporary_deleted} temporary files deleted"
        )
        print(
            f"queued jobs no queue message would bring back: {report.requeued} re-queued, {report.stale_removed} removed"
        )
        return 1 if problem else 0
    finally:
        await transport.close()
        await svc.close()
