"""`millions queue ...`: look at queues and handle dead letters from the shell.

Mounted by the main CLI as `app.add_typer(queue_app, name="queue")`. The queue comes from
`--url` or the MILLIONS_QUEUE_URL environment variable, else it is the queue of the
topology that ./millions.toml (or the built-in default) describes. Bad arguments print one line
saying what to do and exit with 2; a queue that cannot be reached exits with 1.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from millions.queue.base import DeadLetter, MessageQueue, QueueError, QueueStats
from millions.queue.config import QueueConfig
from millions.queue.messages import check_queue_name
from millions.queue.urls import QueueURL, QueueURLError, parse_queue_url

URL_ENV = "MILLIONS_QUEUE_URL"

queue_app = typer.Typer(
    help="Inspect the message queue and handle dead letters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
dlq_app = typer.Typer(
    help="Dead letters: messages that used up their attempts. List, re-drive or purge them.",
    no_args_is_help=True,
)
queue_app.add_typer(dlq_app, name="dlq")

console = Console()

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar=URL_ENV,
        show_envvar=True,
        help="the queue: sqlite:///path/queue.db or amqp://user:pass@host:5672/vhost "
        "(default: the queue of the topology in ./millions.toml or the built-in default)",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
QueueArgument = Annotated[str, typer.Argument(help="queue name, e.g. photo.process")]

T = TypeVar("T")


def _usage_error(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _failure(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _topology_queue() -> QueueURL:
    """The queue of the topology in ./millions.toml (or of the built-in default one)."""
    from pathlib import Path

    from millions.topology import config as topology_config
    from millions.topology.errors import ConfigError

    try:
        settings = topology_config.load(None)
        return settings.queue.resolved_url(Path(settings.run_dir).resolve())
    except (ConfigError, QueueURLError) as exc:
        _usage_error(f"no --url given and the topology config is unusable: {exc}")


def _parse_url(url: str | None) -> QueueURL:
    if url:
        try:
            parsed = parse_queue_url(url)
        except QueueURLError as exc:
            _usage_error(f"--url: {exc}")
    else:
        parsed = _topology_queue()
    if parsed.engine == "sqlite":
        assert parsed.path is not None
        if not parsed.path.is_file():
            _usage_error(
                f"no queue database at {parsed.path}: start the topology (`millions up`) "
                f"or pass --url / set {URL_ENV}"
            )
    return parsed


def _check_name(queue: str) -> str:
    try:
        return check_queue_name(queue)
    except ValueError as exc:
        _usage_error(str(exc))


def _open(parsed: QueueURL) -> MessageQueue:
    if parsed.engine == "sqlite":
        from millions.queue.sqlite import SqliteQueue

        assert parsed.path is not None
        return SqliteQueue(parsed.path, QueueConfig())
    from millions.queue.rabbitmq import RabbitQueue

    return RabbitQueue(parsed.url, QueueConfig())


def _run(parsed: QueueURL, action: Callable[[MessageQueue], Awaitable[T]]) -> T:
    async def main() -> T:
        queue = _open(parsed)
        try:
            return await action(queue)
        finally:
            await queue.close()

    try:
        return asyncio.run(main())
    except QueueError as exc:
        _failure(f"{exc} (is the queue at {parsed.redacted()} reachable?)")


def _number(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}" if digits else str(value)


def _time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


@queue_app.command()
def status(
    url: UrlOption = None,
    queues: Annotated[
        list[str] | None,
        typer.Option(
            "--queue",
            "-q",
            help="queue to show (repeatable); default: every queue (SQLite only: RabbitMQ "
            "cannot list queues over AMQP, so name them)",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Show depth, in flight, delayed, dead letters, age and rates of each queue.

    Columns: ready messages (the depth), leased to consumers, waiting for their delivery
    time, dead letters, age in seconds of the oldest message waiting or in flight, and
    publishes and acknowledgements per second over the last minute. n/a marks what the
    engine cannot observe (RabbitMQ over AMQP: in flight, age, rates)."""
    parsed = _parse_url(url)
    names = [_check_name(name) for name in queues or []]
    if not names and parsed.engine == "rabbitmq":
        _usage_error("RabbitMQ cannot list queues over AMQP: name them with --queue QUEUE")

    async def collect(queue: MessageQueue) -> list[QueueStats]:
        chosen = names or await queue.queue_names()
        return [await queue.stats(name) for name in chosen]

    found = _run(parsed, collect)
    if as_json:
        typer.echo(
            json.dumps({"url": parsed.redacted(), "queues": [s.to_dict() for s in found]}, indent=2)
        )
        return
    table = Table(title=f"queues at {parsed.redacted()}", title_justify="left")
    for column in ("queue", "ready", "in flight", "delayed", "dead", "oldest age s"):
        table.add_column(column, justify="left" if column == "queue" else "right")
    table.add_column("publish/s", justify="right")
    table.add_column("ack/s", justify="right")
    for stats in found:
        table.add_row(
            stats.queue,
            _number(stats.ready),
            _number(stats.in_flight),
            _number(stats.delayed),
            _number(stats.dead),
            _number(stats.oldest_age_s, 1),
            _number(stats.publish_rate, 2),
            _number(stats.ack_rate, 2),
        )
    if not found:
        console.print("no queues yet")
        return
    console.print(table)


