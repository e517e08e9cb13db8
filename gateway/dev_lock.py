"""One `scangw dev` per data folder: a second one would rotate the demo device's password under the first.

An advisory lock (flock) on `dev.lock` in the folder, held for the life of the process: the kernel drops it when
the process dies, however it dies, so a crash never leaves a stale lock. The file holds the owner's pid so the
second instance can say which process runs there.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from gateway.core.errors import UsageError

LOCK_NAME = "dev.lock"


@contextlib.contextmanager
def dev_lock(folder: Path) -> Iterator[None]:
    """Hold the folder's dev lock, or raise UsageError naming the process that holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise UsageError(
                f"another scangw dev (process {owner}) runs on the store at {folder.resolve()}: stop it first, "
                "or give this one its own folder with SCANGW_STORAGE=local:DIR."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
