"""The environment a topology gives the reference app's processes (web servers and
workers): where the photo files and the shards are.

It lives outside `millions.app` because importing that package builds the app, which
reads this environment: the runners must set it first.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping, Sequence
from pathlib import Path

from millions.shards.config import ShardsConfig

DATA_DIR_ENV = "MILLIONS_DATA_DIR"
SHARDS_CONFIG_ENV = "MILLIONS_SHARDS_CONFIG"
SHARD_DCS_ENV = "MILLIONS_SHARD_DCS"


def export_data_locations(
    config: ShardsConfig,
    run_dir: Path,
    dcs: Sequence[str] = (),
    env: MutableMapping[str, str] | None = None,
) -> None:
    """Tell the app (web servers and workers alike) where a topology's photo files
    (`<run_dir>/data`) and shards are, with SQLite paths made absolute, and — when the
    shards have a copy in each of `dcs` — which data centers those are; what the
    environment already says wins."""
    env = os.environ if env is None else env
    if dcs:
        env.setdefault(SHARD_DCS_ENV, ",".join(dcs))
    env.setdefault(DATA_DIR_ENV, str(run_dir.resolve() / "data"))
    if config.engine == "sqlite" and not config.directory:
        config = config.model_copy(
            update={"directory": str(config.shard_directory(run_dir.resolve()))}
        )
    env.setdefault(SHARDS_CONFIG_ENV, config.model_dump_json())
