"""A strict loopback stand-in for the Microsoft Graph v1.0 mail endpoints a sender uses, plus Outlook upload URLs.

Why strict: tests pass the REAL msgraph-sdk / httpx through it, and every rule a client breaks is answered the
way Graph would AND appended to `graph.violations` (tests assert it stays empty), so a client that only works
against a lenient double is caught here rather than in production. What was delivered lands in `graph.sent`.

Rules and the answers chosen (sources: /work/shared/platform-facts.md sections 1, 2, 11; "guess" = undocumented):
- Bearer token checked with the `FakeIdentityEndpoint` (audience `https://graph.microsoft.com` by default,
  expiry, revocation, app roles: Mail.ReadWrite for drafts/attachments/search, Mail.Send for send/sendMail),
  else 401 `InvalidAuthenticationToken` / 403 `ErrorAccessDenied`. `/me` is 400 (app-only).
- Request bodies over 4 MiB: 400 `BadRequest` "The maximum request length supported is 4MB." (Graph's own
  answer, microsoftgraph/microsoft-graph-docs issues 11806 and 85; a Q&A answer's "413" is not what Graph
  sends), except `POST .../attachments`, which instead must decode to < 3 MiB (the attachment docs' limit),
  else the same 400 (the 3 MiB cut-off for the reply is a guess). POST/PUT/PATCH without Content-Length: 411
  (reported for Graph's front end; the docs show `Content-Length: 0` on `.../send`).
- Message bodies: camelCase or PascalCase names; unknown or read-only properties 400 `RequestBodyRead`; custom
  headers must start with x-/X- (400 `InvalidInternetMessageHeader`) and number at most 5 (400
  `InvalidInternetMessageHeaderCollection`, a third-party report); `internetMessageId` must be `<left@right>`
  (guess); attachments must be `#microsoft.graph.fileAttachment` with a name and valid base64 (item/reference
  attachments are refused as unsupported). `text/plain` bodies on create/sendMail are base64 MIME.
- Upload sessions for 3 MiB..150 MiB (157,286,400 bytes; guess: "150 MB" read as MiB), else 400
  `ErrorAttachmentSizeShouldNotBeLessThanMinimumSize` / `...MoreThanMaximumSize` (the second name is a guess).
  The upload URL is an opaque `/api/v2.0/Users('..')/Messages('..')/AttachmentSessions('..')?authtoken=..` on
  this server. PUTs: no Authorization (401 + violation), exact `Content-Range`, in order, chunks < 4 MiB
  (413), non-final chunks multiples of 320 KiB when `strict_320k` (400; the rule is OneDrive's, guess for
  Outlook). Intermediate 200 `nextExpectedRanges: ["<next>"]` (bare offset as in the Outlook docs example;
  `bare_next_range=False` gives "<next>-"), final 201 + Location. Repeating an accepted range: 416 with
  `nextExpectedRanges` (not a violation: a lost reply forces it); skipping ahead: 416 + violation. Expired
  session: 401 `InvalidAuthenticationToken` (guess); cancelled/finished session or deleted draft: 404 (guess).
- Send: the draft id dies (404 `ErrorItemNotFound` afterwards) and a Sent Items copy gets a new id. Exchange
  does this asynchronously (platform-facts: "creates the item in Drafts, then moves it to Sent Items"): with
  `send_lag` the draft stays in Drafts, still a draft, for that long after the 202, and a second send of it
  goes out again (a duplicate the tests catch); only then is it delivered and copied to Sent Items, which
  `$filter` finds `search_lag` later still. No
  recipients: 400 `ErrorInvalidRecipients`; from/sender not the mailbox (nor an alias / send_as address) with
  `send_as_denied`: 403 `ErrorSendAsDenied` (status a guess); over `max_send_size` (base64 estimate):
  400 `ErrorMessageSizeExceeded` (status a guess). Sending with an unfinished upload session is a violation;
  one past its `expirationDateTime` no longer counts (its URL refuses every PUT; guess: Exchange drops it).
- At most `max_concurrency` (4) in-flight requests per mailbox (upload PUTs count): 429 `ApplicationThrottled`
  + Retry-After + violation. After any 429 the mailbox stays throttled until Retry-After passes; requests
  arriving in that window (beyond `retry_after_grace`) are violations and get 429 again.
- Also served, minimally: `GET .../messages/{id}/attachments/{aid}` (with contentBytes), `DELETE` of it,
  `GET .../mailFolders/{name}` and `.../mailFolders/{name}/messages`. Malformed ids: 400 `ErrorInvalidIdMalformed`.
- `$filter` on messages supports only `internetMessageId eq '<v>'` (quotes doubled); items are found only
  `search_lag` seconds after they were created (Exchange indexes asynchronously).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlencode

from ._http import Response
from .graph_core import GRAPH_AUDIENCE, MAX_BODY, MAX_REQUEST_MESSAGE, GraphCore, TokenValidator
from .graph_model import (
    DEFAULT_MAX_SEND,
    SMALL_ATTACHMENT_LIMIT,
    Address,
    Attachment,
    Ctx,
    DeliveredAttachment,
    DeliveredMessage,
    Fields,
    GraphError,
    Item,
    Mailbox,
    RequestRecord,
    UploadSession,
    bad,
    iso,
    ndr_mime,
    new_id,
    normalise,
    parse_attachment,
    parse_message,
    parse_mime,
    render_mime,
    valid_id,
)
from .identity import TokenClaims

__all__ = [
    "CHUNK_MULTIPLE",
    "DEFAULT_MAX_SEND",
    "GRAPH_AUDIENCE",
    "MAX_BODY",
    "MAX_CHUNK",
    "DeliveredAttachment",
    "DeliveredMessage",
    "FakeGraph",
    "Mailbox",
    "RequestRecord",
    "TokenValidator",
]

MAX_CHUNK = 4 * 1024 * 1024  # chunks must be strictly smaller
CHUNK_MULTIPLE = 320 * 1024
SESSION_MIN = SMALL_ATTACHMENT_LIMIT
SESSION_MAX = 150 * 1024 * 1024
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
READ, WRITE, SEND = ("Mail.ReadWrite", "Mail.Read"), ("Mail.ReadWrite",), ("Mail.Send",)
_UPLOAD = re.compile(r"^/api/v2\.0/Users\('([^']+)'\)/Messages\('([^']+)'\)/AttachmentSessions\('([^']+)'\)$")
_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
_FILTER = re.compile(r"^\s*internetMessageId\s+eq\s+'((?:[^']|'')*)'\s*$", re.IGNORECASE)
_DATE_FILTER = re.compile(
    r"^\s*(receivedDateTime|createdDateTime)\s+(ge|gt|le|lt)\s+(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)\s*$"
)
_CLASS_EXPAND = "singleValueExtendedProperties($filter=id eq 'String 0x001A')"
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "ge": lambda a, b: a >= b,
    "gt": lambda a, b: a > b,
    "le": lambda a, b: a <= b,
    "lt": lambda a, b: a < b,
}


class FakeGraph(GraphCore):
    """Graph v1.0 mail + Outlook upload URLs on loopback; see the module docstring for every rule.

    Construct with `FakeGraph(idp_or_validator, audience=..., seed=..., <knobs>)`; the knobs are listed on
    `GraphCore.__init__` and can be changed on the instance at any time.
    """

    def _mailbox_route(self, ctx: Ctx, box: Mailbox, claims: TokenClaims | None, rest: list[str]) -> Response:
        m, low = ctx.req.method, [s.lower().removeprefix("microsoft.graph.") for s in rest]
        routes: dict[tuple[str, ...], dict[str, tuple[tuple[str, ...], Callable[[], Response]]]] = {
            ("sendmail",): {"POST": (SEND, lambda: self._send_mail(ctx, box))},
            ("messages",): {
                "GET": (READ, lambda: self._list(ctx, box, None)),
                "POST": (WRITE, lambda: self._create(ctx, box)),
            },
            ("mailfolders", "*"): {
                "GET": (READ, lambda: self._json(200, {"id": new_id(40), "displayName": rest[1]}, ctx))
            },
            ("mailfolders", "*", "messages"): {"GET": (READ, lambda: self._list(ctx, box, low[1]))},
            ("messages", "*", "$value"): {"GET": (READ, lambda: self._mime(ctx, box, rest[1]))},
            ("messages", "*"): {
                "GET": (READ, lambda: self._get(ctx, box, rest[1])),
                "PATCH": (WRITE, lambda: self._patch(ctx, box, rest[1])),
                "DELETE": (WRITE, lambda: self._delete(ctx, box, rest[1])),
            },
            ("messages", "*", "send"): {"POST": (SEND, lambda: self._send(ctx, box, rest[1]))},
            ("messages", "*", "attachments"): {
                "GET": (READ, lambda: self._attachments(ctx, box, rest[1])),
                "POST": (WRITE, lambda: self._add_attachment(ctx, box, rest[1])),
            },
            ("messages", "*", "attachments", "createuploadsession"): {
                "POST": (WRITE, lambda: self._create_session(ctx, box, rest[1]))
            },
            ("messages", "*", "attachments", "*"): {
                "GET": (READ, lambda: self._attachment(ctx, box, rest[1], rest[3], False)),
                "DELETE": (WRITE, lambda: self._attachment(ctx, box, rest[1], rest[3], True)),
            },
        }
        key = tuple(low)
        methods = routes.get(key) or next(
            (
                v
                for k, v in routes.items()
                if len(k) == len(key) and all(a in ("*", b) for a, b in zip(k, key, strict=True))
            ),
            None,
        )
        if methods is None:
            raise bad("BadRequest", f"Resource not found for the segment '{'/'.join(rest)}'.")
        if m not in methods:
            raise bad("MethodNotAllowed", f"{m} is not allowed on /{'/'.join(rest)}.", 405)
        roles, handler = methods[m]
        self._need(claims, roles)
        return handler()

    def _item(self, box: Mailbox, message_id: str, *, draft: bool = False) -> Item:
        if not valid_id(message_id):
            raise bad("ErrorInvalidIdMalformed", f"Id is malformed: {message_id!r}.")
        item = box.items.get(message_id)
        if item is None:
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        if draft and not item.is_draft:
            raise bad("ErrorInvalidOperation", "This operation is only valid on a draft message.")
        return item

    def _body(self, ctx: Ctx, *, mime_ok: bool) -> Any:
        kind = (ctx.req.header("Content-Type") or "").split(";")[0].strip().lower()
        if mime_ok and kind == "text/plain":
            return None
        if kind != "application/json":
            raise bad("UnsupportedMediaType", f"Content-Type {kind or '(none)'!r} is not supported here.", 415)
        try:
            return normalise(json.loads(ctx.req.body))
        except ValueError as exc:
            raise bad(
                "BadRequest",
                "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
            ) from exc

    def _message_fields(self, ctx: Ctx, value: Any) -> Fields:
        now = self.clock()
        if value is None:
            return parse_mime(ctx.req.body, now=now)
        return parse_message(value, now=now, max_custom_headers=self.max_custom_headers)

    def _new_item(self, box: Mailbox, fields: Fields, folder: str) -> Item:
        fields.internet_message_id = fields.internet_message_id or f"<{secrets.token_hex(12)}@fake.prod.outlook.com>"
        now = self.clock()
        item = Item(new_id(), folder, now, now + self.search_lag, fields)
        box.items[item.id] = item
        return item

    def _create(self, ctx: Ctx, box: Mailbox) -> Response:
        item = self._new_item(box, self._message_fields(ctx, self._body(ctx, mime_ok=True)), "drafts")
        return self._json(201, item.to_json(), ctx)

    def _list(self, ctx: Ctx, box: Mailbox, folder: str | None) -> Response:
        q = ctx.req
        now = self.clock()
        items = [i for i in box.items.values() if folder in (None, i.folder)]
        if q.q("$filter") is not None:
            items = self._filtered(items, q.q("$filter") or "", now)
        items.sort(key=lambda i: i.created, reverse=True)
        try:
            top, skip = int(q.q("$top") or 10), int(q.q("$skip") or 0)
        except ValueError as exc:
            raise bad("BadRequest", f"$top / $skip must be integers: {q.q('$top')!r}, {q.q('$skip')!r}.") from exc
        select = {s.strip() for s in (q.q("$select") or "").split(",") if s.strip()} or None
        expand = q.q("$expand")
        if expand not in (None, _CLASS_EXPAND):
            raise bad("BadRequest", f"FakeGraph supports $expand={_CLASS_EXPAND} only, not {expand!r}.")
        page = [i.to_json(select) for i in items[skip : skip + top]]
        if expand:
            for out_item, item in zip(page, items[skip : skip + top], strict=True):
                out_item["singleValueExtendedProperties"] = [{"id": "String 0x001A", "value": item.message_class}]
        out: dict[str, Any] = {"value": page}
        if skip + top < len(items):
            query = {k: v[0] for k, v in q.query.items()} | {"$skip": str(skip + top)}
            out["@odata.nextLink"] = f"{self.url}{q.path}?{urlencode(query)}"
        return self._json(200, out, ctx)

    def _filtered(self, items: list[Item], text: str, now: float) -> list[Item]:
        """`internetMessageId eq '<id>'` (only once Exchange indexed the item), or date comparisons joined by `and`."""
        match = _FILTER.match(text)
        if match:
            wanted = match.group(1).replace("''", "'")
            return [i for i in items if i.fields.internet_message_id == wanted and i.visible_at <= now]
        for clause in text.split(" and "):
            date = _DATE_FILTER.match(clause)
            if not date:
                raise bad(
                    "BadRequest",
                    f"Invalid filter clause (FakeGraph supports internetMessageId eq '<id>' and "
                    f"receivedDateTime/createdDateTime comparisons): {text!r}.",
                )
            moment = datetime.strptime(date.group(3), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
            compare = _COMPARE[date.group(2)]
            items = [i for i in items if compare(float(int(i.created)), moment)]
        return items

    def _mime(self, ctx: Ctx, box: Mailbox, message_id: str) -> Response:
        item = self._item(box, message_id)
        return Response(200, render_mime(item), {**ctx.ids, "Content-Type": "text/plain"})

    def add_inbox_item(
        self, mailbox: str, mime: bytes, message_class: str = "IPM.Note", received: float | None = None
    ) -> Item:
        """Put a message that arrived from outside (an NDR, a reply, spam) in the mailbox's Inbox."""
        now = self.clock() if received is None else received
        with self._lock:
            box = self.mailbox(mailbox)
            item = Item(new_id(), "inbox", now, now + self.search_lag, Fields(), message_class=message_class, mime=mime)
            box.items[item.id] = item
        return item

    def remove(self, mailbox: str, item_id: str) -> None:
        """Delete an item as someone else would (a user emptying Drafts, another client): no request recorded."""
        with self._lock:
            box = self.mailbox(mailbox)
            del box.items[item_id]
            for s in self._sessions.values():
                if s.message_id == item_id and s.state == "open":
                    s.state = "cancelled"

    def _get(self, ctx: Ctx, box: Mailbox, message_id: str) -> Response:
        select = {s.strip() for s in (ctx.req.q("$select") or "").split(",") if s.strip()} or None
        return self._json(200, self._item(box, message_id).to_json(select), ctx)

    def _patch(self, ctx: Ctx, box: Mailbox, message_id: str) -> Response:
        item = self._item(box, message_id)
        if not item.is_draft:
            raise bad("ErrorInvalidPropertyUpdateSentMessage", "Update operation is not allowed on a sent message.")
        f = self._message_fields(ctx, self._body(ctx, mime_ok=False))
        for fixed in ("attachments", "internetMessageHeaders"):
            if fixed in f.present:
                raise bad(
                    "ErrorInvalidPropertySet",
                    f"{fixed} cannot be changed by PATCH (set headers at creation, POST attachments).",
                )
        names = {
            "toRecipients": "to",
            "ccRecipients": "cc",
            "bccRecipients": "bcc",
            "replyTo": "reply_to",
            "from": "from_",
            "internetMessageId": "internet_message_id",
        }
        for prop in f.present:
            attrs = ("body_type", "body") if prop == "body" else (names.get(prop, prop),)
            for attr in attrs:
                if hasattr(f, attr):
                    setattr(item.fields, attr, getattr(f, attr))
        return self._json(200, item.to_json(), ctx)

    def _delete(self, ctx: Ctx, box: Mailbox, message_id: str) -> Response:
        item = self._item(box, message_id)
        del box.items[item.id]
        for s in self._sessions.values():
            if s.message_id == item.id and s.state == "open":
                s.state = "cancelled"
        return self._empty(204, ctx)

    def _attachments(self, ctx: Ctx, box: Mailbox, message_id: str) -> Response:
        select = {s.strip() for s in (ctx.req.q("$select") or "").split(",") if s.strip()} or None
        item = self._item(box, message_id)
        return self._json(
            200, {"value": [a.to_json(with_bytes=False, select=select) for a in item.fields.attachments]}, ctx
        )

    def _attachment(self, ctx: Ctx, box: Mailbox, message_id: str, attachment_id: str, delete: bool) -> Response:
        item = self._item(box, message_id, draft=delete)
        found = next((a for a in item.fields.attachments if a.id == attachment_id), None)
        if found is None:
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        if delete:
            item.fields.attachments.remove(found)
            return self._empty(204, ctx)
        return self._json(200, found.to_json(with_bytes=True), ctx)

    def _add_attachment(self, ctx: Ctx, box: Mailbox, message_id: str) -> Response:
        item = self._item(box, message_id, draft=True)
        attachment = parse_attachment(self._body(ctx, mime_ok=False), now=self.clock())
        if attachment.size >= SMALL_ATTACHMENT_LIMIT:  # the body of one this size is over 4 MB as base64
            raise bad("BadRequest", MAX_REQUEST_MESSAGE)
        item.fields.attachments.append(attachment)
        return self._json(201, attachment.to_json(with_bytes=True), ctx)

    def _create_session(self, ctx: Ctx, box: Mailbox, message_id: str) -> Response:
        item = self._item(box, message_id, draft=True)
        body = self._body(ctx, mime_ok=False)
        spec = body.get("attachmentItem") if isinstance(body, dict) and set(body) == {"attachmentItem"} else None
        allowed = {"attachmentType", "name", "size", "contentType", "isInline", "contentId"}
        if not isinstance(spec, dict) or set(spec) - allowed:
            raise bad(
                "RequestBodyRead", f"Expected {{'AttachmentItem': {{{', '.join(sorted(allowed))}}}}}, got {body!r}."
            )
        if str(spec.get("attachmentType", "")).lower() != "file":
            raise bad("ErrorInvalidRequest", "attachmentType must be 'file'.")
        name, size = spec.get("name"), spec.get("size")
        if not isinstance(name, str) or not name.strip() or not isinstance(size, int) or isinstance(size, bool):
            raise bad("ErrorInvalidRequest", "AttachmentItem needs a name and an integer size.")
        if size < SESSION_MIN:
            raise bad(
                "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize",
                f"Attachment size {size} is less than the minimum of {SESSION_MIN} bytes; POST it instead.",
            )
        if size > SESSION_MAX:
            raise bad(
                "ErrorAttachmentSizeShouldNotBeMoreThanMaximumSize",
                f"Attachment size {size} is more than the maximum of {SESSION_MAX} bytes.",
            )
        if item.size_estimate() + 4 * ((size + 2) // 3) > box.max_send_size:
            raise GraphError(400, "ErrorMessageSizeExceeded", "The message exceeds the maximum supported size.")
        sid, token = new_id(90), secrets.token_urlsafe(48)
        path = f"/api/v2.0/Users('{box.id}@{TENANT}')/Messages('{item.id}')/AttachmentSessions('{sid}')"
        session = UploadSession(
            sid,
            token,
            f"{path}?authtoken={token}",
            box,
            item.id,
            name,
            size,
            str(spec.get("contentType") or "application/octet-stream"),
            bool(spec.get("isInline", False)),
            spec.get("contentId"),
            self.clock() + self.upload_session_lifetime,
        )
        self._sessions[sid] = session
        item.open_uploads += 1
        return self._json(
            201,
            {
                "@odata.context": f"{self.url}/v1.0/$metadata#microsoft.graph.uploadSession",
                "uploadUrl": f"{self.url}{session.target}",
                "expirationDateTime": iso(session.expires),
                "nextExpectedRanges": ["0-"],
            },
            ctx,
        )

    # -- sending ----------------------------------------------------------------------------------
    def _check_sendable(self, box: Mailbox, item: Item) -> None:
        f = item.fields
        if not (f.to or f.cc or f.bcc):
            raise GraphError(
                400,
                "ErrorInvalidRecipients",
                "At least one recipient isn't valid., A message can't be sent because it contains no recipients.",
            )
        for a in (*f.to, *f.cc, *f.bcc):
            if not re.fullmatch(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+", a.address):
                raise GraphError(400, "ErrorInvalidRecipients", f"At least one recipient isn't valid.: {a.address!r}")
        for who in (f.from_, f.sender):
            if who is not None and box.send_as_denied and who.address.lower() not in box.addresses:
                raise GraphError(
                    403,
                    "ErrorSendAsDenied",
                    "The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account.",
                )
        if item.size_estimate() > box.max_send_size:
            raise GraphError(400, "ErrorMessageSizeExceeded", "The message exceeds the maximum supported size.")

    def _deliver(self, box: Mailbox, item: Item, via: str, save: bool) -> None:
        f = item.fields
        sent_id = None
        if save:
            copy = Item(new_id(), "sentitems", self.clock(), self.clock() + self.search_lag, f, item.conversation_id)
            box.items[copy.id] = copy
            sent_id = copy.id
        sender = f.from_ or Address(box.upn)

        def addrs(xs: list[Address]) -> list[str]:
            return [x.address for x in xs]

        record = DeliveredMessage(
            box.upn,
            f.internet_message_id or "",
            sender.address,
            sender.name or None,
            addrs(f.reply_to),
            addrs(f.to),
            addrs(f.cc),
            addrs(f.bcc),
            f.subject,
            f.body_type,
            f.body,
            dict(f.headers),
            [
                DeliveredAttachment(a.name, a.content_type, a.size, a.sha256, a.is_inline, a.content_id)
                for a in f.attachments
            ],
            via,
            sent_id,
        )
        with self._sent_cv:
            self.sent.append(record)
            self._sent_cv.notify_all()
        refused = [a for a in record.to + record.cc + record.bcc if a.lower() in self.bounce_recipients]
        if refused:  # Exchange accepted the send (202); the refusal comes back later as an NDR in the Inbox
            now = self.clock()
            ndr = Item(
                new_id(),
                "inbox",
                now,
                now + self.search_lag,
                Fields(),
                message_class="REPORT.IPM.Note.NDR",
                mime=ndr_mime(box.upn, f, refused, now),
            )
            box.items[ndr.id] = ndr

    def _send(self, ctx: Ctx, box: Mailbox, message_id: str) -> Response:
        if ctx.req.body:
            raise bad("BadRequest", "message: send takes no body (Content-Length: 0).")
        item = self._item(box, message_id, draft=True)
        self._check_sendable(box, item)
        now = self.clock()
        unfinished = sum(
            1 for s in self._sessions.values() if s.message_id == item.id and s.state == "open" and now <= s.expires
        )
        if unfinished:
            self._violate(f"send of {box.upn} draft with {unfinished} unfinished upload session(s)")
        if self.send_lag > 0:  # Exchange acts later: the draft stays where it is until then
            self._pending_sends.append((self.clock() + self.send_lag, box, item))
            return self._empty(202, ctx)
        del box.items[item.id]
        self._deliver(box, item, "send", save=True)
        return self._empty(202, ctx)

    def settle(self) -> None:
        with self._lock:
            now = self.clock()
            due = [p for p in self._pending_sends if p[0] <= now]
            self._pending_sends = [p for p in self._pending_sends if p[0] > now]
            for _, box, item in sorted(due, key=lambda p: p[0]):
                box.items.pop(item.id, None)
                self._deliver(box, item, "send", save=True)  # a draft sent twice goes out twice

    def _send_mail(self, ctx: Ctx, box: Mailbox) -> Response:
        body = self._body(ctx, mime_ok=True)
        save = True
        if body is None:
            fields = self._message_fields(ctx, None)
        else:
            if not isinstance(body, dict) or set(body) - {"message", "saveToSentItems"} or "message" not in body:
                raise bad("RequestBodyRead", "sendMail takes {'Message': {...}, 'SaveToSentItems': bool}.")
            fields = self._message_fields(ctx, body["message"])
            save = body.get("saveToSentItems", True) is not False
        fields.internet_message_id = fields.internet_message_id or f"<{secrets.token_hex(12)}@fake.prod.outlook.com>"
        item = Item(new_id(), "drafts", self.clock(), self.clock(), fields)
        self._check_sendable(box, item)
        self._deliver(box, item, "sendMail", save)
        return self._empty(202, ctx)

    # -- Outlook upload URL -----------------------------------------------------------------------
    def _upload(self, ctx: Ctx) -> Response:
        req = ctx.req
        match = _UPLOAD.match(unquote(req.path))
        session = self._sessions.get(match.group(3)) if match else None
        if session is None:
            raise GraphError(
                404, "ErrorItemNotFound", "No upload session at this URL (was the URL altered?).", violation=True
            )
        ctx.mailbox = session.mailbox
        ctx.had_auth = req.header("Authorization") is not None
        if req.q("authtoken") != session.token:
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "The authtoken of the upload URL is missing or altered.",
                violation=True,
            )
        if req.target != session.target:
            self._violate(f"upload URL re-encoded by the client: {req.target!r} != {session.target!r}")
        if ctx.had_auth:
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "Upload URLs carry their own authtoken; an Authorization header is refused.",
                violation=True,
            )
        if req.method not in ("PUT", "DELETE"):
            raise bad("MethodNotAllowed", f"{req.method} is not allowed on an upload URL.", 405)
        return self._guarded(ctx, session.mailbox, lambda: self._upload_action(ctx, session))

    def _ranges(self, received: int) -> list[str]:
        return [str(received) if self.bare_next_range else f"{received}-"]

    def _upload_action(self, ctx: Ctx, s: UploadSession) -> Response:
        item = s.mailbox.items.get(s.message_id)
        if s.state != "open" or item is None:
            raise GraphError(
                404, "ErrorItemNotFound", f"The upload session is {s.state if item else 'gone with its draft'}."
            )
        if self.clock() > s.expires:
            raise GraphError(401, "InvalidAuthenticationToken", "The upload session has expired.")
        if ctx.req.method == "DELETE":
            s.state = "cancelled"
            item.open_uploads -= 1
            return self._empty(204, ctx)
        match = _RANGE.match(ctx.req.header("Content-Range") or "")
        if not match:
            raise bad(
                "InvalidContentRange",
                f"Content-Range must be 'bytes start-end/total', got {ctx.req.header('Content-Range')!r}.",
            )
        start, end, total = (int(g) for g in match.groups())
        length = len(ctx.req.body)
        if total != s.size or end < start or end >= total:
            raise bad(
                "InvalidContentRange", f"Content-Range {start}-{end}/{total} does not fit the declared size {s.size}."
            )
        if length != end - start + 1:
            raise bad("InvalidContentRange", f"Content-Range covers {end - start + 1} bytes but the body has {length}.")
        if length >= MAX_CHUNK:
            raise bad("RequestEntityTooLarge", f"Chunk of {length} bytes; each must be less than {MAX_CHUNK}.", 413)
        if self.strict_320k and end + 1 < total and length % CHUNK_MULTIPLE:
            raise bad("InvalidChunkSize", f"Non-final chunk of {length} bytes is not a multiple of {CHUNK_MULTIPLE}.")
        received = len(s.data)
        if start != received:
            err = GraphError(
                416,
                "InvalidRange",
                f"Expected the range starting at {received}, got {start}.",
                violation=start > received,
            )
            if err.violation:
                self._violate(f"PUT upload: skipped ahead to {start}, expected {received}")
            return self._json(
                416,
                {"error": {"code": err.code, "message": err.message}, "nextExpectedRanges": self._ranges(received)},
                ctx,
            )
        s.data.extend(ctx.req.body)
        if len(s.data) < s.size:
            return self._json(
                200, {"expirationDateTime": iso(s.expires), "nextExpectedRanges": self._ranges(len(s.data))}, ctx
            )
        attachment = Attachment(
            new_id(130), s.name, s.content_type, bytes(s.data), s.is_inline, s.content_id, self.clock()
        )
        item.fields.attachments.append(attachment)
        s.state, s.data = "done", bytearray()
        item.open_uploads -= 1
        location = (
            f"{self.url}/api/v2.0/Users('{s.mailbox.id}@{TENANT}')/Messages('{item.id}')/Attachments('{attachment.id}')"
        )
        return self._empty(201, ctx, {"Location": location})
