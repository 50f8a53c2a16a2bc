"""Cache-Control parsing (RFC 9111 §5.2, RFC 5861) and CDN-Cache-Control (RFC 9213)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from millions.edge.cache_control import (
    DELTA_SECONDS_MAX,
    NO_DIRECTIVES,
    CacheControl,
    parse_cache_control,
    parse_targeted_cache_control,
)
from millions.edge.structured_fields import SFString, StructuredFieldError, Token
from millions.edge.structured_fields import parse_dictionary as parse_sf_dictionary

pytestmark = pytest.mark.timeout(30)


def test_response_directives() -> None:
    parsed = parse_cache_control(
        b"public, max-age=600, s-maxage=60, must-revalidate, proxy-revalidate, immutable, "
        b"stale-while-revalidate=30, stale-if-error=86400, no-transform, must-understand"
    )
    assert parsed == CacheControl(
        max_age=600,
        s_maxage=60,
        stale_while_revalidate=30,
        stale_if_error=86400,
        public=True,
        must_revalidate=True,
        proxy_revalidate=True,
        immutable=True,
        no_transform=True,
        must_understand=True,
    )


def test_request_directives() -> None:
    parsed = parse_cache_control(b"max-age=0, max-stale=120, min-fresh=5, only-if-cached")
    assert (parsed.max_age, parsed.max_stale, parsed.min_fresh) == (0, 120, 5)
    assert parsed.only_if_cached


def test_bare_max_stale_accepts_any_staleness() -> None:
    assert parse_cache_control(b"max-stale").max_stale == DELTA_SECONDS_MAX


def test_no_store_and_no_cache() -> None:
    parsed = parse_cache_control(b"no-store, no-cache")
    assert parsed.no_store and parsed.no_cache and not parsed.no_cache_fields


def test_qualified_private_and_no_cache_keep_field_lists_lower_cased() -> None:
    parsed = parse_cache_control(b'private="Set-Cookie, X-User", no-cache="a"')
    assert not parsed.private and parsed.private_fields == {b"set-cookie", b"x-user"}
    assert not parsed.no_cache and parsed.no_cache_fields == {b"a"}


def test_unqualified_private_wins_over_qualified() -> None:
    assert parse_cache_control(b'private="a", private').private
    assert parse_cache_control(b'private, private="a"').private_fields == frozenset()


def test_qualified_field_lists_are_united() -> None:
    assert parse_cache_control(b'no-cache="a", no-cache="b"').no_cache_fields == {b"a", b"b"}


def test_empty_field_list_counts_as_unqualified() -> None:
    assert parse_cache_control(b'private=""').private


@pytest.mark.parametrize("value", [b"MaX-aGe=3600", b"max-age=3600", b'max-age="3600"'])
def test_names_case_insensitive_and_quoted_arguments_accepted(value: bytes) -> None:
    assert parse_cache_control(value).max_age == 3600


def test_case_insensitive_flags() -> None:
    assert parse_cache_control(b"No-StOrE").no_store
    assert parse_cache_control(b"max-age=10000, No-CaChE").no_cache


def test_directive_inside_quoted_string_is_ignored() -> None:
    """cache-tests freshness-max-age-ignore-quoted: the comma and max-age in the quotes
    belong to the extension's value."""
    assert parse_cache_control(b'extension="max-age=3600", max-age=1').max_age == 1
    assert parse_cache_control(b'max-age=1, extension="max-age=100"').max_age == 1
    assert parse_cache_control(b'extension="max-age=100", max-age="1"').max_age == 1


@pytest.mark.parametrize(
    "value",
    [
        b"max-age=a100",
        b"max-age=100a",
        b"max-age=-100",
        b"max-age=3600.5",
        b"max-age= 100",
        b"max-age='3600'",
        b"max-age=",
        b"max-age",
        b'max-age="1',
    ],
)
def test_invalid_max_age_means_stale(value: bytes) -> None:
    assert parse_cache_control(value).max_age == 0


def test_invalid_s_maxage_means_stale() -> None:
    assert parse_cache_control(b"s-maxage=soon").s_maxage == 0


