"""Validation (RFC 9111 §4.3, RFC 9110 §8.8.3 and §13)."""

from __future__ import annotations

import pytest
from edge_support import NOW, http_date, stored

from millions.edge.cache_control import NO_DIRECTIVES
from millions.edge.entry import CachedResponse
from millions.edge.freshness import Reuse, decide_reuse
from millions.edge.headers import Header
from millions.edge.messages import ResponseHead, parse_request, parse_response
from millions.edge.validation import (
    Conditional,
    Revalidation,
    evaluate_conditional,
    freshen,
    not_modified_fields,
    origin_request_fields,
    revalidation_outcome,
    select_for_update,
    strong_match,
    weak_match,
)

pytestmark = pytest.mark.timeout(30)

LAST_MODIFIED = http_date(-86400)


def entry_with(
    *headers: Header, max_age: int = 1, status: int = 200, at: float = NOW
) -> CachedResponse:
    base: list[Header] = [(b"cache-control", b"max-age=%d" % max_age), (b"date", http_date())]
    return stored([*base, *headers], status=status, request_time=at, response_time=at)


# -- entity-tag comparison (RFC 9110 §8.8.3.2 table) --------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "strong", "weak"),
    [
        (b'W/"1"', b'W/"1"', False, True),
        (b'W/"1"', b'W/"2"', False, False),
        (b'W/"1"', b'"1"', False, True),
        (b'"1"', b'"1"', True, True),
    ],
)
def test_entity_tag_comparison(first: bytes, second: bytes, strong: bool, weak: bool) -> None:
    assert strong_match(first, second) is strong
    assert weak_match(first, second) is weak


def test_unquoted_tags_compare_as_quoted() -> None:
    assert strong_match(b"abcdef", b'"abcdef"')


# -- conditional requests to the origin (§4.3.1) ------------------------------------------------


def test_fill_request_drops_client_preconditions_and_range() -> None:
    client: list[Header] = [
        (b"host", b"example.com"),
        (b"if-none-match", b'"x"'),
        (b"if-modified-since", LAST_MODIFIED),
        (b"if-match", b'"y"'),
        (b"if-unmodified-since", LAST_MODIFIED),
        (b"range", b"bytes=0-1"),
        (b"if-range", b'"x"'),
        (b"accept", b"text/html"),
    ]
    assert origin_request_fields(client) == [(b"host", b"example.com"), (b"accept", b"text/html")]


def test_revalidation_sends_stored_validators() -> None:
    entry = entry_with((b"etag", b'"abc"'), (b"last-modified", LAST_MODIFIED))
    other = entry_with((b"etag", b'W/"old"'))
    fields = origin_request_fields([(b"abc", b"123")], entry, [other])
    assert fields == [
        (b"abc", b"123"),
        (b"if-none-match", b'"abc", W/"old"'),
        (b"if-modified-since", LAST_MODIFIED),
    ]


def test_revalidation_without_validators_is_unconditional() -> None:
    assert origin_request_fields([(b"a", b"1")], entry_with()) == [(b"a", b"1")]


# -- a 304 from the origin (§4.3.3, §4.3.4, §3.2) ----------------------------------------------


def not_modified(*headers: Header) -> ResponseHead:
    return parse_response(304, list(headers))


def test_strong_etag_selects_all_matching_stored_responses() -> None:
    first = entry_with((b"etag", b'"a"'))
    second = entry_with((b"etag", b'"a"'), at=NOW + 1)
    other = entry_with((b"etag", b'"b"'))
    selected = select_for_update(not_modified((b"etag", b'"a"')), [first, other, second])
    assert selected == [first, second]


def test_unmatched_validator_selects_nothing() -> None:
    assert select_for_update(not_modified((b"etag", b'"z"')), [entry_with((b"etag", b'"a"'))]) == []


def test_weak_etag_selects_the_most_recent_match() -> None:
    old = entry_with((b"etag", b'W/"a"'))
    new = entry_with((b"etag", b'W/"a"'), at=NOW + 5)
    assert select_for_update(not_modified((b"etag", b'W/"a"')), [new, old]) == [new]


def test_last_modified_selects_the_matching_response() -> None:
    entry = entry_with((b"last-modified", LAST_MODIFIED))
    other = entry_with((b"last-modified", http_date(-5)))
    assert select_for_update(not_modified((b"last-modified", LAST_MODIFIED)), [other, entry]) == [
        entry
    ]


def test_304_without_validators_selects_only_a_single_stored_response() -> None:
    entry = entry_with((b"etag", b'"a"'))
    assert select_for_update(not_modified(), [entry]) == [entry]
    assert select_for_update(not_modified(), [entry, entry_with()]) == []


def test_freshen_updates_stored_fields_and_restarts_freshness() -> None:
    entry = entry_with(
        (b"etag", b'"a"'),
        (b"test-header", b"A"),
        (b"content-type", b"text/plain"),
        (b"x-kept", b"1"),
    )
    assert decide_reuse(entry, NO_DIRECTIVES, NOW + 10).reuse is Reuse.REVALIDATE
    response = not_modified(
        (b"cache-control", b"max-age=3600"),
        (b"date", http_date(10)),
        (b"etag", b'"a"'),
        (b"test-header", b"B"),
        (b"content-type", b"text/plain;charset=utf-8"),
        (b"content-length", b"0"),
        (b"set-cookie", b"a=c"),
        (b"connection", b"x-hop"),
        (b"x-hop", b"1"),
    )
    updated = freshen(entry, response, request_time=NOW + 10, response_time=NOW + 10)
    headers = dict(updated.headers)
    assert headers[b"test-header"] == b"B"
    assert headers[b"content-type"] == b"text/plain;charset=utf-8"
    assert headers[b"x-kept"] == b"1"
    assert headers[b"date"] == http_date(10)
    for absent in (b"content-length", b"set-cookie", b"connection", b"x-hop"):
        assert absent not in headers
    assert [name for name, _ in updated.headers].count(b"cache-control") == 1
    decision = decide_reuse(updated, NO_DIRECTIVES, NOW + 20)
    assert (decision.reuse, decision.age) == (Reuse.FRESH, 10)


