"""The shards config: defaults, locations per engine, one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from millions.shards.config import ShardsConfig, load, parse
from millions.topology.config import ConfigError


def test_defaults_put_sqlite_shards_and_metadata_in_the_run_directory(tmp_path: Path) -> None:
    config = parse({})
    assert config.engine == "sqlite" and [s.name for s in config.shards] == ["s1", "s2"]
    assert config.hot.threshold_ops_s == 2500.0 and config.hot.auto_split is False
    assert config.cache.engine == "memory"
    location = config.location("s1", tmp_path)
    assert (location.engine, location.path) == ("sqlite", str(tmp_path / "shards" / "s1.sqlite3"))
    assert config.location("s7", tmp_path).path.endswith("shards/s7.sqlite3")
    assert config.metadata_location(tmp_path) == str(tmp_path / "shards" / "metadata.sqlite3")


def test_postgres_shards_get_a_schema_each_unless_given_their_own_database() -> None:
    config = parse(
        {
            "engine": "postgres",
            "url": "postgresql://app@db/main",
            "shards": [
                {"name": "s1"},
                {"name": "s2", "url": "postgresql://app@db2/other", "pg_schema": "public"},
            ],
        }
    )
    s1, s2 = config.location("s1", Path()), config.location("s2", Path())
    assert (s1.url, s1.schema) == ("postgresql://app@db/main", "millions_shard_s1")
    assert (s2.url, s2.schema) == ("postgresql://app@db2/other", "public")
    assert config.metadata_location(Path()) == "postgresql://app@db/main"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"bogus": 1}, "shards.bogus: unknown key"),
        ({"engine": "mysql"}, "shards.engine: Input should be"),
        ({"shards": []}, "shards.shards: at least one shard is needed"),
        ({"shards": [{"name": "a"}, {"name": "a"}]}, "shards.shards: shard 'a' is listed twice"),
        ({"shards": [{"name": "Bad-Name"}]}, "shards.shards.0.name: shard name 'Bad-Name'"),
        ({"engine": "postgres"}, "shards.url: postgres shards need url"),
        ({"url": "mysql://x"}, "shards.url: expected postgresql://"),
        ({"cache": {"engine": "redis"}}, "shards.cache.url: the redis cache needs url"),
        ({"hot": {"threshold_ops_s": 0}}, "shards.hot.threshold_ops_s: Input should be greater"),
        ({"schema_prefix": "Bad"}, "shards.schema_prefix:"),
    ],
)
def test_problems_name_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse(data)
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)


def test_load_reads_a_shards_file_or_the_shards_table_of_a_topology_file(tmp_path: Path) -> None:
    standalone = tmp_path / "shards.toml"
    standalone.write_text('engine = "sqlite"\n[[shards]]\nname = "x1"\n', encoding="utf-8")
    config, run_dir = load(standalone)
    assert [s.name for s in config.shards] == ["x1"] and run_dir == Path(".millions")
    topology = tmp_path / "millions.toml"
    topology.write_text('run_dir = "/srv/run"\n[shards.cache]\nttl_s = 5\n', encoding="utf-8")
    config, run_dir = load(topology)
    assert config.cache.ttl_s == 5 and run_dir == Path("/srv/run")
    assert isinstance(config, ShardsConfig)
    (tmp_path / "broken.toml").write_text("engine = ", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(tmp_path / "broken.toml")
