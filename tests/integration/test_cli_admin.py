"""The admin's traps (issue 12), each through the real `scangw` process: passwords that survive a paste,
usage errors that exit 2 with one line, additive allow-lists, and output that a pipe may cut short."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, local_env, scangw

#: Letters, digits and `-_.`: nothing a shell, a web form, a setup sheet or smtp://user:pass@host mangles.
SAFE_PASSWORD = re.compile(r"^[A-Za-z0-9._-]{16,20}$")


def _add(env: dict[str, str], name: str, *extra: str) -> dict[str, str]:
    out = scangw("devices", "add", name, "--json", *extra, env=env)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def _show(env: dict[str, str], name: str) -> dict[str, object]:
    out = scangw("devices", "show", name, "--json", env=env)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def test_generated_passwords_survive_a_shell_and_a_url(tmp_path: Path) -> None:
    env = local_env(tmp_path)
    passwords = [_add(env, "mfp", "--default-to", "a@example.com")["password"]]
    for _ in range(5):
        rotated = scangw("devices", "rotate", "mfp", "--json", env=env)
        passwords.append(json.loads(rotated.stdout)["password"])
    bad = [p for p in passwords if not SAFE_PASSWORD.match(p)]
    assert not bad, f"passwords with characters a shell or URL would mangle: {bad}"
    # Pasted into a shell between single quotes, as the banner and the README print it, it arrives intact.
    echoed = subprocess.run(["bash", "-c", f"printf %s '{passwords[0]}'"], capture_output=True, text=True)
    assert echoed.stdout == passwords[0]


@pytest.mark.parametrize("name", ["bad name", "a" * 65, "ünïcode", "a/b"])
def test_a_bad_device_name_is_a_usage_error(tmp_path: Path, name: str) -> None:
    out = scangw("devices", "add", name, env=local_env(tmp_path))
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def test_a_bad_from_ip_is_a_usage_error(tmp_path: Path) -> None:
    out = scangw("devices", "add", "lan", "--from-ip", "192.168.1.0/33", env=local_env(tmp_path))
    assert out.returncode == 2 and "192.168.1.0/33" in out.stderr and out.stderr.count("\n") == 1


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0", "8.8.8.0/24", "2a00:1450::/32"])
def test_a_public_from_ip_range_needs_the_explicit_risk_flag(tmp_path: Path, cidr: str) -> None:
    env = local_env(tmp_path)
    refused = scangw("devices", "add", "lan", "--from-ip", cidr, env=env)
    assert refused.returncode == 2, refused.stderr
    assert "open relay" in refused.stderr and "--i-understand-open-relay-risk" in refused.stderr
    assert scangw("devices", "list", "--json", env=env).stdout.strip() in ("", "[]")
    _add(env, "lan2", "--default-to", "a@example.com")
    refused = scangw("devices", "update", "lan2", "--add-from-ip", cidr, env=env)
    assert refused.returncode == 2 and "open relay" in refused.stderr
    assert _show(env, "lan2")["from_ip"] == []
    taken = scangw("devices", "add", "lan", "--from-ip", cidr, "--i-understand-open-relay-risk", env=env)
    assert taken.returncode == 0, taken.stderr


def test_private_from_ip_ranges_are_taken_without_the_flag(tmp_path: Path) -> None:
    env = local_env(tmp_path)
    _add(env, "lan", "--from-ip", "192.168.10.0/24", "--from-ip", "fd00::/8")
    assert _show(env, "lan")["from_ip"] == ["192.168.10.0/24", "fd00::/8"]


def test_from_ip_behind_a_tcp_proxy_is_a_configuration_error(tmp_path: Path) -> None:
    env = local_env(tmp_path, SCANGW_SMTP_PROXY_CIDRS="100.100.0.0/16")
    out = scangw("devices", "add", "lan1", "--from-ip", "192.168.1.0/24", env=env)
    assert out.returncode == 2 and "proxy" in out.stderr


def test_update_adds_and_removes_one_entry_and_keeps_the_rest(tmp_path: Path) -> None:
    env = local_env(tmp_path)
    _add(env, "mfp", "--allow-to", "*@contoso.com", "--allow-to", "boss@fabrikam.com", "--from-ip", "10.1.0.0/16")
    out = scangw(
        "devices", "update", "mfp", "--add-allow-to", "Ann@Example.com", "--add-from-ip", "10.2.0.0/16", env=env
    )
    assert out.returncode == 0, out.stderr
    shown = _show(env, "mfp")
    assert shown["allow_to"] == ["*@contoso.com", "boss@fabrikam.com", "Ann@example.com"]
    assert shown["from_ip"] == ["10.1.0.0/16", "10.2.0.0/16"]
    out = scangw(
        "devices", "update", "mfp", "--remove-allow-to", "BOSS@fabrikam.com", "--remove-from-ip", "10.1.0.0/16", env=env
    )
    assert out.returncode == 0, out.stderr
    shown = _show(env, "mfp")
    assert shown["allow_to"] == ["*@contoso.com", "Ann@example.com"] and shown["from_ip"] == ["10.2.0.0/16"]
    # Adding what is there changes nothing; removing what is not there says what the list holds.
    assert scangw("devices", "update", "mfp", "--add-allow-to", "*@contoso.com", env=env).returncode == 0
    assert _show(env, "mfp")["allow_to"] == ["*@contoso.com", "Ann@example.com"]
    missing = scangw("devices", "update", "mfp", "--remove-allow-to", "nobody@contoso.com", env=env)
    assert missing.returncode == 2 and "*@contoso.com" in missing.stderr
    both = scangw("devices", "update", "mfp", "--allow-to", "a@b.com", "--add-allow-to", "c@d.com", env=env)
    assert both.returncode == 2 and _show(env, "mfp")["allow_to"] == ["*@contoso.com", "Ann@example.com"]


def test_every_advice_to_allow_a_recipient_names_the_additive_form() -> None:
    """The refusal text devices show and the README's Troubleshooting table must never advise `--allow-to`,
    which replaces the list and makes the device refuse recipients that worked before."""
    from gateway.core.devices import Device, check_recipients
    from gateway.core.errors import RecipientNotAllowed

    device = Device(name="mfp", password_hash="", allow_to=("*@contoso.com",))
    with pytest.raises(RecipientNotAllowed) as refused:
        check_recipients(device, ["eve@evil.example"], None)
    assert "--add-allow-to eve@evil.example" in str(refused.value)
    readme = (ROOT / "README.md").read_text()
    assert not re.search(r"devices update \S+ --allow-to", readme)
    assert "--add-allow-to" in readme


def test_jobs_list_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`scangw jobs list | head -1`: the reader is gone before the output is flushed."""
    env = local_env(tmp_path)
    _add(env, "mfp", "--default-to", "a@example.com")
    for args in (("jobs", "list"), ("devices", "list")):
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", *args],
            env={**__import__("os").environ, **env},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 0, err
        assert "BrokenPipeError" not in err and "Traceback" not in err and "Exception ignored" not in err
