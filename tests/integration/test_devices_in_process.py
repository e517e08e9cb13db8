"""`scangw devices` run in this process (gateway.cli.main) against the embedded spool: what the admin reads and
what is stored when a name or a `--from-ip` range is refused, and when one list entry is added or removed.
tests/integration/test_cli_admin.py checks the same through a real subprocess; these let mutation testing
see gateway/core/devices.py's admin rules (docs/mutation.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.core.errors import AuthenticationFailed
from gateway.services import build
from tests.support import local_env, run, settings_for

PASSWORD = re.compile(r"^[A-Za-z0-9._-]{20}$")
OPEN_RELAY = (
    "is not a private range: every client in it could send through the gateway without a password, an open relay "
    "for the internet."
)


def scangw(capsys: pytest.CaptureFixture[str], env: dict[str, str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv), env=env)
    out, err = capsys.readouterr()
    return code, out, err


def stored(tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Every device as the store holds it (the hash included), read without the CLI."""

    async def read() -> dict[str, dict[str, Any]]:
        svc = await build(settings_for(tmp_path))
        try:
            return {d.name: d.to_record() for d in await svc.registry.list()}
        finally:
            await svc.close()

    return run(read())


def test_a_bad_name_is_refused_in_one_line_and_nothing_is_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = local_env(tmp_path)
    assert scangw(capsys, env, "devices", "add", "first", "--default-to", "a@example.com")[0] == 0
    code, out, err = scangw(capsys, env, "devices", "add", "bad name", "--default-to", "a@example.com")
    assert (code, out) == (2, "")
    assert err == (
        "scangw: 'bad name' is not a valid device name: use letters, digits, '.', '_' or '-' (at most 64 characters).\n"
    )
    assert list(stored(tmp_path)) == ["first"]


def test_a_new_device_gets_a_password_that_logs_in_and_is_stored_only_as_a_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = local_env(tmp_path)
    code, out, _ = scangw(capsys, env, "devices", "add", "mfp1", "--json", "--default-to", "a@example.com")
    password = json.loads(out)["password"]
    assert code == 0 and PASSWORD.match(password)
    code, out, _ = scangw(capsys, env, "devices", "rotate", "mfp1", "--json")
    rotated = json.loads(out)["password"]
    assert code == 0 and PASSWORD.match(rotated) and rotated != password
    record = stored(tmp_path)["mfp1"]
    assert password not in json.dumps(record) and rotated not in json.dumps(record)

    async def logins() -> None:
        svc = await build(settings_for(tmp_path))
        try:
            assert (await svc.registry.verify("mfp1", rotated)).name == "mfp1"
            with pytest.raises(AuthenticationFailed):
                await svc.registry.verify("mfp1", password)  # the rotated-away password no longer logs in
        finally:
            await svc.close()

    run(logins())


@pytest.mark.parametrize("cidr", ["8.8.8.0/24", "0.0.0.0/0", "2a00:1450::/32"])
def test_a_public_from_ip_is_refused_on_add_and_on_update_and_never_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cidr: str
) -> None:
    """Security: a public range would let anyone in it send without a password."""
    env = local_env(tmp_path)
    code, out, err = scangw(capsys, env, "devices", "add", "lan", "--from-ip", cidr)
    assert (code, out) == (2, "") and err.startswith(f"scangw: --from-ip {cidr} {OPEN_RELAY}")
    assert "--i-understand-open-relay-risk" in err and err.count("\n") == 1
    assert scangw(capsys, env, "devices", "add", "mfp", "--from-ip", "10.0.0.0/8")[0] == 0
    code, _, err = scangw(capsys, env, "devices", "update", "mfp", "--add-from-ip", cidr)
    assert code == 2 and err.startswith(f"scangw: --from-ip {cidr} {OPEN_RELAY}")
    code, _, err = scangw(capsys, env, "devices", "update", "mfp", "--from-ip", cidr)
    assert code == 2 and OPEN_RELAY in err
    assert {name: d["from_ip"] for name, d in stored(tmp_path).items()} == {"mfp": ["10.0.0.0/8"]}


