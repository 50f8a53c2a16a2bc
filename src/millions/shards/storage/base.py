"""One shard's database: the interface every engine (SQLite file, PostgreSQL schema) offers.

A shard keeps, next to the app's tables, three tables of its own:

- `_millions_fence`: the ranges it owns by its own record and the map version of that
  record. Every routed write (and read) checks it in the same transaction, so a router
  with a stale map is refused (`StaleMapError`) instead of writing to the wrong shard.
- `_millions_changelog`: one row per row written, appended in the write's transaction,
  with a sequence number that grows in commit order. Resharding catches up from it; it is
  read with `changes_since`.
- `_millions_migrations`: the app migrations applied to this shard.
- `_millions_replication`: on a copy that is a replica of another copy (in another data
  center), how far it has applied that copy's change log, updated in the same transaction
  as the rows applied (see `ReplicaStep`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from millions.shards.errors import ShardError
from millions.shards.keyspace import KeyRange, covers_all, from_stored_hash, normalize
from millions.shards.rows import RangeDigest, Row, decode_row
from millions.shards.schema import ShardSchema, TableSpec

WriteOp = Literal["insert", "upsert", "update", "delete"]
ChangeOp = Literal["insert", "upsert", "update", "delete"]

SYSTEM_TABLES = (
    "_millions_fence",
    "_millions_changelog",
    "_millions_migrations",
    "_millions_replication",
)


@dataclass(frozen=True)
class ShardLocation:
    """Where a shard lives: a SQLite file, or a schema in a PostgreSQL database."""

    name: str
    engine: Literal["sqlite", "postgres"]
    path: str = ""
    url: str = ""
    schema: str = ""

    def describe(self) -> str:
        """For status output: never shows a password that may be in the URL."""
        if self.engine == "sqlite":
            return self.path
        host = self.url.rpartition("@")[2]
        return f"postgres {host} schema {self.schema}"

    def to_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "engine": self.engine,
            "path": self.path,
            "url": self.url,
            "schema": self.schema,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShardLocation:
        engine = data["engine"]
        if engine not in ("sqlite", "postgres"):
            raise ValueError(f"unknown shard engine {engine!r}")
        return cls(
            name=str(data["name"]),
            engine=engine,
            path=str(data.get("path", "")),
            url=str(data.get("url", "")),
            schema=str(data.get("schema", "")),
        )


@dataclass(frozen=True)
class Fence:
    """The ranges a shard owns by its own record, and the map version of that record."""

    ranges: tuple[KeyRange, ...]
    version: int

    def owns(self, keyspace_id: int) -> bool:
        for key_range in self.ranges:  # a plain loop: every fenced operation asks this
            if key_range.start <= keyspace_id < key_range.end:
                return True
        return False

    def owns_all(self, ranges: Sequence[KeyRange]) -> bool:
        return all(covers_all(self.ranges, r) for r in ranges)

    def ranges_text(self) -> str:
        return json.dumps([r.name for r in normalize(self.ranges)])

    @classmethod
    def from_record(cls, ranges_text: str, version: int) -> Fence:
        return cls(tuple(KeyRange.parse(name) for name in json.loads(ranges_text)), int(version))


@functools.lru_cache(maxsize=256)
def fence_of(ranges_text: str, version: int) -> Fence:
    """A shard's fence from its record (`_millions_fence`), remembered: every fenced
    operation reads the record, and it rarely changes."""
    return Fence.from_record(ranges_text, version)


@dataclass(frozen=True)
class RowWrite:
    """One row write routed to a shard. `values` holds the full row for insert/upsert (with
    the stored `key_hash`) and the changed columns for update; `pk` names the row for
    update/delete."""

    op: WriteOp
    table: TableSpec
    keyspace_id: int
    values: Mapping[str, Any] = field(default_factory=dict)
    pk: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Change:
    """One change-log row: enough to replay the write on another copy of the shard.

    `row` is the row image after the write (None for a delete); replaying an insert,
    upsert or update is an upsert of `row`, replaying a delete deletes `pk`.
    """

    seq: int
    keyspace_id: int
    table: str
    op: ChangeOp
    pk: Row
    row: Row | None
    at: float

    @classmethod
    def from_record(
        cls,
        seq: int,
        stored: int,
        table: str,
        op: str,
        pk_text: str,
        row_text: str | None,
        at: float,
    ) -> Change:
        if op not in ("insert", "upsert", "update", "delete"):
            raise ValueError(f"unknown change op {op!r}")
        return cls(
            seq=int(seq),
            keyspace_id=from_stored_hash(int(stored)),
            table=table,
            op=op,  # type: ignore[arg-type]
            pk=decode_row(pk_text),
            row=None if row_text is None else decode_row(row_text),
            at=float(at),
        )


class PromotedCopyError(ShardError):
    """Replicated changes reached a copy whose fence owns ranges: it serves (it was
    promoted), so an applier that has not noticed yet must not overwrite its writes."""

    def __init__(self, shard: str, version: int) -> None:
        super().__init__(
            f"shard copy {shard} owns ranges (fence version {version}): it is a primary now "
            "and takes no replicated changes"
        )


class ReplicationConflictError(ShardError):
    """The copy's recorded replication position is not the one the applier read: another
    applier moved it (or took the copy over), so this one must re-read before applying."""


@dataclass(frozen=True)
class ReplicaStep:
    """Makes a write a replicated one: applied only while the copy serves nothing and its
    recorded position for `origin` is still `expected` (None: none recorded yet), and moving
    that position to `position` in the same transaction as the rows. `clear` names tables
    emptied (without logging) in that transaction before the writes: a replica about to be
    filled again by a snapshot copy."""

    origin: str
    expected: int | None
    position: int
    clear: tuple[TableSpec, ...] = ()


class ShardStorage(Protocol):
    """One shard's database. Both engines pass tests/shards/test_shard_storage_contract.py."""

    location: ShardLocation
    last_written_seq: int
    """The highest change-log sequence a write through this object committed (0: none);
    it only grows, so right after a write returns it is at least that write's position."""

    @property
    def name(self) -> str: ...

    async def migrate(self, schema: ShardSchema) -> list[int]:
        """Create the shard's own tables and apply pending app migrations (each recorded in
        `_millions_migrations` in its own transaction); returns the versions applied now."""
        ...

    async def applied_migrations(self) -> list[int]: ...

    async def fence(self) -> Fence: ...

    async def set_fence(self, ranges: Sequence[KeyRange], version: int) -> None:
        """Record the ranges this shard owns; waits for writes in flight to finish first."""
        ...

    async def write(
        self,
        writes: Sequence[RowWrite],
        *,
        fenced: bool = True,
        replica: ReplicaStep | None = None,
    ) -> list[Row | None]:
        """Apply the writes in one transaction and append one change-log row per row
        written. When `fenced`, any key the fence does not own is refused (StaleMapError);
        resharding (copy, catch-up) writes unfenced. With `replica` the writes are unfenced
        but refused unless the copy owns no range (PromotedCopyError) and its position for
        `replica.origin` is `replica.expected` (ReplicationConflictError); the position
        moves to `replica.position` in the same transaction. Returns each write's row image
        (None: an update or delete found no row)."""
        ...

    async def fetch(
        self,
        sql: str,
        params: Sequence[Any] = (),
        *,
        keyspace_id: int | None = None,
        ranges: Sequence[KeyRange] = (),
        fenced: bool = True,
    ) -> list[Row]:
        """Run a read after checking the fence owns `keyspace_id` and every one of `ranges`
        (StaleMapError otherwise); `fenced=False` skips the check (reads of a replica, whose
        fence owns nothing)."""
        ...

    def read_owned(
        self, sql: str, params: tuple[Any, ...], keyspace_id: int
    ) -> Awaitable[list[Row]]:
        """`fetch(sql, params, keyspace_id=keyspace_id)` as the router's single-key reads
        make it, with as little work around the statement as the engine allows."""
        ...

    async def replica_position(self, origin: str) -> int | None:
        """How far this copy has applied `origin`'s change log (None: never recorded)."""
        ...

    async def replica_progress(self, origin: str) -> tuple[int, float] | None:
        """(position for `origin`, unix time of the last replicated write that recorded
        it), or None: whether a copier's claim is still being worked on."""
        ...

    async def changes_since(
        self, seq: int, key_range: KeyRange | None = None, *, limit: int = 1000
    ) -> list[Change]:
        """Change-log rows with sequence > `seq` (within `key_range`), oldest first."""
        ...

    async def last_seq(self) -> int:
        """The newest change-log sequence (0 when empty)."""
        ...

    async def scan(
        self, table: TableSpec, key_range: KeyRange, after: Sequence[Any] | None, limit: int
    ) -> list[Row]:
        """Rows of `table` in `key_range` in primary key order, after the key `after`."""
        ...

    async def count_range(self, table: TableSpec, key_range: KeyRange) -> int: ...

    async def digest(
        self, tables: Sequence[TableSpec], key_range: KeyRange
    ) -> tuple[int, dict[str, RangeDigest]]:
        """(change-log sequence, per-table digest of the range), read in one snapshot."""
        ...

    async def delete_range(self, table: TableSpec, key_range: KeyRange, limit: int) -> int:
        """Delete up to `limit` rows of `table` in `key_range` without logging them (the rows
        live on in another shard); returns how many were deleted."""
        ...

    async def row_counts(self, tables: Sequence[TableSpec]) -> dict[str, int]: ...

    async def close(self) -> None: ...
