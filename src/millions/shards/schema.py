"""What the shards hold: the app's sharded tables and the numbered migrations creating them.

Every sharded table follows two rules (Citus has the same one for its distribution column):
its primary key includes the shard-key column, so any write by primary key knows its shard;
and it has a `key_hash BIGINT NOT NULL` column (indexed), which the router fills with the
stored keyspace id so a range of rows can be copied, counted and deleted without rehashing.
Column values are limited to NULL, integers, floats, text, bytes and booleans: the change
log and the read cache keep row images as JSON.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from millions.shards.errors import SchemaError

HASH_COLUMN = "key_hash"
ENGINES = ("sqlite", "postgres")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
RESERVED_PREFIX = "_millions_"


def check_identifier(name: str, what: str) -> str:
    if not IDENTIFIER.fullmatch(name):
        raise SchemaError(f"{what} {name!r} must be a plain SQL identifier")
    return name


@dataclass(frozen=True)
class TableSpec:
    """A sharded table: its primary key and which of those columns is the shard key."""

    name: str
    primary_key: tuple[str, ...]
    shard_key: str

    def __post_init__(self) -> None:
        check_identifier(self.name, "table name")
        if self.name.startswith(RESERVED_PREFIX):
            raise SchemaError(f"table names starting with {RESERVED_PREFIX} are reserved")
        if not self.primary_key:
            raise SchemaError(f"table {self.name} needs a primary key")
        for column in self.primary_key:
            check_identifier(column, f"{self.name} primary key column")
        if len(set(self.primary_key)) != len(self.primary_key):
            raise SchemaError(f"table {self.name} repeats a primary key column")
        if self.shard_key not in self.primary_key:
            raise SchemaError(
                f"table {self.name}: the shard key {self.shard_key!r} must be part of the "
                "primary key"
            )
        if HASH_COLUMN in self.primary_key:
            raise SchemaError(f"table {self.name}: {HASH_COLUMN} cannot be in the primary key")


@dataclass(frozen=True)
class Migration:
    """One numbered schema change; `sql` is shared or given per engine (sqlite, postgres)."""

    version: int
    name: str
    sql: str | Mapping[str, str]

    def __post_init__(self) -> None:
        if self.version < 1:
            raise SchemaError(f"migration versions start at 1, got {self.version}")
        if isinstance(self.sql, Mapping):
            unknown = set(self.sql) - set(ENGINES)
            if unknown:
                raise SchemaError(
                    f"migration {self.version}: unknown engine(s) {', '.join(sorted(unknown))}"
                )

    def sql_for(self, engine: str) -> str:
        if isinstance(self.sql, str):
            return self.sql
        try:
            return self.sql[engine]
        except KeyError:
            raise SchemaError(f"migration {self.version} has no SQL for {engine}") from None


@dataclass(frozen=True)
class ShardSchema:
    """The sharded tables and the migrations that create and change them."""

    tables: tuple[TableSpec, ...] = ()
    migrations: tuple[Migration, ...] = ()
    _by_name: dict[str, TableSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tables", tuple(self.tables))
        object.__setattr__(self, "migrations", tuple(self.migrations))
        names = [table.name for table in self.tables]
        if len(set(names)) != len(names):
            raise SchemaError("a table is declared twice")
        versions = [migration.version for migration in self.migrations]
        if versions != sorted(set(versions)):
            raise SchemaError("migration versions must be unique and in ascending order")
        object.__setattr__(self, "_by_name", {table.name: table for table in self.tables})

    def table(self, name: str) -> TableSpec:
        try:
            return self._by_name[name]
        except KeyError:
            raise SchemaError(f"{name!r} is not a sharded table of this schema") from None

    def latest_version(self) -> int:
        return self.migrations[-1].version if self.migrations else 0


def load_schema(reference: str) -> ShardSchema:
    """The `ShardSchema` named `module:attribute` (empty: no app tables)."""
    if not reference:
        return ShardSchema()
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise SchemaError(f"schema {reference!r} must look like package.module:ATTRIBUTE")
    try:
        value: object = importlib.import_module(module_name)
        for part in attribute.split("."):
            value = getattr(value, part)
    except (ImportError, AttributeError) as exc:
        raise SchemaError(f"cannot load schema {reference!r}: {exc}") from None
    if not isinstance(value, ShardSchema):
        raise SchemaError(f"{reference} is a {type(value).__name__}, not a ShardSchema")
    return value
