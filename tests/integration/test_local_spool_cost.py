"""The embedded spool must not slow down as it is used (issue 9, item 12).

Cost is measured in filesystem operations (Python's audit events for opening, listing, creating and removing
files and folders), which are exact and do not depend on how busy the machine is: a delete must take the same
number at 10 jobs as at 5,000, the sweep must grow linearly with the job count, and nothing may be left behind.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.config import BLOB_CONTAINER
from gateway.core.jobs import new_job_id
from gateway.delivery.retention import sweep
from gateway.spool.local import open_local_spool
from tests.support import added_device_auth, free_port, gateway_process, local_env, poll, run, scangw, services_for

_COUNTED = frozenset({"open", "os.scandir", "os.listdir", "os.remove", "os.rmdir", "os.rename", "os.mkdir"})


class _Ops:
    counting = False
    count = 0


def _audit(event: str, _args: tuple[object, ...]) -> None:
    if _Ops.counting and event in _COUNTED:
        _Ops.count += 1


sys.addaudithook(_audit)  # cannot be removed; it counts only inside `counted()`


@contextmanager
def counted() -> Iterator[_Ops]:
    _Ops.count, _Ops.counting = 0, True
    try:
        yield _Ops
    finally:
        _Ops.counting = False


def _fill(spool_dir: Path, jobs: int, created: float | None = None) -> list[str]:
    """Lay out `jobs` spooled scans on disk exactly as the spool stores them (no fsync: setup only)."""
    root = spool_dir / BLOB_CONTAINER
    ids = []
    for _ in range(jobs):
        job_id = new_job_id(created)
        (root / job_id).mkdir(parents=True)
        (root / job_id / "message.eml").write_bytes(b"Subject: x\r\n\r\nscan\r\n")
        ids.append(job_id)
    return ids


def _delete_cost(tmp: Path, jobs: int) -> int:
    spool_dir = tmp / f"spool-{jobs}"
    victim = _fill(spool_dir, jobs)[jobs // 2]

    async def main() -> int:
        spool = await open_local_spool(spool_dir)
        try:
            with counted() as ops:
                assert await spool.blobs.delete_prefix(f"{victim}/") == 1
            assert await spool.blobs.list(f"{victim}/") == []
            return ops.count
        finally:
            await spool.close()

    cost = run(main())
    root = spool_dir / BLOB_CONTAINER
    assert not (root / victim).exists(), "the job's folder was left behind"
    assert sum(1 for _ in root.iterdir()) == jobs  # the others untouched (.incoming included, victim gone)
    return cost


def test_a_delete_costs_the_same_at_10_and_at_5000_jobs(tmp_path: Path) -> None:
    small, large = _delete_cost(tmp_path, 10), _delete_cost(tmp_path, 5000)
    assert large == small, f"a delete took {small} filesystem operations at 10 jobs and {large} at 5,000"


def test_deleting_a_job_leaves_no_empty_folder_and_keeps_the_others(tmp_path: Path) -> None:
    async def chunks(data: bytes):  # type: ignore[no-untyped-def]
        yield data

    async def main() -> None:
        spool = await open_local_spool(tmp_path / "spool")
        try:
            for name in ("j1/file-0", "j1/file-1", "j1/parts/inner", "partial/set/00001-x", "j2/file-0"):
                await spool.blobs.write(name, chunks(name.encode()))
            assert await spool.blobs.delete_prefix("j1/") == 3
            assert await spool.blobs.delete_prefix("partial/set/") == 1
            assert await spool.blobs.list("") == ["j2/file-0"]
            # A folder removed under a writer is made again: writing into it right after still works.
            await spool.blobs.write("j1/file-0", chunks(b"again"))
            assert await spool.blobs.read_range("j1/file-0", 0, 10) == b"again"
        finally:
            await spool.close()

    run(main())
    root = tmp_path / "spool" / BLOB_CONTAINER
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert left == [".incoming", "j1", "j1/file-0", "j2", "j2/file-0"]


def _sweep_cost(tmp: Path, jobs: int) -> int:
    """Sweep `jobs` orphaned scans (bytes whose intake never finished, two days old): each must go."""
    sub = tmp / f"sweep-{jobs}"
    two_days_ago = time.time() - 2 * 86400
    _fill(sub / "spool", jobs, created=two_days_ago)

    async def main() -> int:
        svc = await services_for(sub)
        try:
            with counted() as ops:
                report = await sweep(svc, datetime.now(UTC))
            assert report.orphans_deleted == jobs
            return ops.count
        finally:
            await svc.close()

    cost = run(main())
    assert [p.name for p in (sub / "spool" / BLOB_CONTAINER).iterdir()] == [".incoming"]
    return cost


def test_the_sweep_grows_linearly_with_the_job_count(tmp_path: Path) -> None:
    small, large = _sweep_cost(tmp_path, 40), _sweep_cost(tmp_path, 400)
    # Linear: ten times the jobs, about ten times the operations (quadratic would be a hundred times).
    assert large <= 12 * small, f"sweep: {small} filesystem operations at 40 jobs, {large} at 400"


def test_the_sweep_removes_stale_temporary_files_and_keeps_fresh_ones(tmp_path: Path) -> None:
    async def main() -> None:
        svc = await services_for(tmp_path)
        await svc.close()

    run(main())
    incoming = tmp_path / "spool" / BLOB_CONTAINER / ".incoming"
    stale, fresh = incoming / "0123456789abcdef.part", incoming / "fedcba9876543210.part"
    stale.write_bytes(b"half a scan from a killed process")
    fresh.write_bytes(b"an upload still arriving")
    old = time.time() - 3 * 3600
    os.utime(stale, (old, old))

    async def swept() -> int:
        svc = await services_for(tmp_path)
        try:
            return (await sweep(svc, datetime.now(UTC) + timedelta(seconds=1))).temporary_deleted
        finally:
            await svc.close()

    assert run(swept()) == 1
    assert not stale.exists() and fresh.exists()


def test_a_temporary_file_left_by_a_killed_door_is_removed_by_scangw_sweep(tmp_path: Path) -> None:
    env = local_env(tmp_path)
    auth = added_device_auth(env)
    port = free_port()
    incoming = tmp_path / "spool" / BLOB_CONTAINER / ".incoming"
    url = f"http://127.0.0.1:{port}/api/health"
    with gateway_process("http", "--listen", f"127.0.0.1:{port}", env=env, health_url=url) as door:
        with socket.create_connection(("127.0.0.1", port)) as upload:
            upload.sendall(
                f"PUT /api/scans/scan.pdf HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n"
                "Content-Length: 1000000\r\n\r\n".encode()
                + b"%PDF" * 1000
            )
            (part,) = poll(lambda: list(incoming.glob("*.part")), what="the upload's temporary file")
            door.send_signal(signal.SIGKILL)
            door.wait(timeout=10)
    assert part.exists(), "the killed process left no temporary file: nothing to prove"
    fresh = incoming / "0000000000000000.part"
    fresh.write_bytes(b"an upload another process is still receiving")
    old = time.time() - 2 * 3600
    os.utime(part, (old, old))
    swept = scangw("sweep", env=env)
    assert swept.returncode == 0, swept.stderr
    assert "1 temporary files" in swept.stdout, swept.stdout
    assert not part.exists() and fresh.exists()
