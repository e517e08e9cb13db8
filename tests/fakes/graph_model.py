"""Message and attachment model behind `FakeGraph`: parsing and validating request bodies, and rendering items.

Kept apart from the HTTP routing so each file stays readable. Parsing is strict on purpose: every body a
client sends is checked against the documented Graph rules (only `x-` custom headers, fileAttachment with
valid base64, no unknown properties), because a lenient fake would let a client bug reach production.
Property names are matched case-insensitively on their first letter, since msgraph-sdk writes message
properties in camelCase but action parameters (`Message`, `SaveToSentItems`, `AttachmentItem`) in PascalCase.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses
from typing import Any, NamedTuple

from ._http import Request

DEFAULT_MAX_SEND = 35 * 1024 * 1024  # Exchange Online's default MaxSendSize
SMALL_ATTACHMENT_LIMIT = 3 * 1024 * 1024  # a single attachment POST must decode to less than this
FILE_ATTACHMENT = "#microsoft.graph.fileAttachment"
UNSUPPORTED_ATTACHMENTS = ("#microsoft.graph.itemAttachment", "#microsoft.graph.referenceAttachment")

WRITABLE = {
    "subject",
    "body",
    "from",
    "sender",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "replyTo",
    "internetMessageId",
    "internetMessageHeaders",
    "attachments",
    "importance",
    "isDeliveryReceiptRequested",
    "isReadReceiptRequested",
    "categories",
    "flag",
    "isRead",
    "inferenceClassification",
    "singleValueExtendedProperties",
    "multiValueExtendedProperties",
    "@odata.type",
}
ATTACHMENT_KEYS = {"@odata.type", "name", "contentType", "contentBytes", "isInline", "contentId", "contentLocation"}
_ID = re.compile(r"^AAMk[A-Za-z0-9_-]{40,}={0,2}$")


class GraphError(Exception):
    """An error answer; `violation` (when set) is a rule the client broke and is logged as such."""

    def __init__(
        self, status: int, code: str, message: str, *, violation: bool = False, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.violation = violation
        self.headers = headers or {}


def bad(code: str, message: str, status: int = 400) -> GraphError:
    """A 400-class error caused by a malformed request: always a client violation."""
    return GraphError(status, code, message, violation=True)


def new_id(extra: int = 110) -> str:
    """An opaque, long, URL-safe-base64 id with padding, shaped like Exchange's (AAMk...=)."""
    return base64.urlsafe_b64encode(b"\x00\x03\x24" + secrets.token_bytes(extra)).decode()


def valid_id(value: str) -> bool:
    return bool(_ID.match(value))


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def normalise(value: Any) -> Any:
    """Lower-case the first letter of every property name (PascalCase -> camelCase), recursively."""
    if isinstance(value, dict):
        return {(k if k.startswith("@") else k[:1].lower() + k[1:]): normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value


@dataclass(frozen=True)
class Address:
    address: str
    name: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"emailAddress": {"name": self.name or self.address, "address": self.address}}


@dataclass
class Attachment:
    id: str
    name: str
    content_type: str
    data: bytes
    is_inline: bool = False
    content_id: str | None = None
    modified: float = 0.0

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def to_json(self, *, with_bytes: bool, select: set[str] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "@odata.type": FILE_ATTACHMENT,
            "id": self.id,
            "lastModifiedDateTime": iso(self.modified),
            "name": self.name,
            "contentType": self.content_type,
            "size": self.size,
            "isInline": self.is_inline,
            "contentId": self.content_id,
            "contentLocation": None,
        }
        if with_bytes:
            out["contentBytes"] = base64.b64encode(self.data).decode()
        if select:
            out = {k: v for k, v in out.items() if k in select or k in ("@odata.type", "id")}
        return out


@dataclass
class Fields:
    """The message properties one create / PATCH / sendMail body carries (`present` says which)."""

    present: set[str] = field(default_factory=set)
    subject: str = ""
    body_type: str = "text"
    body: str = ""
    from_: Address | None = None
    sender: Address | None = None
    to: list[Address] = field(default_factory=list)
    cc: list[Address] = field(default_factory=list)
    bcc: list[Address] = field(default_factory=list)
    reply_to: list[Address] = field(default_factory=list)
    internet_message_id: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)


