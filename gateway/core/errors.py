"""Typed errors of the gateway; the edges (SMTP, HTTP, CLI) pick reply codes from these types.

GatewayError
├── InputError              the client sent something we will not accept (never retried)
│   ├── AuthenticationFailed   bad or missing device credentials
│   ├── AuthThrottled          too many failures for this username or address: retry later
│   ├── RecipientNotAllowed    the device may not send there (no open relay)
│   ├── MessageTooLarge        over SCANGW_MAX_MESSAGE_MB
│   ├── MalformedInput         unparseable request, empty body, bad file name
│   │   └── UploadIncomplete   the client went away mid-upload
│   └── RequestTimeout         the client fell silent mid-request
│       └── UsageError           a command-line value is wrong (bad device name, --from-ip): `scangw` exits 2
├── StorageUnavailable      the spool could not store durably: nothing was accepted
├── BusyError               over the in-flight budget: the device should retry
├── ConfigError             a setting is wrong; names the setting
└── DeliveryError           sending through Graph (or the outbox) failed
    ├── TransientDeliveryError   retry later, maybe after `retry_after` seconds
    │   └── Deferred             nothing failed (a mailbox budget, no identity yet): wait, spend no attempt
    └── PermanentDeliveryError   will never succeed as is; carries the admin's remedy
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class InputError(GatewayError):
    """The request is refused; `str(err)` is a sentence the person at the scanner can act on."""


class AuthenticationFailed(InputError):
    def __init__(self, message: str, known: bool = False) -> None:
        super().__init__(message)
        #: The username exists (for the login limiter's keying only; never shown: it would reveal device names).
        self.known = known


class AuthThrottled(InputError):
    def __init__(self, message: str, retry_after: float = 60.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RecipientNotAllowed(InputError):
    def __init__(self, message: str, recipient: str = "") -> None:
        super().__init__(message)
        self.recipient = recipient


class MessageTooLarge(InputError):
    def __init__(self, limit_bytes: int) -> None:
        mib = limit_bytes // (1024 * 1024)
        super().__init__(
            f"Message too large: the limit is {mib} MB. Scan fewer pages, lower the resolution, "
            "or ask the admin to raise SCANGW_MAX_MESSAGE_MB."
        )
        self.limit_bytes = limit_bytes


class MalformedInput(InputError):
    pass


class UploadIncomplete(MalformedInput):
    """The client disconnected before the end of its upload: nothing was stored (not a storage failure)."""


class RequestTimeout(InputError):
    """The client fell silent mid-request for longer than SCANGW_HTTP_TIMEOUT_SECONDS: nothing was stored."""


class UsageError(MalformedInput):
    """The admin typed something the command cannot take; the CLI exits 2 (contract section 2)."""


class StorageUnavailable(GatewayError):
    """Durable storage failed; the caller must answer 'try again later' and keep nothing."""


class BusyError(GatewayError):
    """Too much data in flight; a retry later will be accepted."""


class ConfigError(GatewayError):
    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


class DeliveryError(GatewayError):
    pass


class TransientDeliveryError(DeliveryError):
    def __init__(self, message: str, retry_after: float | None = None, request_id: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.request_id = request_id


class Deferred(TransientDeliveryError):
    """Nothing failed: the sender mailbox's shared budget (request slots, a Retry-After window, the send pace)
    is spent for now. The job waits without using up one of its SCANGW_MAX_ATTEMPTS; its age still bounds it."""


class IdentityUnavailable(Deferred):
    """No Azure identity could give a token for Graph (no `az login`, no managed identity): a setup problem, not
    the scan's fault. The job waits `queued` with the remedy as its reason, spending neither an attempt nor its
    age, until the admin fixes the identity (then `scangw jobs retry ID --now`, or it goes on its next try)."""


class PermanentDeliveryError(DeliveryError):
    def __init__(self, message: str, remedy: str = "", request_id: str | None = None) -> None:
        super().__init__(message)
        self.remedy = remedy
        self.request_id = request_id

    def reason(self) -> str:
        return f"{self} {self.remedy}".strip()


class TooLargeForMailbox(PermanentDeliveryError):
    """Exchange refused the message as over the sender mailbox's MaxSendSize: the one permanent failure that
    download links (SCANGW_LINK_HOURS) can turn into a delivery, so the agent must tell it apart."""
