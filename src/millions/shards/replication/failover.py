"""Promotion when a data center fails, its return, and a switchover back that loses nothing.

- `promote(cluster, failed_dc)`: every shard whose primary is in `failed_dc` gets its
  replica in a surviving DC as primary. The old primary is fenced first (it owns no range
  from then on, so a router with an old map or placement is refused there and never writes
  to it), then the replica is given the shard's ranges (which also stops its replicator
  applying anything more), and the writes lost are counted: the old primary's change-log
  entries after the replica's applied position. When the old primary cannot be read the
  count is unknown (None), never 0. A newer placement and map are published; routers
  refused by the old primary reload both and write to the new one.
- `rejoin(cluster, dc)`: `dc`'s copies (fenced again, in case the promotion could not reach
  them) turn `syncing`; `dc`'s replicator empties each (discarding its unreplicated tail,
  already counted as lost), copies it from the current primary and catches up, and only
  then marks it `replica`.
- `switchover(cluster, shard, to_dc)`: a controlled move of the primary to a caught-up
  replica: catch up while writes go on, fence the primary (writes pause), apply the last
  changes, give the replica the ranges, publish. The pause is bounded (`max_pause_s`); when
  the last catch-up takes too long the primary gets its ranges back and the switch is
  retried. `hand_back(cluster, dc)` switches every shard whose registered copy is in `dc`
  back there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from millions.shards.errors import MapConflictError, OperationError, ShardError
from millions.shards.keyspace import KeyRange
from millions.shards.replication.cluster import ReplicatedCluster
from millions.shards.replication.placement import (
    LostWrites,
    Placement,
    ShardPlacement,
    plan_promotions,
    rejoined,
)
from millions.shards.replication.replicator import catch_up, count_changes_after
from millions.shards.storage.base import ReplicaStep, ShardLocation, ShardStorage

PUBLISH_ATTEMPTS = 5
SWITCH_ATTEMPTS = 3
PAUSE_SHARE_FOR_CATCH_UP = 0.75
POLL_S = 0.05


@dataclass(frozen=True)
class PromotionReport:
    """What a promotion did: the writes it counted lost per shard, the shards it could not
    promote (no caught-up replica) and the old primaries it could not fence."""

    failed_dc: str
    placement_version: int
    map_version: int
    losses: tuple[LostWrites, ...]
    stranded: tuple[str, ...]
    unfenced: tuple[str, ...]

    @property
    def lost_writes(self) -> int:
        """Writes counted lost (shards whose loss is unknown are in `unknown_losses`)."""
        return sum(loss.count for loss in self.losses if loss.count is not None)

    @property
    def unknown_losses(self) -> tuple[str, ...]:
        return tuple(loss.shard for loss in self.losses if loss.count is None)

    def describe(self) -> list[str]:
        lines = [
            f"failover of {self.failed_dc}: placement v{self.placement_version}, "
            f"map v{self.map_version}"
        ]
        for loss in self.losses:
            lost = "unknown (old primary unreadable)" if loss.count is None else str(loss.count)
            lines.append(f"  {loss.shard}: primary now in {loss.promoted_dc}, writes lost: {lost}")
        for shard in self.stranded:
            lines.append(f"  {shard}: NOT promoted, no caught-up replica outside {self.failed_dc}")
        for shard in self.unfenced:
            lines.append(f"  {shard}: old primary could not be fenced; rejoin fences it")
        return lines


@dataclass(frozen=True)
class RejoinReport:
    dc: str
    placement_version: int
    copies: tuple[str, ...]
    caught_up: tuple[str, ...]


@dataclass(frozen=True)
class SwitchoverReport:
    shard: str
    from_dc: str
    to_dc: str
    pause_s: float
    attempts: int
    placement_version: int
    map_version: int


async def promote(cluster: ReplicatedCluster, failed_dc: str) -> PromotionReport:
    """Promote replicas in the surviving DCs for every primary in `failed_dc`; see the
    module docstring. Running it again after an interruption finishes the same work (and
    counts the same losses: both copies are fenced, so neither position moves), which is
    also how a placement published concurrently by a replicator is handled."""
    for _ in range(PUBLISH_ATTEMPTS):
        try:
            return await _promote_once(cluster, failed_dc)
        except MapConflictError:
            continue
    raise MapConflictError("the placement kept changing during the promotion")


async def _promote_once(cluster: ReplicatedCluster, failed_dc: str) -> PromotionReport:
    placement = await _placement(cluster)
    promotions, stranded = plan_promotions(placement, failed_dc)
    shard_map = await cluster.current_map()
    fence_version = shard_map.version + 1
    new_version = placement.version + 1
    changed: dict[str, ShardPlacement] = {}
    losses: list[LostWrites] = []
    unfenced: list[str] = []
    for promotion in promotions:
        placed = placement.shards[promotion.shard]
        old = await _open_if_present(cluster, placed.primary.location)
        ranges: Sequence[KeyRange] = shard_map.ranges_of(promotion.shard)
        fenced = False
        if old is not None:
            try:
                ranges = (await old.fence()).ranges or ranges
                await old.set_fence([], fence_version)
                fenced = True
            except ShardError:
                old = None
        if not fenced:
            unfenced.append(promotion.shard)
        new = await cluster.copy_storage(promotion.shard, promotion.to_dc)
        await new.set_fence(ranges, fence_version)
        applied = await new.replica_position(placed.origin)
        count: int | None = None
        if old is not None and fenced and applied is not None and applied >= 0:
            try:
                count = await count_changes_after(old, applied)
            except ShardError:
                count = None
        losses.append(
            LostWrites(promotion.shard, failed_dc, promotion.to_dc, count, new_version, time.time())
        )
        changed[promotion.shard] = placed.with_primary(promotion.to_dc, new_version, "failed")
    for name, placed in placement.shards.items():
        if name not in changed and placed.primary_dc != failed_dc:
            if placed.copy_in(failed_dc).state != "failed":
                changed[name] = placed.with_state(failed_dc, "failed")
    updated = placement.next(changed, losses)
    lost = sum(loss.count or 0 for loss in losses)
    await cluster.publish_placement(
        updated, f"failover of {failed_dc}: {len(promotions)} promoted, {lost} writes lost"
    )
    map_version = await bump_map(cluster, f"failover of {failed_dc}")
    return PromotionReport(
        failed_dc,
        updated.version,
        map_version,
        tuple(losses),
        tuple(stranded),
        tuple(unfenced),
    )


async def rejoin(
    cluster: ReplicatedCluster, dc: str, *, wait_s: float | None = None
) -> RejoinReport:
    """Turn `dc`'s failed copies into syncing replicas of the current primaries; with
    `wait_s`, wait that long for `dc`'s replicator to have caught every one up."""
    copies: tuple[str, ...] = ()
    version = 0
    for _ in range(PUBLISH_ATTEMPTS):
        placement = await _placement(cluster)
        if dc not in placement.dcs:
            raise OperationError(f"no data center named {dc!r} (have {list(placement.dcs)})")
        shard_map = await cluster.current_map()
        copies = tuple(
            name for name, p in sorted(placement.shards.items()) if p.copy_in(dc).state == "failed"
        )
        for name in copies:
            storage = await cluster.copy_storage(name, dc)
            await storage.migrate(cluster.schema)
            await storage.set_fence([], shard_map.version)
        updated = rejoined(placement, dc)
        if updated is None:
            version = placement.version
            break
        try:
            await cluster.publish_placement(updated, f"{dc} rejoins: {len(copies)} copies resync")
        except MapConflictError:
            continue
        version = updated.version
        break
    else:
        raise MapConflictError("the placement kept changing while the data center rejoined")
    caught_up: tuple[str, ...] = ()
    if wait_s is not None:
        deadline = time.monotonic() + wait_s
        while True:
            placement = await _placement(cluster)
            caught_up = tuple(
                n for n in copies if placement.shards[n].copy_in(dc).state == "replica"
            )
            if len(caught_up) == len(copies) or time.monotonic() >= deadline:
                break
            await asyncio.sleep(POLL_S)
    return RejoinReport(dc, version, copies, caught_up)


