"""A loopback stand-in for Application Insights' ingestion endpoint, over TLS, recording what the real
azure-monitor-opentelemetry exporter sends.

Why TLS: with an Entra credential (local auth disabled, as infra/ deploys it) the exporter refuses to send a
bearer token over plain http, so the stand-in presents a certificate from a test CA that the gateway processes
trust through REQUESTS_CA_BUNDLE / SSL_CERT_FILE. Every `POST /v2.1/track` is answered as the service does
(200 with itemsReceived/itemsAccepted); the envelopes and the Authorization header are kept for assertions.
"""

from __future__ import annotations

import gzip
import json
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._http import BackgroundServer, Request, Response

IKEY = "00000000-0000-4000-8000-000000000000"


@dataclass(frozen=True)
class Batch:
    authorization: str
    raw: str
    items: list[dict[str, Any]]


class FakeIngestion(BackgroundServer):
    def __init__(self, cert: Path, key: Path) -> None:
        super().__init__()
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(str(cert), str(key))
        self._lock = threading.Lock()
        self.batches: list[Batch] = []
        self.other: list[str] = []  # requests to anything but the track endpoint (live metrics, statsbeat...)

    def start(self) -> None:
        super().start()
        assert self._httpd is not None
        self._httpd.socket = self._context.wrap_socket(self._httpd.socket, server_side=True)

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def connection_string(self) -> str:
        url = self.base_url + "/"
        return f"InstrumentationKey={IKEY};IngestionEndpoint={url};LiveEndpoint={url}"

    def handle(self, request: Request) -> Response:
        if request.method != "POST" or not request.path.rstrip("/").endswith("/track"):
            with self._lock:
                self.other.append(f"{request.method} {request.path}")
            return Response(404, b"{}", {"Content-Type": "application/json"})
        body = request.body
        if (request.header("Content-Encoding") or "").lower() == "gzip":
            body = gzip.decompress(body)
        text = body.decode("utf-8")
        items = json.loads(text)
        items = items if isinstance(items, list) else [items]
        with self._lock:
            self.batches.append(Batch(request.header("Authorization") or "", text, items))
        answer = {"itemsReceived": len(items), "itemsAccepted": len(items), "errors": []}
        return Response(200, json.dumps(answer).encode(), {"Content-Type": "application/json"})

    # -- what tests read --------------------------------------------------------------------------------------

    def items(self) -> list[dict[str, Any]]:
        with self._lock:
            return [item for batch in self.batches for item in batch.items]

    def raw(self) -> str:
        with self._lock:
            return "\n".join(batch.raw for batch in self.batches)

    def metrics(self) -> list[tuple[str, float, str, dict[str, str]]]:
        """(name, value, cloud role, dimensions) of every metric data point received."""
        out = []
        for item in self.items():
            data = item.get("data", {}).get("baseData", {})
            if item.get("data", {}).get("baseType") != "MetricData":
                continue
            role = item.get("tags", {}).get("ai.cloud.role", "")
            for point in data.get("metrics", []):
                out.append((point["name"], float(point["value"]), role, dict(data.get("properties") or {})))
        return out

    def spans(self) -> list[dict[str, Any]]:
        """Requests and dependencies: name, id, operation (trace) id, parent id, role and properties."""
        out = []
        for item in self.items():
            kind = item.get("data", {}).get("baseType")
            if kind not in ("RequestData", "RemoteDependencyData"):
                continue
            data = item["data"]["baseData"]
            tags = item.get("tags", {})
            out.append(
                {
                    "kind": kind,
                    "name": data.get("name"),
                    "id": data.get("id"),
                    "operation": tags.get("ai.operation.id"),
                    "parent": tags.get("ai.operation.parentId"),
                    "role": tags.get("ai.cloud.role"),
                    "properties": dict(data.get("properties") or {}),
                    "success": data.get("success"),
                }
            )
        return out

    def messages(self) -> list[dict[str, Any]]:
        out = []
        for item in self.items():
            if item.get("data", {}).get("baseType") == "MessageData":
                data = item["data"]["baseData"]
                out.append({"message": data.get("message"), "properties": dict(data.get("properties") or {})})
        return out