def _dead_letter_dict(letter: DeadLetter) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "message_id": letter.message_id,
        "attempts": letter.attempts,
        "error": letter.error,
        "idempotency_key": letter.idempotency_key,
        "published_at": letter.published_at,
        "dead_at": letter.dead_at,
    }
    try:
        entry["body"] = letter.body.decode("utf-8")
    except UnicodeDecodeError:
        entry["body_base64"] = base64.b64encode(letter.body).decode("ascii")
    return entry


@dlq_app.command("list")
def dlq_list(
    queue: QueueArgument,
    url: UrlOption = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="show at most this many")] = 20,
    as_json: JsonOption = False,
) -> None:
    """List the dead letters of QUEUE, oldest first: id, attempts, when, why, body."""
    parsed = _parse_url(url)
    name = _check_name(queue)
    letters = _run(parsed, lambda q: q.dead_letters(name, limit))
    if as_json:
        typer.echo(json.dumps([_dead_letter_dict(letter) for letter in letters], indent=2))
        return
    if not letters:
        console.print(f"no dead letters in {name}")
        return
    table = Table(title=f"dead letters of {name}", title_justify="left")
    for column in ("message id", "attempts", "dead at (UTC)", "error", "body"):
        table.add_column(column, justify="right" if column == "attempts" else "left")
    for letter in letters:
        table.add_row(
            letter.message_id,
            str(letter.attempts),
            _time(letter.dead_at),
            letter.error[:80],
            letter.preview(60),
        )
    console.print(table)


@dlq_app.command("retry")
def dlq_retry(
    queue: QueueArgument,
    url: UrlOption = None,
    ids: Annotated[
        list[str] | None,
        typer.Option("--id", help="re-drive only this message id (repeatable); default: all"),
    ] = None,
) -> None:
    """Re-drive dead letters of QUEUE: deliver them again with fresh attempts.

    Exits 1 when some --id was not among the dead letters."""
    parsed = _parse_url(url)
    name = _check_name(queue)
    wanted = list(dict.fromkeys(ids)) if ids else None
    moved = _run(parsed, lambda q: q.redrive(name, wanted))
    console.print(f"re-drove {moved} dead letter{'s' if moved != 1 else ''} back to {name}")
    if wanted is not None and moved < len(wanted):
        _failure(f"{len(wanted) - moved} of the given ids are not dead letters of {name}")


@dlq_app.command("purge")
def dlq_purge(
    queue: QueueArgument,
    url: UrlOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="confirm deleting them")] = False,
) -> None:
    """Delete every dead letter of QUEUE for good (needs --yes)."""
    parsed = _parse_url(url)
    name = _check_name(queue)
    if not yes:
        _usage_error(f"this deletes every dead letter of {name} for good; add --yes to confirm")
    purged = _run(parsed, lambda q: q.purge_dead_letters(name))
    console.print(f"purged {purged} dead letter{'s' if purged != 1 else ''} of {name}")
