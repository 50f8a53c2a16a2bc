"""Queue URL parsing (pure): engines, paths, hosts, and one clear error for the rest."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from millions.queue.urls import QueueURLError, parse_queue_url


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///var/lib/q.db", "/var/lib/q.db"),
        ("sqlite://queue.db", "queue.db"),
        ("sqlite:relative/q.db", "relative/q.db"),
        ("/abs/queue.sqlite3", "/abs/queue.sqlite3"),
        ("./here.db", "here.db"),
    ],
)
def test_sqlite_urls_name_a_file(url: str, path: str) -> None:
    parsed = parse_queue_url(url)
    assert parsed.engine == "sqlite"
    assert parsed.path == Path(path)
    assert parsed.redacted() == url


@pytest.mark.parametrize(
    "url",
    [
        "amqp://guest:guest@127.0.0.1:5672/",
        "amqp://127.0.0.1",
        "amqps://user@broker.example:5671/vhost",
        "amqp://u:p@[::1]:5672/%2F",
    ],
)
def test_amqp_urls_are_rabbitmq(url: str) -> None:
    parsed = parse_queue_url(url)
    assert (parsed.engine, parsed.url, parsed.path) == ("rabbitmq", url, None)


def test_the_password_is_redacted_for_display() -> None:
    parsed = parse_queue_url("amqp://guest:s3cret@127.0.0.1:5672/vh")
    assert parsed.redacted() == "amqp://guest:***@127.0.0.1:5672/vh"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("redis://127.0.0.1", "unsupported"),
        ("queue.db", "unsupported"),
        ("sqlite://", "names no file"),
        ("sqlite:///tmp/", "directory"),
        ("sqlite:///tmp/\x00x", "NUL"),
        ("amqp://", "host"),
        ("amqp://:5672/", "host"),
        ("amqp://host:99999/", "bad amqp URL"),
        ("amqp://host:port/", "bad amqp URL"),
        ("amqp://host:0/", "between 1 and 65535"),
        ("amqp://ho st/", "spaces"),
        ("amqp://host/?heartbeat=5", "query"),
        ("amqp://bad_host!/", "host"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, problem: str) -> None:
    with pytest.raises(QueueURLError, match=problem) as caught:
        parse_queue_url(url)
    assert "\n" not in str(caught.value)


@given(st.text(max_size=80))
def test_any_text_parses_or_is_a_queue_url_error(text: str) -> None:
    try:
        parsed = parse_queue_url(text)
    except QueueURLError:
        return
    assert parsed.engine in ("sqlite", "rabbitmq")
    assert (parsed.path is not None) == (parsed.engine == "sqlite")


@given(st.text(max_size=60).map(lambda tail: "amqp://" + tail))
def test_any_amqp_text_parses_or_is_a_queue_url_error(text: str) -> None:
    try:
        parsed = parse_queue_url(text)
    except QueueURLError:
        return
    assert parsed.engine == "rabbitmq"
    assert "\n" not in parsed.redacted()


@given(
    host=st.from_regex(r"[a-z0-9][a-z0-9.\-]{0,30}", fullmatch=True),
    port=st.integers(1, 65535),
    user=st.from_regex(r"[a-z]{1,8}", fullmatch=True),
    password=st.from_regex(r"[A-Za-z0-9]{1,12}", fullmatch=True),
)
def test_generated_amqp_urls_parse_and_redact(
    host: str, port: int, user: str, password: str
) -> None:
    url = f"amqp://{user}:{password}@{host}:{port}/"
    parsed = parse_queue_url(url)
    assert parsed.engine == "rabbitmq"
    assert parsed.redacted() == f"amqp://{user}:***@{host}:{port}/"
