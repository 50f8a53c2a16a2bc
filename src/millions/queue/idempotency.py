"""Effects that happen once, although a message may be delivered more than once.

The queue delivers at least once: a consumer can die after its handler's effect but
before its ack, and the message is handled again. The cure is to make the effect and
the record "this message's effect is applied" one atomic write, in the same database
as the effect:

    def handle(delivery: Delivery) -> None:
        with sqlite3.connect(app_db, isolation_level=None) as db:
            apply_once(db, delivery.idempotency_key, lambda db: db.execute(
                "UPDATE photos SET thumbnail = ? WHERE id = ?", (thumb, photo_id)))

`apply_once` inserts the key into `millions_applied_effects` and runs the effect inside
one transaction; a key that is already there means the effect was applied by an earlier
delivery, and nothing runs. The same pattern on PostgreSQL is an
`INSERT ... ON CONFLICT DO NOTHING` of the key in the effect's transaction, going ahead
only when a row was inserted. Effects outside any database (an e-mail, a call to
another service) cannot be made atomic this way; pass the key on (as an idempotency
key header) so the other side can de-duplicate.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

from millions.queue.messages import check_idempotency_key

TABLE = "millions_applied_effects"
_CREATE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    " key TEXT PRIMARY KEY NOT NULL, applied_at REAL NOT NULL) WITHOUT ROWID"
)


def apply_once(
    db: sqlite3.Connection, key: str, effect: Callable[[sqlite3.Connection], object]
) -> bool:
    """Run `effect(db)` and record `key` in one transaction, unless `key` is recorded.

    Returns True when the effect ran now, False when an earlier delivery applied it. If
    `effect` raises, nothing is recorded and the exception propagates (the message is
    retried). `db` must not be inside a transaction already.
    """
    check_idempotency_key(key)
    if db.in_transaction:
        raise ValueError("apply_once needs a connection outside a transaction")
    db.execute(_CREATE)
    db.execute("BEGIN IMMEDIATE")
    try:
        inserted = db.execute(
            f"INSERT OR IGNORE INTO {TABLE} (key, applied_at) VALUES (?, ?)", (key, time.time())
        ).rowcount
        if inserted:
            effect(db)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    if inserted:
        db.execute("COMMIT")
        return True
    db.execute("ROLLBACK")
    return False


def forget_applied(db: sqlite3.Connection, older_than_s: float) -> int:
    """Drop keys recorded more than `older_than_s` ago (longer than any message can
    still be redelivered: its retries plus its time in the dead-letter queue)."""
    db.execute(_CREATE)
    cursor = db.execute(f"DELETE FROM {TABLE} WHERE applied_at < ?", (time.time() - older_than_s,))
    return cursor.rowcount
