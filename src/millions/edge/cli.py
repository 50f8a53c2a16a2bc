"""`millions edge`, and the lean command line that runs it.

An edge's resident memory is part of what its cache costs (100,000 cached objects must
stay within 1.5x their bytes), so `python -m millions edge ...` (how the topology starts
edges) and the `millions` script parse an edge's arguments with this module alone, without
the rest of the CLI's imports (the topology's config models, the tier command groups):
about 7 MB less resident memory per edge (43.5 MB at start instead of 50.2 MB; typer, which
imports pydantic, and rich are still loaded). `millions.cli` mounts the same `edge`
command, so `millions --help` lists it and `millions edge --help` reads the same either way.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from millions.cli_common import LogFileOption, is_loopback, parse_address


def edge(
    origin: Annotated[str, typer.Option(help="origin base URL, e.g. http://127.0.1.1:8080")],
    listen: Annotated[str, typer.Option(help="HOST:PORT for client traffic")] = "127.0.0.1:8081",
    ops: Annotated[
        str | None, typer.Option(help="HOST:PORT for /healthz and /metrics (default: none)")
    ] = None,
    name: Annotated[str, typer.Option(help="component name for logs and Via")] = "edge",
    log_file: LogFileOption = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(help="disk cache directory, kept across restarts (default: a temp dir)"),
    ] = None,
    memory_bytes: Annotated[int, typer.Option(min=1, help="memory tier budget in bytes")] = 256
    * 1024
    * 1024,
    disk_bytes: Annotated[int, typer.Option(min=1, help="disk tier budget in bytes")] = 1 << 30,
    admin_token: Annotated[
        str | None,
        typer.Option(envvar="MILLIONS_ADMIN_TOKEN", help="bearer token for POST /purge on --ops"),
    ] = None,
    stream_threshold: Annotated[
        int,
        typer.Option(
            min=1,
            help="origin bodies larger than this many bytes stream to the client while they "
            "are stored, instead of being read whole first",
        ),
    ] = 1 << 20,
) -> None:
    """Run one CDN edge: an RFC 9111 caching reverse proxy in front of ORIGIN.

    Answers hits from its cache (X-Cache: HIT/MISS/STALE/REVALIDATED/PASS, Age, Via),
    coalesces concurrent misses into one origin fetch, and serves stale on origin errors
    where the origin allows it (stale-if-error).
    """
    from millions.edge.main import run

    listen_address = parse_address(listen, "--listen")
    ops_address = parse_address(ops, "--ops") if ops else None
    if ops_address is not None and not is_loopback(ops_address[0]):
        typer.echo(
            f"config error: --ops: the admin listener must be on loopback, got {ops_address[0]}",
            err=True,
        )
        raise typer.Exit(2)
    if not origin.startswith("http://"):
        typer.echo(f"config error: --origin: expected http://HOST:PORT, got {origin!r}", err=True)
        raise typer.Exit(2)
    parse_address(origin.removeprefix("http://").split("/", 1)[0], "--origin")
    try:
        run(
            listen_address,
            origin,
            ops_address,
            memory_bytes,
            name,
            log_file,
            cache_dir=cache_dir,
            disk_bytes=disk_bytes,
            admin_token=admin_token,
            stream_threshold_bytes=stream_threshold,
        )
    except ValueError as exc:
        typer.echo(f"config error: {exc}", err=True)
        raise typer.Exit(2) from None


lean_app = typer.Typer(add_completion=False, no_args_is_help=True)
lean_app.command()(edge)


@lean_app.callback()
def _edge_only() -> None:
    """millions, started for `millions edge` only."""


def main() -> None:
    try:
        lean_app(prog_name="millions")
    except KeyboardInterrupt:
        sys.exit(130)
