"""Invalidation after unsafe methods (RFC 9111 §4.4)."""

from __future__ import annotations

import pytest

from millions.edge.headers import Header
from millions.edge.invalidation import invalidation_uris
from millions.edge.keys import request_key

pytestmark = pytest.mark.timeout(30)

TARGET = request_key(b"POST", b"http", b"example.com", b"/photos/1")


def uris(method: bytes, status: int, *headers: Header) -> list[bytes]:
    return invalidation_uris(method, status, TARGET, list(headers))


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"DELETE", b"PATCH", b"M-SEARCH"])
def test_unsafe_and_unknown_methods_invalidate_the_target(method: bytes) -> None:
    assert uris(method, 200) == [b"http://example.com/photos/1"]


@pytest.mark.parametrize("method", [b"GET", b"HEAD", b"OPTIONS", b"TRACE"])
def test_safe_methods_invalidate_nothing(method: bytes) -> None:
    assert uris(method, 200) == []


@pytest.mark.parametrize(("status", "invalidates"), [(201, True), (303, True), (404, False)])
def test_only_non_error_responses_invalidate(status: int, invalidates: bool) -> None:
    assert bool(uris(b"POST", status)) is invalidates
    assert uris(b"POST", 500) == []


def test_location_and_content_location_on_the_same_origin() -> None:
    result = uris(
        b"PUT",
        201,
        (b"location", b"/photos/2"),
        (b"content-location", b"http://EXAMPLE.com:80/photos/2?v=1"),
    )
    assert result == [
        b"http://example.com/photos/1",
        b"http://example.com/photos/2",
        b"http://example.com/photos/2?v=1",
    ]


def test_relative_references_resolve_against_the_target() -> None:
    assert uris(b"POST", 200, (b"location", b"3"))[1:] == [b"http://example.com/photos/3"]
    assert uris(b"POST", 200, (b"location", b"../about"))[1:] == [b"http://example.com/about"]


@pytest.mark.parametrize(
    "location",
    [
        b"http://other.example/photos/2",
        b"https://example.com/photos/2",
        b"http://example.com:8080/photos/2",
        b"//other.example/x",
        b"http://example.com/a b",
    ],
)
def test_other_origins_and_unkeyable_references_are_not_invalidated(location: bytes) -> None:
    assert uris(b"POST", 200, (b"location", location)) == [b"http://example.com/photos/1"]


def test_a_reference_equal_to_the_target_is_listed_once() -> None:
    assert uris(b"DELETE", 204, (b"content-location", b"/photos/1")) == [
        b"http://example.com/photos/1"
    ]
