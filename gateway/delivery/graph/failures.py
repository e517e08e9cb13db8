"""Every Graph failure sorted into transient or permanent, in one table, with the admin's remedy.

The adapter turns whatever the SDK, httpx or azure-identity raised into a `GraphFailure` (plain data);
`classify` turns that into the gateway's typed errors. Pure functions, so the table is unit-tested without
a network, and a new Exchange error code is one line here.

    GraphFailure (what happened)        classify() (what it means)
    ├── status None: no answer          TransientDeliveryError (retry, maybe after `retry_after`)
    ├── 429 / 5xx / busy codes          TransientDeliveryError
    ├── 404 ErrorItemNotFound           caller decides (draft lost or already sent; never permanent)
    └── access, mailbox, size, auth     PermanentDeliveryError with a remedy naming the mailbox
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.core.errors import (
    Deferred,
    IdentityUnavailable,
    PermanentDeliveryError,
    TooLargeForMailbox,
    TransientDeliveryError,
)

GRANT = (
    "Grant Application Mail.Send and Mail.ReadWrite to the managed identity for mailbox {mb} via Exchange RBAC "
    "for Applications: run infra/scripts/grant-mailbox-access.ps1 -Mailbox {mb}."
)
NO_MAILBOX = (
    "Check the sender mailbox (the device's --sender, see `scangw devices show NAME`, or SCANGW_SENDER): "
    "{mb} must be an Exchange Online mailbox of this tenant (a shared mailbox needs no licence)."
)
WRONG_CLOUD = (
    "The token was refused even after a refresh: check that SCANGW_CLOUD (and SCANGW_GRAPH_URL) match the "
    "tenant's cloud and that the managed identity belongs to that tenant."
)

#: code → (sentence, remedy); `{mb}` is the sender mailbox. Codes are compared case-insensitively.
PERMANENT: dict[str, tuple[str, str]] = {
    "erroraccessdenied": ("Graph denied the gateway access to mailbox {mb}.", GRANT),
    "authorization_requestdenied": ("The managed identity lacks the Graph permission to use mailbox {mb}.", GRANT),
    "errorsendasdenied": (
        "The gateway may not send as {mb}.",
        "Send from the mailbox itself and grant Application Mail.Send for it: "
        "run infra/scripts/grant-mailbox-access.ps1 -Mailbox {mb}.",
    ),
    "errorinvaliduser": ("Mailbox {mb} does not exist.", NO_MAILBOX),
    "resourcenotfound": ("Mailbox {mb} does not exist.", NO_MAILBOX),
    "mailboxnotenabledforrestapi": (
        "Mailbox {mb} cannot be used through Graph: it is inactive, soft-deleted, hosted on-premises or unlicensed.",
        NO_MAILBOX,
    ),
    "errormessagesizeexceeded": (
        "The scan is too large for mailbox {mb}'s MaxSendSize.",
        "Raise it in Exchange Online PowerShell: Set-Mailbox {mb} -MaxSendSize 150MB "
        "(or set SCANGW_LINK_HOURS to send large scans as a link).",
    ),
    "errorinvalidrecipients": (
        "Exchange rejected the recipients of this scan.",
        "Check the addresses the scan was sent to; the device may only send to real mailbox addresses.",
    ),
    "errorquotaexceeded": (
        "Mailbox {mb} is over its storage quota.",
        "Empty its Sent Items and Deleted Items or raise its quota; SCANGW keeps a copy of each scan in Sent Items.",
    ),
    "invalidauthenticationtoken": ("Graph refused the gateway's token for mailbox {mb}.", WRONG_CLOUD),
    "noidentity": (
        "No identity is available to get a Graph token.",
        "Assign a managed identity to the app (and set AZURE_CLIENT_ID for a user-assigned one); "
        "on a developer machine run `az login`.",
    ),
    "identityrejected": (
        "The identity endpoint refused to issue a Graph token.",
        "Check that AZURE_CLIENT_ID names a managed identity assigned to this app, and SCANGW_CLOUD its cloud.",
    ),
}

#: Codes that say "try again later" whatever the status.
TRANSIENT_CODES = frozenset(
    {
        "errorserverbusy",
        "errortimeoutexpired",
        "serviceunavailable",
        "errorinternalservertransienterror",
        "errormailboxstoreunavailable",
        "errormailboxmoveinprogress",
        "errorconnectionfailed",
        "toomanyrequests",
        "activitylimitreached",
        "applicationthrottled",
        "errorirresolvableconflict",
    }
)
TRANSIENT_STATUS = frozenset({408, 409, 412, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class GraphFailure:
    """One failed Graph (or upload URL) call as plain data; `status` None means no HTTP answer at all."""

    status: int | None
    code: str = ""
    message: str = ""
    request_id: str | None = None
    retry_after: float | None = None
    #: False only when the request provably never reached the server (connection refused).
    reached_server: bool = True

    @property
    def may_have_acted(self) -> bool:
        """A lost reply or a 5xx may hide a completed side effect; a 4xx (incl. 429) says it was not done."""
        if self.status is None:
            return self.reached_server
        return self.status >= 500

    @property
    def item_not_found(self) -> bool:
        return self.status == 404 and self.code.lower() in {"erroritemnotfound", "itemnotfound"}

    @property
    def token_rejected(self) -> bool:
        return self.status == 401

    def describe(self) -> str:
        what = f"HTTP {self.status}" if self.status is not None else "no answer"
        text = " ".join(part for part in (what, self.code, self.message) if part)
        return f"{text} (request-id {self.request_id})" if self.request_id else text


class GraphCallError(Exception):
    """Raised by the adapter; the transport handles the few it can act on and `classify`s the rest."""

    def __init__(self, failure: GraphFailure) -> None:
        super().__init__(failure.describe())
        self.failure = failure


class HttpStatusError(Exception):
    """An error answer read from a raw httpx response (streamed reads, upload URLs), already as plain data."""

    def __init__(self, failure: GraphFailure) -> None:
        super().__init__(failure.describe())
        self.failure = failure


def failure_from_response(response: Any, now: float) -> GraphFailure:
    """An httpx error response whose body has been read, in Graph's `{"error": {"code", "message"}}` shape."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    return GraphFailure(
        status=response.status_code,
        code=str(error.get("code") or ""),
        message=str(error.get("message") or ""),
        request_id=response.headers.get("request-id"),
        retry_after=parse_retry_after(response.headers.get("Retry-After"), now),
    )


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After in delay-seconds or as an HTTP-date; rounded up, never negative."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(math.ceil(float(value))))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment is None:
        return None
    return max(0.0, float(math.ceil(moment.timestamp() - now)))


