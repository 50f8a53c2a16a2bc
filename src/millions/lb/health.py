"""Active health checks: `GET /healthz` on a fresh connection to each backend.

A fresh connection per check tests what a new request would need (the server accepts
connections) rather than a pooled one that may outlive the server's ability to accept.
Any 2xx status passes; anything else, a timeout or a connection error fails.
"""

from __future__ import annotations

import asyncio
import re

from millions.lb.backends_file import parse_address

_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})")


async def check_health(address: str, path: str, timeout_s: float) -> bool:
    """One check of `address`; True when it answered 2xx within `timeout_s`."""
    host, port = parse_address(address)
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host.strip("[]"), port)
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: millions-lb-check\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            line = await reader.readline()
    except (OSError, TimeoutError, ValueError):
        return False
    finally:
        if writer is not None:
            writer.close()
    match = _STATUS_LINE.match(line)
    return match is not None and 200 <= int(match.group(1)) < 300
