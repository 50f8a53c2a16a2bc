"""A data center's replicator: keeps its copy of every shard whose primary is elsewhere in
step with that primary, by applying the primary's change log (PostgreSQL logical
replication, in small).

Each apply is one transaction on the replica holding the rows and the new position (the
primary's change-log sequence applied up to), and is refused unless the stored position is
still the one the applier read — so a replicator killed at any point resumes exactly where
its last commit left it (no change applied twice, none skipped), and two appliers of one
copy cannot interleave. An empty replica (or one returning after a failure, whose rows may
hold writes the primary never saw) is first claimed, emptied and filled by a snapshot copy
from the primary, then caught up from the change-log position noted before the copy — the
way resharding fills a new shard.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from prometheus_client import CollectorRegistry

from millions.shards.config import ShardsConfig
from millions.shards.errors import MapConflictError, ShardError
from millions.shards.keyspace import KeyRange
from millions.shards.replication.cluster import ReplicatedCluster
from millions.shards.replication.placement import (
    CopyState,
    Placement,
    ShardPlacement,
    lag_of,
    replicated_into,
)
from millions.shards.schema import ShardSchema
from millions.shards.storage.base import (
    PromotedCopyError,
    ReplicaStep,
    ReplicationConflictError,
    ShardStorage,
)
from millions.shards.storage.writes import copy_write, pk_after, replay_write

log = logging.getLogger("millions.shards.replication")

IDLE_POLL_S = 0.05
PAGES_PER_PASS = 20
PLACE_EVERY_S = 1.0

CLAIM_STALE_S = 5.0

SyncAction = Literal["resync", "catch_up", "wait"]


def sync_action(
    progress: tuple[int, float] | None, now: float, claim_stale_s: float = CLAIM_STALE_S
) -> SyncAction:
    """What a replica needs, from its (position, last moved) for the primary's origin: a
    position of 0 or more is where catch-up resumes; none means copy. A negative position
    is another copier's claim: leave it while that copy makes progress (`wait`), take it
    over and copy again once it has been still for `claim_stale_s` (its copier died)."""
    if progress is None:
        return "resync"
    position, moved_at = progress
    if position >= 0:
        return "catch_up"
    return "resync" if now - moved_at >= claim_stale_s else "wait"


def new_claim() -> int:
    """A copier's claim on a replica's position: negative, so never mistaken for one."""
    return -1 - secrets.randbits(62)


@dataclass(frozen=True)
class ShardLag:
    """How far `dc`'s copy of `shard` is behind its primary (`error`: the last pass failed;
    the numbers are then the last ones known)."""

    shard: str
    dc: str
    origin: str
    state: CopyState
    applied: int | None
    primary_seq: int
    changes_behind: int
    seconds_behind: float
    at: float
    error: str = ""


async def count_changes_after(storage: ShardStorage, seq: int, *, page: int = 10_000) -> int:
    """How many change-log entries `storage` has after `seq` (read page by page)."""
    total = 0
    while True:
        changes = await storage.changes_since(seq, limit=page)
        total += len(changes)
        if len(changes) < page:
            return total
        seq = changes[-1].seq


async def catch_up(
    schema: ShardSchema,
    primary: ShardStorage,
    replica: ShardStorage,
    origin: str,
    position: int,
    *,
    batch_rows: int,
    max_pages: int | None = None,
) -> int:
    """Apply `primary`'s changes after `position` to `replica` until a page comes back short
    (or `max_pages` were applied); returns the new position. Another applier moving the
    position first is not an error: the position is re-read and the work goes on."""
    pages = 0
    while max_pages is None or pages < max_pages:
        changes = await primary.changes_since(position, limit=batch_rows)
        if changes:
            step = ReplicaStep(origin, position, changes[-1].seq)
            try:
                await replica.write([replay_write(schema, c) for c in changes], replica=step)
                position = step.position
            except ReplicationConflictError:
                found = await replica.replica_position(origin)
                if found is None or found < 0:
                    raise
                position = found
                continue
            pages += 1
        if len(changes) < batch_rows:
            break
    return position


async def resync(
    schema: ShardSchema,
    primary: ShardStorage,
    replica: ShardStorage,
    origin: str,
    *,
    batch_rows: int,
    claim: int | None = None,
) -> int:
    """Claim `replica` (with `claim`, default a new one) and empty it in one transaction,
    copy `primary`'s rows into it under the claim and record the change-log position noted
    before the copy; returns that position (catch up from there). Emptying discards
    whatever the copy held, e.g. writes a failed primary never replicated. A copier whose
    claim was taken over by another is refused at its next batch
    (ReplicationConflictError), so two never interleave."""
    claim = claim if claim is not None else new_claim()
    found = await replica.replica_position(origin)
    await replica.write([], replica=ReplicaStep(origin, found, claim, clear=schema.tables))
    held = ReplicaStep(origin, claim, claim)
    everything = KeyRange.full()
    start = await primary.last_seq()
    for table in schema.tables:
        after = None
        while True:
            rows = await primary.scan(table, everything, after, batch_rows)
            if not rows:
                break
            await replica.write([copy_write(table, row) for row in rows], replica=held)
            after = pk_after(table, rows)
    await replica.write([], replica=ReplicaStep(origin, claim, start))
    return start


async def measure_lag(
    primary: ShardStorage, replica: ShardStorage, placed: ShardPlacement, dc: str
) -> ShardLag:
    """The lag of `dc`'s copy of a shard, read from both copies now."""
    applied = await replica.replica_position(placed.origin)
    primary_seq = await primary.last_seq()
    start = applied if applied is not None and applied >= 0 else 0
    oldest = None
    if primary_seq > start:
        pending = await primary.changes_since(start, limit=1)
        oldest = pending[0].at if pending else None
    now = time.time()
    behind, seconds = lag_of(primary_seq, applied, oldest, now)
    return ShardLag(
        placed.shard,
        dc,
        placed.origin,
        placed.copy_in(dc).state,
        applied,
        primary_seq,
        behind,
        seconds,
        now,
    )


