"""The gateway's Graph identity: a managed identity in Azure, the developer's own login on a laptop.

Never a client secret (contract section 3). `RefreshableCredential` lets the Graph adapter throw away a
token Graph refused (401) and fetch a fresh one once, past azure-identity's cache.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any

from azure.core.credentials import AccessToken
from azure.core.credentials_async import AsyncTokenCredential

from gateway.config import Settings

#: The platform sets one of these where a managed identity endpoint exists (Functions, Container Apps, VMs).
MANAGED_IDENTITY_VARIABLES = ("IDENTITY_ENDPOINT", "MSI_ENDPOINT")


def build_credential(settings: Settings, environ: Mapping[str, str] | None = None) -> AsyncTokenCredential:
    """Managed identity when the platform offers one; otherwise DefaultAzureCredential for `az login` & co.

    The environment credential is excluded (it would read AZURE_CLIENT_SECRET); the async
    DefaultAzureCredential has no interactive browser, so a worker never waits for a person to log in.
    """
    env = os.environ if environ is None else environ
    if any(env.get(name) for name in MANAGED_IDENTITY_VARIABLES):
        from azure.identity.aio import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=settings.azure_client_id)
    from azure.identity.aio import DefaultAzureCredential

    return DefaultAzureCredential(
        exclude_environment_credential=True,
        managed_identity_client_id=settings.azure_client_id,
    )


class RefreshableCredential:
    """Wraps a credential so one refused token can be replaced by a fresh one.

    azure-identity caches tokens until shortly before expiry; a token revoked or rejected early (clock skew,
    a rotated key) would be served again. Passing `claims` makes azure-identity skip its cache (managed
    identity drops the claims from the endpoint request), so `invalidate()` forces exactly one fresh fetch.
    """

    def __init__(self, inner: AsyncTokenCredential) -> None:
        self.inner = inner
        self._stale = False

    def invalidate(self) -> None:
        self._stale = True

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        if self._stale and not claims:
            self._stale = False
            fresh = json.dumps({"access_token": {"nbf": {"essential": True, "value": str(int(time.time()))}}})
            try:
                return await self.inner.get_token(
                    *scopes, claims=fresh, tenant_id=tenant_id, enable_cae=enable_cae, **kwargs
                )
            except Exception:  # noqa: BLE001 - e.g. the Azure CLI refuses claims: fall back to a normal fetch
                pass
        return await self.inner.get_token(*scopes, claims=claims, tenant_id=tenant_id, enable_cae=enable_cae, **kwargs)

    async def close(self) -> None:
        await self.inner.close()

    async def __aenter__(self) -> RefreshableCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def identity_problem(settings: Settings) -> str | None:
    """One line naming the remedy when no identity gives a Graph token here, else None. `doctor`, `sweep` and
    the worker ask this once, instead of a 40-line DefaultAzureCredential report per Graph call."""
    from gateway.delivery.graph.failures import classify, failure_from_exception

    credential = build_credential(settings)
    try:
        await credential.get_token(settings.graph_scope)
    except Exception as exc:  # noqa: BLE001 - every failure to get a token is the answer, never raised
        failure = failure_from_exception(exc, time.time())
        if failure is None:
            return f"No Azure identity for Graph ({type(exc).__name__})."
        return " ".join(str(classify(failure, settings.sender or "")).split())  # azure-identity's text has newlines
    finally:
        await credential.close()
    return None
