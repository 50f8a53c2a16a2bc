"""Sharded database: a router that sends each key to the shard owning its keyspace range,
online resharding (split, move, reverse, cleanup), a read cache, hot-key sampling and an
auto-splitter for hot ranges.

Engines are imported on demand: a router on SQLite shards never loads asyncpg or redis.
"""

from __future__ import annotations

from millions.shards.autosplit import (
    AutoSplitDecision,
    AutoSplitOutcome,
    AutoSplitPolicy,
    AutoSplitter,
    autosplit_forever,
    decide_autosplit,
)
from millions.shards.cluster import ClusterStatus, ShardCluster, ShardStatus
from millions.shards.config import ShardsConfig
from millions.shards.errors import (
    DuplicateRowError,
    MapConflictError,
    OperationError,
    QueryError,
    RangeUnavailableError,
    SchemaError,
    ShardError,
    ShardUnavailableError,
    StaleMapError,
    VerificationError,
)
from millions.shards.hotkeys import (
    HotKeySampler,
    HotReport,
    SplitDecision,
    decide_split,
    keys_to_cache,
)
from millions.shards.keyspace import KeyRange, key_hash
from millions.shards.resharding import Progress, Resharder
from millions.shards.router import ShardRouter
from millions.shards.schema import Migration, ShardSchema, TableSpec
from millions.shards.shard_map import ShardMap
from millions.shards.storage.base import Change
from millions.shards.workflow import Operation

__all__ = [
    "AutoSplitDecision",
    "AutoSplitOutcome",
    "AutoSplitPolicy",
    "AutoSplitter",
    "Change",
    "ClusterStatus",
    "DuplicateRowError",
    "HotKeySampler",
    "HotReport",
    "KeyRange",
    "MapConflictError",
    "Migration",
    "Operation",
    "OperationError",
    "Progress",
    "QueryError",
    "RangeUnavailableError",
    "Resharder",
    "SchemaError",
    "ShardCluster",
    "ShardError",
    "ShardMap",
    "ShardRouter",
    "ShardSchema",
    "ShardStatus",
    "ShardUnavailableError",
    "ShardsConfig",
    "SplitDecision",
    "StaleMapError",
    "TableSpec",
    "VerificationError",
    "autosplit_forever",
    "decide_autosplit",
    "decide_split",
    "key_hash",
    "keys_to_cache",
]
