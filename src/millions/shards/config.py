"""The shards config: engine, shards, metadata store, read cache and hot-key settings.

It is the `[shards]` table of the topology's TOML file (or a file of its own). Paths may be
left empty: SQLite shards then live in `<run_dir>/shards/<name>.sqlite3` and the metadata
in `<run_dir>/shards/metadata.sqlite3`; PostgreSQL shards in schema `<schema_prefix><name>`
of `url`, and the metadata in schema `metadata_schema` there.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from millions.shards.storage.base import ShardLocation
from millions.topology.errors import ConfigError, read_toml

SHARD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
DEFAULT_RUN_DIR = ".millions"
_POSTGRES_URL = re.compile(r"^postgres(ql)?://")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ShardSpec(_Section):
    """One shard. Without `path`/`url` it gets the engine's default location."""

    name: str = Field(description="shard name: lower-case letters, digits, underscores")
    path: str = Field(default="", description="sqlite: the shard's file")
    url: str = Field(default="", description="postgres: the shard's database (own database)")
    pg_schema: str = Field(default="", description="postgres: the shard's schema")

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not SHARD_NAME.match(name):
            raise ValueError(f"shard name {name!r} must match {SHARD_NAME.pattern}")
        return name

    @field_validator("pg_schema")
    @classmethod
    def _schema(cls, schema: str) -> str:
        if schema and not SCHEMA_NAME.match(schema):
            raise ValueError(f"schema {schema!r} must match {SCHEMA_NAME.pattern}")
        return schema


class CacheConfig(_Section):
    """The read cache in front of single-key reads the app marks `cached=True`."""

    engine: Literal["none", "memory", "redis"] = "memory"
    url: str = Field(default="", description="redis://... for the redis engine")
    ttl_s: float = Field(default=30.0, gt=0, le=86400)
    max_entries: int = Field(default=10_000, ge=1, le=10_000_000, description="memory engine")
    prefix: str = Field(default="millions:shards:", max_length=100, description="redis keys")

    @model_validator(mode="after")
    def _redis_url(self) -> CacheConfig:
        if self.engine == "redis" and not re.match(r"^rediss?://", self.url):
            raise ValueError("url: the redis cache needs url = redis://host:port/db")
        return self


class HotKeysConfig(_Section):
    """Load sampling, load-based splitting (CockroachDB splits above 2500 ops/s) and serving
    keys too hot for any split from the read cache."""

    enabled: bool = True
    threshold_ops_s: float = Field(default=2500.0, gt=0)
    window_s: float = Field(default=10.0, gt=0, le=3600)
    top_k: int = Field(default=64, ge=1, le=10_000, description="keys tracked per window slice")
    sample_rate: float = Field(default=1.0, gt=0, le=1)
    report_interval_s: float = Field(
        default=1.0, gt=0, le=3600, description="how often a router stores its load report"
    )
    auto_split: bool = Field(default=False, description="split hot ranges without asking")
    autosplit_interval_s: float = Field(
        default=5.0, gt=0, le=3600, description="how often the auto-splitter looks at the load"
    )
    split_cooldown_s: float = Field(
        default=30.0,
        ge=0,
        le=86_400,
        description="after a resharding operation ends, wait this long before splitting "
        "automatically (the load reports first have to show the new ranges)",
    )
    cleanup_after_s: float = Field(
        default=10.0,
        ge=0,
        le=86_400,
        description="an automatic split deletes the old copy this long after its cutover; "
        "until then `millions shards reverse` can switch it back",
    )
    cache_hot_keys: bool = Field(
        default=True,
        description="routers serve every read of a key hotter than cache_key_share x "
        "threshold_ops_s (all routers together) from the read cache; with the memory cache "
        "a write by another process shows after at most cache.ttl_s (the redis cache has no "
        "such delay)",
    )
    cache_key_share: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="share of threshold_ops_s above which one key is served from the cache",
    )


def _default_shards() -> list[ShardSpec]:
    return [ShardSpec(name="s1"), ShardSpec(name="s2")]


