"""Plumbing of `FakeGraph`: knobs, the test-facing API, authentication, throttling and fault injection.

Split from `graph.py` (the routes) only to keep each file readable; import `FakeGraph` from `tests.fakes.graph`.
"""

from __future__ import annotations

import json
import math
import random
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from ._http import BackgroundServer, Request, Response
from .graph_model import (
    DEFAULT_MAX_SEND,
    Ctx,
    DeliveredMessage,
    GraphError,
    Item,
    Mailbox,
    RequestRecord,
    UploadSession,
    bad,
    iso,
)
from .identity import FakeIdentityEndpoint, InvalidToken, TokenClaims

GRAPH_AUDIENCE = "https://graph.microsoft.com"
MAX_BODY = 4 * 1024 * 1024
#: What Graph answers (400 BadRequest) to a request body over 4 MB: microsoftgraph/microsoft-graph-docs issue
#: 11806 (2021, this wording); issue 85 (2015) shows the older "Maximum request length exceeded." with 400 too.
MAX_REQUEST_MESSAGE = "The maximum request length supported is 4MB."

TokenValidator = Callable[[str], TokenClaims]


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    code: str
    retry_after: int | None
    after_effect: bool


class GraphCore(BackgroundServer):
    """Everything but the routes; `FakeGraph` (graph.py) adds them."""

    def __init__(
        self,
        tokens: FakeIdentityEndpoint | TokenValidator | None = None,
        *,
        audience: str = GRAPH_AUDIENCE,
        seed: int = 0,
        check_roles: bool = True,
        strict_320k: bool = True,
        bare_next_range: bool = True,
        max_concurrency: int = 4,
        max_custom_headers: int = 5,
        search_lag: float = 0.0,
        send_lag: float = 0.0,
        throttle_rate: float = 0.0,
        error_rate: float = 0.0,
        lose_reply_rate: float = 0.0,
        lose_reply_status: int | None = None,
        retry_after: int = 1,
        retry_after_grace: float = 0.25,
        upload_session_lifetime: float = 900.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Every knob is also a plain attribute that tests may change while the server runs.

        - `tokens`: the FakeIdentityEndpoint (or any `str -> TokenClaims` validator raising InvalidToken) that
          vouches for bearer tokens; None only checks that a Bearer token is present.
        - `audience`: the token audience Graph accepts (national clouds: `https://graph.microsoft.us`, ...).
        - `check_roles`: enforce Mail.ReadWrite / Mail.Send from the token's roles (403 ErrorAccessDenied).
        - `strict_320k`: non-final upload chunks must be multiples of 320 KiB.
        - `bare_next_range`: upload PUT replies say ["<next>"] (Outlook docs) rather than ["<next>-"].
        - `max_concurrency`, `max_custom_headers`: Graph's 4 in-flight requests per mailbox, 5 x- headers.
        - `search_lag`: seconds before a new item can be found by `$filter`.
        - `send_lag`: seconds between a `.../send` 202 and Exchange acting on it: until then the draft stays
          in Drafts (a second send of it goes out again) and nothing is delivered or in Sent Items.
        - `throttle_rate`, `error_rate`, `lose_reply_rate`: per-request probabilities (drawn from
          `random.Random(seed)`) of a 429 with `Retry-After: retry_after`, a 503, and "acted, then lost the
          reply" (connection dropped, or `lose_reply_status` such as 504 returned after acting).
        - `retry_after_grace`: requests this soon after a 429 are answered 429 but not counted as violations
          (they may have been sent before the client could see the 429).
        - `upload_session_lifetime`: seconds until an upload URL expires.
        - `clock`: wall clock for dates and expiry (replace it to travel in time).
        """
        super().__init__()
        self.validate: TokenValidator | None = (
            tokens.validate_token if isinstance(tokens, FakeIdentityEndpoint) else tokens
        )
        self.audience = audience.rstrip("/")
        self.check_roles, self.strict_320k, self.bare_next_range = check_roles, strict_320k, bare_next_range
        self.max_concurrency, self.max_custom_headers, self.search_lag = max_concurrency, max_custom_headers, search_lag
        self.send_lag = send_lag
        #: Fault knobs: probabilities per request (decided with `rng`), Retry-After seconds, lost-reply style
        #: (None = drop the connection after acting, or a status such as 504 returned after acting).
        self.throttle_rate, self.error_rate, self.lose_reply_rate = throttle_rate, error_rate, lose_reply_rate
        self.lose_reply_status, self.retry_after, self.retry_after_grace = (
            lose_reply_status,
            retry_after,
            retry_after_grace,
        )
        self.upload_session_lifetime = upload_session_lifetime
        self.clock = clock
        self.rng = random.Random(seed)
        self._lock = threading.RLock()
        self._sent_cv = threading.Condition(self._lock)
        self._gate = threading.Event()
        self._gate.set()
        self._hold_pattern: re.Pattern[str] | None = None
        #: Requests parked by `hold()` right now (counted in flight, not yet acted on).
        self.parked = 0
        self._mailboxes: dict[str, Mailbox] = {}
        self._sessions: dict[str, UploadSession] = {}
        self._faults: list[_Fault] = []
        self.sent: list[DeliveredMessage] = []
        self.requests: list[RequestRecord] = []
        self.violations: list[str] = []
        self.max_concurrency_seen: dict[str, int] = {}
        #: Recipients (lower-case) whose server refuses mail after Graph's 202: an NDR lands in the sender's Inbox.
        self.bounce_recipients: set[str] = set()
        #: Sends Exchange has accepted (202) but not acted on yet: (when it will, mailbox, draft).
        self._pending_sends: list[tuple[float, Mailbox, Item]] = []

    # -- test-facing API --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.base_url

    def add_mailbox(
        self,
        upn: str,
        *,
        aliases: tuple[str, ...] = (),
        send_as: tuple[str, ...] = (),
        access_denied: bool = False,
        rest_disabled: bool = False,
        max_send_size: int = DEFAULT_MAX_SEND,
        send_as_denied: bool = True,
    ) -> Mailbox:
        """Register a mailbox (addressable by UPN or its generated id); flags can be changed later on it."""
        box = Mailbox(
            upn,
            str(uuid.uuid4()),
            {a.lower() for a in (upn, *aliases, *send_as)},
            access_denied,
            rest_disabled,
            max_send_size,
            send_as_denied,
        )
        with self._lock:
            self._mailboxes[upn.lower()] = box
            self._mailboxes[box.id] = box
        return box

    def mailbox(self, name: str) -> Mailbox:
        return self._mailboxes[name.lower()]

    def settle(self) -> None:
        """Act on the sends whose `send_lag` has passed (by `clock`); every request and inspection calls it."""

    def items(self, mailbox: str, folder: str | None = None) -> list[Item]:
        """A snapshot of the mailbox's drafts and Sent Items copies (`folder` = "drafts" / "sentitems")."""
        self.settle()
        with self._lock:
            return [i for i in self.mailbox(mailbox).items.values() if folder in (None, i.folder)]

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int,
        code: str = "InjectedFailure",
        retry_after: int | None = None,
        after_effect: bool = False,
    ) -> None:
        """Answer the next matching request (regex searched in the decoded path) with `status` once.

        `after_effect=True` performs the request first (Graph acted, the client hears an error); status 0 drops
        the connection without a reply.
        """
        with self._lock:
            self._faults.append(_Fault(method.upper(), re.compile(path_regex), status, code, retry_after, after_effect))

    @contextmanager
    def hold(self, path_regex: str | None = None) -> Iterator[None]:
        """Park every request (or those whose decoded path matches `path_regex`) after it is counted in flight,
        until the block exits: deterministic concurrency, or a request Graph acts on after its client died."""
        self._hold_pattern = re.compile(path_regex) if path_regex else None
        self._gate.clear()
        try:
            yield
        finally:
            self._gate.set()
            self._hold_pattern = None

    def in_flight(self, mailbox: str) -> int:
        return self.mailbox(mailbox).in_flight

    def wait_for_sent(self, n: int = 1, timeout: float = 10.0) -> list[DeliveredMessage]:
        """Block until at least `n` messages were delivered (condition variable + deadline, no sleeps)."""
        with self._sent_cv:
            if not self._sent_cv.wait_for(lambda: self.settle() or len(self.sent) >= n, timeout):
                raise AssertionError(
                    f"expected {n} delivered message(s) within {timeout}s, got {len(self.sent)}; "
                    f"violations={self.violations}"
                )
            return list(self.sent)

    def duplicate_internet_message_ids(self) -> list[str]:
        """internetMessageIds delivered more than once (a resend after a lost reply shows up here)."""
        with self._lock:
            counts = Counter(m.internet_message_id for m in self.sent)
        return sorted(k for k, v in counts.items() if v > 1)

    # -- plumbing ---------------------------------------------------------------------------------
    def _violate(self, text: str) -> None:
        with self._lock:
            self.violations.append(text)

    def _json(self, status: int, body: Any, ctx: Ctx, headers: dict[str, str] | None = None) -> Response:
        h = {"Content-Type": "application/json; odata.metadata=minimal; charset=utf-8", **ctx.ids, **(headers or {})}
        return Response(status, b"" if body is None else json.dumps(body).encode(), h)

    def _empty(self, status: int, ctx: Ctx, headers: dict[str, str] | None = None) -> Response:
        return Response(status, b"", {**ctx.ids, **(headers or {})})

    def _error(self, ctx: Ctx, err: GraphError) -> Response:
        ctx.code = err.code
        inner = {"date": iso(self.clock()), "request-id": ctx.rid, "client-request-id": ctx.crid}
        body = {"error": {"code": err.code, "message": err.message, "innerError": inner}}
        headers = dict(err.headers)
        if err.status == 401 and ctx.graph:
            headers["WWW-Authenticate"] = (
                'Bearer realm="", authorization_uri="https://login.microsoftonline.com/'
                'common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"'
            )
        return self._json(err.status, body, ctx, headers)

    def handle(self, request: Request) -> Response:
        ctx = Ctx(request)
        try:
            self.settle()
            response = self._route(ctx)
        except GraphError as err:
            if err.violation:
                self._violate(f"{request.method} {unquote(request.path)}: {err.status} {err.code}: {err.message}")
            response = self._error(ctx, err)
        except Exception as exc:  # noqa: BLE001 - a bug in the fake must fail the test loudly, not hang it
            self._violate(f"FakeGraph crashed on {request.method} {request.path}: {exc!r}")
            response = self._error(ctx, GraphError(500, "InternalServerError", repr(exc)))
        with self._lock:
            self.requests.append(
                RequestRecord(
                    request.method,
                    request.target,
                    response.status,
                    len(request.body),
                    ctx.had_auth,
                    ctx.mailbox.upn if ctx.mailbox else None,
                    ctx.rid,
                    ctx.code,
                )
            )
        return response

    def _route(self, ctx: Ctx) -> Response:
        req = ctx.req
        if req.method in ("POST", "PUT", "PATCH") and req.content_length is None:
            raise bad(
                "LengthRequired", "A POST/PUT/PATCH needs Content-Length (use Content-Length: 0 without a body).", 411
            )
        is_attachment_post = req.method == "POST" and req.path.rstrip("/").lower().endswith("/attachments")
        if req.body_too_large or (len(req.body) > MAX_BODY and not is_attachment_post):
            raise bad("BadRequest", MAX_REQUEST_MESSAGE)
        if req.path.startswith("/api/v2.0/"):
            return self._upload(ctx)
        ctx.graph = True
        parts = [unquote(p) for p in req.path.split("/")[1:]]
        if not parts or parts[0] != "v1.0":
            raise GraphError(
                404, "NotFound", f"Unknown version or path {req.path!r}; clients must call /v1.0.", violation=True
            )
        claims = self._authenticate(ctx)
        if len(parts) < 2 or parts[1].lower() == "me":
            raise bad("BadRequest", "/me request is only valid with delegated authentication flow.")
        if parts[1].lower() != "users" or len(parts) < 4:
            raise bad("BadRequest", f"Resource not found for the segment '{'/'.join(parts[1:3])}'.")
        box = self._mailboxes.get(parts[2].lower())
        if box is None:
            raise GraphError(404, "ErrorInvalidUser", f"The requested user '{parts[2]}' is invalid.")
        ctx.mailbox = box
        if box.rest_disabled:
            raise GraphError(
                404,
                "MailboxNotEnabledForRESTAPI",
                "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
            )
        if box.access_denied:
            raise GraphError(403, "ErrorAccessDenied", "Access to OData is disabled.")
        return self._guarded(ctx, box, lambda: self._mailbox_route(ctx, box, claims, parts[3:]))

    def _authenticate(self, ctx: Ctx) -> TokenClaims | None:
        auth = ctx.req.header("Authorization")
        ctx.had_auth = auth is not None
        if not auth:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.", violation=True)
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "Access token validation failure: not a Bearer token.",
                violation=True,
            )
        if self.validate is None:
            return None
        try:
            claims = self.validate(token.strip())
        except InvalidToken as exc:
            raise GraphError(401, "InvalidAuthenticationToken", str(exc)) from exc
        if claims.aud.rstrip("/") != self.audience:
            raise GraphError(
                401, "InvalidAuthenticationToken", f"Access token validation failure. Invalid audience: {claims.aud!r}."
            )
        return claims

    def _need(self, claims: TokenClaims | None, roles: tuple[str, ...]) -> None:
        if self.check_roles and claims is not None and claims.roles is not None and not set(roles) & set(claims.roles):
            raise GraphError(
                403,
                "ErrorAccessDenied",
                f"Access is denied. Check credentials and try again. (needs {' or '.join(roles)})",
            )

    def _throttle(self, box: Mailbox, message: str, seconds: int | None = None) -> GraphError:
        wait = self.retry_after if seconds is None else seconds
        with self._lock:
            now = time.monotonic()
            box.throttled_until = max(box.throttled_until, now + wait)
            box.throttled_at = now
        return GraphError(429, "ApplicationThrottled", message, headers={"Retry-After": str(wait)})

    def _take_fault(self, req: Request) -> _Fault | None:
        path = unquote(req.path)
        with self._lock:
            for fault in self._faults:
                if fault.method == req.method and fault.pattern.search(path):
                    self._faults.remove(fault)
                    return fault
        return None

    def _fault_response(self, ctx: Ctx, box: Mailbox, fault: _Fault) -> Response:
        if fault.status == 0:
            return Response.dropped()
        if fault.status == 429:
            return self._error(ctx, self._throttle(box, "Injected throttling.", fault.retry_after or self.retry_after))
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
        return self._error(ctx, GraphError(fault.status, fault.code, "Injected failure.", headers=headers))

    def _guarded(self, ctx: Ctx, box: Mailbox, action: Callable[[], Response]) -> Response:
        """Concurrency limit, Retry-After window, injected faults, then the action (under the state lock)."""
        with self._lock:
            box.in_flight += 1
            self.max_concurrency_seen[box.upn] = max(self.max_concurrency_seen.get(box.upn, 0), box.in_flight)
            over = box.in_flight > self.max_concurrency
        try:
            if over:
                self._violate(
                    f"{ctx.req.method} {unquote(ctx.req.path)}: {box.in_flight} concurrent requests to {box.upn} (limit {self.max_concurrency})"
                )
                raise self._throttle(box, "Application is over its MailboxConcurrency limit.")
            with self._lock:
                now = time.monotonic()
                if now < box.throttled_until:
                    if now - box.throttled_at > self.retry_after_grace:
                        self._violate(
                            f"{ctx.req.method} {unquote(ctx.req.path)}: sent {box.throttled_until - now:.2f}s before Retry-After allowed"
                        )
                    raise GraphError(
                        429,
                        "ApplicationThrottled",
                        "Retry-After has not passed yet.",
                        headers={"Retry-After": str(max(1, math.ceil(box.throttled_until - now)))},
                    )
            if not self._gate.is_set() and (
                self._hold_pattern is None or self._hold_pattern.search(unquote(ctx.req.path))
            ):
                with self._lock:
                    self.parked += 1
                try:
                    self._gate.wait()
                finally:
                    with self._lock:
                        self.parked -= 1
            fault = self._take_fault(ctx.req)
            if fault is not None and not fault.after_effect:
                return self._fault_response(ctx, box, fault)
            with self._lock:
                throttle = self.rng.random() < self.throttle_rate
                error = not throttle and self.rng.random() < self.error_rate
                lose = self.rng.random() < self.lose_reply_rate
            if throttle:
                raise self._throttle(box, "Application is over its MailboxRequestRate limit.")
            if error:
                raise GraphError(503, "ServiceUnavailable", "Service unavailable (injected).")
            with self._lock:
                response = action()
            if fault is not None:
                return self._fault_response(ctx, box, fault)
            if lose:
                if self.lose_reply_status is None:
                    return Response.dropped()
                return self._error(
                    ctx, GraphError(self.lose_reply_status, "GatewayTimeout", "The reply was lost (injected).")
                )
            return response
        finally:
            with self._lock:
                box.in_flight -= 1

    # -- implemented by FakeGraph -------------------------------------------------------------------
    def _mailbox_route(self, ctx: Ctx, box: Mailbox, claims: TokenClaims | None, rest: list[str]) -> Response:
        raise NotImplementedError

    def _upload(self, ctx: Ctx) -> Response:
        raise NotImplementedError
