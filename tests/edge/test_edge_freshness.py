"""Freshness lifetime, age and the reuse decision (RFC 9111 §4.2, RFC 5861, RFC 8246)."""

from __future__ import annotations

import pytest
from edge_support import NOW, http_date, stored
from hypothesis import given
from hypothesis import strategies as st

from millions.edge.cache_control import NO_DIRECTIVES, CacheControl, parse_cache_control
from millions.edge.entry import CachedResponse
from millions.edge.freshness import (
    HEURISTIC_MAX_SECONDS,
    Reuse,
    corrected_initial_age,
    current_age,
    decide_reuse,
    freshness_lifetime,
)
from millions.edge.headers import Header
from millions.edge.messages import parse_request, parse_response

pytestmark = pytest.mark.timeout(30)


def lifetime(headers: list[Header], status: int = 200) -> float:
    return freshness_lifetime(parse_response(status, headers), received_at=NOW)


def request(value: bytes) -> CacheControl:
    return parse_cache_control(value)


# -- freshness lifetime (§4.2.1, §4.2.2) -------------------------------------------------------


def test_s_maxage_beats_max_age_beats_expires() -> None:
    expires = (b"expires", http_date(100))
    date = (b"date", http_date())
    assert lifetime([(b"cache-control", b"max-age=3600, s-maxage=1"), expires, date]) == 1
    assert lifetime([(b"cache-control", b"s-maxage=1, max-age=3600"), expires, date]) == 1
    assert lifetime([(b"cache-control", b"max-age=1, s-maxage=3600")]) == 3600
    assert lifetime([(b"cache-control", b"max-age=60"), expires, date]) == 60
    assert lifetime([expires, date]) == 100


def test_max_age_zero_wins_over_a_future_expires() -> None:
    headers = [(b"cache-control", b"max-age=0"), (b"expires", http_date(10000))]
    assert lifetime([*headers, (b"date", http_date())]) == 0


def test_expires_is_relative_to_date_or_to_receipt() -> None:
    assert lifetime([(b"expires", http_date(100)), (b"date", http_date(-50))]) == 150
    assert lifetime([(b"expires", http_date(100))]) == 100


@pytest.mark.parametrize("value", [b"0", b"-1", b"yesterday", http_date(-10)])
def test_invalid_or_past_expires_is_already_expired(value: bytes) -> None:
    assert lifetime([(b"expires", value), (b"date", http_date())]) == 0


def test_heuristic_is_ten_percent_of_the_age_of_last_modified() -> None:
    headers = [(b"last-modified", http_date(-10_000)), (b"date", http_date())]
    assert lifetime(headers) == pytest.approx(1000)


def test_heuristic_is_capped() -> None:
    headers = [(b"last-modified", http_date(-400 * 86400)), (b"date", http_date())]
    assert lifetime(headers) == HEURISTIC_MAX_SECONDS


def test_no_heuristic_for_other_statuses_unless_public() -> None:
    headers = [(b"last-modified", http_date(-10_000)), (b"date", http_date())]
    assert lifetime(headers, status=201) == 0
    assert lifetime(headers, status=599) == 0
    assert lifetime([*headers, (b"cache-control", b"public")], status=599) == pytest.approx(1000)


def test_no_heuristic_when_expiration_is_explicit() -> None:
    headers = [(b"last-modified", http_date(-10_000)), (b"expires", b"0")]
    assert lifetime(headers) == 0


def test_no_information_means_not_fresh() -> None:
    assert lifetime([]) == 0


# -- age (§4.2.3) -------------------------------------------------------------------------------


def test_age_calculation_worked_example() -> None:
    # Request sent at 100, response (Date 101, Age 5) received at 102.
    # apparent_age = max(0, 102 - 101) = 1; corrected_age_value = 5 + (102 - 100) = 7.
    initial = corrected_initial_age(5, 101.0, request_time=100.0, response_time=102.0)
    assert initial == 7
    assert current_age(initial, response_time=102.0, now=112.0) == 17


