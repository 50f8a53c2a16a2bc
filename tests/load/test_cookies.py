"""Per-user cookie handling: set, replace, expire, and never crash on odd headers."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from millions.load.cookies import apply_set_cookie, cookie_header

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def test_session_cookie_is_stored_and_sent_back() -> None:
    jar: dict[str, str] = {}
    apply_set_cookie(jar, ["millions_session=abc.DEF-1_2; HttpOnly; Path=/; SameSite=lax"], NOW)
    assert jar == {"millions_session": "abc.DEF-1_2"}
    assert cookie_header(jar) == "millions_session=abc.DEF-1_2"


def test_new_value_replaces_old_and_other_cookies_stay() -> None:
    jar = {"millions_session": "old", "theme": "dark"}
    apply_set_cookie(jar, ["millions_session=new; Path=/"], NOW)
    assert jar == {"millions_session": "new", "theme": "dark"}
    assert cookie_header(jar) == "millions_session=new; theme=dark"


def test_max_age_zero_deletes() -> None:
    jar = {"millions_session": "abc"}
    apply_set_cookie(jar, ['millions_session=""; Max-Age=0; Path=/'], NOW)
    assert jar == {}


def test_expires_in_the_past_deletes_and_in_future_keeps() -> None:
    jar = {"a": "1", "b": "2"}
    apply_set_cookie(
        jar,
        [
            "a=; expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/",
            "b=3; expires=Fri, 01 Jan 2100 00:00:00 GMT; Path=/",
        ],
        NOW,
    )
    assert jar == {"b": "3"}


def test_empty_jar_sends_no_cookie_text() -> None:
    assert cookie_header({}) == ""


@given(st.lists(st.text(max_size=80), max_size=5))
def test_arbitrary_set_cookie_text_never_raises(headers: list[str]) -> None:
    jar: dict[str, str] = {"millions_session": "keep"}
    apply_set_cookie(jar, headers, NOW)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in jar.items())
