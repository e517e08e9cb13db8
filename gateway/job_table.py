"""`scangw jobs list` for a person: one row per job with when, how long ago, from which device, what, where it
stands and why. Scripts use `--json`; this layout may change."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from gateway.core.jobs import Job, parse_iso

SUBJECT_WIDTH = 32
DEVICE_WIDTH = 16


def age(seconds: float) -> str:
    """Coarse and short, like `ps`/`docker ps`: 45s, 12m, 5h, 3d."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def subject_of(job: Job) -> str:
    """SMTP jobs learn their subject when the message is read; until then it is in the parsed record, if any."""
    subject = job.subject or (job.progress.get("parsed") or {}).get("subject") or ""
    return " ".join(str(subject).split())


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def job_table(jobs: Sequence[Job], now: datetime) -> str:
    rows = [("ID", "TIME (UTC)", "AGE", "DEVICE", "STATE", "SUBJECT", "REASON")]
    for job in jobs:
        created = parse_iso(job.created)
        rows.append(
            (
                job.id,
                created.strftime("%Y-%m-%d %H:%M:%S"),
                age((now - created).total_seconds()),
                _cut(job.device, DEVICE_WIDTH),
                job.state.value,
                _cut(subject_of(job), SUBJECT_WIDTH) or "-",
                " ".join((job.error or "").split()),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return (
        "\n".join(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1]
            for row in rows
        )
        .replace("  \n", "\n")
        .rstrip()
    )