def test_apparent_age_wins_when_larger() -> None:
    assert corrected_initial_age(0, 50.0, request_time=100.0, response_time=100.0) == 50


def test_date_in_the_future_gives_no_negative_age() -> None:
    assert corrected_initial_age(0, 500.0, request_time=100.0, response_time=100.0) == 0


def test_age_header_is_added_and_grows() -> None:
    entry = stored([(b"cache-control", b"max-age=600"), (b"date", http_date()), (b"age", b"30")])
    assert decide_reuse(entry, NO_DIRECTIVES, NOW + 3).age == 33


def test_invalid_age_header_is_ignored() -> None:
    for value in (b"abc", b"-7200", b"7200.0", b"7200, 0"):
        entry = stored([(b"cache-control", b"max-age=3600"), (b"age", value)])
        assert entry.initial_age == 0


# -- the reuse decision ----------------------------------------------------------------------


def entry_with(cache_control: bytes, **extra: bytes) -> CachedResponse:
    headers: list[Header] = [(b"cache-control", cache_control), (b"date", http_date())]
    headers += [(name.replace("_", "-").encode(), value) for name, value in extra.items()]
    return stored(headers)


def test_fresh_response_is_served() -> None:
    decision = decide_reuse(entry_with(b"max-age=3600"), NO_DIRECTIVES, NOW + 10)
    assert (decision.reuse, decision.age, decision.serve_stale_on_error) == (Reuse.FRESH, 10, True)


def test_age_beyond_max_age_needs_revalidation() -> None:
    entry = entry_with(b"max-age=3600", age=b"7200")
    assert decide_reuse(entry, NO_DIRECTIVES, NOW).reuse is Reuse.REVALIDATE


def test_max_age_zero_is_never_reused_without_validation() -> None:
    assert decide_reuse(entry_with(b"max-age=0"), NO_DIRECTIVES, NOW + 1).reuse is Reuse.REVALIDATE


def test_no_cache_always_revalidates_and_never_serves_stale() -> None:
    decision = decide_reuse(entry_with(b"max-age=10000, no-cache"), NO_DIRECTIVES, NOW + 1)
    assert (decision.reuse, decision.serve_stale_on_error) == (Reuse.REVALIDATE, False)


@pytest.mark.parametrize("directive", [b"must-revalidate", b"proxy-revalidate"])
def test_revalidate_directives_forbid_stale(directive: bytes) -> None:
    entry = entry_with(b"max-age=2, stale-while-revalidate=60, stale-if-error=60, " + directive)
    fresh = decide_reuse(entry, request(b"no-cache"), NOW + 1)
    assert (fresh.reuse, fresh.serve_stale_on_error) == (Reuse.REVALIDATE, True)
    assert decide_reuse(entry, NO_DIRECTIVES, NOW + 1).reuse is Reuse.FRESH
    stale = decide_reuse(entry, request(b"max-stale=100"), NOW + 10, error_grace=100)
    assert (stale.reuse, stale.serve_stale_on_error) == (Reuse.REVALIDATE, False)


def test_s_maxage_implies_proxy_revalidate_for_unsolicited_staleness() -> None:
    entry = entry_with(b"s-maxage=2")
    decision = decide_reuse(entry, request(b"max-stale=100"), NOW + 10, error_grace=100)
    assert (decision.reuse, decision.serve_stale_on_error) == (Reuse.REVALIDATE, False)


def test_s_maxage_keeps_the_origins_explicit_stale_directives() -> None:
    entry = entry_with(b"s-maxage=2, stale-while-revalidate=30, stale-if-error=60")
    decision = decide_reuse(entry, NO_DIRECTIVES, NOW + 10)
    assert (decision.reuse, decision.serve_stale_on_error) == (Reuse.STALE_WHILE_REVALIDATE, True)


