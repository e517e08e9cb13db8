"""The environment of a machine with no Azure identity at all, for the tests of what the gateway says then."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.support import free_port

ENV_KEEP = ("LANG", "PYTHONPATH", "VIRTUAL_ENV")


def identityless_env(tmp: Path) -> dict[str, str]:
    """No `az login`, no managed identity, and a metadata endpoint that refuses connections; Graph mode."""
    env = {k: v for k, v in os.environ.items() if k in ENV_KEEP}
    closed = f"http://127.0.0.1:{free_port()}"
    env.update(
        PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin",
        HOME=str(tmp / "home"),
        SCANGW_STORAGE=f"local:{tmp / 'spool'}",
        SCANGW_SENDER="scanner@contoso.com",
        SCANGW_ADMIN_EMAIL="admin@contoso.com",
        SCANGW_GRAPH_URL=closed,
        AZURE_POD_IDENTITY_AUTHORITY_HOST=closed,  # azure-identity's IMDS address: nothing there
        AZURE_CONFIG_DIR=str(tmp / "no-azure-cli"),
    )
    return env
