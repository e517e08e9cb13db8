"""What the Bicep templates promise an admin: no shared keys, least privilege per identity, the contract's names.

Every .bicep file under infra/ is parsed with pycep-parser (the Microsoft Graph extension file included); no
Bicep compiler runs here, so these are structural facts, not a build. See infra/README.md for the design.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "pycep", reason="pycep-parser is not installed (it parses the Bicep files): pip install -r requirements-dev.txt"
)

from gateway import config  # noqa: E402
from tests.infra.bicep import (  # noqa: E402
    INFRA,
    ROOT,
    Template,
    bicep_files,
    condition,
    dotted,
    evaluate,
    parse,
    scope_of,
    unwrap,
)

# Built-in role definition ids, the same in every tenant (shared/platform-facts.md section 7, AVM role tables).
BLOB_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
BLOB_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
BLOB_DELEGATOR = "db58b8e5-c6ad-4a2a-8342-4190687cbf4a"  # granted nowhere: Blob Data Owner already signs
QUEUE_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
QUEUE_SENDER = "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a"
TABLE_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
TABLE_READER = "76199698-9eea-4c19-bc75-cec21354c6b6"
METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
KV_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
GRAPH_MAIL_SEND = "b633e1c5-b582-4048-a93e-9f11b44c7e96"
GRAPH_MAIL_READWRITE = "e2a3a72e-5f79-4c64-b1b1-878b674786c9"

STORAGE_SETTING_SUFFIXES = ("credential", "clientId", "blobServiceUri", "queueServiceUri", "tableServiceUri")
SECRET_WORDS = re.compile(r"key(?!_?vault)|secret|password|connectionstring|sas\b|token|credential", re.IGNORECASE)
SECRET_CALLS = re.compile(r"\blist(Keys|Secrets|ConnectionStrings|AccountSas|ServiceSas)\s*\(|AccountKey=", re.I)


def main() -> Template:
    return Template("main.bicep")


def roles_of(template: Template, module: str, param: str) -> set[str]:
    return set(template.resolve(template.module_params(module).get(param, [])))


@pytest.mark.parametrize("path", bicep_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_every_bicep_file_parses(path: Path) -> None:
    assert parse(path)


def test_modules_are_local_files_or_pinned_verified_modules() -> None:
    for path in bicep_files():
        for symbol, module in parse(path).get("modules", {}).items():
            detail = module["detail"]
            if module["type"] == "local":
                assert (path.parent / detail["path"]).is_file(), f"{path.name}: {symbol} -> {detail['path']}"
            else:
                assert detail["path"].startswith("avm/res/"), f"{path.name}: {symbol} is not an AVM module"
                assert re.fullmatch(r"\d+\.\d+\.\d+", detail["tag"]), f"{path.name}: {symbol} is not pinned"


def test_storage_accepts_entra_tokens_only() -> None:
    account = Template("app/storage.bicep").module_params("account")
    assert account["allowSharedKeyAccess"] is False
    assert account["allowBlobPublicAccess"] is False
    assert account["minimumTlsVersion"] == "TLS1_2"
    assert account["supportsHttpsTrafficOnly"] is True


def test_no_template_reads_keys_or_builds_key_based_connection_strings() -> None:
    for path in [*bicep_files(), *INFRA.rglob("*.json")]:
        assert not SECRET_CALLS.search(path.read_text()), path


def test_storage_names_are_the_ones_the_gateway_uses() -> None:
    storage = Template("app/storage.bicep")
    account = storage.resolve(storage.module_params("account"))
    containers = {c["name"] for c in account["blobServices"]["containers"]}
    assert config.BLOB_CONTAINER == "scans" and "scans" in containers
    assert {q["name"] for q in account["queueServices"]["queues"]} == {config.QUEUE_NAME, config.POISON_QUEUE_NAME}
    assert {t["name"] for t in account["tableServices"]["tables"]} == {
        config.DEVICES_TABLE,
        config.JOBS_TABLE,
        config.MAILBOXES_TABLE,
    }
    assert all(c["publicAccess"] == "None" for c in account["blobServices"]["containers"])


def test_lifecycle_rule_deletes_stale_scans_after_the_failed_scan_retention() -> None:
    storage = Template("app/storage.bicep")
    (rule,) = storage.resolve(storage.module_params("account")["managementPolicyRules"])
    assert rule["enabled"] is True
    assert rule["definition"]["filters"]["prefixMatch"] == ["scans/"]
    assert rule["definition"]["actions"]["baseBlob"]["delete"] == {
        "daysAfterModificationGreaterThan": "scanBlobMaxAgeDays"
    }
    assert main().default("scanBlobMaxAgeDays") > 7  # SCANGW_KEEP_FAILED_DAYS default: jobs retry needs the bytes


@pytest.mark.parametrize("path", bicep_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_outputs_carry_no_secrets(path: Path) -> None:
    for name, output in parse(path).get("outputs", {}).items():
        assert not SECRET_WORDS.search(name), f"{path.name}: output {name}"
        assert not any(d["type"] == "secure" for d in output["decorators"]), f"{path.name}: output {name}"
        text = json.dumps(output["value"])
        assert "ConnectionString" not in text and "InstrumentationKey" not in text, f"{path.name}: output {name}"


def role_assignments() -> list[tuple[Path, str, dict[str, Any]]]:
    found = []
    for path in bicep_files():
        for symbol, resource in parse(path).get("resources", {}).items():
            if resource["type"] == "Microsoft.Authorization/roleAssignments":
                found.append((path, symbol, unwrap(resource)))
    return found


def test_role_assignment_names_are_guid_of_scope_principal_and_role() -> None:
    assignments = role_assignments()
    assert len(assignments) >= 10
    for path, symbol, body in assignments:
        guid = body["name"]["function"]
        role = body["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
        assert guid["type"] == "guid", f"{path.name}: {symbol}"
        assert guid["parameters"]["base_string"] == {
            "operator": {"type": "property_accessor", "operands": {"operand_1": body["scope"], "operand_2": "id"}}
        }, f"{path.name}: {symbol} is not named after its scope"
        assert guid["parameters"]["extra_string_1"] == body["properties"]["principalId"], f"{path.name}: {symbol}"
        assert guid["parameters"]["extra_string_2"] == role, f"{path.name}: {symbol}"
        assert body["properties"]["principalType"] in {
            "ServicePrincipal",
            "principalType",
            "pushPrincipalType",
            "officerPrincipalType",
        }, f"{path.name}: {symbol}"


def test_rbac_module_defaults_to_service_principals_and_identities_keep_it() -> None:
    assert Template("app/rbac.bicep").default("principalType") == "ServicePrincipal"
    for module in ("deliveryAccess", "intakeAccess"):
        assert "principalType" not in main().module_params(module), module


def test_main_role_table_is_the_documented_builtin_ids() -> None:
    assert main().resolve("roles") == {
        "storageBlobDataOwner": BLOB_OWNER,
        "storageBlobDataContributor": BLOB_CONTRIBUTOR,
        "storageQueueDataContributor": QUEUE_CONTRIBUTOR,
        "storageQueueDataMessageSender": QUEUE_SENDER,
        "storageTableDataContributor": TABLE_CONTRIBUTOR,
        "storageTableDataReader": TABLE_READER,
    }
    assert Template("app/rbac.bicep").resolve("monitoringMetricsPublisher") == METRICS_PUBLISHER
    assert Template("app/smtp-registry.bicep").resolve("acrPull") == ACR_PULL
    assert Template("app/smtp-keyvault.bicep").resolve("secretsUser") == KV_SECRETS_USER


def test_delivery_identity_gets_host_storage_queue_table_and_metrics() -> None:
    m = main()
    params = m.module_params("deliveryAccess")
    assert dotted(params["principalId"]) == "deliveryIdentity.outputs.principalId"
    # Blob Data Owner includes generateUserDelegationKey (download links); Blob Delegator would add nothing.
    assert roles_of(m, "deliveryAccess", "accountRoleIds") == {
        BLOB_OWNER,
        QUEUE_CONTRIBUTOR,
        TABLE_CONTRIBUTOR,
    }
    assert dotted(params["appInsightsName"]) == "monitoring.outputs.appInsightsName"


def test_intake_identity_may_only_write_scans_enqueue_record_jobs_and_read_devices() -> None:
    m = main()
    params = m.module_params("intakeAccess")
    assert dotted(params["principalId"]) == "intakeIdentity.outputs.principalId"
    assert roles_of(m, "intakeAccess", "accountRoleIds") == set()  # nothing account-wide: not the app package
    assert roles_of(m, "intakeAccess", "scansContainerRoleIds") == {BLOB_CONTRIBUTOR}
    assert roles_of(m, "intakeAccess", "jobQueueRoleIds") == {QUEUE_SENDER}
    assert roles_of(m, "intakeAccess", "jobsTableRoleIds") == {TABLE_CONTRIBUTOR}
    assert roles_of(m, "intakeAccess", "devicesTableRoleIds") == {TABLE_READER}


def test_intake_identity_reaches_no_mail_rights() -> None:
    m = main()
    for symbol in m.modules:
        mentions_intake = "intakeIdentity" in json.dumps(m.module_params(symbol))
        if mentions_intake:
            assert symbol in {"intakeAccess", "smtpRegistry", "smtpVault"}, symbol
    assert dotted(m.module_params("graphMailRoles")["principalId"]) == "deliveryIdentity.outputs.principalId"
    assert dotted(m.outputs["INTAKE_IDENTITY_CLIENT_ID"]["value"]) == "intakeIdentity.outputs.clientId"
    deployed = json.loads((INFRA / "smtp.parameters.json").read_text())["parameters"]
    assert deployed["identityClientId"]["value"] == "${INTAKE_IDENTITY_CLIENT_ID}"
    assert deployed["identityResourceId"]["value"] == "${INTAKE_IDENTITY_RESOURCE_ID}"
    assert dotted(m.outputs["INTAKE_IDENTITY_RESOURCE_ID"]["value"]) == "intakeIdentity.outputs.resourceId"
    graph_users = [p.name for p in bicep_files() if "Microsoft.Graph" in json.dumps(parse(p).get("resources", {}))]
    assert graph_users == ["graph-mail-roles.bicep"]


def test_tenant_wide_mail_rights_only_behind_the_opt_in_parameter() -> None:
    m = main()
    assert m.default("grantTenantWideMailSend") is False
    assert condition(m.modules["graphMailRoles"]) == "grantTenantWideMailSend"
    graph = Template("app/graph-mail-roles.bicep")
    assert "microsoftGraphV1" in graph.data["extensions"]
    granted = {graph.resolve(unwrap(r)["appRoleId"]) for r in graph.resources.values() if not r["existing"]}
    assert granted == {GRAPH_MAIL_SEND, GRAPH_MAIL_READWRITE}
    bicepconfig = json.loads((INFRA / "bicepconfig.json").read_text())
    assert bicepconfig["extensions"]["microsoftGraphV1"].startswith(
        "br:mcr.microsoft.com/bicep/extensions/microsoftgraph/v1.0:"
    )
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert parameters["grantTenantWideMailSend"]["value"].endswith("=false}")


def test_function_app_settings_are_the_contract_names() -> None:
    api = Template("app/api.bicep")
    settings = api.resolve("appSettings")
    storage = {
        f"{prefix}__{suffix}"
        for prefix in ("AzureWebJobsStorage", "SCANGW_STORAGE")
        for suffix in STORAGE_SETTING_SUFFIXES
    }
    assert set(settings) == storage | {
        "AZURE_CLIENT_ID",
        "SCANGW_SENDER",
        "SCANGW_ADMIN_EMAIL",
        "SCANGW_CLOUD",
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
        "PYTHON_ENABLE_OPENTELEMETRY",
    }
    for prefix in ("AzureWebJobsStorage", "SCANGW_STORAGE"):
        assert settings[f"{prefix}__credential"] == "managedidentity"
        assert settings[f"{prefix}__clientId"] == "identityClientId"
    assert settings["AZURE_CLIENT_ID"] == "identityClientId"
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "ClientId=${identityClientId};Authorization=AAD"
    assert settings["PYTHON_ENABLE_OPENTELEMETRY"] == "true"
    # The queue trigger's connection name is the prefix of the identity-based settings above.
    assert re.search(r"connection\s*=\s*[\"']SCANGW_STORAGE[\"']", (ROOT / "function_app.py").read_text())
    m = main().module_params("api")
    assert dotted(m["identityClientId"]) == "deliveryIdentity.outputs.clientId"


def test_function_app_runs_on_flex_consumption_with_a_deliberate_scale_cap() -> None:
    api = Template("app/api.bicep")
    assert api.module_params("plan")["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    site = api.module_params("functionApp")
    assert site["kind"] == "functionapp,linux"
    assert site["httpsOnly"] is True
    assert site["siteConfig"]["minTlsVersion"] == "1.2"
    assert {p["name"]: p["allow"] for p in site["basicPublishingCredentialsPolicies"]} == {"ftp": False, "scm": False}
    flex = site["functionAppConfig"]
    assert flex["deployment"]["storage"]["authentication"]["type"] == "UserAssignedIdentity"
    assert flex["runtime"]["name"] == "python" and api.default("pythonVersion") in {"3.11", "3.12"}
    assert api.default("instanceMemoryMB") == 2048
    assert flex["scaleAndConcurrency"]["maximumInstanceCount"] == "maximumInstanceCount"


def min_value(template: Template, param: str) -> int:
    (limit,) = [d["argument"] for d in template.params[param]["decorators"] if d["type"] == "min_value"]
    return int(limit)


def test_scale_cap_bounds_and_comments_state_the_platform_minimum_of_one() -> None:
    """Flex accepts a maximum instance count from 1 (event-driven-scaling, "Limit scale-out"); preview said 40."""
    api, m = Template("app/api.bicep"), main()
    assert min_value(m, "functionMaximumInstanceCount") == 1 and min_value(api, "maximumInstanceCount") == 1
    for path in (INFRA / "main.bicep", INFRA / "app" / "api.bicep", INFRA / "README.md"):
        text = path.read_text()
        assert not re.search(r"lowest maximum[^.]*accepted", text), f"{path.name} still calls 40 the minimum"
    described = m.params["functionMaximumInstanceCount"]["decorators"]
    assert any("1 to 1000" in str(d.get("argument")) for d in described)


def test_telemetry_retention_is_set_on_the_workspace_not_the_component() -> None:
    monitoring = Template("app/monitoring.bicep")
    assert "retentionInDays" not in monitoring.module_params("appInsights")
    assert monitoring.module_params("logAnalytics")["dataRetention"] == "retentionDays"
    assert monitoring.module_params("appInsights")["workspaceResourceId"] == {
        "operator": {
            "type": "property_accessor",
            "operands": {
                "operand_1": "logAnalytics",
                "operand_2": {
                    "operator": {
                        "type": "property_accessor",
                        "operands": {"operand_1": "outputs", "operand_2": "resourceId"},
                    }
                },
            },
        }
    }


@pytest.mark.parametrize("ignore_file", [".funcignore", ".dockerignore"])
def test_the_azd_environment_folder_never_ships_in_a_package(ignore_file: str) -> None:
    """.azure/<env>/.env holds the environment's names and ids: not for the Function package or image context."""
    lines = {line.strip() for line in (ROOT / ignore_file).read_text().splitlines()}
    assert lines & {".azure", ".azure/", "/.azure", "/.azure/"}, ignore_file


