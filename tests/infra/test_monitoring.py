"""The workbook and the alerts read the gateway's own telemetry: every query is a file under infra/app/kql/,
loaded by the Bicep modules and here, so a renamed metric, dimension or log field breaks this test first.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip(
    "pycep", reason="pycep-parser is not installed (it parses the Bicep files): pip install -r requirements-dev.txt"
)

from gateway.telemetry import metrics  # noqa: E402
from gateway.telemetry.reasons import REMEDIES  # noqa: E402
from tests.infra.bicep import INFRA, ROOT, Template, dotted  # noqa: E402

KQL = INFRA / "app" / "kql"
METRIC = re.compile(r'"(scangw\.[a-z_.]+)"')
DIMENSION = re.compile(r"customDimensions\.([A-Za-z_]+)")
LOADED = re.compile(r"loadTextContent\('kql/([\w.-]+\.kql)'\)")


def kql_files() -> list[Path]:
    return sorted(KQL.glob("*.kql"))


def loaded_by(bicep: str) -> set[str]:
    return set(LOADED.findall((INFRA / "app" / bicep).read_text()))


def test_every_query_file_is_deployed_and_every_deployed_query_exists() -> None:
    workbook, alerts = loaded_by("workbook.bicep"), loaded_by("alerts.bicep")
    names = {p.name for p in kql_files()}
    assert workbook | alerts == names
    assert all(n.startswith("alert-") for n in alerts) and not any(n.startswith("alert-") for n in workbook)


@pytest.mark.parametrize("path", kql_files(), ids=lambda p: p.name)
def test_queries_name_only_metrics_and_dimensions_the_gateway_emits(path: Path) -> None:
    text = path.read_text()
    used = set(METRIC.findall(text))
    assert used <= set(metrics.NAMES), f"{path.name} names a metric the gateway does not emit: {used}"
    if "customMetrics" in text:
        assert used, path.name
        allowed = set().union(*(metrics.DIMENSIONS[m] for m in used))
        assert set(DIMENSION.findall(text)) <= allowed, path.name


def test_the_workbook_shows_every_figure_the_admin_needs() -> None:
    text = {p.name: p.read_text() for p in kql_files() if not p.name.startswith("alert-")}
    shown = set().union(*(METRIC.findall(t) for t in text.values()))
    assert shown == set(metrics.NAMES) - {metrics.REFUSED, metrics.CERT_DAYS}  # refusals: the logins chart
    assert "percentilew" in text["delivery-latency.kql"] and "95" in text["delivery-latency.kql"]
    assert "{SilentDays}" in text["silent-devices.kql"]
    workbook = Template("app/workbook.bicep")
    [parameter] = workbook.variables["parameters"]["value"]["content"]["parameters"]
    assert parameter["name"] == "SilentDays"
    assert main_module("workbook")["appInsightsResourceId"] == "monitoring.outputs.appInsightsResourceId"


def test_failure_remedies_in_the_workbook_are_the_gateways() -> None:
    text = (KQL / "failures-by-reason.kql").read_text()
    rows = dict(re.findall(r'^\s*"([a-z_]+)", "([^"]*)",?$', text, re.MULTILINE))
    assert rows == REMEDIES


def main_module(symbol: str) -> dict[str, object]:
    main = Template("main.bicep")
    return {k: dotted(v) or v for k, v in main.module_params(symbol).items()}


def alert_rules() -> dict[str, dict[str, object]]:
    alerts = Template("app/alerts.bicep")
    rules = alerts.variables["alwaysOn"]["value"] + [alerts.variables["noScanRule"]["value"]]
    return {r["key"]: r for r in rules}


def test_alerts_mail_the_admin_on_every_condition_of_issue_11() -> None:
    alerts = Template("app/alerts.bicep")
    receivers = alerts.module_params("actionGroup")["emailReceivers"]
    assert [r["emailAddress"] for r in receivers] == ["adminEmail"]
    params = alerts.module_params("alert")
    assert [dotted(g) for g in params["actions"]["actionGroupResourceIds"]] == ["actionGroup.outputs.resourceId"]
    rules = alert_rules()
    assert set(rules) == {"failed", "poison", "retries", "stuck", "logins", "certificate", "noscans"}
    assert alerts.default("stuckQueueMinutes") == 30 and rules["stuck"]["threshold"] == "stuckQueueMinutes"
    assert alerts.default("certificateDaysLeft") == 21 and rules["certificate"]["operator"] == "LessThan"
    assert rules["noscans"]["queryTimeRange"] == "P3D" and alerts.default("noScanAlertEnabled") is False
    for key, rule in rules.items():
        query = (KQL / _file(rule)).read_text()
        if rule["measure"]:
            assert re.search(rf"\b{rule['measure']}\s*=", query), f"{key}: no column {rule['measure']}"
    m = main_module("alerts")
    assert m["adminEmail"] == "adminEmail" and m["noScanAlertEnabled"] == "noScanAlertEnabled"
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert parameters["noScanAlertEnabled"]["value"] == "${SCANGW_NO_SCAN_ALERT=false}"


def _file(rule: dict[str, object]) -> str:
    return {
        "failed": "alert-failed-scans.kql",
        "poison": "alert-poison.kql",
        "retries": "alert-retries.kql",
        "stuck": "alert-stuck-queue.kql",
        "logins": "alert-login-burst.kql",
        "certificate": "alert-cert-expiry.kql",
        "noscans": "alert-no-scans.kql",
    }[str(rule["key"])]


def test_log_alerts_match_structured_fields_the_gateway_writes_never_free_text() -> None:
    """A username or `?to=` can put any word into a log line's text; a field's key comes only from code."""
    poison = (KQL / "alert-poison.kql").read_text()
    retries = (KQL / "alert-retries.kql").read_text()
    for query in (poison, retries):
        code = re.sub(r'"[^"]*"', '""', re.sub(r"//.*", "", query))
        assert not re.search(r"\b(has|contains|matches)\b", code), query
    assert 'customDimensions.event) == "queue.poison"' in poison
    gateway = "\n".join(p.read_text() for p in (ROOT / "gateway").rglob("*.py"))
    assert re.search(r'log\.error\(\s*"event=queue\.poison ', gateway)
    # Every log line that speaks of poison carries the field the alert matches.
    for line in re.findall(r'log\.\w+\(\s*"([^"]*poison[^"]*)"', gateway, re.IGNORECASE):
        assert line.startswith("event=queue.poison"), line
    assert 'customDimensions.state) == "queued"' in retries and "customDimensions.retry_in" in retries
    agent = (ROOT / "gateway" / "delivery" / "agent.py").read_text()
    assert re.search(r'log\.warning\("job=%s state=queued retry_in=%', agent)
