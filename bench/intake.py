"""HTTP intake: upload throughput against a plain fsync'd file write of the same bytes, and the server's
peak memory for a small and a large upload (a streaming intake keeps the ratio near 1)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.support import free_port, gateway_process, scangw

MIB = 1024 * 1024


def _rss_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _payload(size: int) -> Iterator[bytes]:
    block = os.urandom(MIB)
    for _ in range(size // MIB):
        yield block


def _raw_write(path: Path, size: int) -> float:
    start = time.perf_counter()
    with open(path, "wb") as f:
        for chunk in _payload(size):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    return time.perf_counter() - start


def _fresh_server_peak(env: dict[str, str], auth: tuple[str, str], size: int) -> int:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with gateway_process("http", "--listen", f"127.0.0.1:{port}", env=env, health_url=f"{url}/api/health") as proc:
        # Warm up first: the first request imports and allocates what every later one reuses.
        assert httpx.put(f"{url}/api/scans/w.pdf", content=b"warm", auth=auth, timeout=30).status_code == 202
        base = _rss_hwm_kib(proc.pid)
        r = httpx.put(f"{url}/api/scans/big.pdf", content=_payload(size), auth=auth, timeout=120)
        assert r.status_code == 202, r.text
        return _rss_hwm_kib(proc.pid) - base


def run() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        env = {
            "SCANGW_STORAGE": f"local:{tmp / 'spool'}",
            "SCANGW_OUTBOX": str(tmp / "out"),
            "SCANGW_MAX_MESSAGE_MB": "150",
        }
        creds = json.loads(scangw("devices", "add", "bench", "--default-to", "a@example.com", "--json", env=env).stdout)
        auth = (creds["username"], creds["password"])
        size = 64 * MIB
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with gateway_process("http", "--listen", f"127.0.0.1:{port}", env=env, health_url=f"{url}/api/health"):
            with httpx.Client(auth=auth, timeout=120) as client:
                times = []
                for _ in range(3):
                    start = time.perf_counter()
                    assert client.put(f"{url}/api/scans/b.pdf", content=_payload(size)).status_code == 202
                    times.append(time.perf_counter() - start)
        raw = min(_raw_write(tmp / f"raw{i}", size) for i in range(3))
        upload = min(times)
        small = _fresh_server_peak(env, auth, 2 * MIB)
        large = _fresh_server_peak(env, auth, 100 * MIB)
    return [
        f"64 MiB PUT {upload:.2f}s vs raw fsync'd write {raw:.2f}s: ratio {upload / raw:.1f}x "
        f"({size / MIB / upload:.0f} MiB/s)",
        f"server peak memory growth: 2 MiB upload {small / 1024:.1f} MiB, 100 MiB upload {large / 1024:.1f} MiB "
        f"(ratio {max(large, 1) / max(small, 1):.1f}x; flat means streaming)",
    ]


if __name__ == "__main__":
    for line in run():
        print(line)
    sys.exit(0)
