"""The first `azd up` in a fresh tenant, in both modes (issue 10 items 1, 2 and 3).

No Bicep compiler or Azure here: the templates are parsed (pycep) and their decisions evaluated for given
parameter values; azure.yaml is read as azd reads it. Why each shape: infra/README.md, "First deployment".
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pycep", reason="pycep-parser is not installed (it parses the Bicep files)")

from tests.infra.bicep import INFRA, ROOT, Template, bicep_files, evaluate, parse, scope_of, unwrap  # noqa: E402

PLACEHOLDER = "mcr.microsoft.com/azuredocs/containerapps-helloworld:latest"
IMAGE = "crabc.azurecr.io/scangw/smtp-scangw:azd-deploy-1"


def smtp_app(image: str, **values: Any) -> dict[str, Any]:
    """The container app module's parameters as ARM would receive them for this image."""
    smtp = Template("app/smtp.bicep")
    scope = scope_of(
        smtp,
        image=image,
        selfSignedHosts="ca-smtp-x.example.azurecontainerapps.io",
        **{"appInsights.properties.ConnectionString": "InstrumentationKey=00000000-0000-0000-0000-000000000000"},
        **values,
    )
    params = evaluate(smtp, smtp.module_params("app"), scope)
    assert isinstance(params, dict)
    return params


def test_a_revision_on_the_placeholder_starts_the_placeholder_as_it_is() -> None:
    """No gateway command, arguments, probes, secrets or settings, and ingress on the placeholder's own port."""
    params = smtp_app("")
    (container,) = params["containers"]
    assert container["image"] == PLACEHOLDER
    assert set(container) == {"name", "image", "resources"}
    assert params["ingressTargetPort"] == 80
    assert params["additionalPortMappings"] == [] and params["secrets"] == [] and params["volumes"] == []
    assert params["registries"] == []  # nothing to pull from the (still empty) registry


def test_the_real_image_runs_the_door_with_its_listeners_and_probe() -> None:
    params = smtp_app(IMAGE)
    (container,) = params["containers"]
    assert container["image"] == IMAGE
    assert container["command"] == ["python", "-m", "gateway", "smtp"]
    assert container["args"] == [
        "--listen",
        "0.0.0.0:2525",
        "--listen",
        "0.0.0.0:2587",
        "--implicit-tls",
        "0.0.0.0:2465",
    ]
    assert [p["tcpSocket"]["port"] for p in container["probes"]] == [2525]
    assert params["ingressTargetPort"] == 2525 and params["exposedPort"] == 25
    assert {(m["targetPort"], m["exposedPort"]) for m in params["additionalPortMappings"]} == {(2587, 587), (2465, 465)}


def provisioned_files(path: Path) -> set[Path]:
    """main.bicep and every local module it deploys, transitively: what `azd provision` runs."""
    found = {path}
    for module in parse(path).get("modules", {}).values():
        if module["type"] == "local":
            found |= provisioned_files((path.parent / module["detail"]["path"]).resolve())
    return found


def test_provisioning_never_creates_or_references_the_container_app() -> None:
    """azd 1.20 reported SERVICE_*_RESOURCE_EXISTS=true on first deployments (Azure/azure-dev 5931): nothing in
    `azd provision` may depend on it, nor read an app that may not exist yet."""
    main = Template("main.bicep")
    assert "smtpExists" not in main.params
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert not any("RESOURCE_EXISTS" in json.dumps(p) for p in parameters.values())
    for path in provisioned_files(INFRA / "main.bicep"):
        data = parse(path)
        for symbol, resource in data.get("resources", {}).items():
            assert not resource["type"].startswith("Microsoft.App/containerApps"), f"{path.name}: {symbol}"
        for symbol, module in data.get("modules", {}).items():
            assert "container-app" not in module["detail"]["path"].split("/")[-1], f"{path.name}: {symbol}"
    assert not any(p.name == "smtp-image.bicep" for p in bicep_files())


def test_azd_deploys_the_app_from_the_service_module_with_the_image_it_pushed() -> None:
    """infra/<service>.bicep + .parameters.json: azd deploys it after pushing, substituting its environment."""
    module = Template("smtp.bicep")
    values = json.loads((INFRA / "smtp.parameters.json").read_text())["parameters"]
    assert set(values) == set(module.params)
    assert values["image"]["value"] == "${SERVICE_SMTP_IMAGE_NAME=}"
    required = {name for name, p in module.params.items() if p["default"] is None}
    main_outputs = set(Template("main.bicep").outputs)
    azd_sets = {"AZURE_ENV_NAME", "AZURE_LOCATION", "SERVICE_SMTP_IMAGE_NAME"}
    for name, entry in values.items():
        (variable,) = re.findall(r"\$\{(\w+)(?:=[^}]*)?\}", entry["value"])
        assert variable in main_outputs | azd_sets, f"{name} reads {variable}, which nothing sets"
        if name in required:
            assert "=" not in entry["value"] or name == "image", f"required {name} must not default"
    app = unwrap(module.modules["smtp"])
    assert app["params"]["image"] == "image"


def test_flex_site_config_sets_no_ftps_state() -> None:
    """Flex rejects siteConfig.ftpsState on newer stamps (ARM 51021); the publishing policy turns FTP off."""
    site = Template("app/api.bicep").module_params("functionApp")
    assert "ftpsState" not in site["siteConfig"]
    assert {p["name"]: p["allow"] for p in site["basicPublishingCredentialsPolicies"]}["ftp"] is False


def azure_yaml() -> dict[str, Any]:
    """azure.yaml as nested mappings: it only uses `key: value` lines nested by indentation (no lists)."""
    root: dict[str, Any] = {}
    stack: list[tuple[int, dict[str, Any]]] = [(-1, root)]
    for line in (ROOT / "azure.yaml").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        key, _, value = line.strip().partition(":")
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        value = value.split(" #")[0].strip().strip('"')
        if value:
            parent[key] = {"true": True, "false": False}.get(value, value)
        else:
            parent[key] = {}
            stack.append((indent, parent[key]))
    return root


def envsubst_condition(template: str, env: dict[str, str]) -> bool:
    """azd's reading of a service `condition`: envsubst, then one of its truthy spellings (PR 6684)."""

    def value(match: re.Match[str]) -> str:
        return env.get(match.group(1), match.group(3) or "")

    text = re.sub(r"\$\{(\w+)(=([^}]*))?\}", value, template)
    return text in {"1", "true", "TRUE", "True", "yes", "YES", "Yes"}


@pytest.mark.parametrize(("setting", "deployed"), [(None, True), ("true", True), ("false", False)])
def test_azd_up_skips_the_smtp_service_exactly_when_the_smtp_infrastructure_is_off(
    setting: str | None, deployed: bool
) -> None:
    project = azure_yaml()
    env = {} if setting is None else {"SCANGW_DEPLOY_SMTP": setting}
    assert envsubst_condition(project["services"]["smtp"]["condition"], env) is deployed
    assert "condition" not in project["services"]["api"]
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert envsubst_condition(parameters["deploySmtp"]["value"], env) is deployed


def test_no_docker_is_needed_in_either_mode() -> None:
    """azd asks for Docker for every containerapp service it knows, enabled or not, unless the build is remote."""
    project = azure_yaml()
    assert project["services"]["smtp"]["docker"]["remoteBuild"] is True
    minimum = re.fullmatch(r">=\s*(\d+)\.(\d+)\.(\d+)", project["requiredVersions"]["azd"])
    assert minimum and tuple(map(int, minimum.groups())) >= (1, 23, 4)  # `condition` arrived in 1.23.4
