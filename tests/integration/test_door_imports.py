"""The SMTP door carries only what it uses: no Graph SDK (delivery runs elsewhere) and no telemetry exporter
without a connection string. Each would add tens of MiB to every door process and seconds to its start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

_SCRIPT = """
import asyncio, json, sys
from gateway.config import load_settings
from gateway.intake import smtp
from gateway.services import build
from gateway.telemetry import configure_logging

async def main():
    settings = load_settings({"SCANGW_STORAGE": "local:" + sys.argv[1], "SCANGW_SMTP_REQUIRE_TLS_AUTH": "0"})
    configure_logging(settings)
    services = await build(settings)
    server = smtp.SmtpServer(settings, services)
    await server.start([("127.0.0.1", 0)], [])
    await server.stop()
    await services.close()

asyncio.run(main())
print(json.dumps(sorted(sys.modules)))
"""


def test_a_running_smtp_door_has_no_graph_sdk_and_no_exporter_loaded(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no APPLICATIONINSIGHTS_CONNECTION_STRING
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path / "spool")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    modules = json.loads(done.stdout.strip().splitlines()[-1])
    assert "aiosmtpd.smtp" in modules  # it did load the door
    heavy = ("msgraph", "kiota_", "msgraph_core", "azure.monitor", "opentelemetry", "azure.identity", "httpx")
    assert [m for m in modules if m.startswith(heavy)] == []
