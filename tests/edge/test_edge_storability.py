"""Storing responses in a shared cache (RFC 9111 §3, §3.1, §3.5) and the Set-Cookie policy."""

from __future__ import annotations

import pytest
from edge_support import http_date, stored

from millions.edge.headers import Header
from millions.edge.messages import parse_request, parse_response
from millions.edge.storability import StorageDecision, storage_decision

pytestmark = pytest.mark.timeout(30)


def decide(
    headers: list[Header],
    *,
    status: int = 200,
    method: bytes = b"GET",
    request_headers: list[Header] | None = None,
) -> StorageDecision:
    request = parse_request(method, request_headers or [])
    return storage_decision(request, parse_response(status, headers))


def test_explicit_freshness_is_stored() -> None:
    assert decide([(b"cache-control", b"max-age=60")]).store


@pytest.mark.parametrize("status", [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501])
def test_heuristically_cacheable_statuses_need_no_explicit_freshness(status: int) -> None:
    assert decide([(b"last-modified", http_date(-86400))], status=status).store


@pytest.mark.parametrize("status", [201, 202, 403, 502, 503, 504, 599])
def test_other_statuses_need_explicit_freshness(status: int) -> None:
    decision = decide([(b"last-modified", http_date(-86400))], status=status)
    assert (decision.store, decision.reason) == (False, "no-freshness-information")
    assert decide([(b"cache-control", b"max-age=60")], status=status).store


def test_public_makes_an_unknown_status_storable() -> None:
    assert decide([(b"cache-control", b"public")], status=599).store


def test_expires_alone_is_explicit_freshness() -> None:
    assert decide([(b"expires", http_date(3600))], status=201).store
    assert decide([(b"expires", b"0")], status=201).store  # stored, but already stale


@pytest.mark.parametrize(
    ("status", "method"),
    [(206, b"GET"), (304, b"GET"), (100, b"GET"), (200, b"HEAD"), (200, b"POST")],
)
def test_partial_not_modified_interim_and_non_get_are_not_stored(
    status: int, method: bytes
) -> None:
    decision = decide([(b"cache-control", b"max-age=60")], status=status, method=method)
    assert not decision.store


@pytest.mark.parametrize("value", [b"no-store", b"No-StOrE", b"max-age=10000, no-store"])
def test_no_store(value: bytes) -> None:
    decision = decide([(b"cache-control", value), (b"expires", http_date(10000))])
    assert (decision.store, decision.reason) == (False, "no-store")


def test_request_no_store() -> None:
    decision = decide(
        [(b"cache-control", b"max-age=60")], request_headers=[(b"cache-control", b"no-store")]
    )
    assert (decision.store, decision.reason) == (False, "request-no-store")


def test_private_is_not_stored_by_a_shared_cache() -> None:
    decision = decide([(b"cache-control", b"private, max-age=3600")])
    assert (decision.store, decision.reason) == (False, "private")


@pytest.mark.parametrize(
    ("cache_control", "stored_ok"),
    [
        (b"max-age=3600", False),
        (b"max-age=3600, public", True),
        (b"s-maxage=3600", True),
        (b"max-age=3600, must-revalidate", True),
    ],
)
def test_authorization_needs_public_s_maxage_or_must_revalidate(
    cache_control: bytes, stored_ok: bool
) -> None:
    decision = decide(
        [(b"cache-control", cache_control)], request_headers=[(b"authorization", b"FOO")]
    )
    assert decision.store is stored_ok
    if not stored_ok:
        assert decision.reason == "authorization"


def test_authorization_with_only_expires_is_not_stored() -> None:
    decision = decide(
        [(b"expires", http_date(30 * 86400)), (b"date", http_date())],
        request_headers=[(b"authorization", b"FOO")],
    )
    assert not decision.store


def test_vary_star_is_not_stored() -> None:
    decision = decide([(b"cache-control", b"max-age=60"), (b"vary", b"Accept, *")])
    assert (decision.store, decision.reason) == (False, "vary-star")


