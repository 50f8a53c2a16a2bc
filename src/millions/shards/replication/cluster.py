"""A `ShardCluster` that follows the cross-DC placement: a shard's storage is its primary
copy, wherever the placement says that is now.

The router takes any cluster, so a router built on a `ReplicatedCluster` sends writes to
the current primaries. A promotion fences the old primary and publishes a newer map; a
router still writing there is refused (`StaleMapError`), reloads the map — which here also
reloads the placement — and retries on the new primary.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

from millions.shards.cluster import ShardCluster, open_storage
from millions.shards.config import ShardsConfig
from millions.shards.errors import MapConflictError, ShardError
from millions.shards.metadata.base import MetadataStore
from millions.shards.replication.placement import Placement, ShardPlacement, plan_placement
from millions.shards.schema import ShardSchema
from millions.shards.shard_map import ShardMap
from millions.shards.storage.base import ShardLocation, ShardStorage

PUBLISH_ATTEMPTS = 5


class ReplicatedCluster(ShardCluster):
    """The metadata store, the placement and a storage handle per shard copy."""

    def __init__(
        self,
        config: ShardsConfig,
        run_dir: Path,
        schema: ShardSchema | None = None,
        *,
        dcs: Sequence[str],
        metadata: MetadataStore | None = None,
    ) -> None:
        super().__init__(config, run_dir, schema, metadata=metadata)
        self.dcs = tuple(dcs)
        self._placement: Placement | None = None
        self._placement_loaded = False
        self._copies: dict[str, ShardStorage] = {}
        self._copies_lock = asyncio.Lock()
        # shard -> (the placement it was looked up in, its primary), for `ready_storage`
        self._primaries: dict[str, tuple[Placement | None, ShardStorage]] = {}

    # -- the placement ---------------------------------------------------------------------

    @property
    def placement(self) -> Placement | None:
        """The placement as last loaded (None: none published yet)."""
        return self._placement

    async def refresh_placement(self) -> Placement | None:
        found = await self.metadata.current_placement()
        loaded = None if found is None else Placement.from_record(*found)
        if loaded is not None and loaded.dcs != self.dcs:
            raise ShardError(
                f"the placement is for data centers {list(loaded.dcs)}, this process was "
                f"configured with {list(self.dcs)}"
            )
        if self._placement is None or loaded is None or loaded.version >= self._placement.version:
            self._placement = loaded
        self._placement_loaded = True
        return self._placement

    async def ensure_placement(self) -> Placement:
        """Place every registered shard that has no placement yet (publishing a new
        version); returns the current placement."""
        for _ in range(PUBLISH_ATTEMPTS):
            existing = await self.refresh_placement()
            planned = plan_placement(existing, await self.metadata.locations(), self.dcs)
            if planned is None:
                if existing is None:
                    raise ShardError("no shard is registered yet: migrate the shards first")
                return existing
            try:
                await self.metadata.publish_placement(
                    planned.version, planned.to_dict(), "placed new shards"
                )
            except MapConflictError:
                continue
            self._placement = planned
            return planned
        raise MapConflictError("the placement kept changing while new shards were placed")

    async def publish_placement(self, placement: Placement, reason: str) -> None:
        """Publish `placement` (its version must follow the current one)."""
        await self.metadata.publish_placement(placement.version, placement.to_dict(), reason)
        self._placement = placement

    async def shard_placement(self, shard: str) -> ShardPlacement | None:
        if not self._placement_loaded:
            await self.refresh_placement()
        return None if self._placement is None else self._placement.of(shard)

    # -- storage ---------------------------------------------------------------------------

    def ready_storage(self, name: str) -> ShardStorage | None:
        found = self._primaries.get(name)
        if found is None or found[0] is not self._placement:
            return None
        return found[1]

    async def storage(self, name: str) -> ShardStorage:
        """Shard `name`'s primary copy (the registered one while it has no placement)."""
        placed = await self.shard_placement(name)
        placement = self._placement
        if placed is None:
            storage = await super().storage(name)
        else:
            storage = await self.open_copy(placed.primary.location)
        if placement is self._placement:  # remembered for this placement only
            self._primaries[name] = (placement, storage)
        return storage

    async def copy_storage(self, shard: str, dc: str) -> ShardStorage:
        """The copy of `shard` in data center `dc`."""
        placed = await self.shard_placement(shard)
        if placed is None:
            raise ShardError(f"shard {shard} has no cross-DC placement yet")
        return await self.open_copy(placed.copy_in(dc).location)

    async def open_copy(self, location: ShardLocation) -> ShardStorage:
        key = json.dumps(location.to_dict(), sort_keys=True)
        existing = self._copies.get(key)
        if existing is not None:
            return existing
        async with self._copies_lock:
            if key not in self._copies:
                self._copies[key] = open_storage(location)
            return self._copies[key]

    async def current_map(self) -> ShardMap:
        """The shard map, reloading the placement too: a router reloads the map when a
        shard refuses it, which is also what a promotion or switchover causes. The map is
        read first: a placement change is published before the map version that releases
        the routers, so a router holding that map also holds that placement."""
        shard_map = await super().current_map()
        await self.refresh_placement()
        return shard_map

    async def close(self) -> None:
        copies, self._copies = list(self._copies.values()), {}
        for storage in copies:
            await storage.close()
        await super().close()
