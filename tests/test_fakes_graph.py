"""FakeGraph enforces the Graph / Outlook rules it claims to, and the real msgraph-sdk works against it.

Why test a test double: integration tests trust `graph.violations == []` and `graph.sent` as evidence that the
gateway talks to Graph correctly; that evidence is only worth something if the fake really rejects the
mistakes it is meant to catch. Plain httpx is used here so each rule is exercised on the wire.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import httpx
import pytest
from azure.identity import ManagedIdentityCredential
from msgraph.generated.models.attachment_item import AttachmentItem
from msgraph.generated.models.attachment_type import AttachmentType
from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.email_address import EmailAddress
from msgraph.generated.models.file_attachment import FileAttachment
from msgraph.generated.models.item_body import ItemBody
from msgraph.generated.models.message import Message
from msgraph.generated.models.recipient import Recipient
from msgraph.generated.users.item.messages.item.attachments.create_upload_session.create_upload_session_post_request_body import (
    CreateUploadSessionPostRequestBody,
)
from msgraph.generated.users.item.send_mail.send_mail_post_request_body import SendMailPostRequestBody
from msgraph.graph_service_client import GraphServiceClient

from tests.fakes.graph import CHUNK_MULTIPLE, FakeGraph
from tests.fakes.identity import FakeIdentityEndpoint

MB = "scanner@contoso.com"
MIB = 1024 * 1024
T = TypeVar("T")


def poll(predicate: Callable[[], T], timeout: float = 10.0) -> T:
    """Wait for a condition with a deadline (tests never sleep to synchronise)."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        threading.Event().wait(0.01)
    return value


@pytest.fixture
def idp() -> Iterator[FakeIdentityEndpoint]:
    with FakeIdentityEndpoint() as endpoint:
        yield endpoint


@pytest.fixture
def graph(idp: FakeIdentityEndpoint) -> Iterator[FakeGraph]:
    with FakeGraph(idp) as fake:
        fake.add_mailbox(MB, aliases=("scans@contoso.com",))
        yield fake


@pytest.fixture
def api(graph: FakeGraph, idp: FakeIdentityEndpoint) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {idp.make_token()}"}
    with httpx.Client(base_url=f"{graph.url}/v1.0/users/{MB}", headers=headers, timeout=10) as client:
        yield client


def file_att(data: bytes, name: str = "scan.pdf", **extra: Any) -> dict[str, Any]:
    return {
        "@odata.type": "#microsoft.graph.fileAttachment",
        "name": name,
        "contentType": "application/pdf",
        "contentBytes": base64.b64encode(data).decode(),
        **extra,
    }


def draft(api: httpx.Client, **props: Any) -> dict[str, Any]:
    body = {"subject": "Scan", "toRecipients": [{"emailAddress": {"address": "bob@fabrikam.com"}}], **props}
    reply = api.post("/messages", json=body)
    assert reply.status_code == 201, reply.text
    created: dict[str, Any] = reply.json()
    return created


def code(reply: httpx.Response) -> str:
    return str(reply.json()["error"]["code"])


# -- authentication and addressing -----------------------------------------------------------------


def test_bearer_tokens_are_verified(graph: FakeGraph, idp: FakeIdentityEndpoint) -> None:
    url = f"{graph.url}/v1.0/users/{MB}/messages"
    for token in (idp.make_token(lifetime=-5), idp.make_token("https://graph.microsoft.us"), "fake.x.y"):
        reply = httpx.get(url, headers={"Authorization": f"Bearer {token}", "client-request-id": "c-1"})
        assert reply.status_code == 401 and code(reply) == "InvalidAuthenticationToken"
        assert reply.headers["client-request-id"] == "c-1"
        assert reply.json()["error"]["innerError"]["request-id"] == reply.headers["request-id"]
    assert graph.violations == []  # a stale token is not a client bug: the 401 tells it to refresh
    assert httpx.get(url).status_code == 401
    assert any("Access token is empty" in v for v in graph.violations)


