"""HOST:PORT arguments and loopback checks, shared by every command line (no imports
beyond the standard library, so the lean edge command line can use them)."""

from __future__ import annotations

import ipaddress


def split_address(value: str) -> tuple[str, int] | None:
    """`HOST:PORT` as (host, port); None when it is not one."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
