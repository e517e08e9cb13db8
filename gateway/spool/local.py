"""The embedded twin of Blob/Queue/Table storage: files plus one SQLite database in a folder.

Used by `scangw dev` and by several `scangw` processes sharing one folder, so every write is fsync'd
before it returns (acknowledge only after durable storage) and SQLite's own locking arbitrates between
processes. A received queue message is leased, not deleted: if its worker dies it reappears when the
lease runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from gateway.core.errors import StorageUnavailable
from gateway.core.ports import CHUNK, Conflict, NotFound, QueueLease, Record, Spool
from gateway.core.settle import settled
from gateway.spool.local_wake import Wakeup

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (tbl TEXT, key TEXT, data TEXT, etag TEXT, PRIMARY KEY (tbl, key));
CREATE TABLE IF NOT EXISTS queue (
    id TEXT PRIMARY KEY, queue TEXT, text TEXT, visible_at REAL, dequeue_count INTEGER, receipt TEXT, seq INTEGER
);
CREATE INDEX IF NOT EXISTS queue_visible ON queue (queue, visible_at);
"""


class _Database:
    """One SQLite connection per process; calls run off the event loop, committed in groups.

    Group commit: whatever the process asks while a commit is on its way waits, and then goes in the next
    transaction together, each call inside its own savepoint (a call that raises takes back only its own
    changes). Concurrent sessions then share one fsync instead of queueing for one each, and every caller
    still hears back only after the transaction holding its change is durable.

    `durable=False` skips the fsync per commit: for state that may be lost in a crash (the mailbox ledger,
    whose claims lapse by themselves), so its many small writes never queue behind the jobs' fsyncs.
    """

    def __init__(self, path: Path, durable: bool = True) -> None:
        self._conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'OFF'}")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()  # the connection
        self._queue_lock = threading.Lock()  # the calls waiting for the next transaction
        self._waiting: list[_Call[Any]] = []
        self._draining = False

    def _commit(self, calls: list[_Call[Any]]) -> None:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    for call in calls:
                        self._conn.execute("SAVEPOINT one")
                        call.run(self._conn)
                        if call.error is None:
                            self._conn.execute("RELEASE one")
                        else:
                            self._conn.execute("ROLLBACK TO one")
                            self._conn.execute("RELEASE one")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                failure = StorageUnavailable(f"local spool database error: {exc}")
                for call in calls:
                    call.fail(failure, exc)

    def _drain(self) -> None:
        """Worker thread: commit what waits, in groups, until nothing does."""
        while True:
            with self._queue_lock:
                calls, self._waiting = self._waiting, []
                if not calls:
                    self._draining = False
                    return
            try:
                self._commit(calls)
            except BaseException as exc:  # noqa: BLE001 - every caller must hear back, whatever happened
                for call in calls:
                    if call.error is None:
                        call.fail(StorageUnavailable(f"local spool database error: {exc}"), exc)
            for call in calls:
                call.settle()

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        # Settled: a transaction waiting for its turn commits even if its caller goes away meanwhile, so the
        # caller must learn of it before it cleans up (gateway.core.settle).
        loop = asyncio.get_running_loop()
        call: _Call[T] = _Call(fn, loop, loop.create_future())
        with self._queue_lock:
            self._waiting.append(call)
            start, self._draining = not self._draining, True
        if start:
            loop.run_in_executor(None, self._drain)
        assert call.future is not None
        await settled(call.future)
        return call.outcome()

    def close(self) -> None:
        """Idempotent: the queue and the tables share this connection."""
        with self._lock:
            self._conn.close()