def test_application_insights_accepts_entra_tokens_only() -> None:
    assert Template("app/monitoring.bicep").module_params("appInsights")["disableLocalAuth"] is True


def test_smtp_door_listens_behind_tcp_ingress_with_the_intake_identity() -> None:
    smtp = Template("app/smtp.bicep")
    scope = scope_of(
        smtp,
        image="cr.azurecr.io/smtp:1",
        proxyCidrs="10.60.0.0/23",
        selfSignedHosts="smtp.contoso.com",
        **{"appInsights.properties.ConnectionString": "InstrumentationKey=0"},
    )
    app = evaluate(smtp, smtp.module_params("app"), scope)
    assert app["ingressTransport"] == "tcp"
    assert (app["ingressTargetPort"], app["exposedPort"]) == (2525, 25)
    assert app["scaleSettings"]["minReplicas"] >= 1
    (container,) = app["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert {f"SCANGW_STORAGE__{s}" for s in STORAGE_SETTING_SUFFIXES} <= set(env)
    assert env["AZURE_CLIENT_ID"] == "identityClientId" and env["SCANGW_STORAGE__clientId"] == "identityClientId"
    assert env["SCANGW_SMTP_PROXY_CIDRS"] == "10.60.0.0/23"
    assert dotted(main().outputs["SMTP_PROXY_CIDRS"]["value"]["operator"]["operands"]["true_value"]) == (
        "smtpSubnetAddressPrefix"
    )
    registry = Template("app/smtp-registry.bicep").module_params("registry")
    assert registry["acrAdminUserEnabled"] is False and registry["anonymousPullEnabled"] is False


def test_azd_outputs_name_what_the_admin_needs() -> None:
    outputs = set(main().outputs)
    assert {
        "AZURE_FUNCTION_APP_NAME",
        "SCANGW_STORAGE__blobServiceUri",
        "SCANGW_STORAGE__queueServiceUri",
        "SCANGW_STORAGE__tableServiceUri",
        "DELIVERY_IDENTITY_CLIENT_ID",
        "DELIVERY_IDENTITY_PRINCIPAL_ID",
        "SMTP_FQDN",
        "AZURE_CONTAINER_REGISTRY_ENDPOINT",
    } <= outputs


def test_parameters_file_feeds_every_required_main_parameter() -> None:
    m = main()
    values = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert set(values) <= set(m.params)
    required = {name for name, p in m.params.items() if p["default"] is None}
    assert required <= set(values)
    assert values["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert values["location"]["value"] == "${AZURE_LOCATION}"
    assert values["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"
    assert values["senderMailbox"]["value"] == "${SCANGW_SENDER}"


def test_trial_graph_grant_waits_for_minutes_of_arm_work_after_the_identity_exists() -> None:
    """A fresh identity may not have replicated in Entra ("Not a valid reference update", msgraph-bicep-types 193):
    the grant comes after the Function app and the role assignments, never in parallel with them."""
    m = main()
    after = set(unwrap(m.modules["graphMailRoles"]).get("dependsOn", []))
    assert {"api", "deliveryAccess"} <= after
    # The same assignments on every run: declared resources with fixed inputs, no per-run name or timestamp.
    graph = Template("app/graph-mail-roles.bicep")
    for symbol, resource in graph.resources.items():
        if not resource["existing"]:
            assert set(unwrap(resource)) == {"appRoleId", "principalId", "resourceId"}, symbol
