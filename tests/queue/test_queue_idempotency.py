"""Effects applied once: the key recorded in the effect's own transaction."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from queue_support import Engine, receive_one

from millions.queue.config import QueueOverride
from millions.queue.idempotency import apply_once, forget_applied

pytestmark = pytest.mark.timeout(30)


def _app_db(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE IF NOT EXISTS thumbnails (photo INTEGER PRIMARY KEY, made INTEGER)")
    db.execute("INSERT OR IGNORE INTO thumbnails VALUES (7, 0)")
    return db


def _make_thumbnail(db: sqlite3.Connection) -> None:
    db.execute("UPDATE thumbnails SET made = made + 1 WHERE photo = 7")


async def test_a_message_delivered_twice_applies_its_effect_once(
    engine: Engine, tmp_path: Path
) -> None:
    name = engine.new_queue_name()
    config = engine.config(queues={name: QueueOverride(visibility_timeout_s=0.3)})
    queue = engine.open(config)
    db = _app_db(tmp_path / "app.db")
    await queue.publish(name, {"photo": 7}, idempotency_key="thumbnail-7")

    first = await receive_one(queue, name)
    assert apply_once(db, first.idempotency_key, _make_thumbnail)
    # ... and the consumer dies before acknowledging: the message comes back.
    second = await receive_one(queue, name, timeout_s=5)
    assert second.attempt == 2 and second.idempotency_key == "thumbnail-7"
    assert not apply_once(db, second.idempotency_key, _make_thumbnail)
    assert await queue.ack(second)
    assert db.execute("SELECT made FROM thumbnails").fetchone() == (1,)
    db.close()


def test_a_failing_effect_records_nothing(tmp_path: Path) -> None:
    db = _app_db(tmp_path / "app.db")

    def fail(db: sqlite3.Connection) -> None:
        _make_thumbnail(db)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        apply_once(db, "k", fail)
    assert db.execute("SELECT made FROM thumbnails").fetchone() == (0,)
    assert apply_once(db, "k", _make_thumbnail), "the retry applies it"
    assert db.execute("SELECT made FROM thumbnails").fetchone() == (1,)


def test_keys_are_forgotten_after_their_redelivery_window(tmp_path: Path) -> None:
    db = _app_db(tmp_path / "app.db")
    assert apply_once(db, "old", _make_thumbnail)
    assert forget_applied(db, older_than_s=3600) == 0
    assert forget_applied(db, older_than_s=-1) == 1
    assert apply_once(db, "old", _make_thumbnail)


def test_misuse_is_refused(tmp_path: Path) -> None:
    db = _app_db(tmp_path / "app.db")
    with pytest.raises(ValueError, match="idempotency_key"):
        apply_once(db, "", _make_thumbnail)
    db.execute("BEGIN")
    with pytest.raises(ValueError, match="outside a transaction"):
        apply_once(db, "k", _make_thumbnail)
    db.execute("ROLLBACK")
