"""The Graph calls delivery needs, through the real msgraph-sdk's request adapter, returning plain data.

Every call runs inside the mailbox's limits (4 concurrent, Retry-After), maps SDK/httpx/identity errors to
`GraphCallError` where they are met, and retries exactly once with a fresh token after a 401.

The msgraph-sdk request adapter is built here instead of `GraphServiceClient(credential, scopes)`: the
default pipeline's kiota RetryHandler sleeps inside the call on 429/503 (up to minutes) and
repeats POSTs whose outcome is unknown, both of which the delivery protocol must decide itself. The adapter
still authenticates with the explicit scope (never derived from the host) and sends the token only to the
configured Graph host.

Requests go through that adapter (its auth, redirect, headers-inspection and telemetry middleware) as
`RequestInformation` with the URL and the JSON body written here, and answers come back as bytes of which
only the fields delivery reads are taken. The SDK's request builders and models would cost more CPU per
request than the request spends on the wire: a URI template expanded character by character (draft ids are
long), a backing store per model object, every field of a Message parsed to read its `id`. Errors still map
through the SDK's ODataError.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urlparse

import httpx
from kiota_abstractions.api_client_builder import register_default_deserializer
from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
from kiota_http.middleware.options import HeadersInspectionHandlerOption, RetryHandlerOption, UrlReplaceHandlerOption
from kiota_serialization_json.json_parse_node_factory import JsonParseNodeFactory
from kiota_serialization_text.text_parse_node_factory import TextParseNodeFactory
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph_core import GraphClientFactory

from gateway.config import Settings
from gateway.delivery.graph.failures import (
    GraphCallError,
    GraphFailure,
    HttpStatusError,
    failure_from_exception,
    failure_from_response,
)
from gateway.delivery.graph.identity import RefreshableCredential
from gateway.delivery.graph.mailbox_limits import MailboxBusy, MailboxLimits
from gateway.delivery.graph.upload import tls_context
from gateway.telemetry import metrics
from gateway.telemetry.spans import graph_call

T = TypeVar("T")

#: Graph answers within seconds; a 4 MiB POST on a slow link needs longer than the read of a small GET.
TIMEOUT = httpx.Timeout(120.0, connect=15.0)
#: Every Graph error body is an OData error; the SDK maps it to ODataError (status, code, message).
ERRORS: dict[str, Any] = {"XXX": ODataError}
_JSON = "application/json"


@dataclass(frozen=True)
class Found:
    """A message found by its internetMessageId."""

    id: str
    is_draft: bool


@dataclass(frozen=True)
class Listed:
    """A message found by listing a folder: enough to decide whether to read or delete it."""

    id: str
    internet_message_id: str
    message_class: str


@dataclass(frozen=True)
class UploadTarget:
    url: str
    expires: str | None


#: PR_MESSAGE_CLASS as a Graph extended property: tells a non-delivery report (REPORT.IPM.Note.NDR) apart.
MESSAGE_CLASS = "String 0x001A"


def odata_time(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def odata_quote(value: str) -> str:
    """An OData string literal: single quotes doubled, so a Message-ID cannot break the filter."""
    return "'" + value.replace("'", "''") + "'"


def segment(value: str) -> str:
    """One path segment, percent-encoded as the SDK's URI templates encode a simple variable."""
    return quote(value, safe="")


def query(params: dict[str, str | None]) -> str:
    present = {k: v for k, v in params.items() if v is not None}
    return "?" + urlencode(present, quote_via=quote, safe="$") if present else ""


