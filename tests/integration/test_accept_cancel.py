"""An SMTP client that disconnects while the door waits for the database lock to write its job record
(issue 9, item 12), or for any other step of accept() that waits on it: against the real `scangw smtp` process, with the embedded spool's database locked by
another process, as a busy worker or `scangw jobs` does. The door must leave nothing: no job record without its
bytes or its queue message, no bytes without a record.
"""

from __future__ import annotations

import json
import logging
import smtplib
import socket
import sqlite3
import struct
import threading
from pathlib import Path

import pytest

from gateway.config import BLOB_CONTAINER
from gateway.intake.smtp_limits import SmtpLimits
from tests.integration.test_smtp_harness import running_smtp, stored
from tests.integration.test_smtp_limits import in_data
from tests.support import free_port, gateway_process, local_env, poll, scangw


def test_a_client_gone_while_the_door_waits_for_the_database_lock_leaves_nothing(tmp_path: Path) -> None:
    env = local_env(tmp_path)
    added = scangw("devices", "add", "mfp1", "--allow-to", "*@example.com", "--json", env=env)
    assert added.returncode == 0, added.stderr
    creds = json.loads(added.stdout)
    port = free_port()
    spool = tmp_path / "spool"
    blobs = spool / BLOB_CONTAINER
    log: list[str] = []

    def stored() -> list[Path]:
        """The scan's bytes, stored or still in their temporary file."""
        return [*blobs.rglob("message.eml"), *blobs.glob(".incoming/*.part")]

    with gateway_process("smtp", "--listen", f"127.0.0.1:{port}", env=env) as door:
        assert door.stderr is not None
        reader = threading.Thread(target=lambda: log.extend(door.stderr or ()), daemon=True)
        reader.start()
        client = poll(lambda: _connect(port), what="the SMTP door")
        client.login(creds["username"], creds["password"])
        client.mail("scanner@example.com")
        client.rcpt("me@example.com")
        lock = sqlite3.connect(spool / "spool.db", isolation_level=None, timeout=30)
        lock.execute("BEGIN IMMEDIATE")  # another process writes: the door's record must wait for it
        try:
            assert client.docmd("DATA")[0] == 354
            client.send(b"Subject: held\r\n\r\n" + b"scan " * 10_000 + b"\r\n.\r\n")
            # The door holds the scan's bytes and waits for the lock: to re-check the device at the end of DATA,
            # or to write the job record (the fault-injection tests hold each of these steps on its own).
            poll(stored, what="the scan's bytes (the door now waits for the lock)")
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()  # the device gives up: a reset, no QUIT
            poll(
                lambda: any("event=smtp.session" in line or "accept.cut" in line for line in log) or not stored(),
                what="the door to notice the client is gone: " + "".join(log[-10:]),
            )
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        door.terminate()  # everything the door had in hand is finished when it exits
        assert door.wait(timeout=60) == 0, "".join(log[-20:])
        reader.join(timeout=10)

    jobs = scangw("jobs", "list", "--json", env=env)
    assert jobs.returncode == 0, jobs.stderr
    assert json.loads(jobs.stdout) == [], "a record was left for a scan nobody heard accepted: " + "".join(log[-10:])
    assert stored() == [], "the scan's bytes were left with no job"
    assert [p.name for p in blobs.iterdir()] == [".incoming"]


def _connect(port: int) -> smtplib.SMTP | None:
    try:
        return smtplib.SMTP("127.0.0.1", port, timeout=30)
    except OSError:
        return None


def test_a_stop_that_cuts_a_session_waiting_for_the_database_lock_leaves_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Shutdown reaches the same path: the door's stop deadline cuts the session while its scan waits for the
    lock, and storage must not close before accept() has taken back what it wrote."""
    caplog.set_level(logging.INFO)
    with running_smtp(tmp_path, limits=SmtpLimits(stop_deadline_seconds=0.5)) as door:
        talk = in_data(door)
        lock = sqlite3.connect(tmp_path / "spool" / "spool.db", isolation_level=None, timeout=30)
        lock.execute("BEGIN IMMEDIATE")
        try:
            talk.send(b"Subject: held\r\n\r\n" + b"scan\r\n" * 1000 + b".\r\n")
            blobs = tmp_path / "spool" / BLOB_CONTAINER
            poll(lambda: [*blobs.rglob("message.eml"), *blobs.glob(".incoming/*.part")], what="the scan's bytes")
            door.stop()
            poll(lambda: any("smtp.stop_cut" in r.getMessage() for r in caplog.records), what="the cut at the deadline")
            # The door is closing its storage now: it must wait for the cut scan, still waiting for the lock.
            poll(
                lambda: any("still being stored or taken back" in r.getMessage() for r in caplog.records),
                what="the door to wait for the cut scan before closing its storage",
            )
        finally:
            lock.execute("ROLLBACK")
            lock.close()
    jobs, queued, _ = stored(tmp_path)
    assert (jobs, queued) == ([], 0), "the cut scan left a job record or a queue message"
    assert [p.name for p in (tmp_path / "spool" / BLOB_CONTAINER).iterdir()] == [".incoming"]
    assert list((tmp_path / "spool" / BLOB_CONTAINER).glob(".incoming/*")) == []