@dataclass
class Item:
    """A message in a mailbox: a draft, or the copy in Sent Items after a send."""

    id: str
    folder: str  # "drafts" or "sentitems"
    created: float
    visible_at: float  # Exchange's index lag: $filter finds the item only from this moment on
    fields: Fields
    conversation_id: str = field(default_factory=lambda: new_id(60))
    open_uploads: int = 0
    message_class: str = "IPM.Note"  # PR_MESSAGE_CLASS (String 0x001A); an NDR is REPORT.IPM.Note.NDR
    mime: bytes | None = None  # what GET .../$value returns, for items that arrived as MIME (inbox mail)

    @property
    def is_draft(self) -> bool:
        return self.folder == "drafts"

    def size_estimate(self) -> int:
        """Roughly the MIME size Exchange compares with MaxSendSize: base64 attachments plus headers and body."""
        attached = sum(4 * ((a.size + 2) // 3) for a in self.fields.attachments)
        return attached + len(self.fields.body.encode()) + 2048 * (1 + len(self.fields.attachments))

    def to_json(self, select: set[str] | None = None) -> dict[str, Any]:
        f = self.fields
        sender = f.sender or f.from_
        out: dict[str, Any] = {
            "@odata.etag": 'W/"' + self.id[-12:] + '"',
            "id": self.id,
            "createdDateTime": iso(self.created),
            "lastModifiedDateTime": iso(self.created),
            "changeKey": self.id[-12:],
            "categories": [],
            "receivedDateTime": iso(self.created),
            "sentDateTime": iso(self.created),
            "hasAttachments": bool(f.attachments),
            "internetMessageId": f.internet_message_id,
            "subject": f.subject,
            "bodyPreview": f.body[:255],
            "importance": "normal",
            "parentFolderId": self.folder,
            "conversationId": self.conversation_id,
            "isDeliveryReceiptRequested": False,
            "isReadReceiptRequested": False,
            "isRead": True,
            "isDraft": self.is_draft,
            "inferenceClassification": "focused",
            "body": {"contentType": f.body_type, "content": f.body},
            "sender": sender.to_json() if sender else None,
            "from": f.from_.to_json() if f.from_ else None,
            "toRecipients": [a.to_json() for a in f.to],
            "ccRecipients": [a.to_json() for a in f.cc],
            "bccRecipients": [a.to_json() for a in f.bcc],
            "replyTo": [a.to_json() for a in f.reply_to],
            "flag": {"flagStatus": "notFlagged"},
        }
        if select:
            out = {k: v for k, v in out.items() if k in select or k in ("@odata.etag", "id")}
            if "internetMessageHeaders" in select:  # Graph returns these only when $select asks for them
                out["internetMessageHeaders"] = [{"name": n, "value": v} for n, v in f.headers]
        return out


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise bad("RequestBodyRead", f"{what} must be a string.")
    return value


def _address(value: Any, what: str) -> Address:
    email = value.get("emailAddress") if isinstance(value, dict) else None
    if not isinstance(email, dict) or set(value) - {"emailAddress"} or set(email) - {"address", "name"}:
        raise bad("RequestBodyRead", f"{what} must be {{'emailAddress': {{'address', 'name'}}}}, got {value!r}.")
    address = _str(email.get("address"), f"{what}.emailAddress.address")
    return Address(address.strip(), _str(email.get("name") or "", f"{what}.emailAddress.name"))


def _addresses(value: Any, what: str) -> list[Address]:
    if not isinstance(value, list):
        raise bad("RequestBodyRead", f"{what} must be a collection of recipients.")
    return [_address(v, f"{what}[{i}]") for i, v in enumerate(value)]


def parse_attachment(value: Any, *, now: float) -> Attachment:
    """A fileAttachment body as Graph validates it; item/reference attachments are not modelled."""
    if not isinstance(value, dict):
        raise bad("RequestBodyRead", "An attachment must be a JSON object.")
    kind = value.get("@odata.type")
    if kind in UNSUPPORTED_ATTACHMENTS:
        raise bad("ErrorInvalidRequest", f"{kind} is not supported by FakeGraph (a scan gateway sends files).")
    if kind != FILE_ATTACHMENT:
        raise bad("ErrorInvalidRequest", f"'@odata.type' must be '{FILE_ATTACHMENT}', got {kind!r}.")
    unknown = set(value) - ATTACHMENT_KEYS
    if unknown:
        raise bad(
            "RequestBodyRead", f"The property '{min(unknown)}' does not exist on type 'microsoft.graph.fileAttachment'."
        )
    name = value.get("name")
    if not isinstance(name, str) or not name.strip():
        raise bad("ErrorInvalidRequest", "The attachment name is required.")
    raw = _str(value.get("contentBytes"), "contentBytes")
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise bad(
            "RequestBodyRead", "Cannot convert the literal in 'contentBytes' to the expected type 'Edm.Binary'."
        ) from exc
    content_id = value.get("contentId")
    return Attachment(
        id=new_id(130),
        name=name,
        content_type=_str(value.get("contentType") or "application/octet-stream", "contentType"),
        data=data,
        is_inline=bool(value.get("isInline", False)),
        content_id=_str(content_id, "contentId") if content_id is not None else None,
        modified=now,
    )


def parse_message(value: Any, *, now: float, max_custom_headers: int) -> Fields:
    """A message body (create draft, PATCH, sendMail's message): validated, in the fake's own terms."""
    if not isinstance(value, dict):
        raise bad("RequestBodyRead", "The message must be a JSON object.")
    unknown = set(value) - WRITABLE
    if unknown:
        raise bad(
            "RequestBodyRead",
            f"The property '{min(unknown)}' does not exist on type 'microsoft.graph.message' or is read-only.",
        )
    kind = value.get("@odata.type", "#microsoft.graph.message")
    if kind != "#microsoft.graph.message":
        raise bad("RequestBodyRead", f"'@odata.type' of a message must be '#microsoft.graph.message', got {kind!r}.")
    f = Fields(present=set(value) - {"@odata.type"})
    if "subject" in value:
        f.subject = _str(value["subject"] or "", "subject")
    if "body" in value:
        body = value["body"]
        if not isinstance(body, dict) or set(body) - {"contentType", "content"}:
            raise bad("RequestBodyRead", "body must be {'contentType', 'content'}.")
        kind = _str(body.get("contentType", "text"), "body.contentType").lower()
        if kind not in ("text", "html"):
            raise bad("RequestBodyRead", f"The value '{kind}' is not valid for body.contentType (text or html).")
        f.body_type, f.body = kind, _str(body.get("content") or "", "body.content")
    for key, attr in (("from", "from_"), ("sender", "sender")):
        if value.get(key) is not None:
            setattr(f, attr, _address(value[key], key))
    for key, attr in (
        ("toRecipients", "to"),
        ("ccRecipients", "cc"),
        ("bccRecipients", "bcc"),
        ("replyTo", "reply_to"),
    ):
        if key in value:
            setattr(f, attr, _addresses(value[key] or [], key))
    if value.get("internetMessageId") is not None:
        mid = _str(value["internetMessageId"], "internetMessageId")
        if not re.fullmatch(r"<[^<>\s@]+@[^<>\s@]+>", mid):
            raise bad(
                "ErrorInvalidInternetMessageId",
                f"The internetMessageId '{mid}' is not an RFC 5322 msg-id (<left@right>).",
            )
        f.internet_message_id = mid
    if "internetMessageHeaders" in value:
        headers = value["internetMessageHeaders"] or []
        if not isinstance(headers, list):
            raise bad("RequestBodyRead", "internetMessageHeaders must be a collection.")
        for h in headers:
            if not isinstance(h, dict) or set(h) - {"name", "value"}:
                raise bad("RequestBodyRead", "Each internet message header must be {'name', 'value'}.")
            name = _str(h.get("name"), "header name")
            if not name.lower().startswith("x-"):
                raise bad(
                    "InvalidInternetMessageHeader",
                    f"The internet message header name '{name}' should start with 'x-' or 'X-'.",
                )
            f.headers.append((name, _str(h.get("value") or "", "header value")))
        if len(f.headers) > max_custom_headers:
            raise bad(
                "InvalidInternetMessageHeaderCollection",
                f"Maximum number of headers in one message should be less than or equal to {max_custom_headers}.",
            )
    if "attachments" in value:
        items = value["attachments"] or []
        if not isinstance(items, list):
            raise bad("RequestBodyRead", "attachments must be a collection.")
        f.attachments = [parse_attachment(a, now=now) for a in items]
    return f


def parse_mime(text: bytes, *, now: float) -> Fields:
    """sendMail / create with `Content-Type: text/plain`: the body is a base64 RFC 5322 message."""
    try:
        raw = base64.b64decode(b"".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise bad("ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content.") from exc
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    if not isinstance(msg, EmailMessage) or not msg.keys():
        raise bad("ErrorMimeContentInvalid", "The MIME content is not a message.")

    def addrs(name: str) -> list[Address]:
        return [Address(a, n) for n, a in getaddresses([str(v) for v in msg.get_all(name, [])]) if a]

    f = Fields(present={"subject", "body", "from", "toRecipients", "ccRecipients", "bccRecipients", "replyTo"})
    f.subject = str(msg.get("Subject", ""))
    sender = addrs("From")
    f.from_ = sender[0] if sender else None
    f.to, f.cc, f.bcc, f.reply_to = addrs("To"), addrs("Cc"), addrs("Bcc"), addrs("Reply-To")
    f.internet_message_id = str(msg["Message-ID"]).strip() if msg["Message-ID"] else None
    f.headers = [(k, str(v)) for k, v in msg.items() if k.lower().startswith("x-")]
    body = msg.get_body(preferencelist=("html", "plain"))
    if body is not None:
        f.body_type = "html" if body.get_content_subtype() == "html" else "text"
        f.body = str(body.get_content())
    for part in msg.iter_attachments():
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        cid = part.get("Content-ID")
        f.attachments.append(
            Attachment(
                id=new_id(130),
                name=part.get_filename() or "attachment",
                content_type=part.get_content_type(),
                data=data,
                is_inline=part.get_content_disposition() == "inline",
                content_id=str(cid).strip("<>") if cid else None,
                modified=now,
            )
        )
    return f


# -- server-side records ----------------------------------------------------------------------------


@dataclass
class Mailbox:
    upn: str
    id: str
    addresses: set[str]  # lower-case addresses it may send as (UPN, aliases, send_as grants)
    access_denied: bool = False
    rest_disabled: bool = False
    max_send_size: int = DEFAULT_MAX_SEND
    send_as_denied: bool = True
    items: dict[str, Item] = field(default_factory=dict)
    in_flight: int = 0
    throttled_until: float = 0.0  # time.monotonic()
    throttled_at: float = 0.0


@dataclass
class UploadSession:
    id: str
    token: str
    target: str  # path + query exactly as handed out
    mailbox: Mailbox
    message_id: str
    name: str
    size: int
    content_type: str
    is_inline: bool
    content_id: str | None
    expires: float
    data: bytearray = field(default_factory=bytearray)
    state: str = "open"  # open | done | cancelled


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    status: int  # 0 = connection dropped without a reply
    body_size: int
    had_auth: bool
    mailbox: str | None
    request_id: str
    code: str | None = None


class DeliveredAttachment(NamedTuple):
    name: str
    content_type: str
    size: int
    sha256: str
    is_inline: bool
    content_id: str | None


@dataclass(frozen=True)
class DeliveredMessage:
    mailbox: str
    internet_message_id: str
    from_address: str | None
    from_name: str | None
    reply_to: list[str]
    to: list[str]
    cc: list[str]
    bcc: list[str]
    subject: str
    body_content_type: str
    body: str
    headers: dict[str, str]
    attachments: list[DeliveredAttachment]
    via: str  # "send" (draft) or "sendMail"
    sent_item_id: str | None  # the Sent Items copy, None when saveToSentItems was false


class Ctx:
    """Per-request bookkeeping: ids for headers/error bodies, what the log should say."""

    def __init__(self, req: Request) -> None:
        self.req = req
        self.rid = str(uuid.uuid4())
        self.crid = req.header("client-request-id") or self.rid
        self.ids = {"request-id": self.rid, "client-request-id": self.crid}
        self.mailbox: Mailbox | None = None
        self.had_auth = req.header("Authorization") is not None
        self.graph = False
        self.code: str | None = None


def render_mime(item: Item) -> bytes:
    """GET /messages/{id}/$value for an item created through JSON: its headers and text body as RFC 5322."""
    if item.mime is not None:
        return item.mime
    f = item.fields
    msg = EmailMessage()
    msg["Subject"] = f.subject
    if f.from_:
        msg["From"] = f.from_.address
    if f.to:
        msg["To"] = ", ".join(a.address for a in f.to)
    msg["Message-ID"] = f.internet_message_id or ""
    msg.set_content(f.body or "")
    return bytes(msg)


def ndr_mime(upn: str, original: Fields, refused: list[str], now: float) -> bytes:
    """The RFC 3464 non-delivery report Exchange Online puts in the sender's Inbox for refused recipients:
    a human-readable part, one message/delivery-status block per recipient, and the original's headers."""
    boundary = "ndr-" + secrets.token_hex(8)
    human = "Delivery has failed to these recipients or groups:\r\n\r\n" + "\r\n".join(refused)
    per_recipient = "".join(
        f"\r\nFinal-Recipient: rfc822;{r}\r\nAction: failed\r\nStatus: 5.1.10\r\n"
        f"Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient {r} not found by SMTP address lookup\r\n"
        for r in refused
    )
    headers = (
        f"From: {original.from_.address if original.from_ else upn}\r\n"
        f"To: {', '.join(a.address for a in original.to)}\r\n"
        f"Subject: {original.subject}\r\n"
        f"Message-ID: {original.internet_message_id}\r\n"
    )
    text = (
        f"From: Microsoft Outlook <MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@{upn.rpartition('@')[2]}>\r\n"
        f"To: {upn}\r\n"
        f"Subject: Undeliverable: {original.subject}\r\n"
        f"Date: {datetime.fromtimestamp(now, UTC).strftime('%a, %d %b %Y %H:%M:%S +0000')}\r\n"
        f"Message-ID: <{secrets.token_hex(12)}@fake.prod.outlook.com>\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n'
        "X-MS-Exchange-Message-Is-Ndr: \r\n"
        "\r\n"
        f"--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{human}\r\n"
        f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns;fake.prod.outlook.com\r\n{per_recipient}\r\n"
        f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n{headers}\r\n"
        f"--{boundary}--\r\n"
    )
    return text.encode()