#: Failures to get any token: no credential found, or the identity endpoint refused this machine's identity.
IDENTITY_MISSING = frozenset({"noidentity", "tokenunavailable", "identityrejected"})
NO_IDENTITY = (
    "Remedy: `az login` on this machine (a laptop), a managed identity (Azure; an Azure Arc-enabled server "
    "on-premises, AZURE_CLIENT_ID for a user-assigned one), or SCANGW_OUTBOX=DIR to write .eml files instead; "
    "`scangw doctor` checks it."
)
#: How often a job waiting for an identity looks again (`scangw jobs retry ID --now` skips the wait).
IDENTITY_WAIT_SECONDS = 60.0


def classify(failure: GraphFailure, mailbox: str) -> TransientDeliveryError | PermanentDeliveryError:
    """The one place that decides whether a Graph failure is worth retrying."""
    code = failure.code.lower()
    detail = failure.describe()
    rid = failure.request_id
    if code in PERMANENT and not (code == "resourcenotfound" and failure.status != 404):
        sentence, remedy = PERMANENT[code]
        kind = TooLargeForMailbox if code == "errormessagesizeexceeded" else PermanentDeliveryError
        return kind(f"{sentence.format(mb=mailbox)} Graph said: {detail}.", remedy.format(mb=mailbox), request_id=rid)
    if code in IDENTITY_MISSING and failure.status is None:  # no token at all: a setup problem, not the scan's
        first = (failure.message.strip().splitlines() or [failure.code])[0].strip()
        return IdentityUnavailable(f"No Azure identity for Graph ({first}) {NO_IDENTITY}", IDENTITY_WAIT_SECONDS)
    if code == "mailboxbusy" and failure.status is None:  # our own limiter refused before sending anything
        return Deferred(f"{failure.message} Waiting for mailbox {mailbox}.", failure.retry_after)
    if failure.status is None or code in TRANSIENT_CODES or failure.status in TRANSIENT_STATUS:
        return TransientDeliveryError(
            f"Graph is unavailable or busy for mailbox {mailbox}: {detail}.", failure.retry_after, request_id=rid
        )
    if failure.status == 401:
        return PermanentDeliveryError(
            f"Graph refused the gateway's token for mailbox {mailbox}: {detail}.", WRONG_CLOUD, request_id=rid
        )
    if failure.status == 403:
        return PermanentDeliveryError(
            f"Graph denied the gateway access to mailbox {mailbox}: {detail}.", GRANT.format(mb=mailbox), request_id=rid
        )
    if failure.status in {400, 413, 415}:
        return PermanentDeliveryError(
            f"Graph rejected the message for mailbox {mailbox}: {detail}.",
            "Retrying will not help; report it with the request-id (scangw jobs show ID).",
            request_id=rid,
        )
    # Anything else (an unexpected 404, 410, 3xx...) may be a passing state of the mailbox: retry, bounded
    # by SCANGW_MAX_ATTEMPTS / SCANGW_MAX_AGE_HOURS, rather than fail a scan on a guess.
    return TransientDeliveryError(f"Graph answered unexpectedly for mailbox {mailbox}: {detail}.", request_id=rid)