def test_stale_while_revalidate_window() -> None:
    entry = entry_with(b"max-age=1, stale-while-revalidate=30")
    assert decide_reuse(entry, NO_DIRECTIVES, NOW + 10).reuse is Reuse.STALE_WHILE_REVALIDATE
    assert decide_reuse(entry, NO_DIRECTIVES, NOW + 40).reuse is Reuse.REVALIDATE


def test_stale_if_error_window() -> None:
    entry = entry_with(b"max-age=2, stale-if-error=60")
    inside = decide_reuse(entry, NO_DIRECTIVES, NOW + 30)
    assert (inside.reuse, inside.serve_stale_on_error) == (Reuse.REVALIDATE, True)
    assert not decide_reuse(entry, NO_DIRECTIVES, NOW + 100).serve_stale_on_error


def test_request_stale_if_error_and_error_grace_extend_the_window() -> None:
    entry = entry_with(b"max-age=2")
    assert not decide_reuse(entry, NO_DIRECTIVES, NOW + 30).serve_stale_on_error
    assert decide_reuse(entry, request(b"stale-if-error=60"), NOW + 30).serve_stale_on_error
    assert decide_reuse(entry, NO_DIRECTIVES, NOW + 30, error_grace=60).serve_stale_on_error


def test_request_no_cache_revalidates_a_fresh_response() -> None:
    entry = entry_with(b"max-age=3600")
    assert decide_reuse(entry, request(b"no-cache"), NOW + 1).reuse is Reuse.REVALIDATE


def test_pragma_no_cache_counts_only_without_cache_control() -> None:
    entry = entry_with(b"max-age=3600")
    pragma = parse_request(b"GET", [(b"pragma", b"no-cache")]).cache_control
    assert decide_reuse(entry, pragma, NOW + 1).reuse is Reuse.REVALIDATE
    both = parse_request(b"GET", [(b"pragma", b"no-cache"), (b"cache-control", b"max-age=60")])
    assert decide_reuse(entry, both.cache_control, NOW + 1).reuse is Reuse.FRESH


def test_immutable_ignores_reload_directives_while_fresh() -> None:
    entry = entry_with(b"max-age=10000, immutable")
    assert decide_reuse(entry, request(b"no-cache"), NOW + 1).reuse is Reuse.FRESH
    assert decide_reuse(entry, request(b"max-age=0"), NOW + 1).reuse is Reuse.FRESH
    assert decide_reuse(entry, request(b"no-cache"), NOW + 20000).reuse is Reuse.REVALIDATE


def test_request_max_age() -> None:
    entry = entry_with(b"max-age=3600", age=b"1800")
    assert decide_reuse(entry, request(b"max-age=600"), NOW).reuse is Reuse.REVALIDATE
    assert decide_reuse(entry, request(b"max-age=0"), NOW + 0.5).reuse is Reuse.REVALIDATE
    assert decide_reuse(entry, request(b"max-age=2000"), NOW).reuse is Reuse.FRESH


def test_request_min_fresh() -> None:
    entry = entry_with(b"max-age=1500", age=b"1000")
    assert decide_reuse(entry, request(b"min-fresh=1000"), NOW).reuse is Reuse.REVALIDATE
    assert decide_reuse(entry, request(b"min-fresh=100"), NOW).reuse is Reuse.FRESH


def test_request_max_stale() -> None:
    entry = entry_with(b"max-age=1500", age=b"2000")
    assert decide_reuse(entry, request(b"max-stale=1000"), NOW).reuse is Reuse.STALE_ALLOWED
    assert decide_reuse(entry, request(b"max-stale=100"), NOW).reuse is Reuse.REVALIDATE
    assert decide_reuse(entry, request(b"max-stale"), NOW + 10**6).reuse is Reuse.STALE_ALLOWED


def test_only_if_cached() -> None:
    entry = entry_with(b"max-age=60")
    assert decide_reuse(entry, request(b"only-if-cached"), NOW + 1).reuse is Reuse.FRESH
    stale = decide_reuse(entry, request(b"only-if-cached"), NOW + 100)
    assert stale.reuse is Reuse.GATEWAY_TIMEOUT