class ShardsConfig(_Section):
    """The sharded database."""

    engine: Literal["sqlite", "postgres"] = "sqlite"
    directory: str = Field(default="", description="sqlite: shard files (default <run_dir>/shards)")
    url: str = Field(default="", description="postgres: the database new shards are created in")
    schema_prefix: str = Field(default="millions_shard_", description="postgres: schema names")
    shards: list[ShardSpec] = Field(default_factory=_default_shards)
    metadata_url: str = Field(
        default="", description="sqlite file path or postgresql:// URL (default: see above)"
    )
    metadata_schema: str = Field(default="millions_shards", description="postgres metadata")
    tables: str = Field(
        default="", description="the app's ShardSchema as module:attribute (tables, migrations)"
    )
    cache: CacheConfig = CacheConfig()
    hot: HotKeysConfig = HotKeysConfig()
    max_pause_s: float = Field(default=1.0, gt=0, le=30, description="cutover write pause budget")
    stale_wait_s: float = Field(
        default=5.0, gt=0, le=300, description="how long a router waits for a newer map"
    )
    batch_rows: int = Field(default=500, ge=1, le=100_000, description="rows per copy batch")

    @field_validator("shards")
    @classmethod
    def _unique(cls, shards: list[ShardSpec]) -> list[ShardSpec]:
        if not shards:
            raise ValueError("at least one shard is needed")
        names = [s.name for s in shards]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate:
            raise ValueError(f"shard {duplicate!r} is listed twice")
        return shards

    @field_validator("schema_prefix", "metadata_schema")
    @classmethod
    def _schema_name(cls, value: str) -> str:
        if not SCHEMA_NAME.match(value):
            raise ValueError(f"{value!r} must match {SCHEMA_NAME.pattern}")
        return value

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, url: str) -> str:
        if url and not _POSTGRES_URL.match(url):
            raise ValueError("expected postgresql://user@host:port/database")
        return url

    @model_validator(mode="after")
    def _engine_needs(self) -> ShardsConfig:
        if self.engine == "postgres":
            missing = [s.name for s in self.shards if not (s.url or self.url)]
            if missing:
                raise ValueError(
                    f"url: postgres shards need url (or a url per shard; missing for "
                    f"{', '.join(missing)})"
                )
        return self

    def shard_directory(self, run_dir: Path) -> Path:
        return Path(self.directory) if self.directory else run_dir / "shards"

    def location(self, name: str, run_dir: Path) -> ShardLocation:
        """Where shard `name` lives: as listed, else the engine's default place."""
        spec = next((s for s in self.shards if s.name == name), ShardSpec(name=name))
        if self.engine == "sqlite":
            path = spec.path or str(self.shard_directory(run_dir) / f"{name}.sqlite3")
            return ShardLocation(name, "sqlite", path=str(Path(path).resolve()))
        if not (spec.url or self.url):
            raise ConfigError("shards.url", f"no database for new postgres shard {name}")
        return ShardLocation(
            name,
            "postgres",
            url=spec.url or self.url,
            schema=spec.pg_schema or f"{self.schema_prefix}{name}",
        )

    def metadata_location(self, run_dir: Path) -> str:
        """A sqlite file path or a postgresql:// URL."""
        if self.metadata_url:
            return self.metadata_url
        if self.engine == "postgres":
            return self.url or self.shards[0].url
        return str((self.shard_directory(run_dir) / "metadata.sqlite3").resolve())


def parse(data: dict[str, Any], prefix: str = "shards") -> ShardsConfig:
    """Validate a `[shards]` mapping; ConfigError names the first bad key."""
    try:
        return ShardsConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join([prefix, *(str(part) for part in first["loc"])])
        problem = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        problem = problem.removeprefix("Value error, ")
        if ": " in problem and problem.split(": ", 1)[0].isidentifier():
            field, problem = problem.split(": ", 1)
            key = f"{key}.{field}"
        raise ConfigError(key, problem) from None


def load(path: Path) -> tuple[ShardsConfig, Path]:
    """(config, run_dir) from a TOML file: its `[shards]` table (and `run_dir`) when it has
    one (the topology's millions.toml), else the whole file is the shards config."""
    data = read_toml(path)
    run_dir = Path(str(data.pop("run_dir", DEFAULT_RUN_DIR)))
    if isinstance(data.get("shards"), dict):
        return parse(data["shards"]), run_dir
    return parse(data), run_dir
