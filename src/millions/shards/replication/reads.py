"""Reads from this data center's replicas, with read-your-writes for the writing user.

A user's writes leave a `WriteToken` (the app keeps it per user, e.g. in the session, as
`to_text()`): for each shard written, the primary's change-log position the write reached
and the primary it reached (its origin). A read may use the local replica only when the
replica has applied at least that position of that primary; otherwise it goes to the
primary. The choice is `choose_source`, a pure function.

Writes go through the ordinary `ShardRouter` (built on a `ReplicatedCluster`); the token
comes from the primary's `last_written_seq` right after the write returned, which is at
least the write's own position (it only grows), so a token is never too low — at worst a
little high, which only sends a read to the primary.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from millions.shards import statements
from millions.shards.errors import ShardError
from millions.shards.keyspace import ShardKey
from millions.shards.replication.cluster import ReplicatedCluster
from millions.shards.replication.placement import ShardPlacement
from millions.shards.router import ShardRouter
from millions.shards.rows import Row
from millions.shards.schema import HASH_COLUMN
from millions.shards.storage.writes import pk_values

log = logging.getLogger("millions.shards.replication")

ReadSource = Literal["replica", "primary", "check_fresh"]


@dataclass
class WriteToken:
    """What one user's writes reached: per shard (origin, position); `map_version` is the
    shard map version at the first write recorded (a later map may have moved a key this
    user wrote to a shard the token does not name)."""

    map_version: int = 0
    positions: dict[str, tuple[str, int]] = field(default_factory=dict)

    def note(self, shard: str, origin: str, seq: int, map_version: int) -> None:
        current = self.positions.get(shard)
        if current is None or current[0] != origin or current[1] < seq:
            self.positions[shard] = (origin, seq)
        if self.map_version == 0:
            self.map_version = map_version

    def to_text(self) -> str:
        return json.dumps(
            {"v": self.map_version, "p": {k: list(v) for k, v in self.positions.items()}},
            separators=(",", ":"),
            sort_keys=True,
        )

    @classmethod
    def from_text(cls, text: str) -> WriteToken:
        """A token from `to_text`. A damaged one raises ValueError rather than turning
        into an empty token, which would silently drop the user's read-your-writes."""
        try:
            data = json.loads(text)
            positions = {str(k): (str(v[0]), int(v[1])) for k, v in data["p"].items()}
            return cls(int(data["v"]), positions)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError, OverflowError) as exc:
            raise ValueError(f"not a write token: {exc}") from None


def choose_source(
    placed: ShardPlacement | None,
    dc: str,
    token: WriteToken | None,
    map_version: int,
    replica_position: int | None,
) -> ReadSource:
    """Where a read of shard `placed.shard` in data center `dc` may be served.

    `check_fresh`: the replica may serve only if it has applied everything its primary has
    now (the token predates a failover or a map change, so its positions do not apply).
    """
    if placed is None or placed.primary_dc == dc:
        return "primary"
    if placed.copy_in(dc).state != "replica":
        return "primary"
    if replica_position is None or replica_position < 0:
        return "primary"
    if token is None or (not token.positions and token.map_version == 0):
        return "replica"
    written = token.positions.get(placed.shard)
    if written is not None:
        if written[0] != placed.origin:
            return "check_fresh"
        return "replica" if replica_position >= written[1] else "primary"
    return "replica" if token.map_version == map_version else "check_fresh"


def _public(row: Row) -> Row:
    return {column: value for column, value in row.items() if column != HASH_COLUMN}


