"""HTTP-date parsing and formatting (RFC 9110 §5.6.7).

A recipient MUST accept all three formats: IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`),
the obsolete RFC 850 form (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime
(`Sun Nov  6 08:49:37 1994`). IMF-fixdate is what every current server sends, so it has a
byte-level fast path; RFC 850 is hand-parsed because its two-digit year needs the §5.6.7
"more than 50 years in the future" rule that the stdlib does not apply; anything else goes
to `email.utils.parsedate_tz`, which is robust with the Internet Message Format variants
(§5.6.7 encourages that robustness: such dates come from non-HTTP sources).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_tz

_MONTHS = {
    name: number
    for number, name in enumerate(
        b"jan feb mar apr may jun jul aug sep oct nov dec".split(),
        start=1,
    )
}
_IMF_FIXDATE = re.compile(
    rb"[A-Za-z]{3}, (\d\d) ([A-Za-z]{3}) (\d{4}) (\d\d):(\d\d):(\d\d) [Gg][Mm][Tt]"
)
_RFC850 = re.compile(
    rb"[A-Za-z]{6,9}, (\d\d)-([A-Za-z]{3})-(\d\d) (\d\d):(\d\d):(\d\d) [Gg][Mm][Tt]"
)
#: Dates longer than this are not HTTP-dates; refusing them early bounds the work.
_MAX_DATE_LENGTH = 64


def _timestamp(year: int, month: int, day: int, hour: int, minute: int, second: int) -> float:
    if second == 60:  # a leap second (RFC 9110 §5.6.7 allows 60); count it as :59
        second = 59
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


def parse_http_date(value: bytes, *, current_year: int | None = None) -> float | None:
    """Seconds since the epoch for an HTTP-date, or None when `value` is not a date.

    `current_year` anchors RFC 850 two-digit years (default: the clock's year).
    """
    value = value.strip(b" \t")
    if len(value) > _MAX_DATE_LENGTH:
        return None
    try:
        match = _IMF_FIXDATE.fullmatch(value)
        if match is not None:
            day, month_name, year, hour, minute, second = match.groups()
            month = _MONTHS.get(month_name.lower())
            if month is None:
                return None
            return _timestamp(int(year), month, int(day), int(hour), int(minute), int(second))
        match = _RFC850.fullmatch(value)
        if match is not None:
            day, month_name, short_year, hour, minute, second = match.groups()
            month = _MONTHS.get(month_name.lower())
            if month is None:
                return None
            now_year = current_year if current_year is not None else time.gmtime().tm_year
            year = now_year - now_year % 100 + int(short_year)
            if year > now_year + 50:
                year -= 100
            return _timestamp(year, month, int(day), int(hour), int(minute), int(second))
        parsed = parsedate_tz(value.decode("latin-1"))
        if parsed is None:
            return None
        year, month, day, hour, minute, second = parsed[:6]
        offset = parsed[9] or 0
        return _timestamp(year, month, day, hour, minute, second) - offset
    except (ValueError, OverflowError, IndexError):
        return None


def format_http_date(timestamp: float) -> bytes:
    """IMF-fixdate for `timestamp` (what a sender MUST generate, RFC 9110 §5.6.7)."""
    return formatdate(timestamp, usegmt=True).encode("ascii")
