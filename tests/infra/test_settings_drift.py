"""Every app setting infra/ gives the Function app and the SMTP container is one something reads (issue 10 item 8).

The settings are taken from the templates (evaluated for realistic values) and handed to the gateway's own
`load_settings`. A setting counts as read when spoiling its value changes the Settings or makes loading fail;
one the gateway never reads must be on PLATFORM_READERS with the component that does. Nothing the gateway needs
in Azure may be missing, and the storage settings' prefix must be the queue trigger's connection name.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path

import pytest

pytest.importorskip("pycep", reason="pycep-parser is not installed (it parses the Bicep files)")

from gateway.config import load_settings  # noqa: E402
from gateway.core.errors import ConfigError  # noqa: E402
from tests.infra.bicep import ROOT, Template, evaluate, scope_of  # noqa: E402

CLIENT_ID = "00000000-0000-0000-0000-0000000000c1"
CONNECTION_STRING = "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://x.in.ai/"
ENDPOINTS = {
    "blobServiceUri": "https://stabc.blob.core.windows.net",
    "queueServiceUri": "https://stabc.queue.core.windows.net",
    "tableServiceUri": "https://stabc.table.core.windows.net",
}

#: Settings infra sets that gateway/config.py does not read, and who does. Keep it short: each entry is a reason.
PLATFORM_READERS = {
    "AzureWebJobsStorage__credential": "Functions host (its own state, identity-based)",
    "AzureWebJobsStorage__clientId": "Functions host",
    "AzureWebJobsStorage__blobServiceUri": "Functions host",
    "AzureWebJobsStorage__queueServiceUri": "Functions host",
    "AzureWebJobsStorage__tableServiceUri": "Functions host",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "Functions host; azure-monitor-opentelemetry-exporter when "
    "no credential is passed",
    "PYTHON_ENABLE_OPENTELEMETRY": "Functions host and Python worker (worker streams OpenTelemetry logs itself)",
}
SPOILED = "\x7fnot-a-value"


def function_settings() -> dict[str, str]:
    api = Template("app/api.bicep")
    scope = scope_of(
        api,
        identityClientId=CLIENT_ID,
        senderMailbox="scanner@contoso.com",
        adminEmail="it@contoso.com",
        graphCloud="usgov",
        **ENDPOINTS,
        **{"appInsights.properties.ConnectionString": CONNECTION_STRING},
    )
    settings = evaluate(api, api.variables["appSettings"]["value"], scope)
    assert isinstance(settings, dict)
    return {name: str(value) for name, value in settings.items()}


def container_settings(tls_files: tuple[Path, Path] | None) -> dict[str, str]:
    """The SMTP container's environment: self-signed (the default) or the admin's certificate from Key Vault."""
    smtp = Template("app/smtp.bicep")
    scope = scope_of(
        smtp,
        image="cr.azurecr.io/smtp:1",
        identityClientId=CLIENT_ID,
        senderMailbox="scanner@contoso.com",
        proxyCidrs="10.60.0.0/23",
        selfSignedHosts="smtp.contoso.com,ca-smtp-abc.westeurope.azurecontainerapps.io",
        tlsEnabled=tls_files is not None,
        keyVaultUri="https://kv.vault.azure.net/",
        **ENDPOINTS,
        **{"appInsights.properties.ConnectionString": CONNECTION_STRING},
    )
    (container,) = evaluate(smtp, smtp.module_params("app"), scope)["containers"]
    env = {e["name"]: str(e["value"]) for e in container["env"]}
    if tls_files is not None:  # the Key Vault secrets, mounted where the template says
        assert env["SCANGW_SMTP_TLS_CERT"].endswith("tls.crt") and env["SCANGW_SMTP_TLS_KEY"].endswith("tls.key")
        env["SCANGW_SMTP_TLS_CERT"], env["SCANGW_SMTP_TLS_KEY"] = (str(p) for p in tls_files)
    return env


def read_by_gateway(env: dict[str, str], name: str) -> bool:
    """Spoil one setting: the gateway reads it if its Settings change or loading refuses the value."""
    baseline = asdict(load_settings(env))
    try:
        spoiled = asdict(load_settings({**env, name: SPOILED}))
    except ConfigError:
        return True
    return spoiled != baseline


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    return cert, key


def all_environments(tls_files: tuple[Path, Path]) -> dict[str, dict[str, str]]:
    return {
        "function app": function_settings(),
        "smtp container (self-signed)": container_settings(None),
        "smtp container (Key Vault certificate)": container_settings(tls_files),
    }


def test_nothing_is_set_that_nothing_reads(tls_files: tuple[Path, Path]) -> None:
    for where, env in all_environments(tls_files).items():
        ignored = {n for n in env if n not in PLATFORM_READERS and not read_by_gateway(env, n)}
        assert not ignored, f"{where} sets settings the gateway ignores: {sorted(ignored)}"


def test_platform_readers_list_only_settings_infra_really_sets(tls_files: tuple[Path, Path]) -> None:
    everywhere = set().union(*all_environments(tls_files).values())
    assert set(PLATFORM_READERS) <= everywhere
    for name in PLATFORM_READERS:  # and the gateway itself does not read them (else they belong elsewhere)
        env = function_settings()
        if name in env:
            assert not read_by_gateway(env, name), f"{name} is read by the gateway: drop it from PLATFORM_READERS"


def test_nothing_the_gateway_needs_in_azure_is_missing(tls_files: tuple[Path, Path]) -> None:
    for where, env in all_environments(tls_files).items():
        settings = load_settings(env)
        identity = settings.storage_identity
        assert identity is not None, f"{where} would use the embedded spool, not Azure Storage"
        assert identity.client_id == CLIENT_ID == settings.azure_client_id, where
        assert (identity.blob_uri, identity.queue_uri, identity.table_uri) == tuple(ENDPOINTS.values()), where
        assert settings.sender == "scanner@contoso.com", where
        assert settings.appinsights_connection_string == CONNECTION_STRING, where
    function = load_settings(function_settings())
    assert function.cloud == "usgov" and function.admin_email == "it@contoso.com"
    door = load_settings(container_settings(None))
    assert door.smtp_require_tls_auth and door.smtp_tls_self_signed and door.smtp_proxy_cidrs


def test_storage_settings_share_the_queue_triggers_connection_name(tls_files: tuple[Path, Path]) -> None:
    """function_app.py's connection="X" makes the host read X__*; the gateway must read the same X__*."""
    (connection,) = re.findall(r"connection\s*=\s*[\"'](\w+)[\"']", (ROOT / "function_app.py").read_text())
    for where, env in all_environments(tls_files).items():
        gateway_storage = {n for n in env if n.startswith(f"{connection}__")}
        assert len(gateway_storage) == 5, where
        assert all(read_by_gateway(env, n) for n in gateway_storage), where
        assert not any(n.startswith("SCANGW_STORAGE") and not n.startswith(f"{connection}__") for n in env), where
