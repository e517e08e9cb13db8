"""Run Azurite, the Azure Storage emulator, for one test session, and reset its state between tests.

Azurite binds port 0 and prints the ports it got, so parallel sessions never race for a port.
Storage lives in memory only and the process is stopped at the end of the session.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCAL_BINARY = ROOT / ".tools" / "node_modules" / ".bin" / "azurite"
ACCOUNT = "devstoreaccount1"
#: Azurite's documented, public development key: not a secret.
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_LISTENING = re.compile(r"Azurite (Blob|Queue|Table) service is successfully listening at \S+:(\d+)")


def find_azurite() -> str | None:
    """The Makefile's copy under .tools, else one on PATH; None when it or Node.js is missing."""
    if shutil.which("node") is None:
        return None
    if LOCAL_BINARY.exists():
        return str(LOCAL_BINARY)
    return shutil.which("azurite")


def required_azurite() -> str:
    """Azurite's binary, or skip the test without it, except under CI=true, which must run the storage tests."""
    import pytest

    binary = find_azurite()
    if binary is None:
        reason = "Azurite not found: install Node.js and run `make test` (it puts Azurite in .tools/)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI=true requires the storage tests to run", pytrace=False)
        pytest.skip(reason)
    return binary


def connection_string(blob: int, queue: int, table: int, host: str = "127.0.0.1") -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={DEV_KEY};"
        f"BlobEndpoint=http://{host}:{blob}/{ACCOUNT};QueueEndpoint=http://{host}:{queue}/{ACCOUNT};"
        f"TableEndpoint=http://{host}:{table}/{ACCOUNT};"
    )


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@contextmanager
def running_azurite(binary: str, workdir: Path, timeout: float = 60.0) -> Iterator[str]:
    """Start Azurite in `workdir`, yield its connection string once all three services accept connections."""
    command = [
        binary,
        "--silent",
        "--skipApiVersionCheck",
        "--disableTelemetry",
        "--inMemoryPersistence",  # Azurite refuses --location together with this; workdir is its cwd instead
        *("--blobPort", "0", "--queuePort", "0", "--tablePort", "0"),
    ]
    proc = subprocess.Popen(
        command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    ports: dict[str, int] = {}
    output: list[str] = []
    ready = threading.Event()

    def read() -> None:
        # Keeps draining after start-up so a chatty Azurite never blocks on a full pipe.
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line.rstrip())
            match = _LISTENING.search(line)
            if match:
                ports[match.group(1).lower()] = int(match.group(2))
                if len(ports) == 3:
                    ready.set()
        ready.set()

    reader = threading.Thread(target=read, name="azurite-output", daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + timeout
        if not ready.wait(timeout) or len(ports) < 3:
            raise RuntimeError(f"Azurite did not start within {timeout:.0f}s: " + " | ".join(output[-10:]))
        while not all(_accepts(port) for port in ports.values()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("Azurite stopped accepting connections: " + " | ".join(output[-10:]))
            time.sleep(0.05)
        yield connection_string(ports["blob"], ports["queue"], ports["table"])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        reader.join(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


async def _reset(conn: str) -> None:
    from azure.core.exceptions import ResourceNotFoundError
    from azure.data.tables.aio import TableServiceClient
    from azure.storage.blob.aio import BlobServiceClient
    from azure.storage.queue.aio import QueueServiceClient

    from gateway.config import BLOB_CONTAINER, DEVICES_TABLE, JOBS_TABLE, MAILBOXES_TABLE, POISON_QUEUE_NAME, QUEUE_NAME

    async with BlobServiceClient.from_connection_string(conn) as blobs:
        try:
            await blobs.delete_container(BLOB_CONTAINER)
        except ResourceNotFoundError:
            pass
    async with QueueServiceClient.from_connection_string(conn) as queues:
        for name in (QUEUE_NAME, POISON_QUEUE_NAME):
            try:
                await queues.delete_queue(name)
            except ResourceNotFoundError:
                pass
    async with TableServiceClient.from_connection_string(conn) as tables:
        for name in (JOBS_TABLE, DEVICES_TABLE, MAILBOXES_TABLE):
            await tables.delete_table(name)  # no error when missing


def reset_azurite(conn: str) -> None:
    """Drop the gateway's container, queues and tables: the next open starts from an empty account."""
    asyncio.run(_reset(conn))