def test_national_cloud_audience_is_configurable(idp: FakeIdentityEndpoint) -> None:
    with FakeGraph(idp, audience="https://graph.microsoft.us") as gov:
        gov.add_mailbox(MB)
        url = f"{gov.url}/v1.0/users/{MB}/messages"
        assert httpx.get(url, headers={"Authorization": f"Bearer {idp.make_token()}"}).status_code == 401
        token = idp.make_token("https://graph.microsoft.us")
        assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_mailbox_addressing_and_flags(graph: FakeGraph, api: httpx.Client, idp: FakeIdentityEndpoint) -> None:
    auth = api.headers
    assert httpx.get(f"{graph.url}/v1.0/me/messages", headers=auth).status_code == 400
    missing = httpx.get(f"{graph.url}/v1.0/users/nobody@contoso.com/messages", headers=auth)
    assert (
        missing.status_code == 404
        and missing.json()["error"]["message"] == "The requested user 'nobody@contoso.com' is invalid."
    )
    by_id = httpx.get(f"{graph.url}/v1.0/users/{graph.mailbox(MB).id}/messages", headers=auth)
    assert by_id.status_code == 200
    graph.mailbox(MB).access_denied = True
    denied = api.get("/messages")
    assert denied.status_code == 403 and denied.json()["error"]["message"] == "Access to OData is disabled."
    graph.mailbox(MB).access_denied, graph.mailbox(MB).rest_disabled = False, True
    assert code(api.get("/messages")) == "MailboxNotEnabledForRESTAPI"
    graph.mailbox(MB).rest_disabled = False
    send_only = {"Authorization": f"Bearer {idp.make_token(roles=['Mail.Send'])}"}
    reply = httpx.post(f"{graph.url}/v1.0/users/{MB}/messages", json={"subject": "x"}, headers=send_only)
    assert reply.status_code == 403 and code(reply) == "ErrorAccessDenied"


# -- drafts ---------------------------------------------------------------------------------------


def test_create_draft_accepts_camel_and_pascal_case(api: httpx.Client, graph: FakeGraph) -> None:
    created = draft(
        api,
        Body={"ContentType": "HTML", "Content": "<p>hi</p>"},
        InternetMessageId="<a1@scan.contoso.com>",
        internetMessageHeaders=[{"name": "X-Scan-Id", "value": "42"}],
        attachments=[file_att(b"%PDF")],
    )
    assert created["isDraft"] is True and created["internetMessageId"] == "<a1@scan.contoso.com>"
    assert len(created["id"]) > 100 and created["id"].startswith("AAMk") and created["body"]["contentType"] == "html"
    listed = api.get(f"/messages/{created['id']}/attachments").json()["value"]
    assert [(a["name"], a["size"], a["isInline"]) for a in listed] == [("scan.pdf", 4, False)]
    assert "contentBytes" not in listed[0]
    assert graph.violations == []


@pytest.mark.parametrize(
    ("props", "expected"),
    [
        ({"internetMessageHeaders": [{"name": "Message-ID", "value": "<x@y>"}]}, "InvalidInternetMessageHeader"),
        (
            {"internetMessageHeaders": [{"name": f"X-{i}", "value": "v"} for i in range(6)]},
            "InvalidInternetMessageHeaderCollection",
        ),
        ({"attachments": [{**file_att(b"x"), "contentBytes": "not base64!"}]}, "RequestBodyRead"),
        ({"attachments": [{"@odata.type": "#microsoft.graph.itemAttachment", "name": "m"}]}, "ErrorInvalidRequest"),
        ({"attachments": [file_att(b"x", name="")]}, "ErrorInvalidRequest"),
        ({"attachments": [{k: v for k, v in file_att(b"x").items() if k != "@odata.type"}]}, "ErrorInvalidRequest"),
        ({"colour": "blue"}, "RequestBodyRead"),
        ({"internetMessageId": "no-brackets@x"}, "ErrorInvalidInternetMessageId"),
    ],
)
def test_create_draft_rejects_what_graph_rejects(
    api: httpx.Client, graph: FakeGraph, props: dict[str, Any], expected: str
) -> None:
    reply = api.post("/messages", json={"subject": "s", **props})
    assert reply.status_code == 400 and code(reply) == expected
    assert len(graph.violations) == 1 and graph.items(MB) == []


