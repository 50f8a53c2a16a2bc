"""The session cookie and the commit plan: pure decisions, tested without any I/O."""

from __future__ import annotations

import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from session_support import FakeClock, parse_set_cookie

from millions.sessions.base import Session
from millions.sessions.commit import CommitPlan, plan_commit
from millions.sessions.cookies import CookieReading, SessionCookies, is_https

TTL_S = 1800


def cookies(clock: FakeClock | None = None, secret: str = "test-secret") -> SessionCookies:
    return SessionCookies(secret, "sid", TTL_S, clock or FakeClock())


def test_a_signed_cookie_reads_back_its_session_id_and_age() -> None:
    clock = FakeClock()
    jar = cookies(clock)
    session_id = secrets.token_urlsafe(32)
    value = jar.sign(session_id)
    clock.advance(42)
    assert jar.read(value) == CookieReading(session_id=session_id, age_s=42.0)


def test_a_cookie_older_than_the_ttl_is_expired() -> None:
    clock = FakeClock()
    jar = cookies(clock)
    value = jar.sign(secrets.token_urlsafe(32))
    clock.advance(TTL_S + 1)
    assert jar.read(value) == CookieReading(problem="expired")


def test_a_cookie_from_a_server_whose_clock_runs_ahead_is_accepted() -> None:
    clock = FakeClock()
    value = cookies(FakeClock(clock.now + 3)).sign(secrets.token_urlsafe(32))
    reading = cookies(clock).read(value)
    assert reading.session_id is not None and reading.age_s == 0.0


def test_a_cookie_signed_with_another_secret_is_rejected() -> None:
    value = cookies(secret="other").sign(secrets.token_urlsafe(32))
    assert cookies().read(value) == CookieReading(problem="bad_signature")


def test_a_well_signed_value_that_is_not_a_session_id_is_malformed() -> None:
    jar = cookies()
    assert jar.read(jar.sign("short")) == CookieReading(problem="malformed")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("x" * 257, "oversized"),
        ("caf\u00e9", "malformed"),
        ("", "bad_signature"),
        ("a.b.c", "bad_signature"),
        ("no-separator", "bad_signature"),
    ],
)
def test_junk_cookie_values_are_classified(value: str, problem: str) -> None:
    reading = cookies().read(value)
    assert reading.session_id is None and reading.problem == problem
    assert reading.present


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_any_text_reads_without_raising_and_never_yields_a_session(value: str) -> None:
    reading = cookies().read(value)
    assert reading.session_id is None
    assert reading.problem is not None


@settings(max_examples=300)
@given(st.data())
def test_a_bit_flip_never_yields_a_different_session(data: st.DataObject) -> None:
    jar = cookies()
    session_id = secrets.token_urlsafe(32)
    raw = bytearray(jar.sign(session_id).encode())
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] ^= 1 << data.draw(st.integers(0, 7))
    reading = jar.read(raw.decode("latin-1"))
    # A flip in the base64 padding bits of the signature decodes to the same signature,
    # so it may still name the same session; it can never name another one.
    assert reading.session_id in (None, session_id)


def test_the_cookie_is_found_among_request_headers() -> None:
    jar = cookies()
    session_id = secrets.token_urlsafe(32)
    value = jar.sign(session_id)
    headers = [(b"cookie", b"theme=dark"), (b"cookie", f"a=1; sid={value}; b=2".encode())]
    assert jar.read_headers(headers).session_id == session_id
    assert jar.read_headers([(b"cookie", b"sidebar=1")]) == CookieReading()
    assert jar.read_headers([]) == CookieReading()


def test_set_and_clear_headers_carry_the_security_attributes() -> None:
    jar = cookies()
    session_id = secrets.token_urlsafe(32)
    name, value, attributes = parse_set_cookie(jar.set_header(session_id, False).decode())
    assert name == "sid" and jar.read(value).session_id == session_id
    assert attributes == {"max-age": str(TTL_S), "path": "/", "httponly": "", "samesite": "Lax"}
    name, value, attributes = parse_set_cookie(jar.clear_header(True).decode())
    assert (name, value, attributes["max-age"]) == ("sid", "", "0")
    assert "secure" in attributes and "httponly" in attributes


@pytest.mark.parametrize(
    ("scheme", "headers", "expected"),
    [
        ("https", [], True),
        ("http", [], False),
        ("http", [(b"x-forwarded-proto", b"https")], True),
        ("http", [(b"x-forwarded-proto", b"HTTPS , http")], True),
        ("http", [(b"x-forwarded-proto", b"http")], False),
        ("http", [(b"x-forwarded-for", b"https")], False),
    ],
)
def test_https_detection(scheme: str, headers: list[tuple[bytes, bytes]], expected: bool) -> None:
    assert is_https(scheme, headers) is expected