class _Call(Generic[T]):
    """One caller's function in a group transaction: its result or its error, and how to tell it."""

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], T],
        loop: asyncio.AbstractEventLoop | None = None,
        future: asyncio.Future[None] | None = None,
    ) -> None:
        self.fn = fn
        self.loop = loop
        self.future = future
        self.result: T | None = None
        self.error: BaseException | None = None
        self.cause: BaseException | None = None

    def run(self, conn: sqlite3.Connection) -> None:
        try:
            self.result = self.fn(conn)
        except sqlite3.Error as exc:
            self.fail(StorageUnavailable(f"local spool database error: {exc}"), exc)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller as its own outcome
            self.error = exc

    def fail(self, error: BaseException, cause: BaseException | None = None) -> None:
        self.error, self.cause = error, cause

    def settle(self) -> None:
        if self.loop is not None and self.future is not None:
            future = self.future
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting any more
                self.loop.call_soon_threadsafe(lambda: None if future.done() else future.set_result(None))

    def outcome(self) -> T:
        if self.error is not None:
            if self.cause is not None:
                raise self.error from self.cause
            raise self.error
        return self.result  # type: ignore[return-value]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _finish_file(handle: Any, tail: bytes | bytearray) -> None:
    handle.write(tail)
    handle.flush()
    os.fsync(handle.fileno())


