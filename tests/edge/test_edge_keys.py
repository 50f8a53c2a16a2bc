"""Primary cache keys and refusal of hostile request targets (RFC 9110 §4.2.3, RFC 3986 §6)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from millions.edge.keys import CacheKeyError, is_override_field, normalize_target, request_key

pytestmark = pytest.mark.timeout(30)


def key(host: bytes, target: bytes, scheme: bytes = b"http", method: bytes = b"GET") -> bytes:
    return request_key(method, scheme, host, target).key


def test_plain_request() -> None:
    result = request_key(b"GET", b"http", b"example.com", b"/a/b?x=1&y=2")
    assert result.key == result.uri == b"http://example.com/a/b?x=1&y=2"
    assert (result.host, result.target) == (b"example.com", b"/a/b?x=1&y=2")


def test_get_and_head_share_a_key_other_methods_do_not() -> None:
    assert key(b"example.com", b"/a", method=b"HEAD") == key(b"example.com", b"/a")
    post = request_key(b"POST", b"http", b"example.com", b"/a")
    assert post.key == b"POST http://example.com/a"
    assert post.uri == key(b"example.com", b"/a")


@pytest.mark.parametrize(
    ("scheme", "host", "expected"),
    [
        (b"http", b"Example.COM", b"example.com"),
        (b"http", b"example.com:80", b"example.com"),
        (b"https", b"example.com:443", b"example.com"),
        (b"http", b"example.com:443", b"example.com:443"),
        (b"http", b"example.com:0080", b"example.com"),
        (b"http", b"example.com.", b"example.com"),
        (b"http", b"example.com:", b"example.com"),
        (b"http", b"127.0.0.1:8080", b"127.0.0.1:8080"),
        (b"http", b"[::1]:8080", b"[::1]:8080"),
        (b"https", b"[2001:DB8::1]", b"[2001:db8::1]"),
    ],
)
def test_host_normalization(scheme: bytes, host: bytes, expected: bytes) -> None:
    assert request_key(b"GET", scheme, host, b"/").host == expected


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (b"/%7euser/a%2fb", b"/~user/a%2Fb"),
        (b"/a%41b", b"/aAb"),
        (b"/a|b?q={x}", b"/a%7Cb?q=%7Bx%7D"),
        (b"/caf\xc3\xa9", b"/caf%C3%A9"),
        (b'/"quoted"<>', b"/%22quoted%22%3C%3E"),
        (b"/a/../b", b"/a/../b"),
        (b"/search?q=a+b&x=%20", b"/search?q=a+b&x=%20"),
    ],
)
def test_target_normalization(target: bytes, expected: bytes) -> None:
    assert request_key(b"GET", b"http", b"h", target).target == expected


def test_different_queries_are_different_keys() -> None:
    assert key(b"h", b"/a?test=1") != key(b"h", b"/a?test=2")
    assert key(b"h", b"/a?x=1&y=2") != key(b"h", b"/a?y=2&x=1")


def test_absolute_form_for_the_same_host_is_normalized() -> None:
    assert key(b"example.com", b"HTTP://EXAMPLE.com:80/a?b") == b"http://example.com/a?b"
    assert key(b"example.com", b"http://example.com?b") == b"http://example.com/?b"


@pytest.mark.parametrize(
    ("host", "target", "scheme"),
    [
        (b"example.com", b"http://evil.example/a", b"http"),  # another host
        (b"example.com", b"https://example.com/a", b"http"),  # another scheme
        (b"example.com", b"http://user@example.com/a", b"http"),  # userinfo
        (b"example.com\r\nX-Injected: 1", b"/", b"http"),
        (b"example.com\n", b"/", b"http"),
        (b"exa mple.com", b"/", b"http"),
        (b"example.com/evil", b"/", b"http"),
        (b"evil@example.com", b"/", b"http"),
        (b"example.com:99999", b"/", b"http"),
        (b"example.com:8x", b"/", b"http"),
        (b"[::1", b"/", b"http"),
        (b"", b"/", b"http"),
        (b"example.com", b"/a b", b"http"),
        (b"example.com", b"/a\r\nX: 1", b"http"),
        (b"example.com", b"/a\x00", b"http"),
        (b"example.com", b"/a#frag", b"http"),
        (b"example.com", b"/a%zz", b"http"),
        (b"example.com", b"/a%4", b"http"),
        (b"example.com", b"*", b"http"),
        (b"example.com", b"example.com:443", b"http"),
        (b"example.com", b"/" + b"a" * 9000, b"http"),
        (b"example.com", b"/", b"ftp"),
    ],
)
def test_hostile_input_is_refused(host: bytes, target: bytes, scheme: bytes) -> None:
    with pytest.raises(CacheKeyError):
        request_key(b"GET", scheme, host, target)


def test_key_length_limit_is_configurable() -> None:
    with pytest.raises(CacheKeyError):
        request_key(b"GET", b"http", b"h", b"/" + b"a" * 100, max_length=50)


@given(st.binary(max_size=40), st.binary(max_size=120), st.sampled_from([b"http", b"https"]))
def test_arbitrary_input_gives_a_key_or_a_clear_error(
    host: bytes, target: bytes, scheme: bytes
) -> None:
    try:
        result = request_key(b"GET", scheme, host, target)
    except CacheKeyError:
        return
    assert result.key.startswith(scheme + b"://")
    assert not any(byte <= 0x20 or byte >= 0x7F for byte in result.key)


@given(st.binary(max_size=80).map(lambda tail: b"/" + tail))
def test_target_normalization_is_idempotent(target: bytes) -> None:
    try:
        once = normalize_target(target)
    except CacheKeyError:
        return
    assert normalize_target(once) == once


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        (b"x-forwarded-host", True),
        (b"x_forwarded_host", True),
        (b"x-original_url", True),
        (b"x-http-host-override", True),
        (b"x_custom_field", False),
        (b"x-forwarded-for", False),
        (b"host", False),
    ],
)
def test_override_fields_are_recognized_in_either_spelling(name: bytes, overrides: bool) -> None:
    assert is_override_field(name) is overrides
