"""What can go wrong in the sharding layer, as exceptions an app can catch one by one."""

from __future__ import annotations


class ShardError(Exception):
    """Base of every sharding error."""


class ShardUnavailableError(ShardError):
    """A shard's database (or the metadata store) failed or is unreachable."""


class StaleMapError(ShardError):
    """A shard refused a key or range it does not own by its own record (its fence).

    The router catches it, reloads the map and retries; an app sees it only through
    `RangeUnavailableError` when the map does not catch up in time.
    """

    def __init__(self, shard: str, shard_version: int, what: str) -> None:
        super().__init__(
            f"shard {shard} (fence version {shard_version}) does not own {what}; "
            "the router's shard map is stale"
        )
        self.shard = shard
        self.shard_version = shard_version


class RangeUnavailableError(ShardError):
    """No shard accepted a key within the router's wait: a resharding step was interrupted."""


class DuplicateRowError(ShardError):
    """An insert hit an existing primary key (or another unique constraint)."""

    def __init__(self, table: str, detail: str) -> None:
        super().__init__(f"{table}: duplicate row ({detail})")
        self.table = table


class MapConflictError(ShardError):
    """Another process published a new shard map first."""


class OperationError(ShardError):
    """A resharding operation cannot start or continue (bad range, another one running...)."""


class VerificationError(OperationError):
    """Source and target disagree on a range's rows after catch-up (the VDiff failed)."""


class SchemaError(ShardError):
    """A sharded table or migration does not fit the sharding rules."""


class QueryError(ShardError):
    """A shard rejected a statement: bad SQL, an unknown column, a failed constraint."""