def test_member_with_space_before_equals_is_ignored() -> None:
    assert parse_cache_control(b"max-age =3600").max_age is None


def test_invalid_other_numbers_are_ignored() -> None:
    parsed = parse_cache_control(b"stale-while-revalidate=x, stale-if-error=-1, min-fresh=")
    assert (parsed.stale_while_revalidate, parsed.stale_if_error, parsed.min_fresh) == (
        None,
        None,
        None,
    )


def test_leading_zeros_are_fine() -> None:
    assert parse_cache_control(b"max-age=003600").max_age == 3600


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"max-age=2147483647", 2147483647),
        (b"max-age=2147483648", DELTA_SECONDS_MAX),
        (b"max-age=99999999999", DELTA_SECONDS_MAX),
        (b"max-age=" + b"9" * 5000, DELTA_SECONDS_MAX),
    ],
)
def test_huge_numbers_clamp_to_2_pow_31(value: bytes, expected: int) -> None:
    assert parse_cache_control(value).max_age == expected


def test_duplicate_numbers_keep_first_occurrence() -> None:
    assert parse_cache_control(b"max-age=1800, max-age=1").max_age == 1800
    assert parse_cache_control(b"max-age=1, max-age=1800").max_age == 1
    assert parse_cache_control(b"max-age=abc, max-age=1800").max_age == 0


def test_unknown_directives_and_empty_members_are_ignored() -> None:
    assert parse_cache_control(b"foobar, , max-age=3600,,") == CacheControl(max_age=3600)
    assert parse_cache_control(b"") == NO_DIRECTIVES


# -- CDN-Cache-Control (RFC 9213) ------------------------------------------------------------


def test_targeted_field_directives() -> None:
    assert parse_targeted_cache_control(b"max-age=600") == CacheControl(max_age=600)
    parsed = parse_targeted_cache_control(b'private="set-cookie", stale-if-error=60, public')
    assert parsed == CacheControl(
        private_fields=frozenset({b"set-cookie"}), stale_if_error=60, public=True
    )
    assert parse_targeted_cache_control(b"no-store") == CacheControl(no_store=True)


def test_targeted_field_ignores_parameters_and_unknown_keys() -> None:
    assert parse_targeted_cache_control(b"foobar, max-age=60;x=1") == CacheControl(max_age=60)


def test_targeted_false_boolean_is_absent() -> None:
    assert parse_targeted_cache_control(b"no-store=?0, max-age=5") == CacheControl(max_age=5)


def test_targeted_repeated_key_keeps_last_value() -> None:
    """Structured Field Dictionaries keep the last value of a repeated key (RFC 9651)."""
    assert parse_targeted_cache_control(b"max-age=1, max-age=60") == CacheControl(max_age=60)


def test_targeted_huge_max_age_clamps() -> None:
    assert parse_targeted_cache_control(b"max-age=99999999999") == CacheControl(
        max_age=DELTA_SECONDS_MAX
    )


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"   ",
        b"max-age=10000, &&&&&",  # not a Structured Field
        b'max-age="10000"',  # wrong type
        b"max-age=-1",
        b"max-age=1.5",
        b"no-store=1",
        b"private=5",
        b"MaX-aGe=60",  # Dictionary keys are lower-case
        b"max-age =100",
        b"max-age= 100",
        b"max-age=60,",
    ],
)
def test_invalid_targeted_field_is_ignored(value: bytes) -> None:
    assert parse_targeted_cache_control(value) is None


def test_structured_field_dictionary_types() -> None:
    parsed = parse_sf_dictionary(b'a=1, b=2.5, c="x\\"y", d=tok/en, e=:aGVsbG8=:, f=?0, g=(1 2);p')
    assert parsed["a"] == (1, {})
    assert parsed["b"] == (2.5, {})
    assert parsed["c"] == (SFString('x"y'), {})
    assert parsed["d"] == (Token("tok/en"), {})
    assert parsed["e"] == (b"hello", {})
    assert parsed["f"] == (False, {})
    assert parsed["g"] == ([(1, {}), (2, {})], {"p": True})


