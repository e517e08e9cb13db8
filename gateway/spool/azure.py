"""Open the spool on Azure Storage (or Azurite): one connection string, or managed identity endpoints.

The adapters live in `azure_blob`, `azure_queue` and `azure_table`; this module only picks the
credential, builds the clients with the gateway's retry budget, and makes sure the containers exist.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import ResourceExistsError
from azure.data.tables.aio import TableClient
from azure.storage.blob.aio import ContainerClient
from azure.storage.queue import TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient

from gateway.config import (
    BLOB_CONTAINER,
    DEVICES_TABLE,
    JOBS_TABLE,
    MAILBOXES_TABLE,
    POISON_QUEUE_NAME,
    QUEUE_NAME,
    Settings,
)
from gateway.core.errors import ConfigError
from gateway.core.ports import CHUNK, Spool
from gateway.spool.azure_blob import AzureBlobStore
from gateway.spool.azure_errors import NETWORK_ERRORS, status_of, translate
from gateway.spool.azure_queue import AzureJobQueue, LenientBase64DecodePolicy
from gateway.spool.azure_table import AzureTable

#: A device or Graph call is waiting on every storage call: fail within seconds, not the SDK's minutes.
STORAGE_OPTIONS: dict[str, Any] = {
    "retry_total": 3,
    "initial_backoff": 1,
    "increment_base": 2,
    "connection_timeout": 10,
    "read_timeout": 60,
}
TABLE_OPTIONS: dict[str, Any] = {
    "retry_total": 3,
    "retry_backoff_factor": 0.5,
    "retry_backoff_max": 8,
    "connection_timeout": 10,
    "read_timeout": 60,
}


#: What makes aiohttp use a proxy (urllib.request.getproxies reads these, in either case).
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def proxy_configured(env: Mapping[str, str]) -> bool:
    """Only then do the clients read proxy settings: azure-core's default (aiohttp `trust_env`) looks them up
    on a thread for every request, a fifth of the Storage SDK's CPU per scan, to find nothing."""
    return any(env.get(name) for name in PROXY_VARIABLES)


def storage_credential(client_id: str | None, env: Mapping[str, str]) -> AsyncTokenCredential:
    """Managed identity where the platform provides one, the developer's own login elsewhere; never a secret."""
    from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

    if env.get("IDENTITY_ENDPOINT") or env.get("MSI_ENDPOINT"):
        return ManagedIdentityCredential(client_id=client_id)
    # The environment credential would read AZURE_CLIENT_SECRET: the gateway never uses a secret.
    return DefaultAzureCredential(managed_identity_client_id=client_id, exclude_environment_credential=True)


@dataclass(frozen=True)
class AzureSpool(Spool):
    """The spool plus the credential its clients share, closed once after all of them."""

    credential: AsyncTokenCredential | None = None

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            if self.credential is not None:
                await self.credential.close()


async def _ensure(what: str, create: Any) -> None:
    """Create a container/queue/table if missing; in Azure the infra made it and we may lack the right."""
    try:
        await create()
    except ResourceExistsError:
        pass
    except NETWORK_ERRORS as exc:
        if status_of(exc) == 403:  # the identity may use it but not create it: fine
            return
        raise translate(exc, f"create {what}") from exc


async def open_azure_spool(
    settings: Settings,
    *,
    ensure_resources: bool = True,
    client_options: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Spool:
    """Build the four adapters; `client_options` overrides retry/timeouts (tests use `retry_total=0`)."""
    extra = {"use_env_settings": proxy_configured(os.environ if env is None else env), **(client_options or {})}
    blob_opts = {**STORAGE_OPTIONS, "max_single_get_size": CHUNK, "max_chunk_get_size": CHUNK, **extra}
    queue_opts = {
        **STORAGE_OPTIONS,
        "message_encode_policy": TextBase64EncodePolicy(),
        "message_decode_policy": LenientBase64DecodePolicy(),
        **extra,
    }
    table_opts = {**TABLE_OPTIONS, **extra}
    identity = settings.storage_identity
    credential: AsyncTokenCredential | None = None
    try:
        if identity is not None:
            client_id = identity.client_id or settings.azure_client_id
            credential = storage_credential(client_id, os.environ if env is None else env)
            container = ContainerClient(identity.blob_uri, BLOB_CONTAINER, credential=credential, **blob_opts)

            def queue(name: str) -> QueueClient:
                return QueueClient(identity.queue_uri, name, credential=credential, **queue_opts)

            def table(name: str) -> TableClient:
                return TableClient(identity.table_uri, name, credential=credential, **table_opts)

        else:
            conn = settings.storage
            container = ContainerClient.from_connection_string(conn, BLOB_CONTAINER, **blob_opts)

            def queue(name: str) -> QueueClient:
                return QueueClient.from_connection_string(conn, name, **queue_opts)

            def table(name: str) -> TableClient:
                return TableClient.from_connection_string(conn, table_name=name, **table_opts)

        jobs_q, poison_q = queue(QUEUE_NAME), queue(POISON_QUEUE_NAME)
        jobs_t, devices_t, mailboxes_t = table(JOBS_TABLE), table(DEVICES_TABLE), table(MAILBOXES_TABLE)
    except ValueError as exc:
        raise ConfigError(
            "SCANGW_STORAGE", f"the connection string is not usable ({exc}); copy it from the storage account."
        ) from exc
    spool = AzureSpool(
        blobs=AzureBlobStore(container),
        queue=AzureJobQueue(jobs_q, poison_q),
        jobs=AzureTable(jobs_t),
        devices=AzureTable(devices_t),
        mailboxes=AzureTable(mailboxes_t),
        credential=credential,
    )
    if ensure_resources:
        # All six settle before the clients may be closed, so no request is cut off mid-flight.
        outcomes = await asyncio.gather(
            _ensure(f"container {BLOB_CONTAINER}", container.create_container),
            _ensure(f"queue {QUEUE_NAME}", jobs_q.create_queue),
            _ensure(f"queue {POISON_QUEUE_NAME}", poison_q.create_queue),
            _ensure(f"table {JOBS_TABLE}", jobs_t.create_table),
            _ensure(f"table {DEVICES_TABLE}", devices_t.create_table),
            _ensure(f"table {MAILBOXES_TABLE}", mailboxes_t.create_table),
            return_exceptions=True,
        )
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if failures:
            await spool.close()
            raise failures[0]
    return spool
