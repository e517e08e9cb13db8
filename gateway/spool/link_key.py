"""The embedded spool's link-signing key: 32 random bytes in a private file beside the spool database.

Kept in the folder (not in settings) so every `scangw` process sharing the spool signs and verifies with the
same key, and nothing an operator pastes into a config file or a log can forge a link.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

LINK_KEY_FILE = "link-signing.key"


def load_or_create(path: Path) -> bytes:
    """Create-if-missing without a race: write a private temporary file, then hard-link it into place."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{secrets.token_hex(8)}.key")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secrets.token_bytes(32))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another process won the race: its key is then the key
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes()
