"""The Graph calls delivery needs, through the real msgraph-sdk, returning plain data.

Every call runs inside the mailbox's limits (4 concurrent, Retry-After), maps SDK/httpx/identity errors to
`GraphCallError` where they are met, and retries exactly once with a fresh token after a 401.

The `GraphServiceClient` gets a request adapter built here instead of `GraphServiceClient(credential,
scopes)`: the default pipeline's kiota RetryHandler sleeps inside the call on 429/503 (up to minutes) and
repeats POSTs whose outcome is unknown, both of which the delivery protocol must decide itself. The adapter
still authenticates with the explicit scope (never derived from the host) and sends the token only to the
configured Graph host.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote, urlparse

import httpx
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.serialization import Parsable, ParseNode, SerializationWriter
from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
from kiota_http.middleware.options import HeadersInspectionHandlerOption, RetryHandlerOption, UrlReplaceHandlerOption
from msgraph.generated.models.attachment_item import AttachmentItem
from msgraph.generated.models.file_attachment import FileAttachment
from msgraph.generated.models.message import Message
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.users.item.mail_folders.item.mail_folder_item_request_builder import (
    MailFolderItemRequestBuilder,
)
from msgraph.generated.users.item.messages.item.attachments.attachments_request_builder import (
    AttachmentsRequestBuilder,
)
from msgraph.generated.users.item.messages.item.attachments.create_upload_session.create_upload_session_post_request_body import (
    CreateUploadSessionPostRequestBody,
)
from msgraph.generated.users.item.messages.messages_request_builder import MessagesRequestBuilder
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient
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

T = TypeVar("T")

#: Graph answers within seconds; a 4 MiB POST on a slow link needs longer than the read of a small GET.
TIMEOUT = httpx.Timeout(120.0, connect=15.0)


@dataclass(frozen=True)
class Found:
    """A message found by its internetMessageId."""

    id: str
    is_draft: bool


class CreatedId(Parsable):
    """The one field delivery reads from a create's answer, as a kiota model (errors still map to ODataError)."""

    def __init__(self) -> None:
        self.id: str | None = None
        self.additional_data: dict[str, Any] = {}

    @staticmethod
    def create_from_discriminator_value(parse_node: ParseNode) -> CreatedId:
        return CreatedId()

    def get_field_deserializers(self) -> dict[str, Callable[[ParseNode], None]]:
        return {"id": lambda node: setattr(self, "id", node.get_str_value())}

    def serialize(self, writer: SerializationWriter) -> None:
        raise NotImplementedError("only ever read from Graph's answer")


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


def build_client(settings: Settings, credential: RefreshableCredential) -> tuple[GraphServiceClient, httpx.AsyncClient]:
    """The SDK client and the httpx client under it (ours to close)."""
    host = urlparse(settings.graph_url).hostname or ""
    auth = AzureIdentityAuthenticationProvider(credential, scopes=[settings.graph_scope], allowed_hosts=[host])
    options = {
        RetryHandlerOption.get_key(): RetryHandlerOption(delay=0, max_retries=0, should_retry=False),
        UrlReplaceHandlerOption.get_key(): UrlReplaceHandlerOption(enabled=False, replacement_pairs={}),
    }
    http = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(timeout=TIMEOUT, http2=True), options=options
    )
    adapter = GraphRequestAdapter(auth, client=http)
    client = GraphServiceClient(request_adapter=adapter)
    client.request_adapter.base_url = settings.graph_base_url
    return client, http


@functools.cache
def warm_up() -> None:
    """Parse a sample answer once per process, before any request slot is held.

    The first Message msgraph parses imports every entity model (about 0.7 s of CPU on a small machine). Met
    mid-delivery, that stall holds up every request this process had just been granted a slot for, and they
    would reach Graph late, inside a Retry-After window another process has since recorded.
    """
    from kiota_serialization_json.json_parse_node import JsonParseNode
    from msgraph.generated.models.attachment_collection_response import AttachmentCollectionResponse
    from msgraph.generated.models.message_collection_response import MessageCollectionResponse

    JsonParseNode({"value": [{"id": "w", "isDraft": True}]}).get_object_value(MessageCollectionResponse)
    JsonParseNode({"value": [{"name": "w", "size": 1}]}).get_object_value(AttachmentCollectionResponse)


def _next_page(builder: Any) -> Callable[[list[Any]], Awaitable[Any]]:
    async def get(options: list[Any]) -> Any:
        return await builder.get(RequestConfiguration(options=options))

    return get


