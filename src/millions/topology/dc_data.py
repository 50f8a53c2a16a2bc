"""The data side of a data center failing and coming back, for the supervisor.

With replication on, each shard has its primary copy in one DC and replicas in the
others (`millions.shards.replication`). On one machine a "failed" DC's files stay on the
disk, so `cut_off` plays the part of the lost machines: it fences the DC's primary copies
(they refuse every read and write, and routers wait for a newer map instead of writing
there) until a promotion moves the primaries elsewhere — or, when nobody promotes, until
`reconnect` gives them their ranges back. `promote` is `millions dc failover`: replicas in
the surviving DCs become primaries and the writes that never reached them are counted.
`fail_back` is the return: the DC's copies resync as replicas, and only once caught up do
the shards whose home is that DC switch back, with a short write pause and no loss.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from millions.shards.keyspace import KeyRange
from millions.shards.replication import (
    ReplicatedCluster,
    hand_back,
    promote,
    rejoin,
    replication_lag,
)
from millions.topology.config import MillionsConfig

REJOIN_WAIT_S = 120.0


def should_fail_over(down_since: float | None, now: float, after_s: float) -> bool:
    """Whether a DC whose every process has been down since `down_since` is due for an
    automatic promotion (`after_s` = 0: never automatically)."""
    return after_s > 0 and down_since is not None and now - down_since >= after_s


@dataclass
class DataCenterData:
    """Placement, failover and failback of the shards' copies across a topology's DCs."""

    config: MillionsConfig
    run_dir: Path
    cut_fences: dict[str, dict[str, tuple[tuple[KeyRange, ...], int]]] = field(default_factory=dict)

    def _cluster(self) -> ReplicatedCluster:
        return ReplicatedCluster(self.config.shards, self.run_dir, dcs=list(self.config.dcs))

    async def place(self) -> dict[str, str]:
        """Give every shard its copies (first start: primaries spread over the DCs);
        each shard's primary DC."""
        cluster = self._cluster()
        try:
            placement = await cluster.ensure_placement()
            return {name: placed.primary_dc for name, placed in sorted(placement.shards.items())}
        finally:
            await cluster.close()

    async def cut_off(self, dc: str) -> list[str]:
        """Fence `dc`'s primary copies as a lost machine would be (see the module
        docstring); the shards cut off."""
        cluster = self._cluster()
        try:
            placement = await cluster.ensure_placement()
            shard_map = await cluster.current_map()
            fences: dict[str, tuple[tuple[KeyRange, ...], int]] = {}
            for name, placed in placement.shards.items():
                if placed.primary_dc != dc:
                    continue
                storage = await cluster.copy_storage(name, dc)
                fence = await storage.fence()
                fences[name] = (fence.ranges, fence.version)
                await storage.set_fence([], shard_map.version + 1)
            self.cut_fences[dc] = fences
            return sorted(fences)
        finally:
            await cluster.close()

    async def reconnect(self, dc: str) -> list[str]:
        """Undo `cut_off` for shards still primary in `dc` (no promotion happened)."""
        fences = self.cut_fences.pop(dc, {})
        cluster = self._cluster()
        try:
            placement = await cluster.ensure_placement()
            restored = []
            for name, (ranges, version) in fences.items():
                if placement.shards[name].primary_dc == dc:
                    storage = await cluster.copy_storage(name, dc)
                    await storage.set_fence(ranges, version)
                    restored.append(name)
            return sorted(restored)
        finally:
            await cluster.close()

    async def promote(self, dc: str) -> dict[str, Any]:
        """Make replicas outside `dc` the primaries of its shards; what was lost."""
        cluster = self._cluster()
        started = time.monotonic()
        try:
            report = await promote(cluster, dc)
        finally:
            await cluster.close()
        self.cut_fences.pop(dc, None)
        return {
            "dc": dc,
            "at": time.time(),
            "took_s": round(time.monotonic() - started, 3),
            "writes_lost": report.lost_writes,
            "unknown_losses": list(report.unknown_losses),
            "promoted": {loss.shard: loss.promoted_dc for loss in report.losses},
            "stranded": list(report.stranded),
            "report": report.describe(),
        }

    async def fail_back(self, dc: str) -> dict[str, Any]:
        """Resync `dc`'s copies as replicas, then switch its home shards back to it."""
        cluster = self._cluster()
        started = time.monotonic()
        try:
            rejoined = await rejoin(cluster, dc, wait_s=REJOIN_WAIT_S)
            caught_up_s = time.monotonic() - started
            switched = await hand_back(cluster, dc)
        finally:
            await cluster.close()
        return {
            "dc": dc,
            "caught_up": list(rejoined.caught_up),
            "caught_up_s": round(caught_up_s, 3),
            "switched_back": [s.shard for s in switched],
            "max_write_pause_ms": round(max((s.pause_s for s in switched), default=0) * 1000, 1),
            "took_s": round(time.monotonic() - started, 3),
        }

    async def lag(self) -> dict[str, list[dict[str, Any]]]:
        """Each DC's replicas: changes and seconds behind their primaries."""
        cluster = self._cluster()
        try:
            return {
                dc: [
                    {
                        "shard": lag.shard,
                        "changes_behind": lag.changes_behind,
                        "seconds_behind": lag.seconds_behind,
                        "state": lag.state,
                    }
                    for lag in await replication_lag(cluster, dc)
                ]
                for dc in self.config.dcs
            }
        finally:
            await cluster.close()
