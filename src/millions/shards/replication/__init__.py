"""Cross-DC data sync for the shards: each shard has its primary copy in one data center
and an asynchronous replica in each other one, fed from the primary's change log.

- `placement`: which DC's copy of each shard is the primary (a versioned record in the
  metadata store) and the pure rules for changing it;
- `cluster`: `ReplicatedCluster`, a `ShardCluster` whose shard storage is the current
  primary copy (build the `ShardRouter` on one);
- `replicator`: a DC's replicator (snapshot copy, then change-log catch-up; lag);
- `reads`: replica reads with read-your-writes (`WriteToken`, `ReplicaReader`);
- `failover`: `promote` (with the lost writes counted), `rejoin`, `switchover`,
  `hand_back`;
- `metrics`: the replicator's Prometheus collector.
"""

from __future__ import annotations

from millions.shards.replication.cluster import ReplicatedCluster
from millions.shards.replication.failover import (
    PromotionReport,
    RejoinReport,
    SwitchoverReport,
    bump_map,
    hand_back,
    promote,
    rejoin,
    switchover,
)
from millions.shards.replication.metrics import ReplicationCollector
from millions.shards.replication.placement import (
    LostWrites,
    Placement,
    PlacementError,
    ShardCopy,
    ShardPlacement,
    plan_placement,
    plan_promotions,
    replica_location,
)
from millions.shards.replication.reads import ReplicaReader, WriteToken, choose_source
from millions.shards.replication.replicator import (
    Replicator,
    ShardLag,
    replication_lag,
    run_replicator,
)

__all__ = [
    "LostWrites",
    "Placement",
    "PlacementError",
    "PromotionReport",
    "RejoinReport",
    "ReplicaReader",
    "ReplicatedCluster",
    "ReplicationCollector",
    "Replicator",
    "ShardCopy",
    "ShardLag",
    "ShardPlacement",
    "SwitchoverReport",
    "WriteToken",
    "bump_map",
    "choose_source",
    "hand_back",
    "plan_placement",
    "plan_promotions",
    "promote",
    "rejoin",
    "replica_location",
    "replication_lag",
    "run_replicator",
    "switchover",
]