def test_must_understand_stores_only_known_statuses() -> None:
    headers = [(b"cache-control", b"max-age=60, must-understand")]
    assert decide(headers, status=200).store
    assert not decide(headers, status=599).store


# -- Set-Cookie ----------------------------------------------------------------------------------


def test_set_cookie_without_explicit_sharing_is_not_stored() -> None:
    decision = decide([(b"cache-control", b"max-age=3600"), (b"set-cookie", b"sid=alice")])
    assert (decision.store, decision.reason) == (False, "set-cookie")


@pytest.mark.parametrize(
    "headers",
    [
        [(b"cache-control", b"public, max-age=3600")],
        [(b"cache-control", b"s-maxage=3600")],
        [(b"cache-control", b'max-age=3600, private="set-cookie"')],
        [(b"cache-control", b'max-age=3600, no-cache="Set-Cookie"')],
        [(b"cdn-cache-control", b"max-age=3600")],
    ],
)
def test_explicitly_shared_set_cookie_response_is_stored_without_the_cookie(
    headers: list[Header],
) -> None:
    entry = stored([*headers, (b"set-cookie", b"sid=alice"), (b"set-cookie2", b"x=1")])
    names = [name for name, _ in entry.headers]
    assert b"set-cookie" not in names and b"set-cookie2" not in names


# -- targeted fields -----------------------------------------------------------------------------


def test_cdn_no_store_wins_over_cache_control() -> None:
    decision = decide([(b"cache-control", b"max-age=10000"), (b"cdn-cache-control", b"no-store")])
    assert not decision.store


def test_cdn_max_age_overrides_cache_control_no_store() -> None:
    assert decide([(b"cache-control", b"no-store"), (b"cdn-cache-control", b"max-age=10000")]).store


def test_cdn_private_is_not_stored() -> None:
    decision = decide([(b"cdn-cache-control", b"private"), (b"cache-control", b"max-age=10000")])
    assert not decision.store


def test_invalid_cdn_field_falls_back_to_cache_control() -> None:
    decision = decide(
        [(b"cdn-cache-control", b"max-age=10000, &&&&&"), (b"cache-control", b"no-store")]
    )
    assert not decision.store


# -- which fields are stored (RFC 9111 §3.1) ----------------------------------------------------


def test_stored_copy_leaves_out_per_hop_and_listed_fields() -> None:
    entry = stored(
        [
            (b"cache-control", b'max-age=3600, no-cache="a, b"'),
            (b"connection", b"close, x-hop"),
            (b"x-hop", b"1"),
            (b"keep-alive", b"timeout=5"),
            (b"transfer-encoding", b"chunked"),
            (b"proxy-authenticate", b"Basic"),
            (b"content-length", b"10"),
            (b"age", b"5"),
            (b"a", b"1"),
            (b"b", b"2"),
            (b"c", b"3"),
            (b"content-type", b"text/plain"),
            (b"www-authenticate", b"Basic"),
            (b"strict-transport-security", b"max-age=1"),
        ]
    )
    names = {name for name, _ in entry.headers}
    for gone in (b"connection", b"x-hop", b"keep-alive", b"transfer-encoding", b"a", b"b"):
        assert gone not in names
    for gone in (b"proxy-authenticate", b"content-length", b"age"):
        assert gone not in names
    for kept in (b"c", b"content-type", b"www-authenticate", b"strict-transport-security"):
        assert kept in names


def test_stored_copy_keeps_the_targeted_field_for_downstream_caches() -> None:
    entry = stored([(b"cdn-cache-control", b"max-age=60"), (b"cache-control", b"no-store")])
    assert (b"cdn-cache-control", b"max-age=60") in entry.headers


def test_stored_copy_gets_a_date_when_the_origin_sent_none() -> None:
    entry = stored([(b"cache-control", b"max-age=60")], response_time=1_700_000_000.0)
    assert (b"date", b"Tue, 14 Nov 2023 22:13:20 GMT") in entry.headers
