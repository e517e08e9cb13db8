"""function_app.py as the Functions host would call it: the registered user functions, fed with
azure.functions request and queue message objects (Core Tools cannot run here)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import importlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import azure.functions as func
import pytest

from gateway.core.jobs import JobState
from tests.support import local_env, services_for


@pytest.fixture
def function_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    for key, value in local_env(tmp_path, SCANGW_SENDER="scanner@contoso.com").items():
        monkeypatch.setenv(key, value)
    import gateway.functions

    importlib.reload(gateway.functions)  # a fresh process-wide Services for this test's settings
    module = importlib.reload(importlib.import_module("function_app"))
    # get_functions() indexes the app and may run once per app object, as in the host.
    module.indexed = {f.get_function_name(): f for f in module.app.get_functions()}  # type: ignore[attr-defined]
    yield module


def user_function(module: ModuleType, name: str) -> Any:
    return module.indexed[name].get_user_function()


def test_bindings_are_exactly_as_the_contract_pins_them(function_app: ModuleType) -> None:
    bindings = {name: json.loads(f.get_function_json())["bindings"] for name, f in function_app.indexed.items()}
    http = next(b for b in bindings["http_intake"] if b["type"] == "httpTrigger")
    assert http["authLevel"].lower() == "anonymous" and http["route"] == "{*path}"
    queue = next(b for b in bindings["deliver"] if b["type"] == "queueTrigger")
    assert (queue["queueName"], queue["connection"]) == ("scan-jobs", "SCANGW_STORAGE")
    assert any(b["type"] == "timerTrigger" for b in bindings["retention"])


def test_host_json_sets_the_queue_extension_deliberately() -> None:
    host = json.loads((Path(__file__).parents[2] / "host.json").read_text())
    queues = host["extensions"]["queues"]
    assert queues["messageEncoding"] == "base64"
    assert {"batchSize", "visibilityTimeout", "maxDequeueCount"} <= set(queues)


def test_upload_through_http_trigger_then_delivery_through_queue_trigger(
    function_app: ModuleType, tmp_path: Path
) -> None:
    async def scenario() -> None:
        svc = await services_for(tmp_path, SCANGW_SENDER="scanner@contoso.com")
        _, password = await svc.registry.add("mfp1", default_to="me@contoso.com")
        data = os.urandom(123_456)
        import base64

        auth = base64.b64encode(f"mfp1:{password}".encode()).decode()
        req = func.HttpRequest(
            method="PUT",
            url="http://localhost/api/scans/report.pdf?to=boss@contoso.com&subject=Q3",
            headers={"Authorization": f"Basic {auth}", "Content-Type": "application/pdf"},
            params={"to": "boss@contoso.com", "subject": "Q3"},
            route_params={"path": "scans/report.pdf"},
            body=data,
        )
        response = await user_function(function_app, "http_intake")(req, None)
        assert response.status_code == 202, response.get_body()
        job_id = json.loads(response.get_body())["id"]

        health = await user_function(function_app, "http_intake")(
            func.HttpRequest(method="GET", url="http://localhost/api/health", body=b""), None
        )
        assert health.status_code == 200

        lease = (await svc.spool.queue.receive(30))[0]
        await user_function(function_app, "deliver")(func.QueueMessage(body=lease.text.encode()))
        job = await svc.jobs.get(job_id)
        assert job is not None and job.state == JobState.SENT
        [eml] = list((tmp_path / "outbox").glob("*.eml"))
        msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        assert msg["Subject"] == "Q3" and msg["To"] == "boss@contoso.com"
        assert msg["From"].addresses[0].addr_spec == "scanner@contoso.com"
        [part] = list(msg.iter_attachments())
        assert part.get_filename() == "report.pdf"
        assert hashlib.sha256(part.get_content()).hexdigest() == hashlib.sha256(data).hexdigest()
        await svc.close()

    asyncio.run(scenario())


def test_http_trigger_refuses_bodies_over_the_platform_limit(function_app: ModuleType) -> None:
    from gateway.functions import PLATFORM_BODY_LIMIT

    assert PLATFORM_BODY_LIMIT == 104_857_600


def test_function_app_on_azurite_reads_the_base64_message_the_host_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, azurite_connection_string: str
) -> None:
    """The HTTP trigger stores into Azure Storage; the raw queue message is base64 as the host expects."""
    import base64

    from azure.storage.queue import QueueClient

    from tests.integration.azurite import reset_azurite

    reset_azurite(azurite_connection_string)
    monkeypatch.setenv("SCANGW_STORAGE", azurite_connection_string)
    monkeypatch.setenv("SCANGW_OUTBOX", str(tmp_path / "outbox"))
    monkeypatch.setenv("SCANGW_SENDER", "scanner@contoso.com")
    import gateway.functions

    importlib.reload(gateway.functions)
    module = importlib.reload(importlib.import_module("function_app"))
    indexed = {f.get_function_name(): f.get_user_function() for f in module.app.get_functions()}

    async def scenario() -> None:
        svc = await gateway.functions.services()
        _, password = await svc.registry.add("mfp1", default_to="me@contoso.com")
        data = os.urandom(4 * 1024 * 1024 + 7)
        auth = base64.b64encode(f"mfp1:{password}".encode()).decode()
        req = func.HttpRequest(
            method="PUT",
            url="http://localhost/api/scans/big.pdf",
            headers={"Authorization": f"Basic {auth}"},
            body=data,
        )
        response = await indexed["http_intake"](req, None)
        assert response.status_code == 202, response.get_body()
        job_id = json.loads(response.get_body())["id"]

        raw = QueueClient.from_connection_string(azurite_connection_string, "scan-jobs")
        [message] = list(raw.receive_messages(visibility_timeout=30))
        body = base64.b64decode(message.content)  # what the Functions host decodes before calling us
        assert json.loads(body)["id"] == job_id
        raw.delete_message(message)
        raw.close()

        await indexed["deliver"](func.QueueMessage(body=body))
        job = await svc.jobs.get(job_id)
        assert job is not None and job.state == JobState.SENT
        [eml] = list((tmp_path / "outbox").glob("*.eml"))
        [part] = list(email.message_from_bytes(eml.read_bytes(), policy=email.policy.default).iter_attachments())
        assert hashlib.sha256(part.get_content()).hexdigest() == hashlib.sha256(data).hexdigest()
        await svc.close()

    asyncio.run(scenario())


def test_timer_trigger_reads_a_bounce_and_the_queue_trigger_mails_the_notice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, graph: Any
) -> None:
    """Through Graph (the fake): a scan sent by the queue trigger bounces; the hourly timer finds the report,
    and the queue trigger then ends the job failed and mails the failure notice."""
    env = {
        "SCANGW_STORAGE": f"local:{tmp_path / 'spool'}",
        "SCANGW_SENDER": "scanner@contoso.com",
        "SCANGW_ADMIN_EMAIL": "admin@contoso.com",
        "SCANGW_GRAPH_URL": graph.url,
        "SCANGW_MAILBOX_RATE_PER_MIN": "0",
    }
    monkeypatch.delenv("SCANGW_OUTBOX", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    import gateway.functions

    importlib.reload(gateway.functions)
    module = importlib.reload(importlib.import_module("function_app"))
    functions = {f.get_function_name(): f.get_user_function() for f in module.app.get_functions()}
    graph.bounce_recipients = {"typo@contoso.com"}

    async def drain(svc: Any) -> None:
        while leases := await svc.spool.queue.receive(30):
            await functions["deliver"](func.QueueMessage(body=leases[0].text.encode()))
            await svc.spool.queue.delete(leases[0])

    async def scenario() -> None:
        from gateway.core.accept import Envelope, IncomingFile

        svc = await gateway.functions.services()
        device, _ = await svc.registry.add("mfp1", reply_to="alice@contoso.com", default_to="typo@contoso.com")

        async def files() -> Any:
            async def chunks() -> Any:
                yield b"%PDF-1.7 pages"

            yield IncomingFile("scan.pdf", "application/pdf", chunks())

        job = await svc.intake().accept_files(device, files(), lambda: Envelope(("typo@contoso.com",)))
        await drain(svc)
        assert (await svc.jobs.get(job.id)).state == JobState.SENT  # type: ignore[union-attr]
        await functions["retention"](None)
        deadline = time.monotonic() + 15  # the bounced job is queued a couple of seconds ahead
        while (failed := await svc.jobs.get(job.id)) is not None and failed.state != JobState.FAILED:
            assert time.monotonic() < deadline, f"job is {failed.state}"
            await drain(svc)
            await asyncio.sleep(0.1)
        assert failed is not None and "typo@contoso.com" in (failed.error or "")
        for agent in gateway.functions._agents:  # the host would keep these for the process's life
            await agent.transport.close()
        await svc.close()

    asyncio.run(scenario())
    notices = [m for m in graph.sent if m.headers.get("X-Scangw-Notice") == "failure"]
    assert len(notices) == 1 and sorted(notices[0].to) == ["admin@contoso.com", "alice@contoso.com"]