class GraphApi:
    def __init__(
        self,
        settings: Settings,
        credential: RefreshableCredential,
        limits: MailboxLimits,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        warm_up()
        self.client, self._http = build_client(settings, credential)
        self._raw = httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False)  # for streamed reads only
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
            await self.credential.get_token(self.scope)
            async with self.limits.request(mailbox):
                try:
                    result = await call([inspect])
                except Exception as exc:  # noqa: BLE001 - mapped below, or re-raised untouched
                    failure = failure_from_exception(exc, self._now())
                    if failure is None:
                        raise
                    error: BaseException = exc
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

    async def _pages(self, mailbox: str, builder: Any, query: Any) -> tuple[list[Any], str | None]:
        """A collection GET and its @odata.nextLink pages; the request-id is the first page's."""
        page, rid = await self._call(
            mailbox, lambda o: builder.get(RequestConfiguration(query_parameters=query, options=o))
        )
        pages = []
        while page is not None:
            pages.append(page)
            link = page.odata_next_link
            if not link:
                break
            page, _ = await self._call(mailbox, _next_page(builder.with_url(link)))
        return pages, rid

    def _user(self, mailbox: str) -> Any:
        return self.client.users.by_user_id(mailbox)

    async def create_draft(self, mailbox: str, draft: Message) -> tuple[str, str | None]:
        # Serialised once, before a request slot is taken: the slot covers only the time on the wire.
        request = self._user(mailbox).messages.to_post_request_information(draft)

        async def post(options: list[Any]) -> CreatedId | None:
            request.add_request_options(options)
            # builder.post() would parse the answer into a full Message: ~5 ms of CPU per scan for one field.
            return await self.client.request_adapter.send_async(request, CreatedId, {"XXX": ODataError})

        created, rid = await self._call(mailbox, post)
        if created is None or not created.id:
            raise GraphCallError(GraphFailure(status=None, code="NoDraftId", message="create answered without an id"))
        return created.id, rid

    async def add_attachment(self, mailbox: str, draft_id: str, attachment: FileAttachment) -> str | None:
        # Serialised (up to 4 MiB of base64) before a request slot is taken, as in create_draft.
        request = (
            self._user(mailbox).messages.by_message_id(draft_id).attachments.to_post_request_information(attachment)
        )

        async def post(options: list[Any]) -> None:
            request.add_request_options(options)
            await self.client.request_adapter.send_no_response_content_async(request, {"XXX": ODataError})

        _, rid = await self._call(mailbox, post)
        return rid

    async def list_attachments(self, mailbox: str, draft_id: str) -> list[tuple[str, int]]:
        """(name, size) of every attachment on the draft, following paging."""
        builder = self._user(mailbox).messages.by_message_id(draft_id).attachments
        query = AttachmentsRequestBuilder.AttachmentsRequestBuilderGetQueryParameters(select=["name", "size"])
        pages, _ = await self._pages(mailbox, builder, query)
        return [(a.name or "", int(a.size or 0)) for page in pages for a in page.value or []]

    async def create_upload_session(self, mailbox: str, draft_id: str, item: AttachmentItem) -> UploadTarget:
        builder = self._user(mailbox).messages.by_message_id(draft_id).attachments.create_upload_session
        body = CreateUploadSessionPostRequestBody(attachment_item=item)
        session, _ = await self._call(mailbox, lambda o: builder.post(body, RequestConfiguration(options=o)))
        if session is None or not session.upload_url:
            raise GraphCallError(GraphFailure(status=None, code="NoUploadUrl", message="no uploadUrl in the answer"))
        expires = session.expiration_date_time
        return UploadTarget(session.upload_url, expires.isoformat() if isinstance(expires, datetime) else None)

    async def send(self, mailbox: str, draft_id: str) -> str | None:
        builder = self._user(mailbox).messages.by_message_id(draft_id).send
        _, rid = await self._call(mailbox, lambda o: builder.post(RequestConfiguration(options=o)))
        return rid

    async def delete(self, mailbox: str, message_id: str) -> None:
        builder = self._user(mailbox).messages.by_message_id(message_id)
        await self._call(mailbox, lambda o: builder.delete(RequestConfiguration(options=o)))

    async def find(self, mailbox: str, internet_message_id: str) -> tuple[list[Found], str | None]:
        """Every copy of the message in the mailbox (Drafts and Sent Items alike), by its internetMessageId."""
        query = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(
            filter=f"internetMessageId eq {odata_quote(internet_message_id)}", select=["id", "isDraft"]
        )
        pages, rid = await self._pages(mailbox, self._user(mailbox).messages, query)
        return [Found(m.id, bool(m.is_draft)) for page in pages for m in page.value or [] if m.id], rid

    async def drafts_folder(self, mailbox: str) -> str | None:
        """A cheap read that needs Mail.ReadWrite on the mailbox: what `scangw doctor` checks."""
        builder = self._user(mailbox).mail_folders.by_mail_folder_id("drafts")
        query = MailFolderItemRequestBuilder.MailFolderItemRequestBuilderGetQueryParameters(select=["id"])
        _, rid = await self._call(
            mailbox, lambda o: builder.get(RequestConfiguration(query_parameters=query, options=o))
        )
        return rid

    async def folder_since(
        self, mailbox: str, folder: str, field: str, op: str, moment: float, with_class: bool = False
    ) -> list[Listed]:
        """Messages of a well-known folder ("inbox", "drafts") whose `field` compares `op` to `moment`."""
        builder = self._user(mailbox).mail_folders.by_mail_folder_id(folder).messages
        query = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(
            filter=f"{field} {op} {odata_time(moment)}",
            select=["id", "internetMessageId"],
            expand=[f"singleValueExtendedProperties($filter=id eq '{MESSAGE_CLASS}')"] if with_class else None,
            top=100,
        )
        pages, _ = await self._pages(mailbox, builder, query)
        found = []
        for page in pages:
            for m in page.value or []:
                if not m.id:
                    continue
                props = m.single_value_extended_properties or []
                kind = next((p.value for p in props if (p.id or "").lower() == MESSAGE_CLASS.lower()), None)
                found.append(Listed(m.id, m.internet_message_id or "", kind or ""))
        return found

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
