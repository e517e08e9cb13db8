"""Where the Azure SDK's errors meet the gateway: one translation for blob, queue and table adapters.

Only calls into the SDK are wrapped, never the caller's own stream, so an error raised by the
bytes being stored (too large, connection from the scanner dropped) passes through unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from gateway.core.errors import StorageUnavailable
from gateway.core.ports import Conflict, NotFound

#: What a network failure looks like when it escapes azure-core's own wrapping.
NETWORK_ERRORS = (AzureError, aiohttp.ClientError, OSError, asyncio.TimeoutError)


def status_of(exc: BaseException) -> int | None:
    return getattr(exc, "status_code", None) if isinstance(exc, HttpResponseError) else None


def translate(exc: BaseException, what: str) -> Exception:
    """Map one SDK or network error met while trying to `what` (a verb phrase) to the gateway's types."""
    if isinstance(exc, ResourceNotFoundError):
        return NotFound(f"not found: could not {what}")
    if isinstance(exc, (ResourceExistsError, ResourceModifiedError)) or status_of(exc) == 412:
        return Conflict(f"could not {what}: {getattr(exc, 'error_code', None) or 'someone else wrote first'}")
    if isinstance(exc, ClientAuthenticationError) and status_of(exc) is None:
        return StorageUnavailable(
            f"No identity could get a storage token (could not {what}): sign in with `az login`, "
            "or give the app a managed identity."
        )
    if isinstance(exc, ClientAuthenticationError) or status_of(exc) == 403:
        return StorageUnavailable(
            f"Storage refused access while trying to {what}: check the identity's storage role assignments "
            "or the connection string's key."
        )
    if isinstance(exc, ServiceRequestError):
        return StorageUnavailable(f"Storage is unreachable (could not {what}); check the endpoint and network.")
    if isinstance(exc, ServiceResponseError):
        return StorageUnavailable(f"Storage dropped the connection while trying to {what}; it will be retried.")
    if isinstance(exc, HttpResponseError):
        code = getattr(exc, "error_code", None) or exc.reason or "error"
        return StorageUnavailable(f"Storage answered {exc.status_code} {code} while trying to {what}.")
    return StorageUnavailable(f"Storage failed while trying to {what}: {type(exc).__name__}.")


@contextmanager
def mapped(what: str) -> Iterator[None]:
    """`with mapped("read blob x"):` around SDK calls: raise the gateway's error type from the SDK's."""
    try:
        yield
    except NETWORK_ERRORS as exc:
        raise translate(exc, what) from exc
