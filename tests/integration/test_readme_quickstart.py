"""The README's Quick start, run as written (issue 12 item 2): the commands a newcomer pastes after `make dev`
make a scan.pdf, upload it with curl, send it with swaks, and list the jobs, against the real `scangw dev`."""

from __future__ import annotations

import email
import email.policy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, free_port, gateway_process, poll


def _quick_start_commands() -> str:
    section = (ROOT / "README.md").read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    [commands] = [b for b in blocks if "curl" in b]
    return commands


def test_the_quick_start_commands_work_as_written(tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl not installed")
    commands = _quick_start_commands()
    assert "@scan.pdf" in commands and "--attach-name scan.pdf" in commands and ".venv/bin/scangw" in commands
    has_swaks = shutil.which("swaks") is not None
    if not has_swaks:  # Debian/Homebrew package; CI installs it
        commands = re.sub(r"swaks .*?\n(?=\S)", "", commands, flags=re.S)
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path / "data"))
    smtp_port, http_port = free_port(), free_port()
    args = ("dev", "--smtp-listen", f"127.0.0.1:{smtp_port}", "--http-listen", f"127.0.0.1:{http_port}")
    url = f"http://127.0.0.1:{http_port}"
    with gateway_process(*args, env=env, cwd=tmp_path, health_url=f"{url}/api/health") as proc:
        assert proc.stdout is not None
        password = next(line for line in proc.stdout if "device password:" in line).split(": ", 1)[1].strip()
        script = (
            commands.replace("PASSWORD", password)
            .replace("127.0.0.1:8080", f"127.0.0.1:{http_port}")
            .replace("127.0.0.1:2525", f"127.0.0.1:{smtp_port}")
            .replace(".venv/bin/scangw", str(Path(sys.executable).parent / "scangw"))
        )
        done = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        assert '"status":"queued"' in done.stdout.replace(" ", "")
        outbox = tmp_path / "data" / "scangw" / "outbox"
        expected = 2 if has_swaks else 1
        poll(lambda: len(list(outbox.glob("*.eml"))) == expected, timeout=60, what="the scans in the outbox")
    names = set()
    for path in outbox.glob("*.eml"):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        names |= {part.get_filename() for part in message.iter_attachments()}  # type: ignore[attr-defined]
    assert names == {"scan.pdf"}  # never "@scan.pdf"
    assert "ID" in done.stdout and "STATE" in done.stdout  # the jobs table