class ReplicaReader:
    """Replica reads with read-your-writes on top of a router whose cluster is a
    `ReplicatedCluster`; `local_reads`/`primary_reads` count where reads went
    (`replica_failures`: replica reads that failed and went to the primary instead). The
    placement is reloaded at most every `placement_refresh_s` (a copy that has become a
    replica serves from then on; the router reloads it at once on a failover)."""

    def __init__(self, router: ShardRouter, dc: str, *, placement_refresh_s: float = 1.0) -> None:
        if not isinstance(router.cluster, ReplicatedCluster):
            raise ShardError("replica reads need a router on a ReplicatedCluster")
        if dc not in router.cluster.dcs:
            raise ShardError(f"no data center named {dc!r} (have {list(router.cluster.dcs)})")
        self.router = router
        self.cluster: ReplicatedCluster = router.cluster
        self.dc = dc
        self.placement_refresh_s = placement_refresh_s
        self.local_reads = 0
        self.primary_reads = 0
        self.replica_failures = 0
        self._placement_read_at = float("-inf")

    # -- writes (through the router) that keep the token -------------------------------------

    async def note_write(self, token: WriteToken, key: ShardKey) -> None:
        """Record in `token` the position the last write of `key` (just returned) reached."""
        shard = self.router.shard_for(key)
        placed = await self.cluster.shard_placement(shard)
        if placed is None:
            return
        storage = await self.cluster.storage(shard)
        token.note(shard, placed.origin, storage.last_written_seq, self.router.shard_map.version)

    async def insert(self, token: WriteToken, table: str, row: Mapping[str, Any]) -> Row:
        stored = await self.router.insert(table, row)
        await self.note_write(token, row[self.router.schema.table(table).shard_key])
        return stored

    async def upsert(self, token: WriteToken, table: str, row: Mapping[str, Any]) -> Row:
        stored = await self.router.upsert(table, row)
        await self.note_write(token, row[self.router.schema.table(table).shard_key])
        return stored

    async def update(
        self, token: WriteToken, table: str, pk: Mapping[str, Any], values: Mapping[str, Any]
    ) -> Row | None:
        stored = await self.router.update(table, pk, values)
        await self.note_write(token, pk[self.router.schema.table(table).shard_key])
        return stored

    async def delete(self, token: WriteToken, table: str, pk: Mapping[str, Any]) -> bool:
        deleted = await self.router.delete(table, pk)
        await self.note_write(token, pk[self.router.schema.table(table).shard_key])
        return deleted

    # -- reads -------------------------------------------------------------------------------

    async def get(
        self, table: str, pk: Mapping[str, Any], *, token: WriteToken | None = None
    ) -> Row | None:
        """The row of `table` with primary key `pk`, from the local replica when allowed."""
        spec = self.router.schema.table(table)
        params = pk_values(spec, pk)
        rows = await self.fetch(
            pk[spec.shard_key], statements.select_by_pk(spec), params, token=token
        )
        return _public(rows[0]) if rows else None

    async def fetch(
        self,
        key: ShardKey,
        sql: str,
        params: Sequence[Any] = (),
        *,
        token: WriteToken | None = None,
    ) -> list[Row]:
        """`ShardRouter.fetch` (SQL touching only rows of `key`), served by the local
        replica when `choose_source` allows, else by the primary."""
        now = time.monotonic()
        if now - self._placement_read_at >= self.placement_refresh_s:
            self._placement_read_at = now
            await self.cluster.refresh_placement()
        shard = self.router.shard_for(key)
        placed = await self.cluster.shard_placement(shard)
        if placed is not None and placed.primary_dc != self.dc:
            try:
                if await self._replica_may_serve(placed, token):
                    replica = await self.cluster.copy_storage(shard, self.dc)
                    rows = await replica.fetch(sql, params, fenced=False)
                    self.local_reads += 1
                    return rows
            except ShardError as exc:
                # An unreachable replica is no reason to fail a read the primary serves.
                self.replica_failures += 1
                log.warning(
                    "replica read of %s in %s failed, reading the primary: %s", shard, self.dc, exc
                )
        self.primary_reads += 1
        return await self.router.fetch(key, sql, params)

    async def _replica_may_serve(self, placed: ShardPlacement, token: WriteToken | None) -> bool:
        replica = await self.cluster.copy_storage(placed.shard, self.dc)
        position = await replica.replica_position(placed.origin)
        source = choose_source(placed, self.dc, token, self.router.shard_map.version, position)
        if source == "check_fresh":
            primary = await self.cluster.copy_storage(placed.shard, placed.primary_dc)
            return position is not None and position >= await primary.last_seq()
        return source == "replica"
