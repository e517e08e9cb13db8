"""The azd project file and the Exchange scoping scripts: what an admin runs after `azd up`.

No Exchange Online here, so the PowerShell script is read as text (its order of look-ups and grants); the
shell fallback is run for real, since without pwsh it only prints the steps.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from tests.infra.bicep import INFRA, ROOT

PS1 = INFRA / "scripts" / "grant-mailbox-access.ps1"
SH = INFRA / "scripts" / "grant-mailbox-access.sh"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
OBJECT_ID = "66666666-7777-8888-9999-000000000000"


def test_azure_yaml_deploys_the_function_app_and_the_smtp_container() -> None:
    text = (ROOT / "azure.yaml").read_text()
    assert re.search(r"^name: scangw$", text, re.M)
    api = re.search(r"^  api:\n((?:    .*\n)+)", text, re.M)
    smtp = re.search(r"^  smtp:\n((?:    .*\n|\s*#.*\n)+)", text, re.M)
    assert api and smtp
    assert {"project: .", "language: python", "host: function"} <= {line.strip() for line in api.group(1).splitlines()}
    assert "host: containerapp" in smtp.group(1) and "path: ./Dockerfile" in smtp.group(1)


def test_grant_script_scopes_both_mail_roles_to_the_given_mailboxes() -> None:
    text = PS1.read_text()
    for parameter in ("$ClientId", "$ObjectId", "$Mailbox"):
        assert f"[string] {parameter}" in text or f"[string[]] {parameter}" in text
    assert "'Application Mail.Send'" in text and "'Application Mail.ReadWrite'" in text
    assert "-CustomResourceScope $scopeName" in text
    assert "Test-ServicePrincipalAuthorization" in text
    # Least privilege: the script never grants the tenant-wide Entra (Graph) permissions.
    assert not re.search(r"New-Mg\w*AppRoleAssign|appRoleAssignedTo", text)


@pytest.mark.parametrize("noun", ["ServicePrincipal", "ManagementScope", "ManagementRoleAssignment"])
def test_grant_script_looks_up_before_it_creates(noun: str) -> None:
    text = PS1.read_text()
    assert text.index(f"Get-{noun} ") < text.index(f"New-{noun} "), f"New-{noun} is not guarded by Get-{noun}"


def shell_fallback(*mailboxes: str) -> str:
    if shutil.which("pwsh", path="/usr/bin:/bin"):
        pytest.skip("pwsh is installed, so the shell script would run the PowerShell script against Exchange")
    env = {"PATH": "/usr/bin:/bin", "CLIENT_ID": CLIENT_ID, "OBJECT_ID": OBJECT_ID, "HOME": os.environ.get("HOME", "/")}
    done = subprocess.run(
        ["bash", str(SH), *mailboxes], env=env, capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_shell_fallback_prints_the_same_steps_without_pwsh() -> None:
    out = shell_fallback("scanner@contoso.com", "o'brien@contoso.com")
    assert f"New-ServicePrincipal -AppId {CLIENT_ID} -ObjectId {OBJECT_ID}" in out
    assert "PrimarySmtpAddress -eq 'scanner@contoso.com' -or PrimarySmtpAddress -eq 'o''brien@contoso.com'" in out
    assert f"-ClientId {CLIENT_ID} -ObjectId {OBJECT_ID} -Mailbox 'scanner@contoso.com','o''brien@contoso.com'" in out
    assert out.count("New-ManagementRoleAssignment") == 2
    assert out.count("Test-ServicePrincipalAuthorization") == 2


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_shell_fallback_replaces_what_a_recreated_identity_left_behind_before_granting() -> None:
    """After `azd down` / `azd up` the old assignments keep their names: the steps remove those whose assignee is
    not this identity (app id and object id), and the old service principals, before creating anything."""
    out = shell_fallback("scanner@contoso.com")
    first_grant = out.index("New-ServicePrincipal")
    removal = out.index("Remove-ManagementRoleAssignment")
    stale_sp = out.index("Remove-ServicePrincipal")
    assert removal < first_grant and stale_sp < first_grant
    cleanup = out[:first_grant]
    assert "Get-ManagementRoleAssignment -Identity $n" in cleanup and "$a.RoleAssignee" in cleanup
    assert f"$sp.AppId -ne '{CLIENT_ID}' -or $sp.ObjectId -ne '{OBJECT_ID}'" in cleanup
    assert f"$_.AppId -ne '{CLIENT_ID}' -or $_.ObjectId -ne '{OBJECT_ID}'" in cleanup
    assert '"scangw-mail-send", "scangw-mail-readwrite"' in cleanup


def test_grant_script_compares_the_assignee_and_replaces_stale_grants() -> None:
    """The PowerShell script (no Exchange here, so read as text): whom an assignment names decides, not its name."""
    text = PS1.read_text()
    # "Ours" means both ids match: a re-created identity has a new client id and a new object id.
    assert re.search(
        r"\$principal\.AppId\)\s*-eq \$ClientId\s*-and\s*\(\[string\] \$principal\.ObjectId\)\s*-eq \$ObjectId", text
    )
    assert "$assignment.RoleAssignee" in text
    # Stale assignments and service principals go before anything is (re)created, and the run says what changed.
    stale_assignment = text.index("Remove-ManagementRoleAssignment -Identity $assignmentName")
    stale_principal = text.index("Remove-ServicePrincipal -Identity")
    create_principal = text.index("New-ServicePrincipal -AppId")
    create_assignment = text.index("New-ManagementRoleAssignment -Name")
    assert stale_assignment < stale_principal < create_principal < create_assignment
    assert "if (Test-OurPrincipal $assignee) { continue }" in text[:stale_assignment]
    assert "Exchange already knows app" not in text  # the old dead end: it told the admin to clean up by hand
    assert "Write-Host 'Changed:'" in text and "Nothing changed" in text
    assert text.count("$changes.Add(") >= 6  # every create, set and remove is reported


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_shell_fallback_explains_its_usage() -> None:
    done = subprocess.run(["bash", str(SH)], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2 and "usage:" in done.stderr
