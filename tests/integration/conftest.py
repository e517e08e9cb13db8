"""Fixtures for the Graph side: the fake managed-identity endpoint wired into the environment, and the strict
fake Graph with the usual sender mailbox."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.graph import FakeGraph
from tests.fakes.identity import FakeIdentityEndpoint

#: The sender mailbox the Graph tests deliver from.
SENDER = "scanner@contoso.com"


@pytest.fixture
def idp(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeIdentityEndpoint]:
    """azure-identity's ManagedIdentityCredential finds this endpoint, and no other identity source."""
    with FakeIdentityEndpoint() as endpoint:
        for name, value in endpoint.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("MSI_ENDPOINT", raising=False)
        monkeypatch.delenv("AZURE_CLIENT_ID", raising=False)
        yield endpoint


@pytest.fixture
def graph(idp: FakeIdentityEndpoint) -> Iterator[FakeGraph]:
    with FakeGraph(idp) as fake:
        fake.add_mailbox(SENDER)
        yield fake
