"""Builders shared by the edge tests: a fixed clock and stored entries from header lists."""

from __future__ import annotations

from collections.abc import Sequence

from millions.edge.dates import format_http_date
from millions.edge.entry import CachedResponse
from millions.edge.headers import Header
from millions.edge.messages import parse_request, parse_response
from millions.edge.storability import storage_decision

#: A fixed "now": 2023-11-14T22:13:20Z.
NOW = 1_700_000_000.0


def http_date(offset: float = 0.0) -> bytes:
    """IMF-fixdate `offset` seconds from NOW."""
    return format_http_date(NOW + offset)


def stored(
    response_headers: Sequence[Header],
    *,
    status: int = 200,
    request_headers: Sequence[Header] = (),
    request_time: float = NOW,
    response_time: float = NOW,
) -> CachedResponse:
    """The entry an origin response would become; fails the test if it is not storable."""
    request = parse_request(b"GET", list(request_headers))
    response = parse_response(status, list(response_headers))
    decision = storage_decision(request, response)
    assert decision.store, decision.reason
    return CachedResponse.from_origin(
        request, response, decision, request_time=request_time, response_time=response_time
    )