def test_a_public_range_is_stored_when_the_admin_accepts_the_risk_and_removed_without_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = local_env(tmp_path)
    risk = "--i-understand-open-relay-risk"
    assert scangw(capsys, env, "devices", "add", "lan", "--from-ip", "203.0.113.9/24", risk)[0] == 0
    assert stored(tmp_path)["lan"]["from_ip"] == ["203.0.113.0/24"]
    code, _, err = scangw(capsys, env, "devices", "update", "lan", "--remove-from-ip", "203.0.113.0/24")
    assert code == 0, err  # taking an open range away needs no flag
    assert stored(tmp_path)["lan"]["from_ip"] == []


def test_from_ip_ranges_are_stored_as_the_networks_the_admin_meant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = local_env(tmp_path)
    code, _, err = scangw(
        capsys, env, "devices", "add", "lan", "--from-ip", "192.168.10.7/24", "--from-ip", "fd00::1/8"
    )
    assert code == 0, err
    assert stored(tmp_path)["lan"]["from_ip"] == ["192.168.10.0/24", "fd00::/8"]
    code, _, err = scangw(capsys, env, "devices", "add", "bad", "--from-ip", "192.168.1.0/33")
    assert (code, err) == (2, "scangw: --from-ip '192.168.1.0/33' is not an address or CIDR like 192.168.1.0/24.\n")
    assert list(stored(tmp_path)) == ["lan"]


def test_update_edits_one_entry_of_each_list_and_keeps_the_rest_in_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = local_env(tmp_path)
    allow = ["--allow-to", "*@contoso.com", "--allow-to", "boss@fabrikam.com", "--allow-to", "c@contoso.com"]
    nets = ["--from-ip", "10.1.0.0/16", "--from-ip", "10.2.0.0/16", "--from-ip", "10.3.0.0/16"]
    assert scangw(capsys, env, "devices", "add", "mfp", *allow, *nets)[0] == 0
    code, out, err = scangw(
        capsys, env, "devices", "update", "mfp",
        "--remove-allow-to", "BOSS@fabrikam.com", "--add-allow-to", "Ann@Example.com", "--add-allow-to", "*@CONTOSO.com",
        "--remove-from-ip", "10.2.0.9/16", "--add-from-ip", "10.4.0.1/16", "--add-from-ip", "10.1.7.7/16",
    )  # fmt: skip
    assert code == 0, err
    shown = json.loads(out)
    assert shown["allow_to"] == ["*@contoso.com", "c@contoso.com", "Ann@example.com"]
    assert shown["from_ip"] == ["10.1.0.0/16", "10.3.0.0/16", "10.4.0.0/16"]
    record = stored(tmp_path)["mfp"]
    assert (record["allow_to"], record["from_ip"]) == (shown["allow_to"], shown["from_ip"])


def test_removing_what_the_device_does_not_hold_says_what_it_holds_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = local_env(tmp_path)
    assert (
        scangw(capsys, env, "devices", "add", "mfp", "--allow-to", "*@contoso.com", "--from-ip", "10.1.0.0/16")[0] == 0
    )
    before = stored(tmp_path)["mfp"]
    code, _, err = scangw(capsys, env, "devices", "update", "mfp", "--remove-from-ip", "10.1.0.0/17")
    assert (code, err) == (
        2,
        "scangw: --remove-from-ip 10.1.0.0/17: the device has no such entry (it holds 10.1.0.0/16).\n",
    )
    code, _, err = scangw(
        capsys, env, "devices", "update", "mfp", "--add-allow-to", "a@example.com", "--remove-allow-to", "x@contoso.com"
    )
    assert (code, err) == (
        2,
        "scangw: --remove-allow-to x@contoso.com: the device has no such entry (it holds *@contoso.com).\n",
    )
    assert stored(tmp_path)["mfp"] == before


def test_show_and_list_give_the_username_the_device_logs_in_with_and_never_the_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = local_env(tmp_path)
    assert scangw(capsys, env, "devices", "add", "Floor2-MFP", "--default-to", "a@example.com")[0] == 0
    code, out, _ = scangw(capsys, env, "devices", "show", "floor2-mfp", "--json")
    shown = json.loads(out)
    assert code == 0 and shown["username"] == "Floor2-MFP" and shown["default_to"] == "a@example.com"
    assert "password_hash" not in shown and "extra" not in shown
    code, out, _ = scangw(capsys, env, "devices", "list", "--json")
    assert code == 0 and json.loads(out) == [shown]
