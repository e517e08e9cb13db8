"""The few lines `scangw status` adds to the CLI, kept out of cli.py so the parser there stays a table."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gateway.config import Settings


def add_status_parser(sub: Any) -> None:
    p = sub.add_parser(
        "status", help="queue, mailbox budgets, jobs of the last 24 h, devices' last scan, TLS certificate expiry"
    )
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")


async def status_command(args: argparse.Namespace, settings: Settings) -> int:
    import json
    import time

    from gateway.admin import no_store, store_missing
    from gateway.status import status, summary

    if store_missing(settings):  # a read-only command never creates an empty store
        if args.json:  # the same keys as ever, all empty, so a script reading them never breaks
            print(json.dumps(summary([], [], [], settings, time.time()), ensure_ascii=False))
        print(f"scangw: nothing to report: {no_store(settings)}.", file=sys.stderr)
        return 0
    return await status(args, settings)


#: One-shot commands whose figures belong in Application Insights (the retention sweep reads the queue's age).
EXPORTING_COMMANDS = frozenset({"sweep"})


def export_for_command(command: str, settings: Settings) -> None:
    """Long-running commands start export with their logging; a one-shot `sweep` starts it here."""
    if command in EXPORTING_COMMANDS and settings.appinsights_connection_string:
        from gateway.telemetry.export import enable

        enable(settings, command)
