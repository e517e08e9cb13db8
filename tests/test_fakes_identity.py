"""The fake managed identity endpoint enforces the App Service protocol, and the real azure-identity accepts it.

These tests pin the fake itself: if it drifted from what MSAL sends or expects, every integration test built
on it would prove nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from azure.identity import ManagedIdentityCredential

from tests.fakes.identity import API_VERSION, FakeIdentityEndpoint, InvalidToken

GRAPH = "https://graph.microsoft.com"
UAMI = "6f0b8f4e-1c1a-4c43-9d43-3b0c0c6b8a11"


@pytest.fixture
def idp() -> Iterator[FakeIdentityEndpoint]:
    with FakeIdentityEndpoint() as endpoint:
        yield endpoint


def ask(idp: FakeIdentityEndpoint, header: str | None = "same", **params: str) -> httpx.Response:
    query = {"api-version": API_VERSION, "resource": GRAPH, **params}
    headers = {} if header is None else {"X-IDENTITY-HEADER": idp.header_value if header == "same" else header}
    return httpx.get(idp.url, params={k: v for k, v in query.items() if v is not None}, headers=headers)


@pytest.fixture
def mi_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Only the App Service variables: others would make MSAL pick Service Fabric, Azure ML or Arc."""
    for name in ("IDENTITY_SERVER_THUMBPRINT", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT", "AZURE_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    yield


def test_issues_a_token_in_the_app_service_shape(idp: FakeIdentityEndpoint) -> None:
    before = int(time.time())
    reply = ask(idp)
    assert reply.status_code == 200
    body = reply.json()
    assert set(body) >= {"access_token", "expires_on", "resource", "token_type"}
    assert body["token_type"] == "Bearer" and body["resource"] == GRAPH
    assert isinstance(body["expires_on"], str) and before + 3600 <= int(body["expires_on"]) <= int(time.time()) + 3600
    claims = idp.validate_token(body["access_token"])
    assert claims.aud == GRAPH and claims.roles == ("Mail.Send", "Mail.ReadWrite")
    assert idp.token_requests == 1 and idp.requests[-1].status == 200


@pytest.mark.parametrize("header", [None, "wrong"])
def test_rejects_a_missing_or_wrong_secret_header(idp: FakeIdentityEndpoint, header: str | None) -> None:
    reply = ask(idp, header=header)
    assert reply.status_code == 401
    assert reply.json()["statusCode"] == 401
    assert idp.token_requests == 0


@pytest.mark.parametrize(
    "params",
    [{"api-version": "2017-09-01"}, {"resource": None}, {"resource": GRAPH + "/.default"}, {"mi_res_id": "/subs/x"}],
)
def test_rejects_malformed_requests(idp: FakeIdentityEndpoint, params: dict[str, str]) -> None:
    assert ask(idp, **params).status_code == 400


def test_user_assigned_identity_must_be_named_exactly() -> None:
    with FakeIdentityEndpoint(client_id=UAMI) as idp:
        assert ask(idp, client_id=UAMI.upper()).status_code == 200
        assert ask(idp, client_id="00000000-0000-0000-0000-000000000001").status_code == 400
        assert ask(idp).status_code == 400  # no system-assigned identity to fall back to
        assert idp.issued[0].client_id == UAMI.upper()


def test_unexpected_client_id_is_refused_when_none_is_configured(idp: FakeIdentityEndpoint) -> None:
    assert ask(idp, client_id=UAMI).status_code == 400


def test_fail_next_injects_failures_then_recovers(idp: FakeIdentityEndpoint) -> None:
    idp.fail_next(2, 503)
    assert [ask(idp).status_code for _ in range(3)] == [503, 503, 200]


def test_validation_rejects_expired_revoked_foreign_and_tampered_tokens(idp: FakeIdentityEndpoint) -> None:
    with pytest.raises(InvalidToken, match="expired"):
        idp.validate_token(idp.make_token(lifetime=-1))
    good = idp.make_token()
    idp.clock = lambda: time.time() + 7200  # travel past the default one-hour lifetime
    with pytest.raises(InvalidToken, match="expired"):
        idp.validate_token(good)
    idp.clock = time.time
    idp.revoke()
    with pytest.raises(InvalidToken, match="revoked"):
        idp.validate_token(good)
    assert idp.validate_token(idp.make_token()).aud == GRAPH  # tokens minted after the revocation are fine
    with FakeIdentityEndpoint() as other, pytest.raises(InvalidToken, match="Signature"):
        idp.validate_token(other.make_token())
    head, payload, sig = idp.make_token().split(".")
    with pytest.raises(InvalidToken):
        idp.validate_token(f"{head}.{payload[:-2]}xx.{sig}")
    with pytest.raises(InvalidToken, match="not well formed"):
        idp.validate_token("eyJhbGciOi.not-ours")


def test_real_managed_identity_credential_gets_and_caches_a_token(
    idp: FakeIdentityEndpoint, monkeypatch: pytest.MonkeyPatch, mi_env: None
) -> None:
    for name, value in idp.env().items():
        monkeypatch.setenv(name, value)
    credential = ManagedIdentityCredential()
    first = credential.get_token(f"{GRAPH}/.default")
    second = credential.get_token(f"{GRAPH}/.default")
    assert first.token == second.token and idp.token_requests == 1  # MSAL cached it
    assert idp.validate_token(first.token).aud == GRAPH
    assert abs(first.expires_on - (time.time() + 3600)) < 60
    assert idp.requests[0].resource == GRAPH and idp.requests[0].header_ok


def test_short_lived_tokens_are_fetched_again(
    idp: FakeIdentityEndpoint, monkeypatch: pytest.MonkeyPatch, mi_env: None
) -> None:
    """MSAL treats a token with under 5 minutes left as expired, so a 60 s lifetime forces a refresh."""
    for name, value in idp.env().items():
        monkeypatch.setenv(name, value)
    idp.token_lifetime = 60
    credential = ManagedIdentityCredential()
    credential.get_token(f"{GRAPH}/.default")
    credential.get_token(f"{GRAPH}/.default")
    assert idp.token_requests == 2


def test_real_credential_with_user_assigned_client_id(monkeypatch: pytest.MonkeyPatch, mi_env: None) -> None:
    with FakeIdentityEndpoint(client_id=UAMI) as idp:
        for name, value in idp.env().items():
            monkeypatch.setenv(name, value)
        token = ManagedIdentityCredential(client_id=UAMI).get_token(f"{GRAPH}/.default")
        assert idp.validate_token(token.token).client_id == UAMI
        assert idp.requests[-1].client_id == UAMI
