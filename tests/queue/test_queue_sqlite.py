"""What only the embedded SQLite engine promises: group commit, WAL, local observability."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from queue_support import TEST_CONFIG, receive_one

from millions.queue.base import QueueError
from millions.queue.config import QueueConfig
from millions.queue.sqlite import SqliteQueue

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def queue(tmp_path: Path) -> SqliteQueue:
    return SqliteQueue(tmp_path / "queue.sqlite3", QueueConfig(**TEST_CONFIG))


async def test_concurrent_publishes_share_commits_and_are_durable_on_return(
    queue: SqliteQueue, tmp_path: Path
) -> None:
    await queue.publish("warm-up", {})  # creates the schema in its own commit
    before = queue.commits
    ids = await asyncio.gather(*(queue.publish("photos", {"n": n}) for n in range(200)))
    commits = queue.commits - before
    assert 1 <= commits < 200, f"{commits} commits for 200 concurrent publishes"
    # Committed means visible to any other connection the moment publish returned.
    db = sqlite3.connect(tmp_path / "queue.sqlite3")
    try:
        stored = {row[0] for row in db.execute("SELECT message_id FROM messages")}
        assert set(ids) <= stored
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()
    await queue.close()


async def test_sequential_publishes_commit_each(queue: SqliteQueue) -> None:
    await queue.publish("warm-up", {})
    before = queue.commits
    for n in range(5):
        await queue.publish("photos", {"n": n})
    assert queue.commits - before == 5
    await queue.close()


async def test_stats_report_leases_age_and_rates(queue: SqliteQueue) -> None:
    for n in range(4):
        await queue.publish("photos", {"n": n})
    leased = await queue.receive("photos", max_messages=2)
    assert len(leased) == 2
    assert await queue.ack(leased[0])
    stats = await queue.stats("photos")
    assert (stats.ready, stats.in_flight, stats.delayed, stats.dead) == (2, 1, 0, 0)
    assert stats.oldest_age_s is not None and 0 <= stats.oldest_age_s < 5
    assert stats.publish_rate is not None and stats.ack_rate is not None
    # 4 publishes and 1 ack within the 60-70 s window
    assert 4 / 70 <= stats.publish_rate <= 4 / 60
    assert 1 / 70 <= stats.ack_rate <= 1 / 60
    await queue.close()


async def test_two_objects_on_one_file_share_the_queue(tmp_path: Path) -> None:
    producer = SqliteQueue(tmp_path / "q.db", QueueConfig(**TEST_CONFIG))
    consumer = SqliteQueue(tmp_path / "q.db", QueueConfig(**TEST_CONFIG), poll_interval_s=0.02)
    message_id = await producer.publish("photos", {"n": 1})
    delivery = await receive_one(consumer, "photos")
    assert delivery.message_id == message_id
    assert await producer.ack(delivery), "a lease token is valid from any process"
    await producer.close()
    await consumer.close()


async def test_an_unopenable_file_is_a_queue_error(tmp_path: Path) -> None:
    queue = SqliteQueue(tmp_path, QueueConfig())  # a directory
    with pytest.raises(QueueError, match="sqlite queue"):
        await queue.publish("photos", {})
    await queue.close()
    with pytest.raises(QueueError, match="closed"):
        await queue.publish("photos", {})


async def test_message_age_counts_from_when_it_became_deliverable(queue: SqliteQueue) -> None:
    await queue.publish("photos", {"later": True}, delay_s=0.3)
    assert (await queue.stats("photos")).oldest_age_s == 0.0
    delivery = await receive_one(queue, "photos", timeout_s=5)
    stats = await queue.stats("photos")
    assert stats.oldest_age_s is not None and stats.oldest_age_s < 1.0
    assert (stats.in_flight, stats.delayed) == (1, 0)
    assert await queue.ack(delivery)
    await queue.close()


async def test_a_failing_operation_fails_only_its_caller_in_a_shared_commit(
    queue: SqliteQueue,
) -> None:
    await queue.publish("warm-up", {})
    before = queue.commits

    def conflicting(batch: Any) -> None:
        batch.db.execute("INSERT INTO queues (name, created_at) VALUES ('half-done', 0)")
        batch.db.execute("INSERT INTO queues (name, created_at) VALUES ('warm-up', 0)")

    results = await asyncio.gather(
        *(queue.publish("photos", {"n": n}) for n in range(20)),
        queue._submit(conflicting, writes=True),
        return_exceptions=True,
    )
    assert all(isinstance(result, str) for result in results[:20])
    assert isinstance(results[20], QueueError)
    assert queue.commits - before == 1, "submitted together, committed together"
    assert (await queue.stats("photos")).ready == 20
    assert "half-done" not in await queue.queue_names(), "the failed operation left nothing"
    await queue.close()


async def test_a_publish_waits_for_another_connection_to_release_the_write_lock(
    queue: SqliteQueue, tmp_path: Path
) -> None:
    await queue.publish("warm-up", {})
    other = sqlite3.connect(tmp_path / "queue.sqlite3", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        publish = asyncio.ensure_future(queue.publish("photos", {"n": 1}))
        done, _ = await asyncio.wait({publish}, timeout=0.2)
        assert not done, "published while another connection held the write lock"
        other.execute("COMMIT")
        await asyncio.wait_for(publish, 5)
    finally:
        other.close()
    assert (await queue.stats("photos")).ready == 1
    await queue.close()
