"""The embedded queue engine: one SQLite file in WAL mode, shared by every process.

Durability with group commit. The database runs with `synchronous = FULL`, so a commit
returns only after the write-ahead log is on disk. Every operation of a queue object runs
on one writer thread with its own connection; the thread takes all the operations that
are waiting, runs the writing ones inside one `BEGIN IMMEDIATE ... COMMIT` (should one
fail, the batch runs again with each in its own savepoint, so one failure does not undo
the others) and only then answers them, with one wake-up of the caller's event loop.
Concurrent publishes therefore share one commit and one disk flush, and each `publish`
still returns only after the transaction holding its message has committed (`commits`
counts the transactions). Operations submitted in one event-loop iteration reach the
thread as one list, so callers woken together by a commit share the next one too.
aiosqlite also runs a connection on a thread, but one statement at a time with a commit
each; batching across callers is what it cannot do. Another process holding the write
lock is waited for in steps of `LOCK_RETRY_S`, not SQLite's coarse busy backoff.

Leases. `receive` marks a row leased: a random token and an expiry (`available_at`, now
plus the visibility timeout) and counts the attempt. A row is ready when its
`available_at` has passed, so a lease that was never answered (the consumer was killed
with SIGKILL, or is stuck) simply expires and the row is delivered again; `ack`, `nack`
and `release` act only while the token still matches. A message whose every attempt
ended in an expired lease is dead-lettered at its next delivery instead of being handed
out again, so a message that kills its consumer cannot crash-loop the workers.

Waiting. Other processes publish into the same file, so an empty `receive(wait_s=...)`
polls (a read, which takes no lock) every `poll_interval_s`, and wakes at once for
publishes made through the same object.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue as thread_queue
import random
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from millions.queue.base import DeadLetter, Delivery, NackResult, QueueError, QueueStats
from millions.queue.config import QueueConfig
from millions.queue.messages import (
    MessageDecodeError,
    check_queue_name,
    checked_publish,
    decode_payload,
    error_text,
)
from millions.queue.retry import plan_failure
from millions.sqlite_wal import enable_wal

log = logging.getLogger("millions.queue")

BUSY_TIMEOUT_MS = 10_000
#: Pause between tries for the write lock while another connection holds it.
LOCK_RETRY_S = 0.0002
MAX_BATCH = 1000
RATE_BUCKET_S = 10
RATE_WINDOW_BUCKETS = 6
RATE_KEEP_S = 600.0

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS messages ("
    " id INTEGER PRIMARY KEY,"
    " message_id TEXT NOT NULL UNIQUE,"
    " queue TEXT NOT NULL,"
    " body BLOB NOT NULL,"
    " idempotency_key TEXT NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " max_attempts INTEGER,"
    " published_at REAL NOT NULL,"
    " ready_since REAL NOT NULL,"
    " available_at REAL NOT NULL,"
    " lease_token TEXT,"
    " last_error TEXT)",
    "CREATE INDEX IF NOT EXISTS messages_due ON messages (queue, available_at)",
    "CREATE TABLE IF NOT EXISTS dead_letters ("
    " id INTEGER PRIMARY KEY,"
    " queue TEXT NOT NULL,"
    " message_id TEXT NOT NULL,"
    " body BLOB NOT NULL,"
    " idempotency_key TEXT NOT NULL,"
    " attempts INTEGER NOT NULL,"
    " max_attempts INTEGER,"
    " published_at REAL NOT NULL,"
    " dead_at REAL NOT NULL,"
    " error TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS dead_letters_queue ON dead_letters (queue, id)",
    "CREATE TABLE IF NOT EXISTS queues (name TEXT PRIMARY KEY, created_at REAL NOT NULL)"
    " WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS throughput ("
    " queue TEXT NOT NULL, bucket INTEGER NOT NULL,"
    " published INTEGER NOT NULL DEFAULT 0, acked INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY (queue, bucket)) WITHOUT ROWID",
)
_INSERT = (
    "INSERT INTO messages (message_id, queue, body, idempotency_key, attempts, max_attempts,"
    " published_at, ready_since, available_at) VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?)"
)
_HAS_READY = "SELECT 1 FROM messages WHERE queue = ? AND available_at <= ? LIMIT 1"
_CANDIDATES = (
    "SELECT id, message_id, body, idempotency_key, attempts, max_attempts, published_at,"
    " lease_token FROM messages WHERE queue = ? AND available_at <= ?"
    " ORDER BY available_at, id LIMIT ?"
)
_LEASE = (
    "UPDATE messages SET lease_token = ?, available_at = ?, attempts = attempts + 1 WHERE id = ?"
)
_TO_DEAD = (
    "INSERT INTO dead_letters (queue, message_id, body, idempotency_key, attempts,"
    " max_attempts, published_at, dead_at, error)"
    " SELECT queue, message_id, body, idempotency_key, attempts, max_attempts, published_at, ?, ?"
    " FROM messages WHERE id = ?"
)
_STATS = (
    "SELECT coalesce(sum(available_at <= :now), 0),"
    " coalesce(sum(lease_token IS NOT NULL AND available_at > :now), 0),"
    " coalesce(sum(lease_token IS NULL AND available_at > :now), 0),"
    " min(CASE WHEN available_at <= :now OR lease_token IS NOT NULL THEN ready_since END)"
    " FROM messages WHERE queue = :queue"
)
_BUMP = (
    "INSERT INTO throughput (queue, bucket, published, acked) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (queue, bucket) DO UPDATE SET"
    " published = published + excluded.published, acked = acked + excluded.acked"
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Lease:
    """The receipt of a SQLite delivery: the row and the token that proves the lease."""

    row_id: int
    token: str


class _Batch:
    """One transaction's worth of operations: the connection and throughput counts."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.counts: list[tuple[str, int, int]] = []

    def count(self, queue: str, published: int = 0, acked: int = 0) -> None:
        self.counts.append((queue, published, acked))

    def flush_counts(self, now: float) -> None:
        totals: dict[str, list[int]] = {}
        for queue, published, acked in self.counts:
            total = totals.setdefault(queue, [0, 0])
            total[0] += published
            total[1] += acked
        bucket = int(now // RATE_BUCKET_S)
        for queue, (published, acked) in totals.items():
            self.db.execute(_BUMP, (queue, bucket, published, acked))
            if published:
                self.db.execute(
                    "INSERT OR IGNORE INTO queues (name, created_at) VALUES (?, ?)", (queue, now)
                )


@dataclass
class _Job:
    operation: Callable[[_Batch], Any]
    writes: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    outcome: tuple[bool, Any] = field(default=(False, None))


def _answer(jobs: list[_Job]) -> None:
    """Hand each job's `outcome` to its caller: one wake-up per event loop, not per job
    (a group commit answers hundreds of callers at once)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
    for job in jobs:
        by_loop.setdefault(job.loop, []).append(job)
    for loop, answered in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the caller's loop is closed
            loop.call_soon_threadsafe(_set_outcomes, answered)


def _set_outcomes(jobs: list[_Job]) -> None:
    for job in jobs:
        if job.future.done():  # the caller was cancelled; the work happened anyway
            continue
        ok, value = job.outcome
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)


class _WriterThread(threading.Thread):
    """Owns the connection; runs jobs in batches, writes in one transaction per batch."""

    def __init__(self, path: Path) -> None:
        super().__init__(name=f"queue-sqlite-{path.name}", daemon=True)
        self.path = path
        #: Lists of jobs (one per event-loop iteration that submitted any); None stops.
        self.jobs: thread_queue.SimpleQueue[list[_Job] | None] = thread_queue.SimpleQueue()
        self.commits = 0
        self._db: sqlite3.Connection | None = None
        self._last_prune = 0.0

    def run(self) -> None:
        try:
            while True:
                first = self.jobs.get()
                if first is None:
                    return
                batch = list(first)
                stop = False
                while len(batch) < MAX_BATCH:
                    try:
                        jobs = self.jobs.get_nowait()
                    except thread_queue.Empty:
                        break
                    if jobs is None:
                        stop = True
                        break
                    batch.extend(jobs)
                try:
                    self._run_batch(batch)
                except Exception as exc:  # a bug must fail the callers, not hang them
                    log.exception("sqlite queue writer failed")
                    error = QueueError(f"sqlite queue {self.path}: {exc!r}")
                    for job in batch:
                        job.outcome = (False, error)
                    _answer(batch)
                if stop:
                    return
        finally:
            if self._db is not None:
                self._db.close()

    def _run_batch(self, jobs: list[_Job]) -> None:
        try:
            db = self._connection()
        except (sqlite3.Error, OSError) as exc:
            error = QueueError(f"sqlite queue {self.path}: {exc}")
            for job in jobs:
                job.outcome = (False, error)
            _answer(jobs)
            return
        readers = [job for job in jobs if not job.writes]
        for job in readers:
            job.outcome = self._attempt(_Batch(db), job)
        if readers:
            _answer(readers)
        writers = [job for job in jobs if job.writes]
        if writers:
            self._write(db, writers)

    def _write(self, db: sqlite3.Connection, jobs: list[_Job]) -> None:
        """All `jobs` in one transaction. First without savepoints (the common case: every
        job succeeds); if one fails, the transaction is rolled back and run again with
        each job in its own savepoint, so only the failed job's caller sees the error.
        Jobs are functions of the database alone, so running them twice is harmless."""
        batch = _Batch(db)
        try:
            _begin_immediate(db)
            if not self._run_together(batch, jobs):
                if db.in_transaction:
                    db.execute("ROLLBACK")
                batch = _Batch(db)
                _begin_immediate(db)
                self._run_isolated(batch, jobs)
            now = time.time()
            batch.flush_counts(now)
            if now - self._last_prune > 60:
                self._last_prune = now
                cutoff = int((now - RATE_KEEP_S) // RATE_BUCKET_S)
                db.execute("DELETE FROM throughput WHERE bucket < ?", (cutoff,))
            db.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            error = QueueError(f"sqlite queue {self.path}: {exc}")
            for job in jobs:
                job.outcome = (False, error)
            _answer(jobs)
            return
        self.commits += 1
        _answer(jobs)

    def _run_together(self, batch: _Batch, jobs: list[_Job]) -> bool:
        for job in jobs:
            job.outcome = self._attempt(batch, job)
            if not job.outcome[0]:
                return False
        return True

    def _run_isolated(self, batch: _Batch, jobs: list[_Job]) -> None:
        db = batch.db
        for job in jobs:
            counted = len(batch.counts)
            db.execute("SAVEPOINT op")  # one name: the statement stays cached
            job.outcome = self._attempt(batch, job)
            if job.outcome[0]:
                db.execute("RELEASE op")
            else:
                del batch.counts[counted:]
                db.execute("ROLLBACK TO op")
                db.execute("RELEASE op")

    @staticmethod
    def _attempt(batch: _Batch, job: _Job) -> tuple[bool, Any]:
        try:
            return True, job.operation(batch)
        except (sqlite3.Error, OSError) as exc:
            return False, QueueError(f"sqlite queue: {exc}")
        except Exception as exc:
            return False, exc

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = _connect(self.path)
        return self._db


def _begin_immediate(db: sqlite3.Connection) -> None:
    """Take the write lock, trying again every `LOCK_RETRY_S` for up to `BUSY_TIMEOUT_MS`.

    SQLite's own busy handler sleeps 1, 2, 5, 10, 15... ms between tries, while another
    process (a producer and a worker share the file) holds the lock for well under a
    millisecond plus one fsync; waking sooner keeps the group commits of both flowing.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    db.execute("PRAGMA busy_timeout = 0")
    try:
        while True:
            try:
                db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if db.in_transaction or not _is_busy(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(LOCK_RETRY_S)
    finally:
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=True
    )
    try:
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        enable_wal(db)
        # FULL: a commit is on disk (the WAL is fsynced) before publish returns; group
        # commit is what keeps that affordable.
        db.execute("PRAGMA synchronous = FULL")
        db.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA:
            db.execute(statement)
        db.execute("COMMIT")
    except BaseException:
        db.close()
        raise
    return db


class SqliteQueue:
    """A `MessageQueue` in one SQLite file that many processes may share."""

    def __init__(
        self,
        path: str | Path,
        config: QueueConfig | None = None,
        *,
        poll_interval_s: float = 0.05,
    ) -> None:
        self.path = Path(path)
        self.config = config or QueueConfig()
        self.poll_interval_s = poll_interval_s
        self._thread = _WriterThread(self.path)
        self._started = False
        self._closed = False
        self._leases: dict[int, str] = {}
        self._published: asyncio.Event | None = None
        self._pending: list[_Job] = []
        self._backlogged: set[str] = set()

    @property
    def commits(self) -> int:
        """Write transactions committed so far by this object (one per group commit)."""
        return self._thread.commits

    async def publish(
        self,
        queue: str,
        payload: Any,
        *,
        delay_s: float = 0.0,
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
    ) -> str:
        message = checked_publish(
            queue, payload, delay_s, idempotency_key, max_attempts, self.config.max_message_bytes
        )
        message_id, body, delay, key = (
            message.message_id,
            message.body,
            message.delay_s,
            message.idempotency_key,
        )

        def insert(batch: _Batch) -> None:
            now = time.time()
            due = now + delay
            batch.db.execute(_INSERT, (message_id, queue, body, key, max_attempts, now, due, due))
            batch.count(queue, published=1)  # also records the queue's name (flush_counts)

        await self._submit(insert, writes=True)
        if self._published is not None:
            self._published.set()
        return message_id

    async def receive(
        self, queue: str, *, max_messages: int = 1, wait_s: float = 0.0
    ) -> list[Delivery]:
        check_queue_name(queue)
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {max_messages}")
        if self._published is None:
            self._published = asyncio.Event()
        published = self._published
        deadline = time.monotonic() + max(wait_s, 0.0)
        while True:
            published.clear()
            # A read first, which takes no lock, so idle polling does not contend with
            # writers; skipped while the last lease was full (more are likely waiting),
            # which also lets the lease join the commit of acks submitted with it.
            ready = queue in self._backlogged or await self._submit(
                lambda batch: batch.db.execute(_HAS_READY, (queue, time.time())).fetchone(),
                writes=False,
            )
            if ready:
                deliveries: list[Delivery] = await self._submit(
                    lambda batch: self._lease(batch, queue, max_messages), writes=True
                )
                if len(deliveries) == max_messages:
                    self._backlogged.add(queue)
                else:
                    self._backlogged.discard(queue)
                if deliveries:
                    for delivery in deliveries:
                        lease = delivery.receipt
                        assert isinstance(lease, _Lease)
                        self._leases[lease.row_id] = lease.token
                    return deliveries
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(self.poll_interval_s, remaining)):
                    await published.wait()

    def _lease(self, batch: _Batch, queue: str, max_messages: int) -> list[Delivery]:
        db = batch.db
        now = time.time()
        visibility = self.config.visibility_timeout_for(queue)
        queue_max = self.config.max_attempts_for(queue)
        leased: list[Delivery] = []
        # One token for this call's leases: with the row id it still names one lease, as
        # every later lease of the row comes from another call with another token.
        new_token = secrets.token_hex(12)
        expires = now + visibility
        while len(leased) < max_messages:
            rows = db.execute(_CANDIDATES, (queue, now, max_messages - len(leased))).fetchall()
            if not rows:
                break
            updates: list[tuple[str, float, int]] = []
            for row_id, message_id, body, key, attempts, max_attempts, published_at, token in rows:
                effective_max = max_attempts or queue_max
                if token is not None and attempts >= effective_max:
                    self._bury(
                        db,
                        row_id,
                        now,
                        f"delivered {attempts} times without an acknowledgement "
                        "(the consumer died or exceeded the visibility timeout)",
                    )
                    continue
                try:
                    payload = decode_payload(bytes(body))
                except MessageDecodeError as exc:
                    log.warning(
                        "undecodable message dead-lettered",
                        extra={"queue": queue, "message_id": message_id},
                    )
                    self._bury(db, row_id, now, f"undecodable message: {exc}")
                    continue
                updates.append((new_token, expires, row_id))
                leased.append(
                    Delivery(
                        queue=queue,
                        message_id=message_id,
                        payload=payload,
                        attempt=attempts + 1,
                        max_attempts=effective_max,
                        idempotency_key=key,
                        published_at=published_at,
                        receipt=_Lease(row_id, new_token),
                    )
                )
            db.executemany(_LEASE, updates)
        return leased

    @staticmethod
    def _bury(db: sqlite3.Connection, row_id: int, now: float, error: str) -> None:
        db.execute(_TO_DEAD, (now, error_text(error), row_id))
        db.execute("DELETE FROM messages WHERE id = ?", (row_id,))

    async def ack(self, delivery: Delivery) -> bool:
        lease = self._lease_of(delivery)

        def ack(batch: _Batch) -> bool:
            deleted = batch.db.execute(
                "DELETE FROM messages WHERE id = ? AND lease_token = ?", (lease.row_id, lease.token)
            ).rowcount
            if deleted:
                batch.count(delivery.queue, acked=1)
            return deleted == 1

        done: bool = await self._submit(ack, writes=True)
        self._leases.pop(lease.row_id, None)
        return done

    async def nack(self, delivery: Delivery, error: str, *, retry: bool = True) -> NackResult:
        lease = self._lease_of(delivery)
        jitter = random.random()

        def nack(batch: _Batch) -> NackResult:
            db = batch.db
            row = db.execute(
                "SELECT attempts, max_attempts FROM messages WHERE id = ? AND lease_token = ?",
                (lease.row_id, lease.token),
            ).fetchone()
            if row is None:
                return "lost"
            attempts, max_attempts = row
            plan = plan_failure(
                attempts,
                max_attempts or self.config.max_attempts_for(delivery.queue),
                retry,
                self.config.backoff_base_s,
                self.config.backoff_cap_s,
                jitter,
            )
            now = time.time()
            if plan.dead_letter:
                self._bury(db, lease.row_id, now, error)
                return "dead_lettered"
            due = now + plan.delay_s
            db.execute(
                "UPDATE messages SET lease_token = NULL, available_at = ?, ready_since = ?,"
                " last_error = ? WHERE id = ?",
                (due, due, error_text(error), lease.row_id),
            )
            return "retried"

        result: NackResult = await self._submit(nack, writes=True)
        self._leases.pop(lease.row_id, None)
        return result

    async def release(self, delivery: Delivery) -> bool:
        lease = self._lease_of(delivery)

        def release(batch: _Batch) -> bool:
            changed = batch.db.execute(
                "UPDATE messages SET lease_token = NULL, available_at = ?,"
                " attempts = max(attempts - 1, 0) WHERE id = ? AND lease_token = ?",
                (time.time(), lease.row_id, lease.token),
            ).rowcount
            return changed == 1

        released: bool = await self._submit(release, writes=True)
        self._leases.pop(lease.row_id, None)
        return released

    async def stats(self, queue: str) -> QueueStats:
        check_queue_name(queue)

        def stats(batch: _Batch) -> QueueStats:
            db = batch.db
            now = time.time()
            ready, in_flight, delayed, oldest = db.execute(
                _STATS, {"now": now, "queue": queue}
            ).fetchone()
            (dead,) = db.execute(
                "SELECT count(*) FROM dead_letters WHERE queue = ?", (queue,)
            ).fetchone()
            window_start = (int(now // RATE_BUCKET_S) - RATE_WINDOW_BUCKETS) * RATE_BUCKET_S
            published, acked = db.execute(
                "SELECT coalesce(sum(published), 0), coalesce(sum(acked), 0) FROM throughput"
                " WHERE queue = ? AND bucket >= ?",
                (queue, window_start // RATE_BUCKET_S),
            ).fetchone()
            window = now - window_start
            return QueueStats(
                queue=queue,
                ready=int(ready),
                in_flight=int(in_flight),
                delayed=int(delayed),
                dead=int(dead),
                oldest_age_s=0.0 if oldest is None else max(0.0, now - oldest),
                publish_rate=published / window,
                ack_rate=acked / window,
            )

        result: QueueStats = await self._submit(stats, writes=False)
        return result

    async def queue_names(self) -> list[str]:
        rows = await self._submit(
            lambda batch: batch.db.execute("SELECT name FROM queues ORDER BY name").fetchall(),
            writes=False,
        )
        return [row[0] for row in rows]

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        check_queue_name(queue)
        rows = await self._submit(
            lambda batch: batch.db.execute(
                "SELECT message_id, body, attempts, error, idempotency_key, published_at, dead_at"
                " FROM dead_letters WHERE queue = ? ORDER BY id LIMIT ?",
                (queue, max(limit, 0)),
            ).fetchall(),
            writes=False,
        )
        return [
            DeadLetter(queue, message_id, bytes(body), attempts, error, key, published, dead_at)
            for message_id, body, attempts, error, key, published, dead_at in rows
        ]

    async def redrive(self, queue: str, message_ids: Collection[str] | None = None) -> int:
        check_queue_name(queue)
        wanted = None if message_ids is None else set(message_ids)

        def redrive(batch: _Batch) -> int:
            db = batch.db
            now = time.time()
            moved = 0
            rows = db.execute(
                "SELECT id, message_id FROM dead_letters WHERE queue = ? ORDER BY id", (queue,)
            ).fetchall()
            for dead_id, message_id in rows:
                if wanted is not None and message_id not in wanted:
                    continue
                moved += db.execute(
                    "INSERT OR IGNORE INTO messages (message_id, queue, body, idempotency_key,"
                    " attempts, max_attempts, published_at, ready_since, available_at)"
                    " SELECT message_id, queue, body, idempotency_key, 0, max_attempts,"
                    " published_at, ?, ? FROM dead_letters WHERE id = ?",
                    (now, now, dead_id),
                ).rowcount
                db.execute("DELETE FROM dead_letters WHERE id = ?", (dead_id,))
            return moved

        moved: int = await self._submit(redrive, writes=True)
        if moved and self._published is not None:
            self._published.set()
        return moved

    async def purge_dead_letters(self, queue: str) -> int:
        check_queue_name(queue)
        purged: int = await self._submit(
            lambda batch: (
                batch.db.execute("DELETE FROM dead_letters WHERE queue = ?", (queue,)).rowcount
            ),
            writes=True,
        )
        return purged

    async def delete_queue(self, queue: str) -> None:
        check_queue_name(queue)

        def delete(batch: _Batch) -> None:
            for table, column in (
                ("messages", "queue"),
                ("dead_letters", "queue"),
                ("throughput", "queue"),
                ("queues", "name"),
            ):
                batch.db.execute(f"DELETE FROM {table} WHERE {column} = ?", (queue,))

        await self._submit(delete, writes=True)

    async def close(self) -> None:
        """Unsettled leases of this object expire now (their attempt counts), then the
        connection closes."""
        if self._closed:
            return
        if self._leases and self._started:
            leases = list(self._leases.items())

            def expire(batch: _Batch) -> None:
                now = time.time()
                batch.db.executemany(
                    "UPDATE messages SET available_at = ? WHERE id = ? AND lease_token = ?",
                    [(now, row_id, token) for row_id, token in leases],
                )

            with contextlib.suppress(QueueError):
                await self._submit(expire, writes=True)
            self._leases.clear()
        self._closed = True
        if self._started:
            self._hand_over()
            self._thread.jobs.put(None)
            await asyncio.to_thread(self._thread.join)

    def _lease_of(self, delivery: Delivery) -> _Lease:
        lease = delivery.receipt
        if not isinstance(lease, _Lease):
            raise ValueError("this delivery was not received from a SQLite queue")
        return lease

    async def _submit(self, operation: Callable[[_Batch], T], *, writes: bool) -> T:
        if self._closed:
            raise QueueError(f"sqlite queue {self.path} is closed")
        if not self._started:
            self._started = True
            self._thread.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._pending and self._pending[0].loop is not loop:
            self._hand_over()  # the other loop's hand-over would come too late, or never
        self._pending.append(_Job(operation, writes, loop, future))
        if len(self._pending) == 1:
            loop.call_soon(self._hand_over)
        return await future

    def _hand_over(self) -> None:
        """Give the writer every job submitted since the last hand-over, as one list.

        Callers woken together by one group commit publish again in the same event-loop
        iteration; handing their jobs over together puts them in the same next commit
        instead of splitting them between a small commit and the one after it.
        """
        if self._pending:
            self._thread.jobs.put(self._pending)
            self._pending = []