def test_patch_get_and_delete(api: httpx.Client, graph: FakeGraph) -> None:
    mid = draft(api)["id"]
    assert api.patch(f"/messages/{mid}", json={"subject": "Renamed"}).json()["subject"] == "Renamed"
    assert api.get(f"/messages/{mid}", params={"$select": "subject"}).json()["subject"] == "Renamed"
    assert api.patch(f"/messages/{mid}", json={"attachments": []}).status_code == 400
    assert api.get("/messages/not-an-id").status_code == 400  # ErrorInvalidIdMalformed
    assert api.delete(f"/messages/{mid}").status_code == 204
    assert code(api.get(f"/messages/{mid}")) == "ErrorItemNotFound"
    assert len(graph.violations) == 2


# -- sending --------------------------------------------------------------------------------------


def test_send_moves_the_draft_and_records_the_delivery(api: httpx.Client, graph: FakeGraph) -> None:
    created = draft(
        api,
        ccRecipients=[{"emailAddress": {"address": "carol@fabrikam.com", "name": "Carol"}}],
        replyTo=[{"emailAddress": {"address": "desk@contoso.com"}}],
        attachments=[file_att(b"%PDF-1.7", isInline=True, contentId="p1")],
    )
    mid = created["id"]
    assert api.post(f"/messages/{mid}/send").status_code == 202
    for method, path in (("GET", ""), ("PATCH", ""), ("GET", "/attachments"), ("POST", "/send")):
        reply = api.request(method, f"/messages/{mid}{path}", json={} if method == "PATCH" else None)
        assert reply.status_code == 404 and code(reply) == "ErrorItemNotFound", (method, path)
    [sent] = graph.wait_for_sent(1)
    assert (sent.to, sent.cc, sent.reply_to, sent.subject, sent.via) == (
        ["bob@fabrikam.com"],
        ["carol@fabrikam.com"],
        ["desk@contoso.com"],
        "Scan",
        "send",
    )
    assert sent.attachments[0].sha256 == hashlib.sha256(b"%PDF-1.7").hexdigest() and sent.attachments[0].is_inline
    found = api.get(
        "/messages",
        params={"$filter": f"internetMessageId eq '{created['internetMessageId']}'", "$select": "id,isDraft"},
    ).json()["value"]
    assert [(m["id"] != mid, m["isDraft"]) for m in found] == [(True, False)]
    assert graph.violations == []


def test_send_rules(api: httpx.Client, graph: FakeGraph) -> None:
    assert code(api.post(f"/messages/{draft(api, toRecipients=[])['id']}/send")) == "ErrorInvalidRecipients"
    other = {"emailAddress": {"address": "ceo@contoso.com"}}
    assert code(api.post(f"/messages/{draft(api, **{'from': other})['id']}/send")) == "ErrorSendAsDenied"
    alias = {"emailAddress": {"address": "scans@contoso.com", "name": "Scanner"}}
    assert api.post(f"/messages/{draft(api, **{'from': alias})['id']}/send").status_code == 202
    graph.mailbox(MB).max_send_size = 10_000
    big = draft(api, attachments=[file_att(b"x" * 20_000)])
    assert code(api.post(f"/messages/{big['id']}/send")) == "ErrorMessageSizeExceeded"
    assert [m.from_name for m in graph.sent] == ["Scanner"] and graph.violations == []


def test_send_needs_content_length(graph: FakeGraph, api: httpx.Client) -> None:
    mid = draft(api)["id"]
    conn = http.client.HTTPConnection("127.0.0.1", graph.port, timeout=10)
    conn.putrequest("POST", f"/v1.0/users/{MB}/messages/{quote(mid)}/send")
    conn.putheader("Authorization", api.headers["Authorization"])
    conn.endheaders()
    assert conn.getresponse().status == 411
    conn.close()
    assert graph.sent == [] and "LengthRequired" in graph.violations[0]


