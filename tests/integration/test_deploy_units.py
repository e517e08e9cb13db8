"""The systemd units in deploy/ (issue 12 item 10): each runs a real `scangw` command line, holds the
hardening options, shares one data folder, and `systemd-analyze verify` accepts it where systemd is installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import build_parser
from gateway.config import load_settings
from tests.support import ROOT

UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "RestrictNamespaces": "yes",
    "StateDirectory": "scangw",
    "UMask": "0077",
    "User": "scangw",
    "EnvironmentFile": "/etc/scangw/scangw.env",
}


def _directives(unit: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_there_is_a_unit_for_each_long_running_door_and_the_worker() -> None:
    assert [u.name for u in UNITS] == ["scangw-http.service", "scangw-smtp.service", "scangw-worker.service"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_each_unit_runs_a_valid_scangw_command_with_hardening(unit: Path) -> None:
    directives = _directives(unit)
    [exec_start] = directives["ExecStart"]
    binary, *args = exec_start.split()
    assert binary == "/opt/scangw/bin/scangw"
    parsed = build_parser().parse_args(args)  # exits 2 on a flag scangw does not take
    assert parsed.command == unit.stem.removeprefix("scangw-")
    for key, value in HARDENING.items():
        assert value in directives.get(key, []), f"{unit.name}: {key}={value} missing"
    assert directives["CapabilityBoundingSet"] in ([""], ["CAP_NET_BIND_SERVICE"])


def test_the_example_settings_are_valid_and_name_the_units_data_folder() -> None:
    env = {}
    for line in (ROOT / "deploy" / "systemd" / "scangw.env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    settings = load_settings(env)
    assert settings.local_dir == Path("/var/lib/scangw")  # StateDirectory=scangw


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    scangw = Path(sys.executable).parent / "scangw"
    for unit in UNITS:  # the same unit with this checkout's scangw in place of /opt/scangw
        (tmp_path / unit.name).write_text(unit.read_text().replace("/opt/scangw/bin/scangw", str(scangw)))
    units = [str(tmp_path / u.name) for u in UNITS]
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "Unknown key" not in out.stderr and "Failed" not in out.stderr, out.stderr
