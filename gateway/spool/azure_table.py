"""Table on Azure Table Storage: one partition per table, the record's JSON in string properties.

A string property holds at most 64 KiB (32 Ki UTF-16 units), so longer JSON is cut into `data0..dataN`
within the 1 MiB entity limit; ASCII-only JSON makes a character exactly one unit. Writes are
etag-conditional so two workers never overwrite each other's job state unnoticed.
"""

from __future__ import annotations

import json
from typing import Any

from azure.core import MatchConditions
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from gateway.core.ports import Conflict, NotFound, Record
from gateway.spool.azure_errors import mapped

#: Characters per property: 60,000 bytes as UTF-16, safely under the 64 KiB property limit.
PART_CHARS = 30_000
#: Parts per entity: 16 x 60 KB plus keys stays under the 1 MiB entity limit.
MAX_PARTS = 16
#: Azure refuses these in a RowKey.
_BAD_KEY_CHARS = frozenset("/\\#?")


def _check_key(key: str) -> None:
    if not key or len(key) > 512 or any(c in _BAD_KEY_CHARS or ord(c) < 32 or 127 <= ord(c) < 160 for c in key):
        raise ValueError(f"{key!r} cannot be a table key: use up to 512 characters without / \\ # ? or controls")


def _properties(data: dict[str, Any]) -> dict[str, str]:
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"))
    if len(text) <= PART_CHARS:
        return {"data": text}
    parts = [text[i : i + PART_CHARS] for i in range(0, len(text), PART_CHARS)]
    if len(parts) > MAX_PARTS:
        raise ValueError(f"record of {len(text)} characters is over the table limit of {PART_CHARS * MAX_PARTS}")
    return {f"data{i}": part for i, part in enumerate(parts)}


def _record(entity: Any) -> Record:
    if "data" in entity:
        text = entity["data"]
    else:
        text = "".join(entity[f"data{i}"] for i in range(MAX_PARTS) if f"data{i}" in entity)
    return Record(json.loads(text), entity.metadata["etag"])


class AzureTable:
    def __init__(self, client: TableClient) -> None:
        self._client = client
        self._name = client.table_name
        # One partition per table: records are few and small, and a single partition keeps `list` one query.
        self._partition = client.table_name

    def _entity(self, key: str, data: dict[str, Any]) -> dict[str, Any]:
        _check_key(key)
        return {"PartitionKey": self._partition, "RowKey": key, **_properties(data)}

    async def get(self, key: str) -> Record | None:
        _check_key(key)
        try:
            with mapped(f"read {self._name}/{key}"):
                entity = await self._client.get_entity(self._partition, key)
        except NotFound:
            return None
        return _record(entity)

    async def insert(self, key: str, data: dict[str, Any]) -> str:
        entity = self._entity(key, data)
        with mapped(f"insert {self._name}/{key} (it exists)"):
            result = await self._client.create_entity(entity)
        return str(result["etag"])

    async def replace(self, key: str, data: dict[str, Any], etag: str) -> str:
        """Replace only if nobody wrote since `etag`; a vanished record is a lost race too."""
        entity = self._entity(key, data)
        try:
            with mapped(f"replace {self._name}/{key} (changed since read)"):
                result = await self._client.update_entity(
                    entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
                )
        except NotFound as exc:
            raise Conflict(f"{self._name}/{key} vanished since it was read") from exc
        return str(result["etag"])

    async def upsert(self, key: str, data: dict[str, Any]) -> str:
        entity = self._entity(key, data)
        with mapped(f"write {self._name}/{key}"):
            result = await self._client.upsert_entity(entity, mode=UpdateMode.REPLACE)
        return str(result["etag"])

    async def delete(self, key: str) -> None:
        """Deleting a missing record is not an error, as in the embedded twin."""
        _check_key(key)
        try:
            with mapped(f"delete {self._name}/{key}"):
                await self._client.delete_entity(self._partition, key)
        except NotFound:
            pass

    async def list(self) -> list[Record]:
        with mapped(f"list {self._name}"):
            entities = self._client.query_entities("PartitionKey eq @pk", parameters={"pk": self._partition})
            return [_record(entity) async for entity in entities]

    async def close(self) -> None:
        await self._client.close()