def test_send_mail_json_and_mime(api: httpx.Client, graph: FakeGraph) -> None:
    message = {
        "Subject": "Direct",
        "ToRecipients": [{"EmailAddress": {"Address": "bob@fabrikam.com"}}],
        "InternetMessageId": "<d1@scan.contoso.com>",
        "Attachments": [file_att(b"abc")],
    }
    assert api.post("/sendMail", json={"Message": message, "SaveToSentItems": False}).status_code == 202
    mime = (
        b"From: scanner@contoso.com\r\nTo: Bob <bob@fabrikam.com>\r\nSubject: Mime\r\nMessage-ID: <m1@x>\r\n"
        b"X-Scan: 7\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
    )
    reply = api.post("/sendMail", content=base64.b64encode(mime), headers={"Content-Type": "text/plain"})
    assert reply.status_code == 202
    direct, raw = graph.wait_for_sent(2)
    assert (direct.via, direct.sent_item_id, direct.attachments[0].size) == ("sendMail", None, 3)
    assert (raw.to, raw.subject, raw.headers, raw.body.strip()) == (
        ["bob@fabrikam.com"],
        "Mime",
        {"X-Scan": "7"},
        "hello",
    )
    assert (
        code(api.post("/sendMail", content=b"***", headers={"Content-Type": "text/plain"}))
        == "ErrorMimeContentInvalidBase64String"
    )
    assert api.post("/sendMail", json={"Message": message}).status_code == 202
    assert graph.duplicate_internet_message_ids() == ["<d1@scan.contoso.com>"]


def test_search_honours_quoting_and_index_lag(api: httpx.Client, graph: FakeGraph) -> None:
    graph.search_lag = 0.3
    imid = "<o'brien.1@scan.contoso.com>"
    draft(api, internetMessageId=imid)
    query = {"$filter": "internetMessageId eq '" + imid.replace("'", "''") + "'"}
    assert api.get("/messages", params=query).json()["value"] == []  # not indexed yet
    assert poll(lambda: api.get("/messages", params=query).json()["value"])[0]["isDraft"] is True
    assert api.get("/messages", params={"$filter": "subject eq 'x'"}).status_code == 400


def test_send_is_asynchronous_with_send_lag(api: httpx.Client, graph: FakeGraph) -> None:
    """After the 202 the draft stays in Drafts until Exchange acts; sending it again then sends it twice."""
    now = [1_800_000_000.0]
    graph.clock, graph.send_lag = (lambda: now[0]), 30.0
    imid = "<lag.1@scan.contoso.com>"
    mid = draft(api, internetMessageId=imid, toRecipients=[{"emailAddress": {"address": "a@example.com"}}])["id"]
    assert api.post(f"/messages/{mid}/send").status_code == 202
    assert graph.sent == [] and [i.id for i in graph.items(MB, "drafts")] == [mid]
    assert api.get(f"/messages/{mid}").json()["isDraft"] is True
    assert api.post(f"/messages/{mid}/send").status_code == 202  # a client that resends too early
    now[0] += 31
    assert api.get(f"/messages/{mid}").status_code == 404
    assert [m.internet_message_id for m in graph.sent] == [imid, imid]
    assert graph.duplicate_internet_message_ids() == [imid]
    assert [i.folder for i in graph.items(MB)] == ["sentitems", "sentitems"]


def test_paging_with_top(api: httpx.Client) -> None:
    for _ in range(3):
        draft(api)
    page = api.get("/messages", params={"$top": "2"}).json()
    assert len(page["value"]) == 2
    rest = httpx.get(page["@odata.nextLink"], headers=api.headers).json()
    assert len(rest["value"]) == 1 and "@odata.nextLink" not in rest


# -- attachments and upload sessions ---------------------------------------------------------------


def test_attachment_post_limit_and_request_size(api: httpx.Client, graph: FakeGraph) -> None:
    mid = draft(api)["id"]
    almost = b"a" * (3 * MIB - 1)  # its JSON body exceeds 4 MiB: the documented exception applies
    assert api.post(f"/messages/{mid}/attachments", json=file_att(almost)).status_code == 201
    for refused in (
        api.post(f"/messages/{mid}/attachments", json=file_att(almost + b"a")),
        api.post("/messages", json={"subject": "s", "attachments": [file_att(almost)]}),
    ):  # Graph's real answer to an oversize request: 400, not 413
        assert refused.status_code == 400
        assert refused.json()["error"] | {"innerError": None} == {
            "code": "BadRequest",
            "message": "The maximum request length supported is 4MB.",
            "innerError": None,
        }
    assert len(graph.violations) == 2


