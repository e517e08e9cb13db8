"""A strict stand-in for the App Service / Functions / Container Apps managed identity endpoint.

azure-identity's `ManagedIdentityCredential` delegates to MSAL, which (when `IDENTITY_ENDPOINT` and
`IDENTITY_HEADER` are set and `IDENTITY_SERVER_THUMBPRINT` is not) sends
`GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=<scope minus /.default>[&client_id=<uami>]` with the
secret in `X-IDENTITY-HEADER` (msal/managed_identity.py `_obtain_token_on_app_service`). The answer carries
`expires_on` as epoch seconds in a *string*; MSAL turns it into `expires_in` and treats any token with less
than 5 minutes left as already expired (so a `token_lifetime` under 300 s means a fetch per `get_token`).

Tokens are opaque to clients, but the fake can verify them: `fake.<b64url JSON claims>.<b64url HMAC>`. The
claims hold the audience (`aud` = the requested resource), expiry, a serial number, the identity and its app
roles, so `FakeGraph` can reject foreign, expired, revoked or wrong-audience tokens the way Graph does.

Errors use the App Service shape `{"statusCode": n, "message": ...}`, which MSAL folds into its error text.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ._http import BackgroundServer, Request, Response

API_VERSION = "2019-08-01"
DEFAULT_ROLES = ("Mail.Send", "Mail.ReadWrite")
SYSTEM_ASSIGNED = "system-assigned"


class InvalidToken(Exception):
    """The bearer token is not one this endpoint issued, or is expired / revoked; `str()` says why."""


@dataclass(frozen=True)
class TokenClaims:
    aud: str
    exp: int
    iat: int
    n: int  # serial number: revocation works by "every token up to n"
    client_id: str  # the user-assigned identity's client id, or SYSTEM_ASSIGNED
    roles: tuple[str, ...] | None  # app roles granted; None = the validator does not model permissions

    def as_json(self) -> dict[str, Any]:
        return {
            "aud": self.aud,
            "exp": self.exp,
            "iat": self.iat,
            "n": self.n,
            "appid": self.client_id,
            "roles": list(self.roles) if self.roles is not None else None,
        }


@dataclass(frozen=True)
class IdentityRequest:
    method: str
    path: str
    resource: str | None
    client_id: str | None
    header_ok: bool
    status: int
    at: float = field(default_factory=time.time)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FakeIdentityEndpoint(BackgroundServer):
    """The managed identity token endpoint on loopback.

    - `client_id`: the user-assigned identity's client id. Requests naming another client id get 400, as
      do requests naming one when none is configured.
    - `system_assigned`: whether a request without `client_id` gets a (system-assigned) token; with a
      `client_id` configured it defaults to False so a client that forgets `client_id=` is caught.
    - `token_lifetime`: seconds until `expires_on`; change it at any time (`idp.token_lifetime = 60`).
    - `roles`: the app roles written into tokens (`FakeGraph` checks Mail.Send / Mail.ReadWrite).
    - `clock`: wall clock (epoch seconds) used for `expires_on` and validation; replace it to "travel".
    """

    path = "/msi/token"

    def __init__(
        self,
        *,
        client_id: str | None = None,
        system_assigned: bool | None = None,
        token_lifetime: int = 3600,
        roles: Iterable[str] = DEFAULT_ROLES,
        header_value: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.client_id = client_id
        self.system_assigned = client_id is None if system_assigned is None else system_assigned
        self.token_lifetime = token_lifetime
        self.roles = tuple(roles)
        self.clock = clock
        self._header = header_value or secrets.token_hex(16)
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._serial = 0
        self._revoked_upto = 0
        self._fail: list[tuple[int, int]] = []  # [(remaining, status)]
        #: Every request received, in order (including rejected ones).
        self.requests: list[IdentityRequest] = []
        #: Claims of every token handed out over HTTP, in order.
        self.issued: list[TokenClaims] = []

    # -- public helpers ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"{self.base_url}{self.path}"

    @property
    def header_value(self) -> str:
        return self._header

    def env(self) -> dict[str, str]:
        """The variables that select this endpoint in azure-identity / MSAL (App Service flavour)."""
        return {"IDENTITY_ENDPOINT": self.url, "IDENTITY_HEADER": self._header}

    @property
    def token_requests(self) -> int:
        """How many tokens were issued over HTTP (a refresh shows up as +1)."""
        return len(self.issued)

    def fail_next(self, n: int = 1, status: int = 500) -> None:
        """Answer the next `n` requests with `status` (0 = drop the connection without a reply)."""
        with self._lock:
            self._fail.append((n, status))

    def revoke(self) -> None:
        """Invalidate every token issued so far (models revocation / CAE); later tokens stay valid."""
        with self._lock:
            self._revoked_upto = self._serial

    def make_token(
        self,
        resource: str = "https://graph.microsoft.com",
        *,
        lifetime: int | None = None,
        client_id: str | None = None,
        roles: Iterable[str] | None = None,
    ) -> str:
        """Mint a token directly (no HTTP): for tests that need an expired or wrong-audience token."""
        return self._mint(resource, lifetime=lifetime, client_id=client_id, roles=roles)[0]

    def _mint(
        self, resource: str, *, lifetime: int | None, client_id: str | None, roles: Iterable[str] | None
    ) -> tuple[str, TokenClaims]:
        now = int(self.clock())
        with self._lock:
            self._serial += 1
            serial = self._serial
        claims = TokenClaims(
            aud=resource,
            exp=now + (self.token_lifetime if lifetime is None else lifetime),
            iat=now,
            n=serial,
            client_id=client_id or self.client_id or SYSTEM_ASSIGNED,
            roles=tuple(self.roles if roles is None else roles),
        )
        payload = _b64(json.dumps(claims.as_json(), sort_keys=True).encode())
        return f"fake.{payload}.{self._sign(payload)}", claims

    def validate_token(self, token: str) -> TokenClaims:
        """The claims of a token this endpoint issued; raises InvalidToken (with Graph-like text) otherwise."""
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != "fake":
            raise InvalidToken("IDX14100: JWT is not well formed.")
        if not hmac.compare_digest(parts[2], self._sign(parts[1])):
            raise InvalidToken("Signature validation failed: the token was not issued by this identity endpoint.")
        data = json.loads(_unb64(parts[1]))
        roles = data.get("roles")
        claims = TokenClaims(
            aud=data["aud"],
            exp=int(data["exp"]),
            iat=int(data["iat"]),
            n=int(data["n"]),
            client_id=data["appid"],
            roles=tuple(roles) if roles is not None else None,
        )
        if claims.exp <= self.clock():
            raise InvalidToken("Lifetime validation failed, the token is expired.")
        with self._lock:
            if claims.n <= self._revoked_upto:
                raise InvalidToken("Continuous access evaluation resulted in challenge: the token was revoked.")
        return claims

    # -- HTTP -------------------------------------------------------------------------------------
    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest()[:18])

    @staticmethod
    def _error(status: int, message: str) -> Response:
        body = {"statusCode": status, "message": message, "correlationId": secrets.token_hex(16)}
        return Response(status, json.dumps(body).encode(), {"Content-Type": "application/json; charset=utf-8"})

    def handle(self, request: Request) -> Response:
        resource = request.q("resource")
        client_id = request.q("client_id")
        header_ok = request.header("X-IDENTITY-HEADER") == self._header
        try:
            response = self._answer(request, resource, client_id, header_ok)
        except Exception as exc:  # noqa: BLE001 - a bug in the fake must show up as a failed request, not a hang
            response = self._error(500, f"FakeIdentityEndpoint crashed: {exc!r}")
        with self._lock:
            self.requests.append(
                IdentityRequest(request.method, request.path, resource, client_id, header_ok, response.status)
            )
        return response

    def _injected(self) -> int | None:
        with self._lock:
            if not self._fail:
                return None
            remaining, status = self._fail[0]
            if remaining <= 1:
                self._fail.pop(0)
            else:
                self._fail[0] = (remaining - 1, status)
            return status

    def _answer(self, request: Request, resource: str | None, client_id: str | None, header_ok: bool) -> Response:
        if request.path.rstrip("/").lower() != self.path:
            return self._error(404, f"No such path {request.path}")
        if request.method != "GET":
            return self._error(405, f"Method {request.method} is not allowed; the token endpoint takes GET.")
        if not header_ok:
            return self._error(401, "The X-IDENTITY-HEADER header is missing or wrong.")
        injected = self._injected()
        if injected is not None:
            return Response.dropped() if injected == 0 else self._error(injected, "Injected failure.")
        if request.q("api-version") != API_VERSION:
            return self._error(400, f"api-version must be {API_VERSION}, got {request.q('api-version')!r}.")
        if not resource:
            return self._error(400, "The resource query parameter is required.")
        if resource.endswith("/.default"):
            return self._error(400, f"resource must be a resource URI, not a scope: {resource!r}.")
        for other in ("mi_res_id", "object_id", "principal_id", "msi_res_id"):
            if request.q(other) is not None:
                return self._error(400, f"This fake only models client_id selection, not {other}.")
        if client_id is not None:
            if self.client_id is None or client_id.lower() != self.client_id.lower():
                return self._error(400, f"No user-assigned identity with client_id {client_id!r} on this app.")
        elif not self.system_assigned:
            return self._error(400, "This app has no system-assigned identity; pass the user-assigned client_id.")
        token, claims = self._mint(resource, lifetime=None, client_id=client_id or SYSTEM_ASSIGNED, roles=None)
        with self._lock:
            self.issued.append(claims)
        body = {
            "access_token": token,
            "expires_on": str(claims.exp),  # App Service 2019-08-01 sends epoch seconds as a string
            "resource": resource,
            "token_type": "Bearer",
            "client_id": client_id or "00000000-0000-0000-0000-000000000000",
        }
        return Response(200, json.dumps(body).encode(), {"Content-Type": "application/json; charset=utf-8"})
