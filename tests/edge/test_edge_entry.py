"""Stored entries: what an origin response becomes and how storage rebuilds it."""

from __future__ import annotations

import pytest
from edge_support import NOW, http_date, stored

from millions.edge.cache_control import NO_DIRECTIVES
from millions.edge.entry import CachedResponse
from millions.edge.freshness import Reuse, decide_reuse

pytestmark = pytest.mark.timeout(30)


def test_from_origin_keeps_age_as_initial_age_not_as_a_header() -> None:
    entry = stored(
        [(b"cache-control", b"max-age=600"), (b"date", http_date(-10)), (b"age", b"30")],
        request_time=NOW - 1,
        response_time=NOW,
    )
    assert all(name != b"age" for name, _ in entry.headers)
    assert entry.initial_age == 31  # Age 30 + 1 s response delay beats apparent age 10
    assert entry.freshness_lifetime == 600


def test_entry_rebuilt_from_its_persisted_fields_is_equal() -> None:
    entry = stored(
        [(b"cache-control", b"max-age=60"), (b"etag", b'"a"'), (b"vary", b"Accept")],
        request_headers=[(b"accept", b"text/html")],
    ).invalidate()
    rebuilt = CachedResponse(
        status=entry.status,
        headers=entry.headers,
        request_time=entry.request_time,
        response_time=entry.response_time,
        initial_age=entry.initial_age,
        secondary_key=entry.secondary_key,
        invalidated=entry.invalidated,
    )
    assert rebuilt == entry
    assert rebuilt.freshness_lifetime == entry.freshness_lifetime == 60
    assert rebuilt.etag == b'"a"' and rebuilt.response.vary == (b"accept",)
    assert decide_reuse(rebuilt, NO_DIRECTIVES, NOW + 1).reuse is Reuse.REVALIDATE
