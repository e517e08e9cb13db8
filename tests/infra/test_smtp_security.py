"""The default deployment never accepts a password in clear text from the internet (issue 10 item 4).

The templates' decisions are evaluated for each combination an admin can choose (tests/infra/bicep.evaluate);
a Bicep `fail()` reached during evaluation is a deployment Azure would refuse, with that message.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("pycep", reason="pycep-parser is not installed (it parses the Bicep files)")

from gateway.config import load_settings  # noqa: E402
from tests.infra.bicep import INFRA, BicepFail, Template, evaluate, scope_of  # noqa: E402

FQDN = "ca-smtp-abc.bluesky-1234.westeurope.azurecontainerapps.io"
DOMAIN = "bluesky-1234.westeurope.azurecontainerapps.io"
OFFICE = ["203.0.113.0/24"]


def main_output(name: str, **values: Any) -> Any:
    main = Template("main.bicep")
    scope = scope_of(main, resourceToken="abc", **{"smtpEnvironment.outputs.defaultDomain": DOMAIN}, **values)
    return evaluate(main, main.outputs[name]["value"], scope)


def door_env(**values: Any) -> dict[str, str]:
    """The SMTP container's settings for the real image."""
    smtp = Template("app/smtp.bicep")
    scope = scope_of(
        smtp,
        image="cr.azurecr.io/smtp:1",
        **{"appInsights.properties.ConnectionString": "InstrumentationKey=0"},
        **values,
    )
    (container,) = evaluate(smtp, smtp.module_params("app"), scope)["containers"]
    return {e["name"]: e["value"] for e in container["env"]}


def test_by_default_the_door_has_a_certificate_for_its_own_name_and_refuses_auth_before_tls() -> None:
    hosts = main_output("SMTP_HOST_NAMES")
    assert hosts == FQDN == main_output("SMTP_FQDN")
    assert main_output("SMTP_PLAINTEXT_AUTH_ALLOWED") is False
    env = door_env(selfSignedHosts=hosts)
    assert env["SCANGW_SMTP_TLS_SELF_SIGNED"] == hosts
    assert env["SCANGW_SMTP_REQUIRE_TLS_AUTH"] == "1"
    assert "SCANGW_SMTP_TLS_CERT" not in env


def test_a_custom_domain_comes_first_in_the_self_signed_certificate() -> None:
    hosts = main_output("SMTP_HOST_NAMES", smtpHostName="smtp.contoso.com")
    assert hosts == f"smtp.contoso.com,{FQDN}"


def test_the_admins_certificate_replaces_the_self_signed_one() -> None:
    env = door_env(tlsEnabled=True, keyVaultUri="https://kv.vault.azure.net/", selfSignedHosts="")
    assert env["SCANGW_SMTP_TLS_CERT"] == "/mnt/tls/tls.crt" and env["SCANGW_SMTP_TLS_KEY"] == "/mnt/tls/tls.key"
    assert "SCANGW_SMTP_TLS_SELF_SIGNED" not in env
    assert env["SCANGW_SMTP_REQUIRE_TLS_AUTH"] == "1"


@pytest.mark.parametrize("deploy", [True, False])
def test_plaintext_auth_from_any_address_refuses_to_deploy(deploy: bool) -> None:
    """The open combination stops `azd provision` (main.bicep) and `azd deploy` (app/smtp.bicep) alike."""
    if deploy:
        with pytest.raises(BicepFail, match="smtpAllowedCidrs"):
            main_output("SMTP_PLAINTEXT_AUTH_ALLOWED", smtpAllowPlaintextAuth=True, smtpAllowedCidrs=[])
    else:  # no SMTP door at all: nothing to refuse
        assert main_output("SMTP_PLAINTEXT_AUTH_ALLOWED", deploySmtp=False, smtpAllowPlaintextAuth=True) is True
    with pytest.raises(BicepFail, match="allowedCidrs"):
        door_env(allowPlaintextAuth=True, allowedCidrs=[], selfSignedHosts=FQDN)


def test_plaintext_auth_only_with_the_explicit_switch_and_source_ranges() -> None:
    assert main_output("SMTP_PLAINTEXT_AUTH_ALLOWED", smtpAllowPlaintextAuth=True, smtpAllowedCidrs=OFFICE) is True
    assert main_output("SMTP_ALLOWED_CIDRS", smtpAllowedCidrs=OFFICE) == "203.0.113.0/24"
    env = door_env(allowPlaintextAuth=True, allowedCidrs=OFFICE, selfSignedHosts=FQDN)
    assert env["SCANGW_SMTP_REQUIRE_TLS_AUTH"] == "0"
    assert env["SCANGW_SMTP_TLS_SELF_SIGNED"] == FQDN  # TLS stays offered to devices that can use it


def test_a_door_without_any_certificate_refuses_to_deploy() -> None:
    with pytest.raises(BicepFail, match="selfSignedHosts"):
        door_env(tlsEnabled=False, selfSignedHosts="")


def test_the_plaintext_switch_is_off_unless_the_admin_sets_it() -> None:
    main = Template("main.bicep")
    assert main.default("smtpAllowPlaintextAuth") is False and main.default("smtpAllowedCidrs") == []
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert parameters["smtpAllowPlaintextAuth"]["value"] == "${SCANGW_SMTP_ALLOW_PLAINTEXT_AUTH=false}"
    deployed = json.loads((INFRA / "smtp.parameters.json").read_text())["parameters"]
    assert deployed["allowPlaintextAuth"]["value"] == "${SMTP_PLAINTEXT_AUTH_ALLOWED=false}"
    assert deployed["hostNames"]["value"] == "${SMTP_HOST_NAMES=}"


def test_the_gateway_reads_the_default_settings_as_tls_required() -> None:
    """The settings the template writes mean to the gateway what the template means by them."""
    env = door_env(selfSignedHosts=FQDN)
    env["SCANGW_STORAGE__clientId"] = env["AZURE_CLIENT_ID"] = "00000000-0000-0000-0000-000000000001"
    env["SCANGW_SENDER"] = "scanner@contoso.com"
    settings = load_settings(env)
    assert settings.smtp_require_tls_auth is True
    assert settings.smtp_tls_self_signed == (FQDN,)
