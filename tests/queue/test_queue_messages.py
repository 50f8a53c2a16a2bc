"""Payload encoding and decoding (pure): limits, clear errors, no crash on bad bytes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from millions.queue.messages import (
    MessageDecodeError,
    MessageTooLargeError,
    UnserializableMessageError,
    check_queue_name,
    decode_payload,
    encode_payload,
)

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)


@given(JSON_VALUES)
def test_every_json_value_round_trips(value: Any) -> None:
    assert decode_payload(encode_payload(value, 1 << 30)) == value


@given(st.binary(max_size=300))
def test_decoding_arbitrary_bytes_never_raises_anything_else(body: bytes) -> None:
    try:
        decode_payload(body)
    except MessageDecodeError as exc:
        assert str(exc).startswith("message body is")


@given(st.text(max_size=200))
def test_decoding_arbitrary_text_never_raises_anything_else(text: str) -> None:
    try:
        decode_payload(text.encode("utf-8", "surrogatepass"))
    except MessageDecodeError:
        pass


@pytest.mark.parametrize(
    "body",
    [b"[" * 200_000, b'{"a":' * 50_000, b"1" * 5000, b"\xc3\x28", b"NaN", b"[Infinity]", b"\x00"],
    ids=["deep-list", "deep-object", "huge-int", "bad-utf8", "nan", "infinity", "nul"],
)
def test_pathological_bodies_are_decode_errors(body: bytes) -> None:
    with pytest.raises(MessageDecodeError):
        decode_payload(body)


def test_the_size_limit_counts_encoded_utf8_bytes() -> None:
    assert len(encode_payload("é" * 10, 22)) == 22  # 20 bytes plus the quotes
    with pytest.raises(MessageTooLargeError) as caught:
        encode_payload("é" * 11, 22)
    assert caught.value.size == 24
    assert "24 bytes" in str(caught.value) and "22-byte limit" in str(caught.value)


def test_a_lone_surrogate_is_kept_as_an_escape() -> None:
    body = encode_payload({"text": "\ud800"})
    assert body.isascii()
    assert decode_payload(body) == {"text": "\ud800"}


def test_a_deeply_nested_payload_is_unserializable_not_a_crash() -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(UnserializableMessageError):
        encode_payload(deep)


def test_the_encoding_is_compact_json() -> None:
    assert encode_payload({"a": [1, 2], "b": "ü"}) == '{"a":[1,2],"b":"ü"}'.encode()
    assert json.loads(encode_payload({"a": 1})) == {"a": 1}


@given(st.text(max_size=130))
def test_queue_names_are_accepted_only_in_the_safe_alphabet(name: str) -> None:
    try:
        assert check_queue_name(name) == name
    except ValueError as exc:
        assert "queue name" in str(exc)
    else:
        assert name.isascii() and " " not in name and 1 <= len(name) <= 120
