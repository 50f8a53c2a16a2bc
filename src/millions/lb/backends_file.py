"""The backends file: `{"backends": ["127.0.1.11:8000", ...]}`, read at start and on SIGHUP."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path


class BackendsFileError(Exception):
    """The file cannot be used; the message says why in one line."""


def parse_address(text: str) -> tuple[str, int]:
    """`host:port` (IPv4 literal or name; `[v6]:port`) -> (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"{text!r} is not HOST:PORT")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: port out of range")
    if host.startswith("[") and host.endswith("]"):
        ipaddress.IPv6Address(host[1:-1])
    return host, port


def parse_backends(data: object) -> list[str]:
    """Validate the decoded JSON; returns the addresses in order, without duplicates."""
    if not isinstance(data, dict) or not isinstance(data.get("backends"), list):
        raise BackendsFileError('expected an object {"backends": ["HOST:PORT", ...]}')
    addresses: list[str] = []
    for index, item in enumerate(data["backends"]):
        if not isinstance(item, str):
            raise BackendsFileError(f"backends[{index}] is not a string")
        try:
            parse_address(item)
        except ValueError as exc:
            raise BackendsFileError(f"backends[{index}]: {exc}") from None
        if item not in addresses:
            addresses.append(item)
    return addresses


def read_backends(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BackendsFileError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise BackendsFileError(f"{path} is not valid JSON: {exc}") from None
    return parse_backends(data)
