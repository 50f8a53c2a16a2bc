"""HTTP-date parsing and formatting (RFC 9110 §5.6.7)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from millions.edge.dates import format_http_date, parse_http_date

pytestmark = pytest.mark.timeout(30)

#: RFC 9110 §5.6.7's example instant, Sun, 06 Nov 1994 08:49:37 GMT.
EXAMPLE = 784111777.0


@pytest.mark.parametrize(
    "value",
    [
        b"Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
        b"Sunday, 06-Nov-94 08:49:37 GMT",  # obsolete RFC 850 format
        b"Sun Nov  6 08:49:37 1994",  # ANSI C asctime() format
    ],
)
def test_all_three_formats(value: bytes) -> None:
    assert parse_http_date(value, current_year=2024) == EXAMPLE


def test_rfc850_year_more_than_50_years_ahead_is_in_the_past() -> None:
    assert parse_http_date(b"Friday, 01-Jan-80 00:00:00 GMT", current_year=2024) == 315532800.0
    assert parse_http_date(b"Sunday, 01-Jan-73 00:00:00 GMT", current_year=2024) == (
        parse_http_date(b"Sun, 01 Jan 2073 00:00:00 GMT")
    )


@pytest.mark.parametrize(
    "value",
    [
        b"Thu, 18 AUG 2050 02:01:18 GMT",
        b"THU, 18 Aug 2050 02:01:18 gmt",
        b"Thu, 18 Aug 2050 02:01:18 UTC",
        b"Thu 18 Aug 2050 02:01:18 GMT",
        b"Thu, 18  Aug  2050 02:01:18 GMT",
    ],
)
def test_lenient_variants_parse_to_the_same_instant(value: bytes) -> None:
    assert parse_http_date(value) == parse_http_date(b"Thu, 18 Aug 2050 02:01:18 GMT")


@pytest.mark.parametrize(
    "value",
    [
        b"0",
        b"-1",
        b"",
        b"garbage",
        b"Thu, 32 Aug 2050 02:01:18 GMT",
        b"Thu, 18 Foo 2050 1:2:3 GMT",
        b"Sun, 06 Nov 1994 08:49:37 GMT" * 10,
    ],
)
def test_invalid_dates(value: bytes) -> None:
    assert parse_http_date(value) is None


def test_leap_second_counts_as_59() -> None:
    assert parse_http_date(b"Sun, 06 Nov 1994 08:49:60 GMT") == EXAMPLE + 22


def test_format_is_imf_fixdate() -> None:
    assert format_http_date(EXAMPLE) == b"Sun, 06 Nov 1994 08:49:37 GMT"


@given(st.integers(0, 253402300799))
def test_format_then_parse_round_trips(seconds: int) -> None:
    assert parse_http_date(format_http_date(float(seconds))) == float(seconds)


@given(st.binary(max_size=80))
def test_parse_never_raises(value: bytes) -> None:
    result = parse_http_date(value)
    assert result is None or isinstance(result, float)
