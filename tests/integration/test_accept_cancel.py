"""An SMTP client that disconnects while the door waits for the database lock to write its job record
(issue 9, item 12), or for any other step of accept() that waits on it: against the real `scangw smtp` process, with the embedded spool's database locked by
another process, as a busy worker or `scangw jobs` does. The door must leave nothing: no job record without its
bytes or its queue message, no bytes without a record.
"""

from __future__ import annotations

import json
import smtplib
import socket
import sqlite3
import struct
import threading
from pathlib import Path

from gateway.config import BLOB_CONTAINER
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
