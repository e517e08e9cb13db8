"""HTTP intake (contract section 4) as one ASGI app, served by `scangw http` (uvicorn) and, unchanged, by the
Function's HTTP trigger. It only translates: credentials, query and body in; the core's typed errors out as
status codes with a JSON message a person can act on.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.core.accept import Envelope, IncomingFile
from gateway.core.devices import Device, check_recipients
from gateway.core.errors import (
    AuthenticationFailed,
    AuthThrottled,
    BusyError,
    GatewayError,
    MalformedInput,
    MessageTooLarge,
    RecipientNotAllowed,
    RequestTimeout,
    StorageUnavailable,
)
from gateway.core.links import LinkExpired, LinkInvalid, content_disposition, verify_token
from gateway.core.ports import NotFound
from gateway.intake.http_body import metered_body
from gateway.intake.multipart import MultipartReader, read_field
from gateway.services import Services
from gateway.telemetry import metrics

log = logging.getLogger("scangw.http")

ServicesProvider = Callable[[], Awaitable[Services]]

_STATUS: list[tuple[type[GatewayError], int, str]] = [
    (AuthenticationFailed, 401, "unauthorized"),
    (AuthThrottled, 429, "too_many_attempts"),
    (RecipientNotAllowed, 403, "recipient_not_allowed"),
    (MessageTooLarge, 413, "too_large"),
    (MalformedInput, 400, "bad_request"),
    (RequestTimeout, 408, "request_timeout"),
    (StorageUnavailable, 503, "storage_unavailable"),
    (BusyError, 503, "busy"),
]

DAV_METHODS = "OPTIONS, HEAD, GET, PUT, POST, PROPFIND, MKCOL"


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _map_error(exc: GatewayError) -> JSONResponse:
    for kind, status, code in _STATUS:
        if isinstance(exc, kind):
            headers = {"WWW-Authenticate": 'Basic realm="scangw", charset="UTF-8"'} if status == 401 else None
            if status == 503:
                headers = {"Retry-After": "30"}
            if isinstance(exc, AuthThrottled):
                headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
            message = str(exc)
            if isinstance(exc, StorageUnavailable):
                message = "Storage is unavailable, nothing was accepted: try again in a minute."
            return error_response(status, code, message, headers)
    return error_response(500, "internal_error", "The gateway failed unexpectedly; nothing was accepted.")


def _credentials(request: Request) -> tuple[str, str]:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        raise AuthenticationFailed("Authentication required: use the device's username and password (HTTP Basic).")
    try:
        username, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthenticationFailed("Authentication failed: the Authorization header is malformed.") from None
    if not sep:
        raise AuthenticationFailed("Authentication failed: the Authorization header is malformed.")
    return username, password


def _claimed_username(request: Request) -> str:
    """The username a refused request claimed, for the log line; never its password."""
    try:
        return _credentials(request)[0]
    except AuthenticationFailed:
        return ""


async def authenticate(services: ServicesProvider, request: Request) -> tuple[Services, Device]:
    """HTTP Basic through the failed-login limiter both doors share: 429 with Retry-After while blocked,
    no password checked meanwhile (issue 9 items 5-6). Module-level so mutation testing can reach it alone."""
    svc = await services()
    username, password = _credentials(request)
    client = request.client.host if request.client else None  # None: the Function host, one front for all
    wait = svc.logins.retry_after(username, client)
    if wait > 0:
        raise AuthThrottled(
            f"Too many failed logins: wait {math.ceil(wait)} seconds, then check the device's password.", wait
        )
    try:
        device = await svc.registry.verify(username, password, client)
    except AuthenticationFailed as exc:
        svc.logins.failed(username, client, exc.known)
        raise
    svc.logins.succeeded(username, client)
    return svc, device


def create_app(services: ServicesProvider, max_body_bytes: int | None = None) -> Starlette:
    """`max_body_bytes` lets the Function app cap uploads at the platform's request limit as well."""

    def recipients(svc: Services, device: Device, given: list[str]) -> tuple[str, ...]:
        """Counted before anything is validated: 30,000 addresses are refused at once, not checked one by one."""
        if len(given) > svc.settings.max_recipients:
            raise MalformedInput(
                f"Too many recipients: at most {svc.settings.max_recipients} per scan (SCANGW_MAX_RECIPIENTS)."
            )
        return check_recipients(device, given, svc.settings.sender)

    def body(request: Request, svc: Services) -> AsyncIterator[bytes]:
        return metered_body(request, limit(svc), svc.settings.http_timeout_seconds)

    def limit(svc: Services) -> int:
        return min(svc.settings.max_message_bytes, max_body_bytes or svc.settings.max_message_bytes)

    def check_length(request: Request, svc: Services) -> None:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit(svc):
            raise MessageTooLarge(limit(svc))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def put_scan(request: Request, path: str) -> Response:
        svc, device = await authenticate(services, request)
        check_length(request, svc)
        name = path.rstrip("/").rsplit("/", 1)[-1]  # the server decoded the path once already: never twice
        if not name:
            raise MalformedInput("Name the file in the URL, e.g. PUT /api/scans/scan.pdf")
        to = recipients(svc, device, request.query_params.getlist("to"))
        envelope = Envelope(to, request.query_params.get("subject"), request.query_params.get("body"))

        async def files() -> AsyncIterator[IncomingFile]:
            yield IncomingFile(name, request.headers.get("content-type"), body(request, svc))

        return accepted(
            await metrics.accepting(
                "http", device.name, svc.intake(limit(svc)).accept_files(device, files(), lambda: envelope)
            )
        )

    async def post_scan(request: Request) -> Response:
        svc, device = await authenticate(services, request)
        check_length(request, svc)
        reader = MultipartReader(request.headers.get("content-type", ""), body(request, svc).__aiter__())
        fields: dict[str, list[str]] = {"to": []}

        async def files() -> AsyncIterator[IncomingFile]:
            count = 0
            async for part in reader.parts():
                if part.filename is not None or part.name == "file":
                    count += 1
                    if count > svc.settings.max_files:
                        raise MalformedInput(
                            f"Too many files: at most {svc.settings.max_files} per scan (SCANGW_MAX_FILES)."
                        )
                    yield IncomingFile(part.filename or "scan.pdf", part.content_type, part.chunks)
                elif part.name == "to":
                    value = await read_field(part)
                    fields["to"].extend(v for v in value.replace(";", ",").split(",") if v.strip())
                    if len(fields["to"]) > svc.settings.max_recipients:
                        recipients(svc, device, fields["to"])  # refuses at once, before the next part
                elif part.name in ("subject", "body"):
                    fields[part.name] = [await read_field(part)]

        def envelope() -> Envelope:
            to = recipients(svc, device, request.query_params.getlist("to") + fields["to"])
            subject = (fields.get("subject") or [request.query_params.get("subject") or ""])[0] or None
            body = (fields.get("body") or [request.query_params.get("body") or ""])[0] or None
            return Envelope(to, subject, body)

        return accepted(
            await metrics.accepting("http", device.name, svc.intake(limit(svc)).accept_files(device, files(), envelope))
        )

    def accepted(job: Any) -> Response:
        return JSONResponse({"id": job.id, "status": job.state.value}, status_code=202)

    async def status(request: Request, job_id: str) -> Response:
        svc, device = await authenticate(services, request)
        job = await svc.jobs.get(job_id) if job_id.isascii() and job_id.isalnum() else None
        if job is None or job.device != device.name:
            return error_response(404, "not_found", "No such scan for this device.")
        return JSONResponse({"id": job.id, "status": job.state.value, "error": job.error})

    async def probe(request: Request) -> Response:
        await authenticate(services, request)
        method = request.method
        if method == "OPTIONS":
            return Response(status_code=200, headers={"Allow": DAV_METHODS, "DAV": "1"})
        if method == "MKCOL":
            return Response(status_code=201)
        if method == "PROPFIND":
            href = request.url.path
            xml = (
                '<?xml version="1.0" encoding="utf-8"?>\n<D:multistatus xmlns:D="DAV:"><D:response>'
                f"<D:href>{_xml_escape(href)}</D:href><D:propstat><D:prop><D:resourcetype><D:collection/>"
                "</D:resourcetype></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"
                "</D:multistatus>"
            )
            return Response(xml, status_code=207, media_type='application/xml; charset="utf-8"')
        return Response(status_code=200)  # HEAD

    async def scans_root(request: Request) -> Response:
        if request.method == "POST":
            return await post_scan(request)
        return await probe(request)

    async def scans_path(request: Request) -> Response:
        path = request.path_params["path"]
        if request.method == "PUT":
            return await put_scan(request, path)
        if request.method == "GET":
            return await status(request, path.strip("/"))
        return await probe(request)

    async def download(request: Request) -> Response:
        """A download link (embedded spool): the token is the credential, so no Authorization is asked for."""
        svc = await services()
        key_of = getattr(svc.spool.blobs, "link_key", None)
        if key_of is None:
            return error_response(404, "not_found", "No such download link.")
        try:
            claim = verify_token(await key_of(), request.path_params["token"], time.time())
            size = await svc.spool.blobs.size(claim.blob)
        except LinkExpired:
            return error_response(403, "link_expired", "This download link has expired: ask the sender to scan again.")
        except (LinkInvalid, NotFound):
            return error_response(404, "not_found", "No such download link.")
        headers = {
            "Content-Disposition": content_disposition(claim.filename),
            "Content-Length": str(size),
            "Cache-Control": "private, no-store",
            "X-Content-Type-Options": "nosniff",
        }
        chunks = svc.spool.blobs.stream(claim.blob)
        return StreamingResponse(chunks, media_type="application/octet-stream", headers=headers)

    def guarded(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except GatewayError as exc:
                level = logging.WARNING if not isinstance(exc, StorageUnavailable) else logging.ERROR
                if isinstance(exc, AuthenticationFailed):  # like the SMTP door's line: who, from where
                    log.warning(
                        "event=http.auth result=failed peer=%s user=%r method=%s path=%s",
                        request.client.host if request.client else "",
                        _claimed_username(request)[:64],
                        request.method,
                        request.url.path,
                    )
                else:
                    log.log(level, "http %s %s -> %s: %s", request.method, request.url.path, type(exc).__name__, exc)
                await metrics.http_refused(request.method, request.headers.get("authorization"), exc, services)
                return _map_error(exc)
            except Exception:
                log.exception("http %s %s failed", request.method, request.url.path)
                return error_response(500, "internal_error", "The gateway failed unexpectedly; nothing was accepted.")

        return run

    probes = ["OPTIONS", "HEAD", "PROPFIND", "MKCOL"]
    return Starlette(
        routes=[
            Route("/api/health", guarded(health), methods=["GET"]),
            Route("/api/links/{token}", guarded(download), methods=["GET"]),
            Route("/api/scans", guarded(scans_root), methods=["POST", *probes]),
            Route("/api/scans/", guarded(scans_root), methods=["POST", *probes]),
            Route("/api/scans/{path:path}", guarded(scans_path), methods=["GET", "PUT", *probes]),
        ]
    )


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