@pytest.mark.parametrize(
    "value", [b"a=1,", b"a=(1", b'a="x', b"a=:@@:", b"a=?2", b"a=1234567890123456", b"A=1"]
)
def test_structured_field_errors(value: bytes) -> None:
    with pytest.raises(StructuredFieldError):
        parse_sf_dictionary(value)


# -- properties ------------------------------------------------------------------------------


@given(st.binary(max_size=300))
def test_parser_never_raises_and_stays_in_bounds(value: bytes) -> None:
    parsed = parse_cache_control.__wrapped__(value)
    for number in (parsed.max_age, parsed.s_maxage, parsed.max_stale, parsed.min_fresh):
        assert number is None or 0 <= number <= DELTA_SECONDS_MAX
    targeted = parse_targeted_cache_control.__wrapped__(value)
    assert targeted is None or isinstance(targeted, CacheControl)


@given(st.text(alphabet=' ,;=-"()?:*.0123456789abcdefmnoprstvxz\t\\', max_size=80))
def test_parsers_never_raise_on_directive_like_text(text: str) -> None:
    value = text.encode()
    assert isinstance(parse_cache_control.__wrapped__(value), CacheControl)
    result = parse_targeted_cache_control.__wrapped__(value)
    assert result is None or isinstance(result, CacheControl)


_NUMERIC = {
    "max-age": "max_age",
    "s-maxage": "s_maxage",
    "max-stale": "max_stale",
    "min-fresh": "min_fresh",
    "stale-while-revalidate": "stale_while_revalidate",
    "stale-if-error": "stale_if_error",
}
_FLAGS = {
    "public": "public",
    "no-store": "no_store",
    "must-revalidate": "must_revalidate",
    "proxy-revalidate": "proxy_revalidate",
    "immutable": "immutable",
    "only-if-cached": "only_if_cached",
    "no-transform": "no_transform",
}


@st.composite
def directive_lists(draw: st.DrawFn) -> tuple[bytes, dict[str, object]]:
    """A well-formed Cache-Control value with random case, spacing and quoting, and the
    attributes it must parse to."""
    numbers = draw(st.dictionaries(st.sampled_from(sorted(_NUMERIC)), st.integers(0, 10**12)))
    flags = draw(st.sets(st.sampled_from(sorted(_FLAGS))))
    fields = draw(st.sets(st.sampled_from(["set-cookie", "x-a", "authorization"]), max_size=2))
    members: list[tuple[str, str]] = []  # (name, "=argument" or "")
    expected: dict[str, object] = {}
    for name, seconds in numbers.items():
        quoted = draw(st.booleans())
        members.append((name, f'="{seconds}"' if quoted else f"={seconds}"))
        expected[_NUMERIC[name]] = min(seconds, DELTA_SECONDS_MAX)
    for name in flags:
        members.append((name, ""))
        expected[_FLAGS[name]] = True
    if fields:
        members.append(("private", '="' + ", ".join(sorted(fields)) + '"'))
        expected["private_fields"] = frozenset(field.encode() for field in fields)
    rendered = [
        draw(st.sampled_from([name, name.upper(), name.title()])) + argument
        for name, argument in draw(st.permutations(members))
    ]
    separator = draw(st.sampled_from([",", ", ", " ,\t", ",  "]))
    return separator.join(rendered).encode(), expected


@given(directive_lists())
def test_well_formed_directive_lists_round_trip(case: tuple[bytes, dict[str, object]]) -> None:
    value, expected = case
    assert parse_cache_control.__wrapped__(value) == CacheControl(**expected)  # type: ignore[arg-type]


@given(
    st.sampled_from(sorted(_NUMERIC)),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.sampled_from([", ", ","]),
)
def test_duplicate_directive_keeps_first(name: str, first: int, second: int, sep: str) -> None:
    value = f"{name}={first}{sep}{name}={second}".encode()
    assert getattr(parse_cache_control.__wrapped__(value), _NUMERIC[name]) == first


@given(st.sampled_from(sorted(_FLAGS)), st.integers(1, 4))
def test_repeated_flag_is_the_flag(name: str, times: int) -> None:
    value = ", ".join([name] * times).encode()
    assert getattr(parse_cache_control.__wrapped__(value), _FLAGS[name]) is True
