"""Limits and timeouts of the proxy core (one frozen value shared by all connections)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """How strict, patient and retrying a proxy listener is.

    Defaults suit a load balancer in front of application servers on the same machine.
    """

    max_header_bytes: int = 16384
    """Request line plus header block; larger requests get 400."""
    max_body_bytes: int = 1 << 30
    """Larger request bodies get 413."""
    header_timeout_s: float = 10.0
    """From the first byte of a request (or the accept) to the end of its head: slowloris."""
    idle_timeout_s: float = 60.0
    """A keep-alive client connection with no request in progress is closed after this."""
    body_timeout_s: float = 30.0
    """Longest pause between two pieces of a request body."""
    send_timeout_s: float = 60.0
    """Longest time a client may leave the response unread (its buffer full)."""
    linger_s: float = 1.0
    """After a 400 the connection reads and discards for this long before closing, so the
    client sees the response instead of a reset."""
    connect_timeout_s: float = 2.0
    response_timeout_s: float = 30.0
    """Longest silence from an upstream once the request was sent: then 504."""
    retries: int = 2
    """Extra attempts on another server when that is safe."""
    retry_body_bytes: int = 64 * 1024
    """Request bodies up to this size are kept for a retry; larger ones are not retried
    once sent."""
    upstream_idle_timeout_s: float = 3.0
    """Pooled upstream connections idle longer are closed: below the 5 s keep-alive of
    uvicorn, so the proxy closes first instead of racing the server's close."""
    max_idle_per_upstream: int = 256
    write_buffer_high: int = 256 * 1024
    """Transport buffer size at which the other side's reading is paused."""
    forwarded_proto: bytes = b"http"
    via: bytes = b""
    """When set (e.g. b"1.1 lb-us-east"), added as a Via header to forwarded requests."""
    timer_resolution_s: float = 0.1
    """How often timeouts are checked (one timer for all connections)."""
