"""Wake idle workers when a job is queued on the embedded spool, instead of letting them poll once a second.

Every process that waits for the queue binds a Unix datagram socket in the spool's `wake/` folder; a put
sends one byte to each socket there after its commit. A missed or refused byte costs nothing but latency
(the worker still looks at the queue every poll interval), so nothing here may fail a put: a socket whose
process is gone is removed, any other error is ignored. Where Unix sockets are unavailable (or the path is
too long for one), waiting falls back to the plain poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from pathlib import Path

#: sockaddr_un holds about 108 bytes; a longer path cannot be bound.
_MAX_PATH = 100


class Wakeup:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._sock: socket.socket | None = None
        self._path: Path | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._woken = asyncio.Event()

    def poke(self) -> None:
        """Tell every waiting process that a message was queued (called after the commit)."""
        try:
            names = os.listdir(self.folder)
        except OSError:
            return
        if not names:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.setblocking(False)
            for name in names:
                path = self.folder / name
                try:
                    sender.sendto(b"!", str(path))
                except (ConnectionRefusedError, FileNotFoundError):
                    with contextlib.suppress(OSError):
                        path.unlink()  # its process is gone
                except OSError:
                    pass  # a full buffer: that process is awake already

    async def wait(self, timeout: float) -> None:
        """Return when poked, or after `timeout` seconds."""
        if not self._listening():
            await asyncio.sleep(timeout)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), timeout)
        self._woken.clear()

    def _listening(self) -> bool:
        loop = asyncio.get_running_loop()
        if self._sock is not None and self._loop is loop:
            return True
        self.close()
        path = self.folder / f"{os.getpid()}-{secrets.token_hex(4)}.sock"
        if len(str(path)) > _MAX_PATH or not hasattr(socket, "AF_UNIX"):
            return False
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(str(path))
            sock.setblocking(False)
            loop.add_reader(sock.fileno(), self._drain)
        except (OSError, NotImplementedError):
            return False
        self._sock, self._path, self._loop = sock, path, loop
        self._woken = asyncio.Event()
        return True

    def _drain(self) -> None:
        assert self._sock is not None
        with contextlib.suppress(OSError):
            while self._sock.recv(64):
                pass
        self._woken.set()

    def close(self) -> None:
        if self._sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        if self._path is not None:
            with contextlib.suppress(OSError):
                self._path.unlink()
            self._path = None
