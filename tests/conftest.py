"""Session fixtures shared by the whole suite; keep each one a small factory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.azurite import required_azurite, running_azurite

pytest_plugins = ["tests.ci_skips"]  # under CI=true a skipped test fails the run (see that module)


@pytest.fixture(scope="session")
def azurite_connection_string(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Azurite per session; skipped without Node.js/Azurite, except in CI, which must run these tests."""
    binary = required_azurite()
    with running_azurite(binary, tmp_path_factory.mktemp("azurite")) as conn:
        yield conn