def start_session(api: httpx.Client, mid: str, size: int, **extra: Any) -> httpx.Response:
    item = {"attachmentType": "file", "name": "big.pdf", "size": size, **extra}
    return api.post(f"/messages/{mid}/attachments/createUploadSession", json={"AttachmentItem": item})


def test_upload_session_rules(api: httpx.Client, graph: FakeGraph) -> None:
    mid = draft(api)["id"]
    assert code(start_session(api, mid, 3 * MIB - 1)) == "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize"
    assert start_session(api, mid, 150 * MIB + 1).status_code == 400
    data = bytes(range(256)) * (14 * 1024)  # 3.5 MiB
    session = start_session(api, mid, len(data), isInline=True, contentId="big1", contentType="application/pdf").json()
    assert session["nextExpectedRanges"] == ["0-"]
    url, step = session["uploadUrl"], 10 * CHUNK_MULTIPLE
    assert "/v1.0/" not in url and "authtoken=" in url
    graph.violations.clear()

    def put(start: int, end: int, **headers: str) -> httpx.Response:
        rng = {"Content-Range": f"bytes {start}-{end - 1}/{len(data)}", "Content-Type": "application/octet-stream"}
        return httpx.put(url, content=data[start:end], headers={**rng, **headers})

    assert put(0, step, Authorization=api.headers["Authorization"]).status_code == 401
    assert put(step, len(data)).status_code == 416  # skipping ahead
    assert put(0, step - 1).status_code == 400  # not a multiple of 320 KiB
    assert len(graph.violations) == 3
    graph.violations.clear()
    first = put(0, step)
    assert first.status_code == 200 and first.json()["nextExpectedRanges"] == [str(step)]
    again = put(0, step)  # the reply was "lost", the client repeats: 416 tells it where to go on
    assert again.status_code == 416 and again.json()["nextExpectedRanges"] == [str(step)]
    assert api.post(f"/messages/{mid}/send").status_code == 202  # Graph would send it without the attachment
    assert graph.violations == ["send of scanner@contoso.com draft with 1 unfinished upload session(s)"]


def test_upload_session_completes_and_can_be_cancelled(api: httpx.Client, graph: FakeGraph) -> None:
    mid = draft(api)["id"]
    data = b"\x01" * (4 * MIB + 123)
    url = start_session(api, mid, len(data)).json()["uploadUrl"]
    huge = httpx.put(url, content=data[: 4 * MIB], headers={"Content-Range": f"bytes 0-{4 * MIB - 1}/{len(data)}"})
    assert huge.status_code == 413
    graph.violations.clear()
    offset, step = 0, 12 * CHUNK_MULTIPLE
    while offset < len(data):
        end = min(offset + step, len(data))
        reply = httpx.put(
            url, content=data[offset:end], headers={"Content-Range": f"bytes {offset}-{end - 1}/{len(data)}"}
        )
        offset = end
    assert reply.status_code == 201 and "/Attachments('" in reply.headers["Location"]
    assert httpx.put(url, content=b"x", headers={"Content-Range": f"bytes 0-0/{len(data)}"}).status_code == 404
    cancel_url = start_session(api, mid, len(data)).json()["uploadUrl"]
    assert httpx.delete(cancel_url).status_code == 204
    assert httpx.delete(cancel_url).status_code == 404
    assert api.post(f"/messages/{mid}/send").status_code == 202
    [sent] = graph.wait_for_sent(1)
    assert [(a.name, a.size, a.sha256) for a in sent.attachments] == [
        ("big.pdf", len(data), hashlib.sha256(data).hexdigest())
    ]
    assert graph.violations == []