async def switchover(
    cluster: ReplicatedCluster,
    shard: str,
    to_dc: str,
    *,
    max_pause_s: float | None = None,
    batch_rows: int | None = None,
    catch_up_timeout_s: float = 60.0,
) -> SwitchoverReport:
    """Move `shard`'s primary to its caught-up replica in `to_dc` without losing a write;
    writes to the shard pause for at most about `max_pause_s` (default: the config's
    cutover budget)."""
    budget = max_pause_s if max_pause_s is not None else cluster.config.max_pause_s
    batch = batch_rows if batch_rows is not None else cluster.config.batch_rows
    placement = await _placement(cluster)
    placed = placement.shards.get(shard)
    if placed is None:
        raise OperationError(f"shard {shard!r} has no cross-DC placement")
    if placed.primary_dc == to_dc:
        raise OperationError(f"the primary of {shard} is already in {to_dc}")
    if placed.copy_in(to_dc).state != "replica":
        raise OperationError(
            f"the copy of {shard} in {to_dc} is {placed.copy_in(to_dc).state}, not a caught-up "
            "replica; rejoin and let it catch up first"
        )
    primary = await cluster.copy_storage(shard, placed.primary_dc)
    target = await cluster.copy_storage(shard, to_dc)
    position = await _caught_up_closely(
        cluster, primary, target, placed.origin, batch, catch_up_timeout_s
    )
    for attempt in range(1, SWITCH_ATTEMPTS + 1):
        try:
            switched = await _switch(
                cluster, placement, placed, primary, target, to_dc, position, budget, batch
            )
        except MapConflictError:
            switched = None  # another placement was published first; undone, try again
        if switched is not None:
            pause, version, map_version = switched
            return SwitchoverReport(
                shard, placed.primary_dc, to_dc, pause, attempt, version, map_version
            )
        position = await _caught_up_closely(
            cluster, primary, target, placed.origin, batch, catch_up_timeout_s
        )
        placement = await _placement(cluster)
        if placement.shards[shard] != placed:
            raise OperationError(f"the placement of {shard} changed during the switchover")
    raise OperationError(
        f"could not switch {shard} to {to_dc} within {budget}s of write pause in "
        f"{SWITCH_ATTEMPTS} attempts; writes may be too heavy, retry later"
    )


