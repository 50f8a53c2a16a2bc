"""Option types and argument checks shared by the `millions` CLI and the lean edge CLI
(`millions.edge.cli`); imports nothing but typer."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

import typer

LogFileOption = Annotated[Path | None, typer.Option(help="JSON-lines log file (default: stderr)")]


def parse_address(value: str, option: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        typer.echo(f"config error: {option}: expected HOST:PORT, got {value!r}", err=True)
        raise typer.Exit(2)
    return host, int(port)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
