"""`millions queue status|dlq list|retry|purge` through Typer's test runner."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from queue_support import RABBITMQ_URL, require_service
from typer.testing import CliRunner

from millions.queue.cli import queue_app
from millions.queue.config import QueueConfig
from millions.queue.rabbitmq import RabbitQueue
from millions.queue.sqlite import SqliteQueue

pytestmark = pytest.mark.timeout(30)

runner = CliRunner()


def _seed(path: Path) -> list[str]:
    """photos: 2 ready, 1 delayed, 2 dead letters (one not valid UTF-8); mail: 1 ready."""

    async def seed() -> list[str]:
        queue = SqliteQueue(path, QueueConfig())
        try:
            for n in range(2):
                await queue.publish("photos", {"n": n})
            await queue.publish("photos", {"later": True}, delay_s=600)
            await queue.publish("mail", {"to": "a@example.com"})
            dead = [await queue.publish("photos", {"dead": n}) for n in range(2)]
            leased = await queue.receive("photos", max_messages=4)
            for delivery in leased:
                if delivery.message_id in dead:
                    await queue.nack(delivery, f"bad {delivery.payload}", retry=False)
                else:
                    await queue.release(delivery)
        finally:
            await queue.close()
        return dead

    return asyncio.run(seed())


@pytest.fixture
def seeded(tmp_path: Path) -> tuple[str, list[str]]:
    path = tmp_path / "queue.db"
    return f"sqlite://{path}", _seed(path)


def test_status_shows_every_queue(seeded: tuple[str, list[str]]) -> None:
    url, _ = seeded
    result = runner.invoke(queue_app, ["status", "--url", url, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    by_name = {q["queue"]: q for q in report["queues"]}
    assert set(by_name) == {"mail", "photos"}
    photos = by_name["photos"]
    assert (photos["ready"], photos["delayed"], photos["dead"], photos["in_flight"]) == (2, 1, 2, 0)
    assert photos["publish_rate"] > 0
    table = runner.invoke(queue_app, ["status"], env={"MILLIONS_QUEUE_URL": url})
    assert table.exit_code == 0
    assert "photos" in table.output and "mail" in table.output


def test_without_a_url_the_topology_queue_is_used(
    seeded: tuple[str, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No --url and no MILLIONS_QUEUE_URL: the queue of the topology in ./millions.toml."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (tmp_path / "queue.db").rename(run_dir / "queue.sqlite3")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "millions.toml").write_text(f'run_dir = "{run_dir}"\n')
    result = runner.invoke(queue_app, ["status", "--json"], env={})
    assert result.exit_code == 0, result.output
    assert {q["queue"] for q in json.loads(result.output)["queues"]} == {"mail", "photos"}

    (tmp_path / "millions.toml").write_text(f'run_dir = "{tmp_path / "nothing"}"\n')
    missing = runner.invoke(queue_app, ["status"], env={})
    assert missing.exit_code == 2
    assert "no queue database at" in missing.output and "millions up" in missing.output
    (tmp_path / "millions.toml").write_text("run_dir = 5\n")
    broken = runner.invoke(queue_app, ["status"], env={})
    assert broken.exit_code == 2 and "topology config is unusable" in broken.output


def test_dlq_list_retry_and_purge(seeded: tuple[str, list[str]]) -> None:
    url, dead = seeded
    listed = runner.invoke(queue_app, ["dlq", "list", "photos", "--url", url, "--json"])
    assert listed.exit_code == 0, listed.output
    letters = json.loads(listed.output)
    assert sorted(letter["message_id"] for letter in letters) == sorted(dead)
    assert {letter["body"] for letter in letters} == {'{"dead":0}', '{"dead":1}'}
    table = runner.invoke(queue_app, ["dlq", "list", "photos", "--url", url])
    assert "dead letters of photos" in table.output

    retried = runner.invoke(queue_app, ["dlq", "retry", "photos", "--url", url, "--id", dead[0]])
    assert retried.exit_code == 0
    assert "re-drove 1 dead letter back to photos" in retried.output
    missing = runner.invoke(queue_app, ["dlq", "retry", "photos", "--url", url, "--id", dead[0]])
    assert missing.exit_code == 1
    assert "1 of the given ids are not dead letters of photos" in missing.output

    refused = runner.invoke(queue_app, ["dlq", "purge", "photos", "--url", url])
    assert refused.exit_code == 2 and "--yes" in refused.output
    purged = runner.invoke(queue_app, ["dlq", "purge", "photos", "--url", url, "--yes"])
    assert purged.exit_code == 0 and "purged 1 dead letter of photos" in purged.output
    status = json.loads(runner.invoke(queue_app, ["status", "--url", url, "--json"]).output)
    photos = next(q for q in status["queues"] if q["queue"] == "photos")
    assert (photos["ready"], photos["dead"]) == (3, 0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["status", "--url", "http://x"], "unsupported queue URL scheme 'http'"),
        (["status", "--url", "sqlite:///nonexistent/q.db"], "no queue database at"),
        (["status", "--url", "amqp://guest:guest@127.0.0.1/"], "name them with --queue"),
        (["dlq", "list", "bad name", "--url", "QUEUE_FILE"], "queue name must be"),
        (["status", "--url", "QUEUE_FILE", "--queue", "x.dead"], "reserved part"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    args: list[str], message: str, seeded: tuple[str, list[str]]
) -> None:
    url, _ = seeded
    result = runner.invoke(queue_app, [url if a == "QUEUE_FILE" else a for a in args], env={})
    assert result.exit_code == 2
    assert message in result.output
    assert result.output.count("\n") == 1, result.output


def test_every_command_has_help() -> None:
    for args in (["--help"], ["status", "--help"], ["dlq", "--help"]):
        assert runner.invoke(queue_app, args).exit_code == 0
    for command in ("list", "retry", "purge"):
        result = runner.invoke(queue_app, ["dlq", command, "--help"])
        assert result.exit_code == 0 and "QUEUE" in result.output


def test_an_unreachable_broker_exits_1_with_one_line() -> None:
    result = runner.invoke(
        queue_app, ["status", "--url", "amqp://guest:guest@127.0.0.1:1/", "--queue", "photos"]
    )
    assert result.exit_code == 1
    assert "cannot reach RabbitMQ" in result.output
    assert result.output.count("\n") == 1, result.output


def test_status_on_rabbitmq_with_named_queues() -> None:
    require_service("rabbitmq")
    name = f"test-{uuid.uuid4().hex[:12]}"

    async def seed() -> None:
        queue = RabbitQueue(RABBITMQ_URL)
        try:
            await queue.publish(name, {"n": 1})
            await queue.publish(name, {"n": 2}, delay_s=600)
        finally:
            await queue.close()

    async def delete() -> None:
        queue = RabbitQueue(RABBITMQ_URL)
        try:
            await queue.delete_queue(name)
        finally:
            await queue.close()

    asyncio.run(seed())
    try:
        result = runner.invoke(
            queue_app, ["status", "--url", RABBITMQ_URL, "--queue", name, "--json"]
        )
        assert result.exit_code == 0, result.output
        [stats] = json.loads(result.output)["queues"]
        assert (stats["ready"], stats["delayed"], stats["in_flight"]) == (1, 1, None)
        assert "guest:***@" in json.loads(result.output)["url"]
    finally:
        asyncio.run(delete())
