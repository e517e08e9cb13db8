"""Small test factories shared by the suite: settings, a running event loop, polling, gateway processes."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx

from gateway.config import Settings, load_settings
from gateway.services import Services, build

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def local_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {"SCANGW_STORAGE": f"local:{tmp / 'spool'}", "SCANGW_OUTBOX": str(tmp / "outbox")}
    env.update(extra)
    return env


def settings_for(tmp: Path, **extra: str) -> Settings:
    return load_settings(local_env(tmp, **extra))


async def services_for(tmp: Path, **extra: str) -> Services:
    return await build(settings_for(tmp, **extra))


def poll(predicate: Callable[[], T], timeout: float = 20.0, interval: float = 0.05, what: str = "condition") -> T:
    """Wait for a condition with a deadline: the only way tests synchronise with another process."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int, host: str = "127.0.0.1") -> bool:
    """True once something accepts TCP connections on the port: for `poll` while a door starts."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def scangw(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a child process, as an admin would."""
    full_env = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env=full_env,
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def added_device_auth(env: dict[str, str]) -> str:
    """Add device mfp1 with the real CLI; its credentials as the value after `Authorization: Basic`."""
    added = scangw("devices", "add", "mfp1", "--default-to", "me@example.com", "--json", env=env)
    assert added.returncode == 0, added.stderr
    creds = json.loads(added.stdout)
    return base64.b64encode(f"{creds['username']}:{creds['password']}".encode()).decode()


@contextmanager
def gateway_process(
    *args: str, env: dict[str, str], health_url: str | None = None, cwd: Path | None = None
) -> Iterator[subprocess.Popen[str]]:
    """Start a long-running `scangw` command; stop it with SIGTERM at the end (and check it stops)."""
    full_env = {**os.environ, **env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", *args],
        env=full_env,
        cwd=cwd or ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if health_url:

            def healthy() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"scangw {args[0]} exited early: {proc.stderr.read() if proc.stderr else ''}")
                try:
                    return httpx.get(health_url, timeout=1).status_code == 200
                except httpx.HTTPError:
                    return False

            poll(healthy, timeout=30, what=f"{health_url} to answer")
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