def test_invalidated_entry_is_revalidated_but_may_serve_on_error() -> None:
    entry = entry_with(b"max-age=3600, stale-while-revalidate=60").invalidate()
    decision = decide_reuse(entry, NO_DIRECTIVES, NOW + 1)
    assert (decision.reuse, decision.serve_stale_on_error) == (Reuse.REVALIDATE, True)


def test_cdn_cache_control_takes_precedence() -> None:
    short_cdn = stored([(b"cache-control", b"max-age=3600"), (b"cdn-cache-control", b"max-age=1")])
    assert decide_reuse(short_cdn, NO_DIRECTIVES, NOW + 10).reuse is Reuse.REVALIDATE
    long_cdn = stored([(b"cache-control", b"max-age=1"), (b"cdn-cache-control", b"max-age=3600")])
    assert decide_reuse(long_cdn, NO_DIRECTIVES, NOW + 10).reuse is Reuse.FRESH
    no_cache = stored([(b"cdn-cache-control", b"no-cache"), (b"cache-control", b"max-age=9999")])
    assert decide_reuse(no_cache, NO_DIRECTIVES, NOW + 1).reuse is Reuse.REVALIDATE


def test_cdn_max_age_with_past_or_invalid_expires_is_fresh() -> None:
    for expires in (http_date(-10000), b"0"):
        entry = stored(
            [(b"cdn-cache-control", b"max-age=3600"), (b"expires", expires), (b"date", http_date())]
        )
        assert decide_reuse(entry, NO_DIRECTIVES, NOW + 10).reuse is Reuse.FRESH


# -- monotonicity ----------------------------------------------------------------------------

_RANK = {
    Reuse.FRESH: 0,
    Reuse.STALE_ALLOWED: 1,
    Reuse.STALE_WHILE_REVALIDATE: 1,
    Reuse.REVALIDATE: 2,
    Reuse.GATEWAY_TIMEOUT: 2,
}

_optional_seconds = st.none() | st.integers(0, 5000)


@st.composite
def response_cache_control(draw: st.DrawFn) -> bytes:
    """A response Cache-Control value with any mix of freshness-related directives."""
    members = [b"public"]
    for name in (b"max-age", b"s-maxage", b"stale-while-revalidate", b"stale-if-error"):
        seconds = draw(_optional_seconds)
        if seconds is not None:
            members.append(b"%s=%d" % (name, seconds))
    for flag in (b"no-cache", b"must-revalidate", b"proxy-revalidate", b"immutable"):
        if draw(st.booleans()):
            members.append(flag)
    return b", ".join(members)


@st.composite
def request_directives(draw: st.DrawFn) -> CacheControl:
    return CacheControl(
        max_age=draw(_optional_seconds),
        max_stale=draw(_optional_seconds),
        min_fresh=draw(_optional_seconds),
        stale_if_error=draw(_optional_seconds),
        no_cache=draw(st.booleans()),
        only_if_cached=draw(st.booleans()),
    )


@given(
    response_cache_control(),
    request_directives(),
    st.integers(0, 5000),
    st.floats(0, 10_000),
    st.floats(0, 10_000),
    st.floats(0, 1000),
    st.booleans(),
)
def test_more_resident_time_never_makes_a_response_fresher(
    cache_control: bytes,
    request_cc: CacheControl,
    age_header: int,
    first_wait: float,
    more_wait: float,
    grace: float,
    invalidated: bool,
) -> None:
    entry = stored([(b"cache-control", cache_control), (b"age", b"%d" % age_header)])
    if invalidated:
        entry = entry.invalidate()
    earlier = decide_reuse(entry, request_cc, NOW + first_wait, error_grace=grace)
    later = decide_reuse(entry, request_cc, NOW + first_wait + more_wait, error_grace=grace)
    assert later.age >= earlier.age
    assert _RANK[later.reuse] >= _RANK[earlier.reuse]
    assert earlier.serve_stale_on_error or not later.serve_stale_on_error