def _header(headers: Any, name: str) -> str | None:
    if not headers:
        return None
    if isinstance(headers, Mapping) or hasattr(headers, "get"):
        value = headers.get(name) or headers.get(name.lower())
        if isinstance(value, (set, list, tuple)):
            value = next(iter(value), None)
        return str(value) if value else None
    return None


def failure_from_exception(exc: BaseException, now: float) -> GraphFailure | None:
    """Read a foreign error (kiota APIError / msgraph ODataError, httpx, azure-core) into plain data.

    Returns None for anything that is not a Graph, network or token failure (a bug must surface as is).
    """
    import httpx
    from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError, ServiceResponseError
    from azure.identity import CredentialUnavailableError
    from kiota_abstractions.api_error import APIError

    if isinstance(exc, HttpStatusError):
        return exc.failure
    if isinstance(exc, APIError):
        error = getattr(exc, "error", None)
        headers = exc.response_headers
        return GraphFailure(
            status=exc.response_status_code,
            code=str(getattr(error, "code", None) or ""),
            message=str(getattr(error, "message", None) or exc.message or ""),
            request_id=_header(headers, "request-id") or _header(headers, "client-request-id"),
            retry_after=parse_retry_after(_header(headers, "Retry-After"), now),
        )
    if isinstance(exc, httpx.ConnectError):
        return GraphFailure(status=None, code="ConnectionFailed", message=str(exc), reached_server=False)
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return GraphFailure(status=None, code="Timeout", message=str(exc) or type(exc).__name__, reached_server=False)
    if isinstance(exc, httpx.TransportError):
        return GraphFailure(status=None, code="ConnectionLost", message=str(exc) or type(exc).__name__)
    if isinstance(exc, ServiceRequestError):
        return GraphFailure(status=None, code="IdentityUnreachable", message=str(exc), reached_server=False)
    if isinstance(exc, ServiceResponseError):
        return GraphFailure(status=None, code="IdentityUnreachable", message=str(exc))
    if isinstance(exc, CredentialUnavailableError):
        return GraphFailure(status=None, code="NoIdentity", message=str(exc), reached_server=False)
    if isinstance(exc, ClientAuthenticationError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        code = "IdentityRejected" if status in {400, 401, 403, 404} else "TokenUnavailable"
        return GraphFailure(status=None, code=code, message=str(exc), reached_server=False)
    return None