@pytest.mark.parametrize("bad", ["", "has space", "semi;colon", "x" * 65])
def test_cookie_names_are_validated(bad: str) -> None:
    with pytest.raises(ValueError):
        SessionCookies("secret", bad, TTL_S, FakeClock())


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="secret"):
        SessionCookies("", "sid", TTL_S, FakeClock())


# The commit plan -------------------------------------------------------------------

SID = "s" * 43
VALID = CookieReading(session_id=SID, age_s=5.0)
NO_COOKIE = CookieReading()
TAMPERED = CookieReading(problem="bad_signature")


def loaded(data: dict[str, object] | None = None) -> Session:
    return Session(SID, data if data is not None else {"user_id": 1})


def test_an_untouched_anonymous_session_costs_nothing() -> None:
    assert plan_commit(Session(None), None, NO_COOKIE, 60) == CommitPlan()


def test_an_anonymous_session_emptied_again_is_not_stored() -> None:
    session = Session(None)
    session["x"] = 1
    del session["x"]
    assert plan_commit(session, None, NO_COOKIE, 60) == CommitPlan()


def test_a_tampered_cookie_is_cleared_when_nothing_replaces_it() -> None:
    assert plan_commit(Session(None), None, TAMPERED, 60) == CommitPlan(cookie="clear")


def test_an_unknown_but_well_signed_cookie_is_left_alone() -> None:
    assert plan_commit(Session(None), None, VALID, 60) == CommitPlan()


def test_first_data_creates_a_session() -> None:
    session = Session(None)
    session["cart"] = [1]
    assert plan_commit(session, None, TAMPERED, 60) == CommitPlan(
        save="new", cookie="set", created=True
    )


def test_a_changed_session_is_saved_under_its_id() -> None:
    session = loaded()
    session["theme"] = "dark"
    assert plan_commit(session, SID, VALID, 60) == CommitPlan(save="existing", cookie="set")


def test_an_emptied_session_is_deleted() -> None:
    session = loaded()
    session.clear()
    assert plan_commit(session, SID, VALID, 60) == CommitPlan(
        delete_ids=(SID,), cookie="clear", destroyed=True
    )


def test_rotation_moves_the_data_to_a_new_id_and_deletes_the_old() -> None:
    session = loaded()
    session.rotate()
    session["user_id"] = 2
    assert plan_commit(session, SID, VALID, 60) == CommitPlan(
        save="new", delete_ids=(SID,), cookie="set", rotated=True
    )


def test_rotating_an_anonymous_session_just_creates_one() -> None:
    session = Session(None)
    session.rotate()
    session["user_id"] = 2
    assert plan_commit(session, None, NO_COOKIE, 60) == CommitPlan(
        save="new", cookie="set", created=True
    )


def test_destroy_deletes_and_clears() -> None:
    session = loaded()
    session.destroy()
    assert plan_commit(session, SID, VALID, 60) == CommitPlan(
        delete_ids=(SID,), cookie="clear", destroyed=True
    )


def test_destroy_after_rotate_deletes_the_original_once() -> None:
    session = loaded()
    session.rotate()
    session.destroy()
    assert plan_commit(session, SID, VALID, 60).delete_ids == (SID,)


def test_data_written_after_destroy_starts_a_new_session() -> None:
    session = loaded()
    session.destroy()
    session["flash"] = "logged out"
    assert plan_commit(session, SID, VALID, 60) == CommitPlan(
        save="new", delete_ids=(SID,), cookie="set", created=True, destroyed=True
    )


def test_destroying_an_anonymous_session_touches_nothing() -> None:
    session = Session(None)
    session.destroy()
    assert plan_commit(session, None, NO_COOKIE, 60) == CommitPlan()


@pytest.mark.parametrize(
    ("age_s", "interval_s", "touch"),
    [(5.0, 60, False), (59.9, 60, False), (60.0, 60, True), (300.0, 60, True), (0.0, 0, True)],
)
def test_an_unchanged_session_is_touched_once_per_interval(
    age_s: float, interval_s: float, touch: bool
) -> None:
    plan = plan_commit(loaded(), SID, CookieReading(session_id=SID, age_s=age_s), interval_s)
    expected = CommitPlan(touch=True, cookie="set") if touch else CommitPlan()
    assert plan == expected
