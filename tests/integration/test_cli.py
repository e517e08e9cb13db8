"""The `scangw` CLI as an admin uses it: JSON output, exit codes 0/1/2, one actionable line on error."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support import local_env, scangw


def test_device_lifecycle(tmp_path: Path) -> None:
    env = local_env(tmp_path, SCANGW_SENDER="scanner@contoso.com")
    added = scangw(
        "devices",
        "add",
        "MFP-1",
        "--default-to",
        "me@contoso.com",
        "--allow-to",
        "*@contoso.com",
        "--sender-name",
        "Floor 1",
        "--json",
        env=env,
    )
    assert added.returncode == 0, added.stderr
    creds = json.loads(added.stdout)
    assert set(creds) == {"username", "password"} and creds["username"] == "MFP-1"
    assert len(creds["password"]) <= 20
    listed = json.loads(scangw("devices", "list", "--json", env=env).stdout)
    assert [(d["name"], d["default_to"], d["allow_to"], d["revoked"]) for d in listed] == [
        ("MFP-1", "me@contoso.com", ["*@contoso.com"], False)
    ]
    assert "password_hash" not in json.dumps(listed) and creds["password"] not in json.dumps(listed)
    rotated = json.loads(scangw("devices", "rotate", "MFP-1", "--json", env=env).stdout)
    assert rotated["username"] == "MFP-1" and rotated["password"] != creds["password"]
    assert scangw("devices", "revoke", "MFP-1", env=env).returncode == 0
    shown = json.loads(scangw("devices", "show", "MFP-1", env=env).stdout)
    assert shown["revoked"] is True


def test_password_is_stored_hashed(tmp_path: Path) -> None:
    env = local_env(tmp_path)
    creds = json.loads(scangw("devices", "add", "mfp2", "--default-to", "a@b.com", "--json", env=env).stdout)
    database = (tmp_path / "spool" / "spool.db").read_bytes()
    assert creds["password"].encode() not in database
    assert b"$argon2" in database


def test_duplicate_device_is_a_runtime_error_with_a_sentence(tmp_path: Path) -> None:
    env = local_env(tmp_path)
    assert scangw("devices", "add", "mfp3", env=env).returncode == 0
    again = scangw("devices", "add", "mfp3", env=env)
    assert again.returncode == 1 and "exists already" in again.stderr and "Traceback" not in again.stderr


def test_bad_setting_exits_2_naming_it(tmp_path: Path) -> None:
    out = scangw("jobs", "list", env=local_env(tmp_path, SCANGW_MAX_MESSAGE_MB="500"))
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "SCANGW_MAX_MESSAGE_MB" in out.stderr


def test_usage_error_exits_2(tmp_path: Path) -> None:
    assert scangw("devices", "frobnicate", env=local_env(tmp_path)).returncode == 2


def test_every_command_has_help(tmp_path: Path) -> None:
    for command in (["dev"], ["smtp"], ["http"], ["worker"], ["devices", "add"], ["jobs", "list"], ["doctor"]):
        out = scangw(*command, "--help", env=local_env(tmp_path))
        assert out.returncode == 0 and "usage:" in out.stdout


def test_jobs_list_json_is_an_array_even_when_empty(tmp_path: Path) -> None:
    out = scangw("jobs", "list", "--json", env=local_env(tmp_path))
    assert out.returncode == 0 and json.loads(out.stdout) == []


def test_doctor_reports_a_bad_setting_as_fail_and_exits_1(tmp_path: Path) -> None:
    out = scangw("doctor", env=local_env(tmp_path, SCANGW_CLOUD="mars"))
    assert out.returncode == 1
    assert out.stdout.startswith("FAIL settings: SCANGW_CLOUD")


def test_doctor_passes_with_embedded_storage_and_outbox(tmp_path: Path) -> None:
    out = scangw("doctor", env=local_env(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert [line.split()[0] for line in out.stdout.splitlines()] == ["OK", "OK", "OK"]
