"""Pure decisions of the app: input rules, settings, CSRF and same-origin checks, 304s."""

from __future__ import annotations

import re
import string
from email.utils import formatdate
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from millions.app import csrf
from millions.app.media import is_not_modified
from millions.app.settings import (
    DEFAULT_DATA_DIR,
    DEFAULT_MAX_UPLOAD_BYTES,
    SettingsError,
    settings_from_env,
)
from millions.app.validation import (
    TITLE_MAX,
    clean_title,
    parse_id,
    password_problem,
    username_problem,
)

USERNAME_CHARS = string.ascii_lowercase + string.digits + "_"


@given(st.text(alphabet=USERNAME_CHARS, min_size=3, max_size=32))
def test_every_well_formed_username_is_accepted(name: str) -> None:
    assert username_problem(name) is None


@given(st.text(max_size=40))
def test_username_rule_is_exactly_3_to_32_of_a_z_0_9_underscore(name: str) -> None:
    valid = 3 <= len(name) <= 32 and all(ch in USERNAME_CHARS for ch in name)
    assert (username_problem(name) is None) == valid


@pytest.mark.parametrize("name", ["ab", "a" * 33, "Alice", "al ice", "alice\n", "ålice", "al-ice"])
def test_malformed_usernames_get_a_sentence(name: str) -> None:
    problem = username_problem(name)
    assert problem is not None and "3-32 characters" in problem


@given(st.text(min_size=0, max_size=300))
def test_password_rule_is_8_to_256_characters_of_real_text(password: str) -> None:
    encodable = not any(0xD800 <= ord(ch) <= 0xDFFF for ch in password)
    valid = 8 <= len(password) <= 256 and encodable
    assert (password_problem(password) is None) == valid


def test_a_lone_surrogate_password_is_refused_not_crashed() -> None:
    assert password_problem("abcdefgh\ud800") == "password must be valid Unicode text"


@given(st.text(max_size=500))
def test_clean_titles_are_short_single_line_and_trimmed(title: str) -> None:
    cleaned = clean_title(title)
    assert len(cleaned) <= TITLE_MAX
    assert cleaned == cleaned.strip()
    assert "  " not in cleaned
    assert all(ch.isprintable() for ch in cleaned)
    assert clean_title(cleaned) == cleaned


@given(st.text(max_size=30))
def test_parse_id_accepts_only_positive_decimal_ids_that_fit_sqlite(text: str) -> None:
    parsed = parse_id(text)
    if parsed is not None:
        assert re.fullmatch(r"[0-9]{1,18}", text)
        assert 0 < parsed < 2**63
        assert parsed == int(text)


@given(st.integers(min_value=1, max_value=10**18 - 1))
def test_parse_id_round_trips_every_storable_id(value: int) -> None:
    assert parse_id(str(value)) == value


def test_settings_come_from_arguments_then_environment_then_defaults(tmp_path: Path) -> None:
    env = {
        "MILLIONS_DATA_DIR": str(tmp_path),
        "MILLIONS_MAX_UPLOAD_BYTES": "2048",
        "MILLIONS_COMPONENT": "web-eu-west-2",
    }
    from_env = settings_from_env(env)
    assert (from_env.data_dir, from_env.max_upload_bytes) == (tmp_path, 2048)
    assert from_env.component == "web-eu-west-2"
    assert from_env.shards.directory == str((tmp_path / "shards").resolve())
    explicit = settings_from_env(env, data_dir=tmp_path / "x", max_upload_bytes=9)
    assert (explicit.data_dir, explicit.max_upload_bytes) == (tmp_path / "x", 9)
    defaults = settings_from_env({})
    assert defaults.data_dir == DEFAULT_DATA_DIR
    assert defaults.max_upload_bytes == DEFAULT_MAX_UPLOAD_BYTES
    assert defaults.component  # the host name


@pytest.mark.parametrize("raw", ["ten", "1.5", "-5", "0"])
def test_bad_upload_limit_in_environment_is_a_clear_error(raw: str) -> None:
    with pytest.raises(SettingsError, match=r"MILLIONS_MAX_UPLOAD_BYTES|at least 1 byte"):
        settings_from_env({"MILLIONS_MAX_UPLOAD_BYTES": raw})


def test_form_tokens_live_in_the_session_and_are_renewed() -> None:
    session: dict[str, object] = {}
    token = csrf.session_token(session)
    assert len(token) >= 32
    assert csrf.session_token(session) == token
    assert csrf.token_matches(session, token)
    for wrong in [None, "", token + "x", 42]:
        assert not csrf.token_matches(session, wrong)
    assert not csrf.token_matches({}, token)
    csrf.renew_token(session)
    assert not csrf.token_matches(session, token)


@pytest.mark.parametrize(
    ("method", "headers", "allowed"),
    [
        ("GET", {"sec-fetch-site": "cross-site"}, True),
        ("POST", {}, True),  # not a browser
        ("POST", {"sec-fetch-site": "same-origin"}, True),
        ("POST", {"sec-fetch-site": "none"}, True),  # typed into the address bar
        ("POST", {"sec-fetch-site": "cross-site"}, False),
        ("POST", {"sec-fetch-site": "same-site"}, False),
        ("POST", {"sec-fetch-site": "same-origin", "origin": "https://evil.example"}, True),
        ("POST", {"origin": "http://site.test:8000", "host": "site.test:8000"}, True),
        ("POST", {"origin": "http://SITE.test", "host": "site.test"}, True),
        ("POST", {"origin": "http://site.test:8001", "host": "site.test:8000"}, False),
        ("DELETE", {"origin": "https://evil.example", "host": "site.test"}, False),
        ("POST", {"origin": "null", "host": "site.test"}, False),
        ("POST", {"origin": "http://site.test"}, False),  # no Host to compare with
    ],
)
def test_cross_origin_rule(method: str, headers: dict[str, str], allowed: bool) -> None:
    reason = csrf.cross_origin_reason(method, headers)
    assert (reason is None) == allowed
    if reason is not None:
        assert "cross-site request refused" in reason


ETAG = '"abc123"'
MODIFIED = 1_700_000_000.25


@pytest.mark.parametrize(
    ("headers", "not_modified"),
    [
        ({}, False),
        ({"if-none-match": ETAG}, True),
        ({"if-none-match": f"W/{ETAG}"}, True),
        ({"if-none-match": f'"zzz", {ETAG}'}, True),
        ({"if-none-match": "*"}, True),
        ({"if-none-match": '"zzz"'}, False),
        # If-None-Match wins even when If-Modified-Since alone would say 304.
        (
            {"if-none-match": '"zzz"', "if-modified-since": formatdate(MODIFIED + 60, usegmt=True)},
            False,
        ),
        ({"if-modified-since": formatdate(MODIFIED, usegmt=True)}, True),
        ({"if-modified-since": formatdate(MODIFIED - 60, usegmt=True)}, False),
        ({"if-modified-since": "yesterday-ish"}, False),
    ],
)
def test_conditional_get(headers: dict[str, str], not_modified: bool) -> None:
    assert is_not_modified(headers, ETAG, MODIFIED) is not_modified


@given(st.text(max_size=60))
def test_any_if_modified_since_value_is_handled(value: str) -> None:
    assert is_not_modified({"if-modified-since": value}, ETAG, MODIFIED) in (True, False)
