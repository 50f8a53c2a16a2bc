"""`millions shards ...`: inspect and reshard the sharded database.

A Typer sub-app; the main CLI mounts it with `app.add_typer(shards_app, name="shards")`.
Every command reads the shards config from `--config` (the `[shards]` table of a topology
file such as millions.toml, or a file holding only the shards config), else
./millions.toml, else the built-in default. Bad arguments and config problems print one
line and exit with 2; a refused or failed operation prints one line and exits with 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from millions.shards import config as shards_config
from millions.shards.autosplit import AutoSplitOutcome, AutoSplitter, autosplit_forever
from millions.shards.cluster import ClusterStatus, ShardCluster
from millions.shards.config import ShardsConfig
from millions.shards.errors import SchemaError, ShardError
from millions.shards.hotkeys import HotReport, SplitDecision, decide_splits, keys_to_cache
from millions.shards.keyspace import KeyRange, KeyRangeError, parse_keyspace_id
from millions.shards.resharding import Progress as ReshardProgress
from millions.shards.resharding import Resharder
from millions.shards.workflow import Operation
from millions.topology import config as topology_config
from millions.topology.config import DEFAULT_CONFIG_FILE, ConfigError
from millions.topology.errors import read_toml

T = TypeVar("T")

shards_app = typer.Typer(
    help="The sharded database: status, migrations, online splits and moves, hot keys.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML file: a topology config with a \\[shards] table, or a shards config "
        "(default: ./millions.toml, else built-in)",
    ),
]
RunDirOption = Annotated[
    Path | None,
    typer.Option("--run-dir", help="run directory holding SQLite shards (default: run_dir)"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON instead of tables")]


def _bad_argument(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _is_shards_only(data: dict[str, Any]) -> bool:
    """Whether a TOML document is a shards config of its own (not a topology's file)."""
    if isinstance(data.get("shards"), dict):  # a topology's [shards] table
        return False
    keys = set(data) - {"run_dir"}
    return bool(keys) and keys <= set(ShardsConfig.model_fields)


def _settings(config: Path | None, run_dir: Path | None) -> tuple[ShardsConfig, Path]:
    """The shards of a topology config (whose shards hold its app's tables: the reference
    app's by default, so a split copies them), or of a file holding only a shards config."""
    try:
        if config is None and Path(DEFAULT_CONFIG_FILE).exists():
            config = Path(DEFAULT_CONFIG_FILE)
        if config is not None and _is_shards_only(read_toml(config)):
            settings, directory = shards_config.load(config)
        else:
            topology = topology_config.load(config)
            settings, directory = topology.shards, Path(topology.run_dir)
    except ConfigError as exc:
        typer.echo(f"config error: {exc}", err=True)
        raise typer.Exit(2) from None
    return settings, (run_dir or directory).resolve()


def _with_cluster(
    config: Path | None, run_dir: Path | None, work: Callable[[ShardCluster], Awaitable[T]]
) -> T:
    """Open the cluster, run `work`, close it; errors become one line and an exit code."""
    settings, directory = _settings(config, run_dir)

    async def run() -> T:
        cluster = ShardCluster(settings, directory)
        try:
            return await work(cluster)
        finally:
            await cluster.close()

    try:
        return asyncio.run(run())
    except SchemaError as exc:
        typer.echo(f"config error: shards.tables: {exc}", err=True)
        raise typer.Exit(2) from None
    except ConfigError as exc:
        typer.echo(f"config error: {exc}", err=True)
        raise typer.Exit(2) from None
    except ShardError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _run_operation(
    config: Path | None,
    run_dir: Path | None,
    title: str,
    start: Callable[[Resharder], Awaitable[Operation]],
) -> Operation:
    """Run a resharding operation with a live progress bar."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(title, total=None)

        def report(progress: ReshardProgress) -> None:
            bar.update(
                task,
                description=f"{progress.phase}: {progress.message}",
                total=progress.total,
                completed=progress.done if progress.total else 0,
            )

        return _with_cluster(config, run_dir, lambda cluster: start(Resharder(cluster, report)))


def _print_operation(op: Operation) -> None:
    pauses = ", ".join(f"{p * 1000:.1f} ms" for p in op.pauses_s) or "none yet"
    console.print(
        f"{op.id}: {op.kind} {op.key_range} {op.source} -> {op.target}: [bold]{op.phase}[/]",
        soft_wrap=True,
    )
    console.print(
        f"  copied {op.rows_copied} rows, replayed {op.changes_applied} changes,"
        f" write pause per switch: {pauses}",
        soft_wrap=True,
    )
    for table, (rows, checksum) in op.digests.items():
        console.print(f"  verified {table}: {rows} rows, checksum {checksum:016x}", soft_wrap=True)
    if op.error:
        console.print(f"  last error: {op.error}", markup=False, soft_wrap=True)
    hints = {
        "switched": f"next: `millions shards cleanup` deletes the copy on {op.source}, "
        f"or `millions shards reverse` switches back",
        "reversed": f"next: `millions shards cleanup` deletes the copy on {op.target}, "
        "or `millions shards reverse` switches forth again",
        "failed": f"next: `millions shards cleanup` deletes the partial copy on {op.target}",
    }
    if op.phase in hints:
        console.print(f"  {hints[op.phase]}", markup=False, soft_wrap=True)


# -- commands -------------------------------------------------------------------------------


@shards_app.command()
def status(
    config: ConfigOption = None, run_dir: RunDirOption = None, as_json: JsonOption = False
) -> None:
    """Show the shard map, each shard's ranges, rows and fence, and any running operation."""
    current = _with_cluster(config, run_dir, lambda cluster: cluster.status())
    if as_json:
        print(json.dumps(current.to_dict(), indent=2))
        return
    _print_status(current)


def _print_status(current: ClusterStatus) -> None:
    if current.shard_map is None:
        console.print("not initialized: run `millions shards migrate`")
        return
    table = Table(title=f"shard map version {current.shard_map.version}", title_justify="left")
    for column in ("shard", "ranges", "rows", "fence", "log seq", "migrations"):
        table.add_column(column, justify="right" if column in ("rows", "log seq") else "left")
    counts = Table(title="rows per table", title_justify="left")
    counts.add_column("shard")
    names = list(dict.fromkeys(n for shard in current.shards for n in shard.rows))
    for name in names:
        counts.add_column(name, justify="right")
    for shard in current.shards:
        if shard.error:
            table.add_row(shard.name, ", ".join(shard.ranges), "?", "?", "?", "?")
            continue
        table.add_row(
            shard.name,
            ", ".join(shard.ranges) or "(none)",
            str(shard.total_rows),
            f"{', '.join(shard.fence_ranges) or '(none)'} @v{shard.fence_version}",
            str(shard.last_seq),
            ",".join(str(m) for m in shard.migrations) or "-",
        )
        counts.add_row(shard.name, *(str(shard.rows.get(name, 0)) for name in names))
    console.print(table)
    if names:
        console.print(counts)
    for shard in current.shards:
        problem = f"  [red]{shard.error}[/]" if shard.error else ""
        console.print(f"{shard.name}: {shard.location}{problem}", soft_wrap=True)
    if current.operation is not None:
        op = current.operation
        age = time.time() - op.updated_at
        console.print(f"operation (updated {age:.0f}s ago by {op.owner}):")
        _print_operation(op)
    else:
        console.print("no resharding operation has run")


@shards_app.command()
def migrate(config: ConfigOption = None, run_dir: RunDirOption = None) -> None:
    """Create the shards' tables and apply pending migrations to every shard; the first
    time, also publish the initial shard map."""
    applied = _with_cluster(config, run_dir, lambda cluster: cluster.migrate())
    for shard, versions in applied.items():
        done = ", ".join(str(v) for v in versions) if versions else "up to date"
        console.print(f"{shard}: {done}")


@shards_app.command()
def split(
    shard: Annotated[str, typer.Argument(help="the shard whose range to split, e.g. s1")],
    into: Annotated[
        str | None, typer.Option("--into", help="name of the new shard (default: next s<N>)")
    ] = None,
    at: Annotated[
        str | None,
        typer.Option("--at", help="split point as hex bytes, e.g. 60 (default: the middle)"),
    ] = None,
    config: ConfigOption = None,
    run_dir: RunDirOption = None,
) -> None:
    """Split SHARD's range in two, moving the upper part onto a new shard, online."""
    if not shards_config.SHARD_NAME.match(shard):
        raise _bad_argument(f"SHARD {shard!r} is not a shard name (like s1)")
    if into is not None and not shards_config.SHARD_NAME.match(into):
        raise _bad_argument(f"--into {into!r} must match {shards_config.SHARD_NAME.pattern}")
    try:
        split_at = None if at is None else parse_keyspace_id(at)
    except KeyRangeError as exc:
        raise _bad_argument(f"--at: {exc}") from None
    op = _run_operation(
        config,
        run_dir,
        f"splitting {shard}",
        lambda resharder: resharder.split(shard, new_shard=into, at=split_at),
    )
    _print_operation(op)


@shards_app.command(context_settings={"ignore_unknown_options": True})
def move(
    key_range: Annotated[str, typer.Argument(metavar="RANGE", help="key range, e.g. 40-80")],
    to: Annotated[str, typer.Option("--to", help="the shard to move it to")],
    config: ConfigOption = None,
    run_dir: RunDirOption = None,
) -> None:
    """Move RANGE (inside one shard's range) to another registered shard, online.

    Ranges are named like Vitess keyspace ranges: -40, 40-80, c0-. A range that starts at
    the beginning of the keyspace (-40) can also be written 00-40.
    """
    try:
        parsed = KeyRange.parse(key_range)
    except KeyRangeError as exc:
        raise _bad_argument(str(exc)) from None
    if not shards_config.SHARD_NAME.match(to):
        raise _bad_argument(f"--to {to!r} is not a shard name (like s2)")
    op = _run_operation(
        config, run_dir, f"moving {parsed}", lambda resharder: resharder.move(parsed, to)
    )
    _print_operation(op)


@shards_app.command()
def reverse(config: ConfigOption = None, run_dir: RunDirOption = None) -> None:
    """Switch the active operation's range back to its other shard (before cleanup)."""
    op = _run_operation(config, run_dir, "reversing", lambda resharder: resharder.reverse())
    _print_operation(op)


@shards_app.command()
def cleanup(config: ConfigOption = None, run_dir: RunDirOption = None) -> None:
    """Finish the active operation: delete the copy of its range that no longer serves."""
    op = _run_operation(config, run_dir, "cleaning up", lambda resharder: resharder.cleanup())
    _print_operation(op)


@shards_app.command()
def hot(
    top: Annotated[int, typer.Option(min=1, max=1000, help="how many keys to list")] = 10,
    config: ConfigOption = None,
    run_dir: RunDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the hottest keys and ranges (all routers' recent load reports together) and
    whether a range should split."""
    settings, _ = _settings(config, run_dir)

    async def gather(cluster: ShardCluster) -> HotReport:
        since = time.time() - settings.hot.window_s - settings.hot.report_interval_s * 2
        reports = await cluster.metadata.load_reports(since)
        return HotReport.merge((HotReport.from_dict(r) for r in reports), top=top)

    report = _with_cluster(config, run_dir, gather)
    decisions = decide_splits(report, settings.hot.threshold_ops_s)
    cached = _cached_keys(settings, report)
    if as_json:
        print(json.dumps(_hot_json(report, decisions, cached), indent=2))
        return
    if not report.keys and not report.ranges:
        console.print(
            "no load reported in the last window (routers report every "
            f"{settings.hot.report_interval_s:g}s while they serve)"
        )
        return
    keys = Table(title=f"hottest keys (last {report.window_s:.0f}s)", title_justify="left")
    keys.add_column("key")
    keys.add_column("keyspace id")
    keys.add_column("ops/s", justify="right")
    keys.add_column("± ops/s", justify="right")
    keys.add_column("reads")
    for item in report.keys:
        keys.add_row(
            item.key,
            f"{item.keyspace_id:016x}",
            f"{item.ops_per_s:.1f}",
            f"{item.error_per_s:.1f}",
            "from the read cache" if item.key in cached else "",
        )
    console.print(keys)
    ranges = Table(title="ranges", title_justify="left")
    ranges.add_column("range")
    ranges.add_column("ops/s", justify="right")
    for load in report.ranges:
        ranges.add_row(load.key_range, f"{load.ops_per_s:.1f}")
    console.print(ranges)
    threshold = settings.hot.threshold_ops_s
    if not decisions:
        console.print(f"no range is over the {threshold:g} ops/s split threshold")
    for decision in decisions:
        console.print(f"{decision.key_range}: {decision.reason}", markup=False, soft_wrap=True)
        if decision.too_hot is not None:
            console.print(
                f"  key {decision.too_hot.key!r}: "
                + (
                    "served from the read cache by every router"
                    if decision.too_hot.key in cached
                    else "not served from the cache (shards.cache.engine is none or "
                    "shards.hot.cache_hot_keys is off)"
                ),
                markup=False,
                soft_wrap=True,
            )
    if cached:
        over = settings.hot.threshold_ops_s * settings.hot.cache_key_share
        console.print(
            f"keys over {over:g} ops/s are read from the read cache: " + ", ".join(sorted(cached)),
            markup=False,
            soft_wrap=True,
        )


def _cached_keys(settings: ShardsConfig, report: HotReport) -> frozenset[str]:
    """The keys the routers serve from the read cache, by this report."""
    hot = settings.hot
    if not hot.cache_hot_keys or settings.cache.engine == "none":
        return frozenset()
    return keys_to_cache(report, hot.threshold_ops_s * hot.cache_key_share)


def _hot_json(
    report: HotReport, decisions: list[SplitDecision], cached: frozenset[str]
) -> dict[str, Any]:
    return {
        **report.to_dict(),
        "cached_keys": sorted(cached),
        "decisions": [
            {
                "range": d.key_range,
                "ops_per_s": d.ops_per_s,
                "split": d.split,
                "split_at": None if d.split_at is None else f"{d.split_at:016x}",
                "too_hot_key": None if d.too_hot is None else d.too_hot.key,
                "reason": d.reason,
            }
            for d in decisions
        ],
    }


_EVENT_STYLES = {
    "split": "bold yellow",
    "cleanup": "bold green",
    "wait": "cyan",
    "idle": "dim",
    "off": "dim",
    "error": "bold red",
}


def _print_event(message: str) -> None:
    """One line per decision or result: the time, the action (coloured), the reason."""
    action, _, rest = message.partition(":")
    first = action.split(" ")[0]
    failed = "failed" in action or "skipped" in action or "not started" in action
    style = "bold red" if failed else _EVENT_STYLES.get(first, "")
    console.print(
        Text.assemble((time.strftime("%H:%M:%S "), "dim"), (action, style), f":{rest}"),
        soft_wrap=True,
    )


@shards_app.command()
def autosplit(
    once: Annotated[bool, typer.Option("--once", help="decide and act once, then exit")] = False,
    interval: Annotated[
        float | None,
        typer.Option(
            "--interval",
            min=0.05,
            max=3600,
            help="seconds between rounds (default: shards.hot.autosplit_interval_s)",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="run even when shards.hot.auto_split is off")
    ] = False,
    config: ConfigOption = None,
    run_dir: RunDirOption = None,
) -> None:
    """Split hot ranges automatically, in the foreground: one line per decision.

    Every round reads the routers' fresh load reports, then:
    splits a range over hot.threshold_ops_s where its load is — never while an
    operation is active, nor within hot.split_cooldown_s after the last one;
    cleans up its own splits hot.cleanup_after_s after their cutover.
    Keys too hot for any split are served from the read cache instead.
    The topology runs the same loop when shards.hot.auto_split is on.
    Ctrl-C stops after the current round.
    """
    settings, _ = _settings(config, run_dir)
    if not (settings.hot.auto_split or force):
        raise _bad_argument(
            "shards.hot.auto_split is off in the config; turn it on or pass --force"
        )

    async def once_only(cluster: ShardCluster) -> AutoSplitOutcome:
        return await AutoSplitter(cluster, force=True, on_event=_print_event).step()

    async def until_stopped(cluster: ShardCluster) -> bool:
        """Run until the first Ctrl-C (after the round); a second one interrupts the round
        (an operation it was running is then left for `millions shards status`). True when
        interrupted."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()

        def request_stop() -> None:
            if stop.is_set() and main is not None:
                console.print("interrupted: see `millions shards status`", style="bold red")
                main.cancel()
                return
            console.print("stopping after the current round (Ctrl-C again: now)", style="dim")
            stop.set()

        signals = (signal.SIGINT, signal.SIGTERM)
        for number in signals:
            loop.add_signal_handler(number, request_stop)
        try:
            await autosplit_forever(
                cluster, interval_s=interval, stop=stop, on_event=_print_event, force=True
            )
        except asyncio.CancelledError:
            return True
        finally:
            for number in signals:
                with contextlib.suppress(ValueError, RuntimeError):
                    loop.remove_signal_handler(number)
        return False

    if once:
        outcome = _with_cluster(config, run_dir, once_only)
        if outcome.error:
            raise typer.Exit(1)
        return
    if _with_cluster(config, run_dir, until_stopped):
        raise typer.Exit(130)