def _place(tmp: Path, final: Path) -> None:
    """Rename into place; a delete may remove the emptied folder between mkdir and rename, so try again."""
    for attempt in range(3):
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp, final)
            break
        except FileNotFoundError:
            if attempt == 2 or not tmp.exists():
                raise
    _fsync_dir(final.parent)


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp = root / ".incoming"
        self._tmp.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        parts = name.split("/")
        if not name or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"bad blob name {name!r}")
        return self.root.joinpath(*parts)

    async def write(self, name: str, chunks: AsyncIterable[bytes]) -> int:
        """Write to a temporary file, fsync, then rename into place: a crash leaves no half blob."""
        final = self._path(name)
        tmp = self._tmp / f"{secrets.token_hex(8)}.part"
        size = 0
        try:
            handle = await settled(asyncio.to_thread(open, tmp, "wb"))
            try:
                # Coalesce small network reads (~64 KiB) so the thread hop is paid per MiB, not per read.
                pending = bytearray()
                async for chunk in chunks:
                    pending += chunk
                    size += len(chunk)
                    if len(pending) >= CHUNK:
                        await settled(asyncio.to_thread(handle.write, pending))
                        pending = bytearray()
                await settled(asyncio.to_thread(_finish_file, handle, pending))
            finally:
                handle.close()
            await settled(asyncio.to_thread(_place, tmp, final))
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageUnavailable(f"local spool cannot write {name}: {exc.strerror}") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return size

    async def stream(self, name: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        path = self._path(name)
        try:
            handle = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError as exc:
            raise NotFound(name) from exc
        try:
            handle.seek(offset)
            remaining = length
            while remaining is None or remaining > 0:
                want = CHUNK if remaining is None else min(CHUNK, remaining)
                chunk = await asyncio.to_thread(handle.read, want)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            handle.close()

    async def read_range(self, name: str, offset: int, length: int) -> bytes:
        parts = [chunk async for chunk in self.stream(name, offset, length)]
        return b"".join(parts)

    async def size(self, name: str) -> int:
        try:
            return (await asyncio.to_thread(self._path(name).stat)).st_size
        except FileNotFoundError as exc:
            raise NotFound(name) from exc

    def _names(self, prefix: str) -> tuple[list[str], list[Path]]:
        """The blobs under `prefix` and the folders holding them (deepest first), looking only in the folder
        the prefix points into: a job's files cost the same to find among ten jobs as among a million."""
        head, _, stem = prefix.rpartition("/")
        base = self._path(head) if head else self.root
        names: list[str] = []
        folders: list[Path] = []

        def walk(folder: Path, rel: str, match: str) -> None:
            try:
                entries = list(os.scandir(folder))
            except (FileNotFoundError, NotADirectoryError):
                return
            for entry in entries:
                if not entry.name.startswith(match) or (folder == self.root and entry.name == ".incoming"):
                    continue
                name = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_dir(follow_symlinks=False):
                    walk(Path(entry.path), name, "")
                    folders.append(Path(entry.path))
                else:
                    names.append(name)

        walk(base, head, stem)
        return sorted(names), folders

    async def list(self, prefix: str) -> list[str]:
        names, _folders = await asyncio.to_thread(self._names, prefix)
        return names

    async def delete_prefix(self, prefix: str) -> int:
        """Delete the blobs under `prefix` and every folder this leaves empty, up to the container."""

        def delete() -> int:
            names, folders = self._names(prefix)
            for name in names:
                self._path(name).unlink(missing_ok=True)
            for folder in folders:  # deepest first; a folder a writer has just filled again stays
                with contextlib.suppress(OSError):
                    folder.rmdir()
            head = prefix.rpartition("/")[0]
            if head:
                self._prune(self._path(head))
            return len(names)

        return await settled(asyncio.to_thread(delete))

    def _prune(self, folder: Path) -> None:
        """Remove `folder` and its parents while they are empty, never the container itself."""
        while folder != self.root and self.root in folder.parents:
            try:
                folder.rmdir()
            except OSError:  # not empty (or already gone): the parents are not empty either
                if folder.exists():
                    return
            folder = folder.parent

    async def sweep_incoming(self, older_than: float) -> int:
        """Remove temporary files no write has touched for `older_than` seconds: left by a process that was
        killed mid-write (a live write renews its file's modification time with every chunk)."""

        def sweep() -> int:
            cutoff = time.time() - older_than
            removed = 0
            for entry in os.scandir(self._tmp):
                with contextlib.suppress(FileNotFoundError):
                    if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                        os.unlink(entry.path)
                        removed += 1
            return removed

        return await asyncio.to_thread(sweep)

    async def link_key(self) -> bytes:
        """The key that seals download links (`gateway.core.links`): made once, kept beside the spool, shared
        by every process using the folder, and never in settings or logs."""
        from gateway.spool.link_key import LINK_KEY_FILE, load_or_create

        return await asyncio.to_thread(load_or_create, self.root.parent / LINK_KEY_FILE)


class LocalQueue:
    def __init__(self, db: _Database, name: str, wake: Wakeup | None = None) -> None:
        self._db = db
        self._name = name
        self._wake = wake

    async def wait_for_put(self, timeout: float) -> None:
        """Return soon after any process queued a message, or after `timeout` (an idle worker's poll)."""
        if self._wake is None:
            await asyncio.sleep(timeout)
        else:
            await self._wake.wait(timeout)

    async def put(self, text: str, delay: float = 0) -> None:
        visible = time.time() + delay

        def insert(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO queue VALUES (?, ?, ?, ?, 0, '', (SELECT COALESCE(MAX(seq), 0) + 1 FROM queue))",
                (secrets.token_hex(12), self._name, text, visible),
            )

        await self._db.run(insert)
        if self._wake is not None:
            self._wake.poke()

    async def receive(self, visibility: float, max_messages: int = 1) -> list[QueueLease]:
        now = time.time()

        def take(c: sqlite3.Connection) -> list[QueueLease]:
            rows = c.execute(
                "SELECT id, text, dequeue_count FROM queue WHERE queue = ? AND visible_at <= ? ORDER BY visible_at, seq LIMIT ?",
                (self._name, now, max_messages),
            ).fetchall()
            leases = []
            for msg_id, text, count in rows:
                receipt = secrets.token_hex(8)
                c.execute(
                    "UPDATE queue SET visible_at = ?, dequeue_count = ?, receipt = ? WHERE id = ?",
                    (now + visibility, count + 1, receipt, msg_id),
                )
                leases.append(QueueLease(msg_id, receipt, text, count + 1))
            return leases

        return await self._db.run(take)

    async def delete(self, lease: QueueLease) -> None:
        def remove(c: sqlite3.Connection) -> None:
            cur = c.execute("DELETE FROM queue WHERE id = ? AND receipt = ?", (lease.message_id, lease.receipt))
            if cur.rowcount == 0:
                raise NotFound(f"queue message {lease.message_id} (lease lost)")

        await self._db.run(remove)

    async def defer(self, lease: QueueLease, delay: float) -> QueueLease:
        receipt = secrets.token_hex(8)

        def update(c: sqlite3.Connection) -> None:
            cur = c.execute(
                "UPDATE queue SET visible_at = ?, receipt = ? WHERE id = ? AND receipt = ?",
                (time.time() + delay, receipt, lease.message_id, lease.receipt),
            )
            if cur.rowcount == 0:
                raise NotFound(f"queue message {lease.message_id} (lease lost)")

        await self._db.run(update)
        return QueueLease(lease.message_id, receipt, lease.text, lease.dequeue_count)

    async def put_poison(self, text: str) -> None:
        await LocalQueue(self._db, self._name + "-poison").put(text)

    async def close(self) -> None:
        if self._wake is not None:
            self._wake.close()
        self._db.close()

    async def count(self) -> int:
        return await self._db.run(
            lambda c: int(c.execute("SELECT COUNT(*) FROM queue WHERE queue = ?", (self._name,)).fetchone()[0])
        )


class LocalTable:
    def __init__(self, db: _Database, name: str) -> None:
        self._db = db
        self._name = name

    async def get(self, key: str) -> Record | None:
        def read(c: sqlite3.Connection) -> Record | None:
            row = c.execute("SELECT data, etag FROM records WHERE tbl = ? AND key = ?", (self._name, key)).fetchone()
            return Record(json.loads(row[0]), row[1]) if row else None

        return await self._db.run(read)

    async def insert(self, key: str, data: dict[str, Any]) -> str:
        etag = secrets.token_hex(8)

        def write(c: sqlite3.Connection) -> None:
            try:
                c.execute("INSERT INTO records VALUES (?, ?, ?, ?)", (self._name, key, json.dumps(data), etag))
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"{self._name}/{key} exists") from exc

        await self._db.run(write)
        return etag

    async def replace(self, key: str, data: dict[str, Any], etag: str) -> str:
        new = secrets.token_hex(8)

        def write(c: sqlite3.Connection) -> None:
            cur = c.execute(
                "UPDATE records SET data = ?, etag = ? WHERE tbl = ? AND key = ? AND etag = ?",
                (json.dumps(data), new, self._name, key, etag),
            )
            if cur.rowcount == 0:
                raise Conflict(f"{self._name}/{key} changed or vanished")

        await self._db.run(write)
        return new

    async def upsert(self, key: str, data: dict[str, Any]) -> str:
        etag = secrets.token_hex(8)
        await self._db.run(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?)", (self._name, key, json.dumps(data), etag)
            )
        )
        return etag

    async def delete(self, key: str) -> None:
        await self._db.run(lambda c: c.execute("DELETE FROM records WHERE tbl = ? AND key = ?", (self._name, key)))

    async def list(self) -> list[Record]:
        rows = await self._db.run(
            lambda c: c.execute("SELECT data, etag FROM records WHERE tbl = ? ORDER BY key", (self._name,)).fetchall()
        )
        return [Record(json.loads(data), etag) for data, etag in rows]

    async def close(self) -> None:
        self._db.close()


async def open_local_spool(directory: Path) -> Spool:
    """Open (creating if needed) the embedded spool in `directory`; several processes may share it."""
    from gateway.config import BLOB_CONTAINER, DEVICES_TABLE, JOBS_TABLE, MAILBOXES_TABLE, QUEUE_NAME

    try:
        directory.mkdir(parents=True, exist_ok=True)
        db = await asyncio.to_thread(_Database, directory / "spool.db")
        ledger = await asyncio.to_thread(_Database, directory / "ledger.db", False)
    except (OSError, sqlite3.Error) as exc:
        raise StorageUnavailable(f"cannot open the local spool in {directory}: {exc}") from exc
    return Spool(
        blobs=LocalBlobStore(directory / BLOB_CONTAINER),
        queue=LocalQueue(db, QUEUE_NAME, Wakeup(directory / "wake")),
        jobs=LocalTable(db, JOBS_TABLE),
        devices=LocalTable(db, DEVICES_TABLE),
        mailboxes=LocalTable(ledger, MAILBOXES_TABLE),  # its own file and lock: see _Database
    )