def test_freshen_stamps_a_date_when_the_304_has_none() -> None:
    entry = entry_with((b"etag", b'"a"'))
    updated = freshen(entry, not_modified(), request_time=NOW + 50, response_time=NOW + 50)
    assert dict(updated.headers)[b"date"] == http_date(50)


def test_freshen_clears_invalidation() -> None:
    entry = entry_with((b"etag", b'"a"'), max_age=3600).invalidate()
    updated = freshen(entry, not_modified(), request_time=NOW, response_time=NOW)
    assert not updated.invalidated
    assert decide_reuse(updated, NO_DIRECTIVES, NOW + 1).reuse is Reuse.FRESH


@pytest.mark.parametrize(
    ("status", "on_error", "outcome"),
    [
        (304, False, Revalidation.NOT_MODIFIED),
        (200, True, Revalidation.USE_RESPONSE),
        (404, True, Revalidation.USE_RESPONSE),
        (503, True, Revalidation.SERVE_STALE),
        (503, False, Revalidation.USE_RESPONSE),
        (501, True, Revalidation.USE_RESPONSE),
        (None, True, Revalidation.SERVE_STALE),
        (None, False, Revalidation.FAIL),
    ],
)
def test_revalidation_outcome(status: int | None, on_error: bool, outcome: Revalidation) -> None:
    assert revalidation_outcome(status, on_error) is outcome


# -- clients' conditional requests (RFC 9110 §13.2.2, RFC 9111 §4.3.2) ---------------------------


def evaluate(entry: CachedResponse, *headers: Header, method: bytes = b"GET") -> Conditional:
    return evaluate_conditional(parse_request(method, list(headers)), entry)


@pytest.mark.parametrize(
    ("etag", "if_none_match"),
    [
        (b'"abcdef"', b'"abcdef"'),
        (b'W/"abcdef"', b'W/"abcdef"'),
        (b'"abcdef"', b'W/"abcdef"'),
        (b'"abcdef"', b'"1234", "abcdef", "5678"'),
        (b'"abcdef"', b"*"),
    ],
)
def test_if_none_match_uses_weak_comparison(etag: bytes, if_none_match: bytes) -> None:
    entry = entry_with((b"etag", etag))
    assert evaluate(entry, (b"if-none-match", if_none_match)) is Conditional.NOT_MODIFIED
    assert evaluate(entry, (b"if-none-match", if_none_match), method=b"HEAD") is (
        Conditional.NOT_MODIFIED
    )


def test_if_none_match_mismatch_sends_the_full_response() -> None:
    assert evaluate(entry_with((b"etag", b'"a"')), (b"if-none-match", b'"b"')) is Conditional.FULL


def test_if_none_match_takes_precedence_over_if_modified_since() -> None:
    entry = entry_with((b"etag", b'"a"'), (b"last-modified", LAST_MODIFIED))
    result = evaluate(entry, (b"if-none-match", b'"b"'), (b"if-modified-since", http_date()))
    assert result is Conditional.FULL


def test_if_modified_since() -> None:
    entry = entry_with((b"last-modified", LAST_MODIFIED))
    assert evaluate(entry, (b"if-modified-since", LAST_MODIFIED)) is Conditional.NOT_MODIFIED
    assert evaluate(entry, (b"if-modified-since", http_date())) is Conditional.NOT_MODIFIED
    assert evaluate(entry, (b"if-modified-since", http_date(-90000))) is Conditional.FULL
    assert evaluate(entry, (b"if-modified-since", b"yesterday")) is Conditional.FULL


def test_if_modified_since_without_last_modified_uses_date() -> None:
    entry = entry_with()
    assert evaluate(entry, (b"if-modified-since", http_date(10))) is Conditional.NOT_MODIFIED
    assert evaluate(entry, (b"if-modified-since", http_date(-10))) is Conditional.FULL


def test_origin_only_preconditions_are_forwarded() -> None:
    entry = entry_with((b"etag", b'"a"'))
    assert evaluate(entry, (b"if-match", b'"a"')) is Conditional.FORWARD
    assert evaluate(entry, (b"if-unmodified-since", http_date())) is Conditional.FORWARD


def test_preconditions_are_ignored_for_a_stored_error() -> None:
    entry = entry_with((b"etag", b'"a"'), status=404)
    assert evaluate(entry, (b"if-none-match", b'"a"')) is Conditional.FULL


def test_not_modified_fields() -> None:
    entry = entry_with(
        (b"etag", b'"a"'),
        (b"last-modified", LAST_MODIFIED),
        (b"content-type", b"text/html"),
        (b"vary", b"Accept"),
        (b"expires", http_date(5)),
        (b"content-location", b"/a"),
    )
    names = {name for name, _ in not_modified_fields(entry)}
    assert names == {b"cache-control", b"date", b"etag", b"vary", b"expires", b"content-location"}
    without_etag = entry_with((b"last-modified", LAST_MODIFIED))
    assert (b"last-modified", LAST_MODIFIED) in not_modified_fields(without_etag)
