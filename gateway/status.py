"""`scangw status`: the workbook's figures for sites without Azure, read from the spool itself.

Queue depth and oldest unfinished job, each sender mailbox's shared Graph budget (slots in use, Retry-After
window, next send slot), jobs by state over the last 24 h, devices with when each last sent a scan, and the
SMTP door's TLS certificate expiry. The same oldest-job figure feeds the `scangw.queue.oldest_age` gauge.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from gateway.config import Settings
from gateway.core.jobs import Job, JobState, iso, parse_iso
from gateway.core.mailbox_ledger import Ledger
from gateway.delivery.graph.mailbox_limits import CONCURRENT_PER_MAILBOX
from gateway.services import Services, build

DAY = 86400.0


def oldest_unfinished(jobs: list[Job], now: float) -> tuple[Job | None, float]:
    """The oldest job still `queued` or `sending`, and its age in seconds (0 when none)."""
    waiting = [j for j in jobs if not j.state.final]
    if not waiting:
        return None, 0.0
    oldest = min(waiting, key=lambda j: j.created)
    return oldest, max(0.0, now - parse_iso(oldest.created).timestamp())


async def measure_queue(services: Services, now: float | None = None) -> float:
    """Read the oldest unfinished job's age into the gauge (a no-op read is skipped when export is off)."""
    from gateway.telemetry import metrics

    if not metrics.enabled():
        return 0.0
    _, age = oldest_unfinished(await services.jobs.list(), time.time() if now is None else now)
    metrics.queue_oldest_age(age)
    return age


def _when(moment: float) -> str | None:
    return iso(datetime.fromtimestamp(moment, UTC)) if moment > 0 else None


async def figures(services: Services, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    jobs = await services.jobs.list()
    mailboxes = []
    # The ledger records are keyed by mailbox and do not name it: ask for every mailbox a job was sent from.
    names = {j.sender.lower() for j in jobs if j.sender}
    if services.settings.sender:
        names.add(services.settings.sender.lower())
    for name in sorted(names):
        record = await services.spool.mailboxes.get(name)
        if record is None:
            continue
        ledger = Ledger.from_record(record.data).live(now)
        mailboxes.append(
            {
                "mailbox": name,
                "slots_in_use": len(ledger.slots),
                "slots": CONCURRENT_PER_MAILBOX,
                "retry_after_until": _when(ledger.blocked_until) if ledger.blocked_until > now else None,
                "retry_after_seconds": round(max(0.0, ledger.blocked_until - now), 1),
                "next_send": _when(ledger.next_send) if ledger.next_send > now else None,
            }
        )
    return summary(jobs, await services.registry.list(), mailboxes, services.settings, now)


def summary(
    jobs: list[Job], registered: list[Any], mailboxes: list[dict[str, Any]], settings: Settings, now: float
) -> dict[str, Any]:
    """The figures `status` prints, from what the store holds (all empty for a store not made yet)."""
    oldest, age = oldest_unfinished(jobs, now)
    recent = [j for j in jobs if now - parse_iso(j.created).timestamp() <= DAY]
    by_state = Counter(j.state.value for j in recent)
    last_seen: dict[str, str] = {}
    for job in jobs:
        if job.created > last_seen.get(job.device, ""):
            last_seen[job.device] = job.created
    devices = [
        {
            "name": d.name,
            "revoked": d.revoked,
            "last_seen": last_seen.get(d.name),
            "silent_days": round((now - parse_iso(last_seen[d.name]).timestamp()) / DAY, 1)
            if d.name in last_seen
            else None,
        }
        for d in registered
    ]
    return {
        "queue": {
            "depth": sum(1 for j in jobs if not j.state.final),
            "oldest_job": oldest.id if oldest else None,
            "oldest_age_seconds": round(age, 1),
        },
        "mailboxes": mailboxes,
        "jobs_last_24h": {state.value: by_state.get(state.value, 0) for state in JobState},
        "devices": devices,
        "tls": _tls(settings, now),
    }


def _tls(settings: Settings, now: float) -> dict[str, Any] | None:
    if settings.smtp_tls_cert is None:
        return None
    from gateway.telemetry.certificates import days_until, not_after

    expiry = not_after(settings.smtp_tls_cert)  # one read and parse of the PEM file
    return {
        "certificate": str(settings.smtp_tls_cert),
        "expires": iso(expiry) if expiry else None,
        "days_left": days_until(expiry, now) if expiry else None,
    }


def render(data: dict[str, Any]) -> str:
    """The figures as a few aligned lines for a terminal."""
    q = data["queue"]
    lines = [f"queue: {q['depth']} unfinished job(s)"]
    if q["oldest_job"]:
        lines[0] += f", oldest {q['oldest_job']} waiting {q['oldest_age_seconds'] / 60:.1f} min"
    states = ", ".join(f"{n} {s}" for s, n in data["jobs_last_24h"].items())
    lines.append(f"last 24 h: {states}")
    lines.append("mailboxes:" if data["mailboxes"] else "mailboxes: none used yet")
    for m in data["mailboxes"]:
        wait = f"Retry-After for {m['retry_after_seconds']:.0f} s" if m["retry_after_until"] else "no Retry-After"
        pace = f"next send {m['next_send']}" if m["next_send"] else "may send now"
        lines.append(f"  {m['mailbox']}: {m['slots_in_use']}/{m['slots']} slots in use, {wait}, {pace}")
    lines.append("devices:" if data["devices"] else "devices: none")
    for d in data["devices"]:
        seen = f"last scan {d['last_seen']} ({d['silent_days']} days ago)" if d["last_seen"] else "no scan yet"
        lines.append(f"  {d['name']}{' (revoked)' if d['revoked'] else ''}: {seen}")
    tls = data["tls"]
    if tls is None:
        lines.append("tls: no certificate configured")
    elif tls["expires"] is None:
        lines.append(f"tls: cannot read {tls['certificate']}")
    else:
        lines.append(f"tls: {tls['certificate']} expires {tls['expires']} ({tls['days_left']:.0f} days left)")
    return "\n".join(lines)


async def status(args: argparse.Namespace, settings: Settings) -> int:
    services = await build(settings)
    try:
        data = await figures(services)
    finally:
        await services.close()
    print(json.dumps(data, ensure_ascii=False) if args.json else render(data))
    return 0


def record_queue_age(jobs: list[Job], now: float) -> None:
    """Feed the gauge from a job list already in hand (the retention sweep lists every job anyway)."""
    from gateway.telemetry import metrics

    metrics.queue_oldest_age(oldest_unfinished(jobs, now)[1])


#: How often a long-running worker reads the oldest job's age (the stuck-queue alert looks at 30 minutes).
MEASURE_SECONDS = 300.0


async def keep_measuring(services: Services, stop: Any, every: float = MEASURE_SECONDS) -> None:
    """Measure the queue until `stop` is set; returns at once when export is off (nothing would read it)."""
    import asyncio
    import contextlib
    import logging

    from gateway.telemetry import metrics

    while metrics.enabled() and not stop.is_set():
        try:
            await measure_queue(services)
        except Exception as exc:  # noqa: BLE001 - a storage hiccup skips one reading, never the worker
            logging.getLogger("scangw.telemetry").warning("event=telemetry.queue_age result=failed error=%s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