def test_a_chunk_cut_off_mid_body_is_not_acted_on(api: httpx.Client, graph: FakeGraph) -> None:
    """A worker killed while sending a chunk closes the connection mid-body: no server acts on half a request,
    and it is not the client's protocol error (the kill tests would otherwise see a 'violation')."""
    mid = draft(api)["id"]
    data = b"\x02" * (4 * MIB)
    url = start_session(api, mid, len(data)).json()["uploadUrl"]
    step = 10 * CHUNK_MULTIPLE
    parts = urlsplit(url)
    head = (
        f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Length: {step}\r\n"
        f"Content-Range: bytes 0-{step - 1}/{len(data)}\r\n\r\n"
    ).encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head + data[: step // 2])
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1024) == b""  # closed without an answer
    whole = httpx.put(url, content=data[:step], headers={"Content-Range": f"bytes 0-{step - 1}/{len(data)}"})
    assert whole.status_code == 200 and whole.json()["nextExpectedRanges"] == [str(step)]  # nothing was kept
    assert graph.violations == []


# -- throttling and fault injection ----------------------------------------------------------------


def test_concurrency_limit_and_retry_after_window(api: httpx.Client, graph: FakeGraph) -> None:
    graph.retry_after_grace = 0.0
    results: list[int] = []
    with graph.hold():
        workers = [threading.Thread(target=lambda: results.append(api.get("/messages").status_code)) for _ in range(5)]
        for w in workers:
            w.start()
        poll(lambda: graph.in_flight(MB) == 4 and results == [429])
    for w in workers:
        w.join(10)
    assert sorted(results) == [200, 200, 200, 200, 429] and graph.max_concurrency_seen[MB] == 5
    early = api.get("/messages")
    assert early.status_code == 429 and int(early.headers["Retry-After"]) >= 1
    assert len(graph.violations) == 2 and "Retry-After" in graph.violations[1]
    poll(lambda: graph.mailbox(MB).throttled_until <= time.monotonic(), timeout=5)
    assert api.get("/messages").status_code == 200


def test_random_faults_are_seeded(api: httpx.Client, graph: FakeGraph) -> None:
    graph.throttle_rate = 1.0
    reply = api.get("/messages")
    assert reply.status_code == 429 and reply.headers["Retry-After"] == "1" and code(reply) == "ApplicationThrottled"
    graph.throttle_rate, graph.error_rate = 0.0, 1.0
    graph.mailbox(MB).throttled_until = 0.0
    assert code(api.get("/messages")) == "ServiceUnavailable"


def test_lost_replies_happen_after_the_action(api: httpx.Client, graph: FakeGraph) -> None:
    mid = draft(api)["id"]
    graph.lose_reply_rate = 1.0
    with pytest.raises(httpx.RemoteProtocolError):
        api.post(f"/messages/{mid}/send")
    assert len(graph.sent) == 1  # Graph acted; only the reply was lost
    graph.lose_reply_status = 504
    assert api.post("/messages", json={"subject": "again"}).status_code == 504
    assert len(graph.items(MB, "drafts")) == 1


def test_fail_next_before_and_after_effect(api: httpx.Client, graph: FakeGraph) -> None:
    graph.fail_next("POST", r"/messages$", 503, "ServiceUnavailable")
    assert api.post("/messages", json={"subject": "s"}).status_code == 503 and graph.items(MB) == []
    graph.fail_next("POST", r"/messages$", 0, after_effect=True)
    with pytest.raises(httpx.RemoteProtocolError):
        api.post("/messages", json={"subject": "s"})
    assert len(graph.items(MB)) == 1
    graph.fail_next("GET", r"/messages$", 429, retry_after=2)
    assert api.get("/messages").headers["Retry-After"] == "2"
    assert graph.requests[-1].status == 429 and graph.requests[-1].had_auth


# -- the real SDK end to end ----------------------------------------------------------------------


