"""A data center's replicator as a process:

    python -m millions.shards.replication --config millions.toml --dc us-east \
        [--dcs us-east,eu-west] [--metrics 127.0.1.9:9109]

The config is the topology's millions.toml (its `[shards]` table and `run_dir`) or a
shards config of its own. The data centers come from `--dcs`, else from the file's `[dcs]`
table. SIGTERM or SIGINT stops it after the transaction in flight; a kill at any other
moment loses nothing either (see `replicator`). Bad arguments or config give one line on
stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from millions.shards.config import load
from millions.shards.errors import ShardError
from millions.shards.replication.process import serve
from millions.topology.errors import ConfigError, read_toml


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m millions.shards.replication",
        description="Replicate into one data center's shard copies.",
    )
    parser.add_argument("--config", required=True, type=Path, help="millions.toml")
    parser.add_argument("--dc", required=True, help="the data center whose copies to fill")
    parser.add_argument("--dcs", default="", help="every data center, comma-separated")
    parser.add_argument("--metrics", default="", help="HOST:PORT to serve /metrics on")
    return parser


def data_centers(config_path: Path, listed: str) -> list[str]:
    """The data centers from `--dcs`, else the config file's `[dcs]` table."""
    if listed:
        return [dc.strip() for dc in listed.split(",") if dc.strip()]
    table = read_toml(config_path).get("dcs")
    if not isinstance(table, dict) or not table:
        raise ConfigError("dcs", "name the data centers with --dcs or a [dcs] table")
    return [str(dc) for dc in table]


def metrics_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("--metrics", f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        dcs = data_centers(args.config, args.dcs)
        if len(dcs) < 2 or len(set(dcs)) != len(dcs):
            raise ConfigError(
                "--dcs", f"replication needs two or more distinct data centers: {dcs}"
            )
        if args.dc not in dcs:
            raise ConfigError("--dc", f"{args.dc!r} is not one of the data centers {dcs}")
        metrics = metrics_address(args.metrics) if args.metrics else None
        config, run_dir = load(args.config)
        asyncio.run(serve(config, run_dir, args.dc, dcs, listen=metrics))
    except (ConfigError, ShardError, ValueError, OSError) as exc:
        print(f"replicator: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