async def replication_lag(cluster: ReplicatedCluster, dc: str) -> list[ShardLag]:
    """The lag of every copy in `dc` that follows a primary elsewhere (one-off reads; the
    replicator keeps the same numbers from its passes in `Replicator.lags`)."""
    placement = await cluster.refresh_placement()
    if placement is None:
        return []
    lags = []
    for placed in replicated_into(placement, dc):
        primary = await cluster.copy_storage(placed.shard, placed.primary_dc)
        replica = await cluster.copy_storage(placed.shard, dc)
        lags.append(await measure_lag(primary, replica, placed, dc))
    return lags


class Replicator:
    """Applies, in data center `dc`, the change logs of every shard whose primary is in
    another data center; see the module docstring. `lags` holds each shard's latest lag."""

    def __init__(
        self,
        cluster: ReplicatedCluster,
        dc: str,
        *,
        batch_rows: int | None = None,
        pages_per_pass: int = PAGES_PER_PASS,
        claim_stale_s: float = CLAIM_STALE_S,
    ) -> None:
        if dc not in cluster.dcs:
            raise ShardError(f"no data center named {dc!r} (have {list(cluster.dcs)})")
        self.cluster = cluster
        self.dc = dc
        self.batch_rows = batch_rows if batch_rows is not None else cluster.config.batch_rows
        self.pages_per_pass = pages_per_pass
        self.claim_stale_s = claim_stale_s
        self._claims: dict[str, int] = {}
        self.lags: dict[str, ShardLag] = {}
        self.passes = 0
        self._migrated: set[str] = set()
        self._placed_at = 0.0

    async def run(self, stop: asyncio.Event, *, idle_poll_s: float = IDLE_POLL_S) -> None:
        """Replicate until `stop` is set, polling the primaries when there is nothing new."""
        while not stop.is_set():
            try:
                busy = await self.run_once()
            except ShardError as exc:
                # The metadata store is unreachable: keep the last lags, try again later.
                log.warning("replication pass in %s failed: %s", self.dc, exc)
                busy = False
            if not busy:
                try:
                    await asyncio.wait_for(stop.wait(), idle_poll_s)
                except TimeoutError:
                    pass

    async def run_once(self) -> bool:
        """One pass over the shards; True when some shard still has changes to apply."""
        placement = await self._placement()
        busy = False
        for placed in [] if placement is None else replicated_into(placement, self.dc):
            try:
                lag = await self.sync_shard(placed)
            except (PromotedCopyError, ReplicationConflictError) as exc:
                # The placement moved on (a promotion or switchover) or another applier
                # took the copy over; the next pass starts from the new state.
                log.info("replication of %s paused: %s", placed.shard, exc)
                await self.cluster.refresh_placement()
                continue
            except ShardError as exc:
                # Migrate the replica again before the next try: a failed apply may be a
                # change of a column an app migration (run on the primaries) just added.
                self._migrated.discard(placed.shard)
                self._record_error(placed, str(exc))
                log.warning("replication of %s into %s failed: %s", placed.shard, self.dc, exc)
                continue
            self.lags[placed.shard] = lag
            busy = busy or lag.changes_behind > 0
            syncing = placed.copy_in(self.dc).state == "syncing"
            copied = lag.applied is not None and lag.applied >= 0
            if syncing and copied and lag.changes_behind <= self.batch_rows:
                await self._mark_caught_up(placed)
        self.passes += 1
        return busy

    async def sync_shard(self, placed: ShardPlacement) -> ShardLag:
        """Bring `dc`'s copy of one shard closer to its primary (resync first if empty)."""
        schema = self.cluster.schema
        primary = await self.cluster.copy_storage(placed.shard, placed.primary_dc)
        replica = await self.cluster.copy_storage(placed.shard, self.dc)
        if placed.shard not in self._migrated:
            await replica.migrate(schema)
            self._migrated.add(placed.shard)
        progress = await replica.replica_progress(placed.origin)
        action = sync_action(progress, time.time(), self.claim_stale_s)
        own_claim = self._claims.get(placed.shard)
        if action == "wait" and progress is not None and progress[0] != own_claim:
            return await measure_lag(primary, replica, placed, self.dc)
        if action != "catch_up" or progress is None:
            # A copy of this replicator's own that failed part-way is redone at once.
            log.info("copying %s from %s into %s", placed.shard, placed.primary_dc, self.dc)
            claim = self._claims[placed.shard] = new_claim()
            position = await resync(
                schema, primary, replica, placed.origin, batch_rows=self.batch_rows, claim=claim
            )
        else:
            position = progress[0]
        await catch_up(
            schema,
            primary,
            replica,
            placed.origin,
            position,
            batch_rows=self.batch_rows,
            max_pages=self.pages_per_pass,
        )
        return await measure_lag(primary, replica, placed, self.dc)

    async def _placement(self) -> Placement | None:
        now = time.monotonic()
        if now - self._placed_at >= PLACE_EVERY_S:
            self._placed_at = now
            try:
                return await self.cluster.ensure_placement()
            except ShardError as exc:
                log.warning("could not place new shards: %s", exc)
        return await self.cluster.refresh_placement()

    async def _mark_caught_up(self, placed: ShardPlacement) -> None:
        """A `syncing` copy that has applied its primary's log becomes a `replica`."""
        for _ in range(3):
            placement = await self.cluster.refresh_placement()
            current = None if placement is None else placement.of(placed.shard)
            if (
                placement is None
                or current is None
                or current.origin != placed.origin
                or current.copy_in(self.dc).state != "syncing"
            ):
                return
            updated = placement.next({placed.shard: current.with_state(self.dc, "replica")})
            try:
                await self.cluster.publish_placement(
                    updated, f"{placed.shard}: the copy in {self.dc} caught up"
                )
                return
            except MapConflictError:
                continue

    def _record_error(self, placed: ShardPlacement, error: str) -> None:
        previous = self.lags.get(placed.shard)
        now = time.time()
        if previous is None:
            self.lags[placed.shard] = ShardLag(
                placed.shard,
                self.dc,
                placed.origin,
                placed.copy_in(self.dc).state,
                None,
                0,
                0,
                0.0,
                now,
                error,
            )
            return
        # Unknown is not zero: seconds behind keeps growing from the last known number.
        seconds = previous.seconds_behind + (now - previous.at) if previous.changes_behind else 0.0
        self.lags[placed.shard] = ShardLag(
            previous.shard,
            previous.dc,
            previous.origin,
            previous.state,
            previous.applied,
            previous.primary_seq,
            previous.changes_behind,
            seconds,
            now,
            error,
        )


async def run_replicator(
    config: ShardsConfig,
    run_dir: Path,
    dc: str,
    stop: asyncio.Event,
    *,
    dcs: Sequence[str],
    schema: ShardSchema | None = None,
    registry: CollectorRegistry | None = None,
    on_ready: asyncio.Event | None = None,
) -> None:
    """Run data center `dc`'s replicator until `stop` is set (the per-DC process's main).
    The shards must be migrated; unplaced shards are placed. With `registry` the
    `millions_replication_*` metrics are registered there while it runs; `on_ready` is set
    once the placement is loaded."""
    from millions.shards.replication.metrics import ReplicationCollector

    cluster = ReplicatedCluster(config, run_dir, schema, dcs=dcs)
    collector: ReplicationCollector | None = None
    try:
        await cluster.ensure_placement()
        replicator = Replicator(cluster, dc)
        if registry is not None:
            collector = ReplicationCollector(replicator)
            registry.register(collector)
        if on_ready is not None:
            on_ready.set()
        await replicator.run(stop)
    finally:
        if registry is not None and collector is not None:
            registry.unregister(collector)
        await cluster.close()