async def hand_back(
    cluster: ReplicatedCluster, dc: str, **options: float
) -> list[SwitchoverReport]:
    """Switch every shard whose registered (home) copy is in `dc` back to it, one shard at
    a time (`options`: `max_pause_s`, `catch_up_timeout_s`)."""
    placement = await _placement(cluster)
    registered = await cluster.metadata.locations()
    reports = []
    for name, placed in sorted(placement.shards.items()):
        home = registered.get(name)
        if home is None or placed.primary_dc == dc or placed.copy_in(dc).location != home:
            continue
        reports.append(
            await switchover(
                cluster,
                name,
                dc,
                max_pause_s=options.get("max_pause_s"),
                catch_up_timeout_s=options.get("catch_up_timeout_s", 60.0),
            )
        )
    return reports


async def bump_map(cluster: ReplicatedCluster, reason: str) -> int:
    """Publish the next map version with the same assignment (routers waiting on a fence
    reload the map, and with it the placement); returns the version published."""
    for _ in range(PUBLISH_ATTEMPTS):
        current = await cluster.metadata.current_map()
        if current is None:
            raise ShardError("the shards are not initialized yet")
        try:
            await cluster.metadata.publish(current.bumped(), reason)
        except MapConflictError:
            continue
        return current.version + 1
    raise MapConflictError("the shard map kept changing; could not publish a bumped map")


# -- plumbing --------------------------------------------------------------------------------


async def _placement(cluster: ReplicatedCluster) -> Placement:
    placement = await cluster.refresh_placement()
    if placement is None:
        raise OperationError("there is no cross-DC placement yet; start the replicators first")
    return placement


async def _open_if_present(
    cluster: ReplicatedCluster, location: ShardLocation
) -> ShardStorage | None:
    """The copy at `location`, unless it is a SQLite file that no longer exists (opening
    would create an empty one)."""
    if location.engine == "sqlite" and not await asyncio.to_thread(Path(location.path).exists):
        return None
    return await cluster.open_copy(location)


async def _caught_up_closely(
    cluster: ReplicatedCluster,
    primary: ShardStorage,
    target: ShardStorage,
    origin: str,
    batch: int,
    timeout_s: float,
) -> int:
    """Catch `target` up while writes go on, until it is within one batch of `primary`."""
    deadline = time.monotonic() + timeout_s
    position = await target.replica_position(origin)
    if position is None or position < 0:
        raise OperationError(f"{target.name} in the target DC has not finished its copy")
    while True:
        position = await catch_up(
            cluster.schema, primary, target, origin, position, batch_rows=batch
        )
        if await primary.last_seq() - position <= batch:
            return position
        if time.monotonic() >= deadline:
            raise OperationError(f"{target.name} did not catch up within {timeout_s}s")


async def _switch(
    cluster: ReplicatedCluster,
    placement: Placement,
    placed: ShardPlacement,
    primary: ShardStorage,
    target: ShardStorage,
    to_dc: str,
    position: int,
    budget: float,
    batch: int,
) -> tuple[float, int, int] | None:
    """One attempt: (pause, placement version, map version), or None when the final
    catch-up overran the pause budget and the primary got its ranges back."""
    shard_map = await cluster.current_map()
    fence_version = shard_map.version + 1
    old_fence = await primary.fence()
    started = time.monotonic()
    await primary.set_fence([], fence_version)
    try:
        await catch_up(cluster.schema, primary, target, placed.origin, position, batch_rows=batch)
        if time.monotonic() - started > budget * PAUSE_SHARE_FOR_CATCH_UP:
            await primary.set_fence(old_fence.ranges, fence_version)
            await bump_map(cluster, f"switchover of {placed.shard} rolled back: pause budget")
            return None
        await target.set_fence(old_fence.ranges, fence_version)
        updated = placement.next(
            {placed.shard: placed.with_primary(to_dc, placement.version + 1, "replica")}
        )
        new_origin = updated.shards[placed.shard].origin
        # The old primary holds exactly what the new one holds now: it follows the new
        # primary's change log from its current end, without a copy.
        start = await target.last_seq()
        seen = await primary.replica_position(new_origin)
        await primary.write([], replica=ReplicaStep(new_origin, seen, start))
        await cluster.publish_placement(
            updated, f"switchover of {placed.shard}: {placed.primary_dc} -> {to_dc}"
        )
    except BaseException:
        await target.set_fence([], fence_version)
        await primary.set_fence(old_fence.ranges, fence_version)
        await bump_map(cluster, f"switchover of {placed.shard} rolled back")
        raise
    map_version = await bump_map(cluster, f"switchover of {placed.shard} to {to_dc}")
    return time.monotonic() - started, updated.version, map_version