@pytest.fixture
def sdk(
    graph: FakeGraph, idp: FakeIdentityEndpoint, monkeypatch: pytest.MonkeyPatch
) -> Callable[[], GraphServiceClient]:
    """A factory for the real client: ManagedIdentityCredential -> idp, request adapter -> graph (section 11)."""
    for name in ("IDENTITY_SERVER_THUMBPRINT", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT", "AZURE_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in idp.env().items():
        monkeypatch.setenv(name, value)

    def make() -> GraphServiceClient:
        client = GraphServiceClient(
            credentials=ManagedIdentityCredential(), scopes=["https://graph.microsoft.com/.default"]
        )
        client.request_adapter.base_url = f"{graph.url}/v1.0"
        return client

    return make


def bob() -> list[Recipient]:
    return [Recipient(email_address=EmailAddress(address="bob@fabrikam.com", name="Bob"))]


def test_real_msgraph_sdk_and_managed_identity(
    graph: FakeGraph, idp: FakeIdentityEndpoint, sdk: Callable[[], GraphServiceClient]
) -> None:
    pdf = b"%PDF-1.7 scan " * 100

    async def scenario() -> None:
        message = Message(
            subject="Scan from MFP-3",
            body=ItemBody(content_type=BodyType.Html, content="<p>See attached.</p>"),
            to_recipients=bob(),
            internet_message_id="<sdk-1@scan.contoso.com>",
            attachments=[
                FileAttachment(
                    odata_type="#microsoft.graph.fileAttachment",
                    name="scan.pdf",
                    content_type="application/pdf",
                    content_bytes=pdf,
                    is_inline=True,
                    content_id="scan1",
                )
            ],
        )
        mailbox = sdk().users.by_user_id(MB)
        created = await mailbox.messages.post(message)
        assert created is not None and created.id and created.is_draft
        await mailbox.messages.by_message_id(created.id).send.post()

    asyncio.run(scenario())
    [sent] = graph.wait_for_sent(1)
    assert (sent.to, sent.subject, sent.internet_message_id) == (
        ["bob@fabrikam.com"],
        "Scan from MFP-3",
        "<sdk-1@scan.contoso.com>",
    )
    assert sent.attachments[0].sha256 == hashlib.sha256(pdf).hexdigest() and sent.attachments[0].content_id == "scan1"
    assert idp.token_requests == 1 and all(r.had_auth for r in graph.requests)
    assert graph.violations == []


def test_real_sdk_upload_session_and_send_mail(graph: FakeGraph, sdk: Callable[[], GraphServiceClient]) -> None:
    """The SDK's PascalCase bodies (AttachmentItem, Message/SaveToSentItems) pass; chunks go out without auth."""
    big = bytes(range(251)) * (15 * 1024)  # ~3.7 MiB

    async def scenario() -> None:
        mailbox = sdk().users.by_user_id(MB)
        created = await mailbox.messages.post(Message(subject="Large scan", to_recipients=bob()))
        assert created is not None and created.id
        item = AttachmentItem(
            attachment_type=AttachmentType.File, name="big.pdf", size=len(big), content_type="application/pdf"
        )
        builder = mailbox.messages.by_message_id(created.id).attachments.create_upload_session
        session = await builder.post(CreateUploadSessionPostRequestBody(attachment_item=item))
        assert session is not None and session.upload_url and session.expiration_date_time is not None
        async with httpx.AsyncClient() as plain:  # never the SDK's client: it would add the Graph token
            offset = 0
            while offset < len(big):
                end = min(offset + 10 * CHUNK_MULTIPLE, len(big))
                headers = {
                    "Content-Range": f"bytes {offset}-{end - 1}/{len(big)}",
                    "Content-Type": "application/octet-stream",
                }
                reply = await plain.put(session.upload_url, content=big[offset:end], headers=headers)
                assert reply.status_code == (201 if end == len(big) else 200), reply.text
                offset = end
        await mailbox.messages.by_message_id(created.id).send.post()
        direct = Message(subject="Direct", to_recipients=bob(), internet_message_id="<sdk-2@scan.contoso.com>")
        await mailbox.send_mail.post(SendMailPostRequestBody(message=direct, save_to_sent_items=False))

    asyncio.run(scenario())
    large, direct = graph.wait_for_sent(2)
    assert [(a.name, a.sha256) for a in large.attachments] == [("big.pdf", hashlib.sha256(big).hexdigest())]
    assert (direct.via, direct.sent_item_id, direct.internet_message_id) == (
        "sendMail",
        None,
        "<sdk-2@scan.contoso.com>",
    )
    assert graph.violations == []
