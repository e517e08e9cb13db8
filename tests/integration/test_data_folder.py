"""One data folder that does not move with the shell (issue 12 items 3, 6 and 7), through the real processes:
the default store, admin commands that never create an empty one, the lock that keeps a second `scangw dev`
off a running one, a revoked demo device that stays revoked, and a busy port that is one line and exit 2."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import free_port, gateway_process, poll

ENV_KEEP = ("PATH", "LANG", "PYTHONPATH", "VIRTUAL_ENV")


@pytest.fixture
def user_env(tmp_path: Path) -> dict[str, str]:
    """A user with a home of their own and no SCANGW_* setting: the defaults a newcomer meets."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k in ENV_KEEP}
    env.update(HOME=str(home), XDG_DATA_HOME=str(tmp_path / "data"))
    return env


def _run(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Like tests.support.scangw, but with exactly this environment (no SCANGW_* leaking in)."""
    import sys

    from tests.support import ROOT

    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _credentials(proc: subprocess.Popen[str]) -> tuple[str, str, list[str]]:
    assert proc.stdout is not None
    fields: dict[str, str] = {}
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line)
        key, _, value = line.strip().partition(": ")
        if key in ("device username", "device password"):
            fields[key] = value
        if "try: curl" in line:
            return fields["device username"], fields["device password"], lines
    raise AssertionError(f"scangw dev printed no credentials: {''.join(lines)}")


@pytest.fixture
def dev_ports() -> Iterator[tuple[str, ...]]:
    smtp_port, http_port = free_port(), free_port()
    yield ("--smtp-listen", f"127.0.0.1:{smtp_port}", "--http-listen", f"127.0.0.1:{http_port}", str(http_port))


def test_the_default_store_does_not_move_with_the_current_directory(tmp_path: Path, user_env: dict[str, str]) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    added = _run("devices", "add", "mfp", "--default-to", "a@example.com", env=user_env, cwd=here)
    assert added.returncode == 0, added.stderr
    listed = _run("devices", "list", env=user_env, cwd=there)
    assert listed.returncode == 0 and listed.stdout.startswith("mfp"), listed.stdout + listed.stderr
    updated = _run("devices", "update", "mfp", "--add-allow-to", "b@example.com", env=user_env, cwd=there)
    assert updated.returncode == 0, updated.stderr
    assert (tmp_path / "data" / "scangw" / "spool.db").is_file()
    assert not (here / ".scangw").exists() and not (there / ".scangw").exists()


def test_admin_commands_never_create_an_empty_store(tmp_path: Path, user_env: dict[str, str]) -> None:
    nowhere = tmp_path / "typo"
    env = {**user_env, "SCANGW_STORAGE": f"local:{nowhere}"}
    for args, code in (
        (("devices", "list"), 0),
        (("jobs", "list"), 0),
        (("devices", "show", "mfp"), 1),
        (("devices", "update", "mfp", "--default-to", "a@example.com"), 1),
        (("devices", "rotate", "mfp"), 1),
        (("devices", "revoke", "mfp"), 1),
        (("jobs", "show", "0123abcd"), 1),
        (("jobs", "retry", "0123abcd"), 1),
        (("sweep",), 0),
        (("status",), 0),
        (("doctor",), 1),  # no sender, no outbox: a FAIL line, but no store created either
    ):
        out = _run(*args, env=env, cwd=tmp_path)
        assert out.returncode == code, (args, out.stdout, out.stderr)
        assert str(nowhere) in out.stdout + out.stderr, (args, out.stdout, out.stderr)
        assert "Traceback" not in out.stderr
        assert not nowhere.exists(), f"scangw {' '.join(args)} created an empty store"
    empty_json = _run("devices", "list", "--json", env=env, cwd=tmp_path)
    assert empty_json.stdout.strip() == "[]"
    status = json.loads(_run("status", "--json", env=env, cwd=tmp_path).stdout)  # the same keys, all empty
    assert status["queue"]["depth"] == 0 and status["devices"] == [] and status["mailboxes"] == []
    assert set(status["jobs_last_24h"]) == {"queued", "sending", "sent", "failed"}


def test_long_running_commands_say_which_store_they_use(tmp_path: Path, user_env: dict[str, str]) -> None:
    out = _run("worker", "--once", env=user_env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert str(tmp_path / "data" / "scangw") in out.stderr


def test_a_second_dev_names_the_running_one_and_exits_2(
    tmp_path: Path, user_env: dict[str, str], dev_ports: tuple[str, ...]
) -> None:
    *args, http_port = dev_ports
    url = f"http://127.0.0.1:{http_port}"
    with gateway_process("dev", *args, env=user_env, cwd=tmp_path, health_url=f"{url}/api/health") as first:
        user, password, _ = _credentials(first)
        other = ("--smtp-listen", f"127.0.0.1:{free_port()}", "--http-listen", f"127.0.0.1:{free_port()}")
        second = _run("dev", *other, env=user_env, cwd=tmp_path / "home")
        assert second.returncode == 2, second.stdout + second.stderr
        assert str(first.pid) in second.stderr and second.stderr.count("\n") == 1
        assert "Traceback" not in second.stderr
        # The running instance is untouched: its password still works.
        r = httpx.put(f"{url}/api/scans/a.pdf", params={"to": "me@example.com"}, content=b"%PDF", auth=(user, password))
        assert r.status_code == 202, r.text


def test_restarting_dev_keeps_a_revoked_demo_revoked(
    tmp_path: Path, user_env: dict[str, str], dev_ports: tuple[str, ...]
) -> None:
    *args, http_port = dev_ports
    url = f"http://127.0.0.1:{http_port}"
    with gateway_process("dev", *args, env=user_env, cwd=tmp_path, health_url=f"{url}/api/health") as proc:
        _credentials(proc)
    assert _run("devices", "revoke", "demo", env=user_env, cwd=tmp_path).returncode == 0
    with gateway_process("dev", *args, env=user_env, cwd=tmp_path, health_url=f"{url}/api/health") as proc:
        assert proc.stdout is not None
        banner = poll(lambda: proc.stdout.readline(), what="the banner")  # type: ignore[union-attr]
        lines = [banner]
        while "scangw devices add" not in lines[-1]:
            lines.append(proc.stdout.readline())
        text = "".join(lines)
        assert "revoked" in text and "device password" not in text
        r = httpx.put(f"{url}/api/scans/a.pdf", params={"to": "me@example.com"}, content=b"%PDF", auth=("demo", "x"))
        assert r.status_code == 401
    shown = _run("devices", "show", "demo", "--json", env=user_env, cwd=tmp_path)
    assert '"revoked": true' in shown.stdout


def test_the_banner_curl_command_works_as_printed(
    tmp_path: Path, user_env: dict[str, str], dev_ports: tuple[str, ...]
) -> None:
    *args, http_port = dev_ports
    url = f"http://127.0.0.1:{http_port}"
    (tmp_path / "scan.pdf").write_bytes(b"%PDF-1.4 test scan")
    with gateway_process("dev", *args, env=user_env, cwd=tmp_path, health_url=f"{url}/api/health") as proc:
        _, _, lines = _credentials(proc)
        [command] = [line.split("try: ", 1)[1] for line in lines if "try: curl" in line]
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert '"status":"queued"' in done.stdout.replace(" ", ""), done.stdout + done.stderr
        for line in lines:  # every URL the banner prints answers
            for word in line.split():
                if word.startswith("http://"):
                    assert httpx.get(word.strip("'\"")).status_code in (200, 401), word


@pytest.mark.parametrize(
    "command",
    [("http", "--listen"), ("smtp", "--listen"), ("dev", "--http-listen"), ("dev", "--smtp-listen")],
)
def test_a_busy_port_is_one_line_and_exit_2(tmp_path: Path, user_env: dict[str, str], command: tuple[str, str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        others = [] if command[0] != "dev" else ["--smtp-listen", f"127.0.0.1:{free_port()}"]
        if command[1] == "--smtp-listen":
            others = ["--http-listen", f"127.0.0.1:{free_port()}"]
        out = _run(command[0], *others, command[1], f"127.0.0.1:{port}", env=user_env, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and str(port) in out.stderr
    assert [line for line in out.stderr.splitlines() if line.startswith("scangw:")] == out.stderr.splitlines()[-1:]