def iso_expiry(text: Any) -> str | None:
    """Graph's expirationDateTime as an ISO string Python reads back (7 fraction digits cut to 6)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        head, dot, rest = text.partition(".")
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :] or "+00:00"
        try:
            moment = datetime.fromisoformat(f"{head}{dot}{digits[:6]}{zone}".replace("Z", "+00:00"))
        except ValueError:
            return None
    return moment.isoformat()


def build_client(
    settings: Settings, credential: RefreshableCredential
) -> tuple[GraphRequestAdapter, httpx.AsyncClient]:
    """The SDK's request adapter and the httpx client under it (ours to close). No GraphServiceClient: its
    request builders are not used, and importing them costs a cold worker a third of a second."""
    host = urlparse(settings.graph_url).hostname or ""
    auth = AzureIdentityAuthenticationProvider(credential, scopes=[settings.graph_scope], allowed_hosts=[host])
    options = {
        RetryHandlerOption.get_key(): RetryHandlerOption(delay=0, max_retries=0, should_retry=False),
        UrlReplaceHandlerOption.get_key(): UrlReplaceHandlerOption(enabled=False, replacement_pairs={}),
    }
    http = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(timeout=TIMEOUT, http2=True, verify=tls_context()), options=options
    )
    adapter = GraphRequestAdapter(auth, client=http)
    adapter.base_url = settings.graph_base_url
    # What GraphServiceClient would register: Graph's error bodies are JSON, parsed into ODataError.
    register_default_deserializer(JsonParseNodeFactory)
    register_default_deserializer(TextParseNodeFactory)
    return adapter, http


class GraphApi:
    def __init__(
        self,
        settings: Settings,
        credential: RefreshableCredential,
        limits: MailboxLimits,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.adapter, self._http = build_client(settings, credential)
        self._raw = httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False, verify=tls_context())  # streamed reads
        self.base_url = settings.graph_base_url.rstrip("/")
        self.scope = settings.graph_scope
        self.credential = credential
        self.limits = limits
        self._now = wall_clock

    async def _call(self, mailbox: str, call: Callable[[list[Any]], Awaitable[T]]) -> tuple[T, str | None]:
        """Run `call(options)` and return its result with Graph's request-id; one fresh-token retry on 401.

        A refusal by the mailbox limiter becomes a GraphCallError that provably never reached Graph, so the
        transport can clear a step it announced (a send is not left "maybe requested").
        """
        try:
            return await self._call_once_refreshed(mailbox, call)
        except MailboxBusy as busy:
            failure = GraphFailure(
                status=None, code="MailboxBusy", message=str(busy), retry_after=busy.retry_after, reached_server=False
            )
            raise GraphCallError(failure) from busy

    async def _call_once_refreshed(
        self, mailbox: str, call: Callable[[list[Any]], Awaitable[T]]
    ) -> tuple[T, str | None]:
        for attempt in (1, 2):
            inspect = HeadersInspectionHandlerOption(inspect_request_headers=False, inspect_response_headers=True)
            # The token first (from azure-identity's cache, or the identity endpoint): a request slot is held
            # only while the request itself is on its way, or it reaches Graph after a Retry-After began.
            try:
                await self.credential.get_token(self.scope)
            except Exception as exc:  # noqa: BLE001 - no identity, or its endpoint down: mapped, or re-raised
                token_failure = failure_from_exception(exc, self._now())
                if token_failure is None:
                    raise
                raise GraphCallError(token_failure) from exc
            async with self.limits.request(mailbox):
                try:
                    result = await call([inspect])
                except Exception as exc:  # noqa: BLE001 - mapped below, or re-raised untouched
                    failure = failure_from_exception(exc, self._now())
                    if failure is None:
                        raise
                    error: BaseException = exc
                    metrics.graph_throttled(mailbox, failure.status)
                    if failure.status in (429, 503) and failure.retry_after is not None:
                        # Before the slot is released: whoever takes it next must already see the window.
                        await self.limits.throttled(mailbox, failure.retry_after)
                else:
                    ids = inspect.response_headers.get("request-id")
                    return result, next(iter(ids), None)
            if failure.token_rejected and attempt == 1:
                self.credential.invalidate()
                continue
            raise GraphCallError(failure) from error
        raise AssertionError("unreachable")

    def _url(self, mailbox: str, *path: str) -> str:
        return "/".join((self.base_url, "users", segment(mailbox), *path))

    async def _json(
        self, mailbox: str, method: Method, url: str, body: bytes | None = None, *, answer: bool = True
    ) -> tuple[Any, str | None]:
        """One request through the SDK's adapter; the answer's JSON (None for an empty one) and request-id.

        A fresh RequestInformation per attempt: the auth provider keeps an Authorization header it finds, so
        reusing one would send the refused token again on the retry after a 401.
        """
        adapter: Any = self.adapter

        async def send(options: list[Any]) -> Any:
            info = RequestInformation(method)
            info.url = url
            info.headers.try_add("Accept", _JSON)
            if body is not None:
                info.headers.try_add("Content-Type", _JSON)
                info.content = body
            info.add_request_options(options)
            if not answer:
                await adapter.send_no_response_content_async(info, ERRORS)
                return None
            raw = await adapter.send_primitive_async(info, "bytes", ERRORS)
            return json.loads(raw) if raw else None

        return await self._call(mailbox, send)

    async def _pages(self, mailbox: str, url: str) -> tuple[list[dict[str, Any]], str | None]:
        """A collection GET and its @odata.nextLink pages, as one list; the request-id is the first page's."""
        items: list[dict[str, Any]] = []
        first: str | None = None
        link: str | None = url
        while link:
            page, rid = await self._json(mailbox, Method.GET, link)
            first = first or rid
            page = page if isinstance(page, dict) else {}
            items.extend(v for v in page.get("value") or [] if isinstance(v, dict))
            link = page.get("@odata.nextLink") or None
        return items, first

    @graph_call("createDraft")
    async def create_draft(self, mailbox: str, draft: bytes) -> tuple[str, str | None]:
        """POST the draft (JSON from `draft.draft_json`); only the new id is read from Graph's answer."""
        created, rid = await self._json(mailbox, Method.POST, self._url(mailbox, "messages"), draft)
        draft_id = created.get("id") if isinstance(created, dict) else None
        if not draft_id or not isinstance(draft_id, str):
            raise GraphCallError(GraphFailure(status=None, code="NoDraftId", message="create answered without an id"))
        return draft_id, rid

    @graph_call("addAttachment")
    async def add_attachment(self, mailbox: str, draft_id: str, attachment: bytes) -> str | None:
        url = self._url(mailbox, "messages", segment(draft_id), "attachments")
        _, rid = await self._json(mailbox, Method.POST, url, attachment, answer=False)
        return rid

    @graph_call("listAttachments")
    async def list_attachments(self, mailbox: str, draft_id: str) -> list[tuple[str, int]]:
        """(name, size) of every attachment on the draft, following paging."""
        url = self._url(mailbox, "messages", segment(draft_id), "attachments") + query({"$select": "name,size"})
        items, _ = await self._pages(mailbox, url)
        return [(str(a.get("name") or ""), int(a.get("size") or 0)) for a in items]

    @graph_call("createUploadSession")
    async def create_upload_session(self, mailbox: str, draft_id: str, body: bytes) -> UploadTarget:
        url = self._url(mailbox, "messages", segment(draft_id), "attachments", "createUploadSession")
        session, _ = await self._json(mailbox, Method.POST, url, body)
        upload_url = session.get("uploadUrl") if isinstance(session, dict) else None
        if not upload_url or not isinstance(upload_url, str):
            raise GraphCallError(GraphFailure(status=None, code="NoUploadUrl", message="no uploadUrl in the answer"))
        return UploadTarget(upload_url, iso_expiry(session.get("expirationDateTime")))

    @graph_call("send")
    async def send(self, mailbox: str, draft_id: str) -> str | None:
        url = self._url(mailbox, "messages", segment(draft_id), "send")
        _, rid = await self._json(mailbox, Method.POST, url, answer=False)
        return rid

    @graph_call("delete")
    async def delete(self, mailbox: str, message_id: str) -> None:
        await self._json(mailbox, Method.DELETE, self._url(mailbox, "messages", segment(message_id)), answer=False)

    @graph_call("find")
    async def find(self, mailbox: str, internet_message_id: str) -> tuple[list[Found], str | None]:
        """Every copy of the message in the mailbox (Drafts and Sent Items alike), by its internetMessageId."""
        url = self._url(mailbox, "messages") + query(
            {"$filter": f"internetMessageId eq {odata_quote(internet_message_id)}", "$select": "id,isDraft"}
        )
        items, rid = await self._pages(mailbox, url)
        return [Found(str(m["id"]), bool(m.get("isDraft"))) for m in items if m.get("id")], rid

    @graph_call("draftsFolder")
    async def drafts_folder(self, mailbox: str) -> str | None:
        """A cheap read that needs Mail.ReadWrite on `mailbox`: what `scangw doctor` checks."""
        url = self._url(mailbox, "mailFolders", "drafts") + query({"$select": "id"})
        _, rid = await self._json(mailbox, Method.GET, url)
        return rid

    @graph_call("listFolder")
    async def folder_since(
        self, mailbox: str, folder: str, field: str, op: str, moment: float, with_class: bool = False
    ) -> list[Listed]:
        """Messages of a well-known folder ("inbox", "drafts") whose `field` compares `op` to `moment`."""
        url = self._url(mailbox, "mailFolders", segment(folder), "messages") + query(
            {
                "$filter": f"{field} {op} {odata_time(moment)}",
                "$select": "id,internetMessageId",
                "$expand": f"singleValueExtendedProperties($filter=id eq '{MESSAGE_CLASS}')" if with_class else None,
                "$top": "100",
            }
        )
        items, _ = await self._pages(mailbox, url)
        found = []
        for m in items:
            if not m.get("id"):
                continue
            props = m.get("singleValueExtendedProperties") or []
            kind = next(
                (p.get("value") for p in props if str(p.get("id") or "").lower() == MESSAGE_CLASS.lower()), None
            )
            found.append(Listed(str(m["id"]), str(m.get("internetMessageId") or ""), str(kind or "")))
        return found

    @graph_call("readMessage")
    async def message_head(self, mailbox: str, message_id: str, limit: int) -> bytes:
        """The first `limit` bytes of a message's MIME (GET .../$value), streamed: a report may carry the
        returned original, tens of MB we never need."""
        url = f"{self.base_url}/users/{quote(mailbox, safe='@')}/messages/{quote(message_id, safe='')}/$value"

        async def read(_options: list[Any]) -> bytes:
            token = await self.credential.get_token(self.scope)
            headers = {"Authorization": f"Bearer {token.token}"}
            async with self._raw.stream("GET", url, headers=headers) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise HttpStatusError(failure_from_response(response, self._now()))
                head = bytearray()
                async for chunk in response.aiter_bytes():
                    head += chunk
                    if len(head) >= limit:
                        break
                return bytes(head[:limit])

        head, _ = await self._call(mailbox, read)
        return head

    async def close(self) -> None:
        await self._raw.aclose()
        await self._http.aclose()
