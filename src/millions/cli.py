"""The `millions` command line.

Every command loads the config the same way (`--config`, else ./millions.toml, else the
built-in default); a config problem prints one line naming the key and exits with 2.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from millions.addresses import split_address
from millions.edge.cli import SUMMARY as EDGE_SUMMARY
from millions.topology import config as topology_config

if TYPE_CHECKING:
    from millions.scenarios import Scenario
from millions.topology.components import RunPaths
from millions.topology.config import ConfigError, MillionsConfig, to_toml
from millions.topology.errors import read_toml

app = typer.Typer(
    help="millions: the scale-out web architecture (geo DNS, CDN edges, load balancers, "
    "stateless web servers, shared sessions, queue workers, shards) running on this machine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect the topology config.", no_args_is_help=True)
app.add_typer(config_app, name="config")
dc_app = typer.Typer(
    help="Data center operations: take a DC out of the geo DNS answers and back.",
    no_args_is_help=True,
)
app.add_typer(dc_app, name="dc")


def _mount_tier_commands() -> None:
    """The queue and shards tiers bring their own command groups."""
    from millions.queue.cli import queue_app
    from millions.shards.cli import shards_app

    app.add_typer(queue_app, name="queue")
    app.add_typer(shards_app, name="shards")


_mount_tier_commands()

console = Console()
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="TOML config file (default: ./millions.toml, else built-in)"
    ),
]
RunDirOption = Annotated[
    Path | None,
    typer.Option(
        "--run-dir", help="run directory for state, logs and data (default: run_dir in config)"
    ),
]


LogFileOption = Annotated[Path | None, typer.Option(help="JSON-lines log file (default: stderr)")]


def parse_address(value: str, option: str) -> tuple[str, int]:
    address = split_address(value)
    if address is None:
        typer.echo(f"config error: {option}: expected HOST:PORT, got {value!r}", err=True)
        raise typer.Exit(2)
    return address


def load_config(path: Path | None) -> MillionsConfig:
    try:
        settings = topology_config.load(path)
        if settings.dns.enabled:
            from millions.dns.topology import dns_config

            dns_config(settings)  # the DNS view of the topology must be valid too
    except ConfigError as exc:
        typer.echo(f"config error: {exc}", err=True)
        raise typer.Exit(2) from None
    return settings


def resolve_run_dir(config: MillionsConfig, run_dir: Path | None) -> Path:
    return (run_dir or Path(config.run_dir)).resolve()


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[red]error:[/] {message}")
    return typer.Exit(code)


# -- topology -----------------------------------------------------------------------------


@app.command()
def up(
    config: ConfigOption = None,
    run_dir: RunDirOption = None,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="return once healthy; stop with `millions down`")
    ] = False,
) -> None:
    """Start the whole topology and wait until every component is healthy.

    Prints a table of what runs where. Stays in the foreground until Ctrl-C (which stops
    every process) unless --detach is given.
    """
    from millions.topology.supervisor import StartupError
    from millions.topology.up import run_foreground, start_detached

    settings = load_config(config)
    directory = resolve_run_dir(settings, run_dir)
    try:
        if detach:
            code = start_detached(
                config, directory, console, settings.supervisor.start_timeout_s + 15
            )
        else:
            code = asyncio.run(run_foreground(settings, directory, console))
    except StartupError as exc:
        raise fail(str(exc), code=exc.exit_code) from None
    raise typer.Exit(code)


@app.command()
def down(config: ConfigOption = None, run_dir: RunDirOption = None) -> None:
    """Stop a topology started with `millions up` (foreground or detached)."""
    from millions.topology.control import ControlError
    from millions.topology.up import stop_detached

    directory = resolve_run_dir(load_config(config), run_dir)
    try:
        raise typer.Exit(stop_detached(directory, console))
    except ControlError as exc:
        raise fail(str(exc)) from None


@app.command()
def status(
    config: ConfigOption = None,
    run_dir: RunDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Show state, pid, address, uptime and restarts of every component, and any data
    center whose shard primaries were failed over."""
    from millions.topology.control import ControlClient, ControlError
    from millions.topology.up import status_table

    directory = resolve_run_dir(load_config(config), run_dir)
    try:
        current = ControlClient(directory).request("GET", "/status")
    except ControlError as exc:
        raise fail(str(exc)) from None
    if as_json:
        print(json.dumps(current, indent=2))
        return
    console.print(status_table(current))
    for dc, report in current.get("failovers", {}).items():
        promoted = ", ".join(f"{shard} → {to}" for shard, to in report["promoted"].items())
        console.print(
            f"[yellow]{dc} failed over[/]: primaries {promoted or 'none'}; writes lost: "
            f"{report['writes_lost']}; `millions dc restore {dc}` brings it back"
        )


@app.command()
def kill(
    name: Annotated[str, typer.Argument(help="component name, e.g. web-us-east-1 or lb-eu-west")],
    no_restart: Annotated[
        bool, typer.Option("--no-restart", help="leave it dead instead of restarting it")
    ] = False,
    config: ConfigOption = None,
    run_dir: RunDirOption = None,
) -> None:
    """Kill one component with SIGKILL (chaos). The supervisor restarts it unless --no-restart."""
    from millions.topology.control import ControlClient, ControlError

    directory = resolve_run_dir(load_config(config), run_dir)
    try:
        result = ControlClient(directory).request(
            "POST", "/kill", {"name": name, "restart": not no_restart}
        )
    except ControlError as exc:
        raise fail(str(exc)) from None
    then = "left stopped" if no_restart else "the supervisor restarts it"
    console.print(f"killed {result['killed']} (pid {result['pid']}) with SIGKILL; {then}")


@app.command()
def scale(
    dc: Annotated[str, typer.Argument(help="data center, e.g. us-east")],
    setting: Annotated[str, typer.Argument(help="web=N: the number of web servers wanted")],
    config: ConfigOption = None,
    run_dir: RunDirOption = None,
) -> None:
    """Add or remove web servers in a data center at runtime.

    New servers take traffic once healthy; removed ones are drained by the load balancer
    (in-flight requests finish) before they stop.
    """
    from millions.topology.control import ControlClient, ControlError

    tier, _, count = setting.partition("=")
    if tier != "web" or not count.isdigit():
        raise fail(f"expected web=N, got {setting!r}", code=2)
    directory = resolve_run_dir(load_config(config), run_dir)
    try:
        with console.status(f"scaling {dc} to {count} web servers…"):
            result = ControlClient(directory).request(
                "POST", "/scale", {"dc": dc, "web": int(count)}
            )
    except ControlError as exc:
        raise fail(str(exc)) from None
    added = ", ".join(result["added"]) or "none"
    removed = ", ".join(result["removed"]) or "none"
    console.print(f"{dc}: {count} web servers (added: {added}; drained and removed: {removed})")


@app.command()
def purge(
    url: Annotated[
        str | None,
        typer.Argument(
            help="URL to purge (http://host:port/path), or a path (/static/a.css) to purge "
            "that path on every edge's own address"
        ),
    ] = None,
    prefix: Annotated[
        str | None,
        typer.Option(help="purge every URL starting with this (a /path prefix matches any host)"),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(help="purge every object tagged with this Surrogate-Key / Cache-Tag"),
    ] = None,
    soft: Annotated[
        bool,
        typer.Option(
            "--soft", help="mark stale instead of dropping (still served if the origin fails)"
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    config: ConfigOption = None,
    run_dir: RunDirOption = None,
) -> None:
    """Purge cached objects on every CDN edge of the running topology, by URL, prefix or
    surrogate key, and report what each edge did. Exits 1 if any edge did not purge."""
    from rich.table import Table

    from millions.topology.control import ControlClient, ControlError

    chosen = {
        name: value for name, value in (("url", url), ("prefix", prefix), ("key", key)) if value
    }
    if len(chosen) != 1:
        raise fail("give exactly one of URL, --prefix P or --key K", code=2)
    directory = resolve_run_dir(load_config(config), run_dir)
    try:
        with console.status("purging on every edge…"):
            result = ControlClient(directory).request("POST", "/purge", {**chosen, "soft": soft})
    except ControlError as exc:
        raise fail(str(exc)) from None
    edges: list[dict[str, Any]] = result["edges"]
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        ((kind, target),) = chosen.items()
        table = Table(title=f"{'soft' if soft else 'hard'} purge of {kind} {target}")
        for column in ("edge", "DC", "result", "objects"):
            table.add_column(column, justify="right" if column == "objects" else "left")
        for edge in edges:
            outcome = "[green]purged[/]" if edge["ok"] else f"[red]failed:[/] {edge['error']}"
            table.add_row(edge["edge"], edge["dc"], outcome, str(edge["purged"]))
        console.print(table)
    if not all(edge["ok"] for edge in edges):
        raise typer.Exit(1)


@config_app.command("show")
def config_show(config: ConfigOption = None) -> None:
    """Print the effective config (the file merged over the built-in defaults) as TOML."""
    print(to_toml(load_config(config)), end="")


# -- load and scenarios ----------------------------------------------------------------


def _parse_mix(text: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        action, _, weight = part.partition("=")
        try:
            mix[action] = float(weight)
        except ValueError:
            typer.echo(f"config error: --mix: expected action=weight, got {part!r}", err=True)
            raise typer.Exit(2) from None
    return mix


@app.command()
def load(
    users: Annotated[int, typer.Option(min=1, max=100_000, help="simulated users")] = 20,
    duration: Annotated[float, typer.Option(min=0.5, help="seconds of load")] = 30.0,
    rate: Annotated[
        float | None,
        typer.Option(min=0.1, help="total requests/s (open loop); default: as fast as users go"),
    ] = None,
    target: Annotated[
        list[str] | None,
        typer.Option(
            help="base URL to load (repeatable); default: the site's name through the geo "
            "DNS (users spread over the regions' client networks), else every DC's load "
            "balancer"
        ),
    ] = None,
    mix: Annotated[
        str,
        typer.Option(help="action weights: browse, me, list, view, image, upload"),
    ] = "browse=4,me=2,list=2,view=2,image=2,upload=1",
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    config: ConfigOption = None,
) -> None:
    """Drive simulated users (own cookies; sign up, log in, browse, upload) at the topology.

    Shows live progress and ends with throughput, latency percentiles and errors.
    """
    from millions.load import LoadConfig, LoadReport, LoadRunner, render_report, run_with_progress
    from millions.load.topology import topology_targets

    settings = load_config(config)
    targets, geo_dns = topology_targets(settings)
    if target:
        targets, geo_dns = target, None
    try:
        runner = LoadRunner(
            LoadConfig(
                targets=targets,
                users=users,
                duration_s=duration,
                rate=rate,
                mix=_parse_mix(mix),
                dns=geo_dns,
            )
        )
    except ValueError as exc:
        typer.echo(f"config error: {exc}", err=True)
        raise typer.Exit(2) from None

    async def drive() -> LoadReport:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, runner.stop)
        if as_json:
            return await runner.run()
        return await run_with_progress(runner, console)

    report = asyncio.run(drive())
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        render_report(report, console)


async def run_scenario(chosen: Scenario, settings: MillionsConfig, quiet: bool) -> dict[str, Any]:
    return await chosen.run(settings, console, quiet)


@app.command()
def scenario(
    name: Annotated[str | None, typer.Argument(help="scenario to run; omit to list them")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print only the report, as one JSON object")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Run a scripted fault demonstration on a freshly started topology and report.

    The topology runs in its own run directory on its own addresses and is stopped
    afterwards. Exit code 1 when a promise of the design was broken.
    """
    from millions.scenarios import registry

    scenarios = registry()
    if name is None:
        for item in scenarios.values():
            console.print(f"[bold]{item.name}[/]  {item.summary}")
        return
    chosen = scenarios.get(name)
    if chosen is None:
        raise fail(f"no scenario {name!r}; available: {', '.join(scenarios)}", code=2)
    from millions.topology.supervisor import StartupError

    settings = load_config(config)
    try:
        result = asyncio.run(run_scenario(chosen, settings, as_json))
    except StartupError as exc:
        raise fail(f"the scenario's topology did not start: {exc}", code=exc.exit_code) from None
    ok = chosen.passed(result)
    if as_json:
        print(json.dumps(result))
    else:
        from rich.table import Table

        table = Table(
            title=f"scenario {name}: {'PASSED' if ok else 'FAILED'}", title_justify="left"
        )
        table.add_column("measure")
        table.add_column("value", justify="right")
        for key, value in result.items():
            if not isinstance(value, dict | list):
                table.add_row(key, str(value))
        console.print(table)
        for event in result.get("events", []):
            console.print(f"  t={event['t_s']:>6}s  {event['event']}")
    raise typer.Exit(0 if ok else 1)


# -- single components (the supervisor runs these; usable on their own too) -----------------


@app.command()
def web(
    listen: Annotated[str, typer.Option(help="HOST:PORT to serve on")] = "127.0.0.1:8000",
    name: Annotated[str, typer.Option(help="component name shown in logs and X-Served-By")] = "web",
    app_path: Annotated[
        str | None, typer.Option("--app", help="ASGI app as module:attr (default: app in config)")
    ] = None,
    log_file: LogFileOption = None,
    dc: Annotated[
        str | None,
        typer.Option(help="data center this server belongs to (its pages link to that DC's edge)"),
    ] = None,
    config: ConfigOption = None,
    run_dir: RunDirOption = None,
) -> None:
    """Run one stateless web server: uvicorn serving the ASGI app with shared sessions."""
    from millions.web.main import AppImportError, run

    settings = load_config(config)
    address = parse_address(listen, "--listen")
    if dc is not None and dc not in settings.dcs:
        known = ", ".join(settings.dcs)
        typer.echo(f"config error: --dc: no data center {dc!r} (known: {known})", err=True)
        raise typer.Exit(2)
    try:
        run(settings, resolve_run_dir(settings, run_dir), address, name, app_path, log_file, dc)
    except AppImportError as exc:
        typer.echo(f"config error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def lb(
    listen: Annotated[str, typer.Option(help="HOST:PORT for client traffic")] = "127.0.0.1:8080",
    ops: Annotated[
        str, typer.Option(help="HOST:PORT for /healthz, /metrics and /backends")
    ] = "127.0.0.1:9000",
    backend: Annotated[
        list[str] | None, typer.Option(help="HOST:PORT of a web server (repeatable)")
    ] = None,
    backends_file: Annotated[
        Path | None,
        typer.Option(help='JSON file {"backends": [...]}, reread on SIGHUP'),
    ] = None,
    name: Annotated[str, typer.Option(help="component name for logs")] = "lb",
    log_file: LogFileOption = None,
    config: ConfigOption = None,
    run_dir: RunDirOption = None,
) -> None:
    """Run one load balancer: an HTTP/1.1 reverse proxy with health checks."""
    from millions.lb.main import run

    settings = load_config(config)
    listen_address = parse_address(listen, "--listen")
    ops_address = parse_address(ops, "--ops")
    for item in backend or []:
        parse_address(item, "--backend")
    if not backend and backends_file is None:
        raise fail("give at least one --backend or a --backends-file", code=2)
    run(
        listen_address,
        ops_address,
        settings.lb,
        backends=backend,
        backends_file=backends_file,
        name=name,
        log_file=log_file,
    )


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
    help=f"{EDGE_SUMMARY} Options: millions edge --help.",
)
def edge(ctx: typer.Context) -> None:
    # The edge's own argparse command line (`millions.edge.cli`): see its docstring for why.
    from millions.edge.cli import main as edge_main

    edge_main(ctx.args)


@app.command()
def worker(
    tasks: Annotated[
        str, typer.Option(help="task registry as module:attr (a millions.workers.TaskRegistry)")
    ],
    name: Annotated[str, typer.Option(help="component name for logs")] = "worker",
    metrics: Annotated[
        str | None, typer.Option(help="loopback HOST:PORT for /metrics and /healthz")
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, max=10_000, help="tasks at once (default: queue.workers.concurrency)"),
    ] = None,
    log_file: LogFileOption = None,
    config: ConfigOption = None,
    run_dir: RunDirOption = None,
) -> None:
    """Run one queue worker: consume the queues of every task in TASKS, acknowledge after
    each handler succeeds, retry with backoff, dead-letter after queue.max_attempts.
    SIGTERM finishes (or releases) the tasks in flight and exits."""
    from millions.edge.links import CDN_PURGE_URLS_ENV
    from millions.queue.urls import QueueURLError
    from millions.topology.app_env import export_data_locations
    from millions.workers.main import run
    from millions.workers.registry import TaskImportError

    settings = load_config(config)
    directory = resolve_run_dir(settings, run_dir)
    metrics_address = parse_address(metrics, "--metrics") if metrics else None
    export_data_locations(
        settings.shards, directory, list(settings.dcs) if settings.replicates else []
    )
    if settings.edge.enabled:  # for the app's cdn.purge retries
        os.environ.setdefault(CDN_PURGE_URLS_ENV, ",".join(settings.edge_purge_urls()))
    try:
        run(
            tasks,
            settings.queue,
            run_dir=directory,
            metrics_listen=metrics_address,
            name=name,
            log_file=log_file,
            concurrency=concurrency,
        )
    except (TaskImportError, QueueURLError, ValueError) as exc:
        typer.echo(f"config error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def replicator(
    dc: Annotated[str, typer.Option(help="the data center whose shard copies to keep current")],
    name: Annotated[str, typer.Option(help="component name for logs")] = "replicator",
    metrics: Annotated[
        str | None, typer.Option(help="loopback HOST:PORT for /metrics and /healthz")
    ] = None,
    log_file: LogFileOption = None,
    config: ConfigOption = None,
    run_dir: RunDirOption = None,
) -> None:
    """Run one data center's shard replicator: copy each shard whose primary is in another
    DC into this DC, then follow the primary's change log (lag on /metrics). The shards
    must be migrated (`millions up` does it). SIGTERM stops it after the transaction in
    flight."""
    import uvloop

    from millions.shards.errors import ShardError
    from millions.shards.replication.process import serve
    from millions.telemetry import logs

    settings = load_config(config)
    if len(settings.dcs) < 2 or dc not in settings.dcs:
        raise fail(
            f"--dc must name one of two or more data centers; the config has "
            f"{', '.join(settings.dcs)}",
            code=2,
        )
    listen = parse_address(metrics, "--metrics") if metrics else None
    directory = resolve_run_dir(settings, run_dir)
    logs.configure(name, log_file)
    try:
        uvloop.run(serve(settings.shards, directory, dc, list(settings.dcs), listen=listen))
    except (ShardError, ValueError) as exc:
        raise fail(f"replicator: {exc}", code=2) from None


@app.command()
def dns(
    name: Annotated[str, typer.Option(help="component name for logs")] = "dns",
    listen: Annotated[
        str | None,
        typer.Option(help="HOST:PORT (UDP and TCP); default: [dns] host and port in config"),
    ] = None,
    dns_config_file: Annotated[
        Path | None,
        typer.Option(
            "--dns-config",
            help="TOML file of a standalone DNS server (zone, prefixes, regions, dcs, edges); "
            "default: derived from the topology config",
        ),
    ] = None,
    log_file: LogFileOption = None,
    config: ConfigOption = None,
    run_dir: RunDirOption = None,
) -> None:
    """Run the geo DNS server: authoritative for the zone, `www` and `cdn` answer with the
    nearest healthy DC and edge for the client's region (source address or EDNS Client
    Subnet). Try it with `dig @127.0.53.1 -p 1053 www.millions.test`."""
    from millions.dns import config as dns_config_module
    from millions.dns.main import run
    from millions.dns.topology import dns_config

    settings = load_config(config)
    try:
        if dns_config_file is not None:
            server_config = dns_config_module.parse(read_toml(dns_config_file))
        else:
            server_config = dns_config(settings)
        if listen is not None:
            parse_address(listen, "--listen")
            server_config = dns_config_module.parse(
                {**server_config.model_dump(exclude_none=True), "listen": listen}
            )
    except ConfigError as exc:
        typer.echo(f"config error: {exc}", err=True)
        raise typer.Exit(2) from None
    directory = resolve_run_dir(settings, run_dir)
    run(server_config, name=name, log_file=log_file, state_file=RunPaths(directory).dns_state)


def _dns_admin(config: Path | None, run_dir: Path | None) -> tuple[str, str]:
    """The DNS admin URL and the run's admin token, or a clear error."""
    settings = load_config(config)
    if not settings.dns.enabled:
        raise fail("this topology runs no geo DNS server (dns.enabled = false)", code=2)
    token_file = RunPaths(resolve_run_dir(settings, run_dir)).admin_token
    try:
        token = token_file.read_text().strip()
    except OSError:
        raise fail(
            f"no admin token in {token_file}; is the topology running (`millions up`)?"
        ) from None
    return f"http://{settings.dns.host}:{settings.dns.admin_port}", token


@dc_app.command("drain")
def dc_drain(
    name: Annotated[str, typer.Argument(help="data center, e.g. us-east")],
    config: ConfigOption = None,
    run_dir: RunDirOption = None,
) -> None:
    """Stop sending users to a data center (maintenance): the geo DNS answers with the next
    DC of each region while another one is healthy. Drains survive a DNS restart."""
    _set_drained(name, True, config, run_dir)


@dc_app.command("undrain")
def dc_undrain(
    name: Annotated[str, typer.Argument(help="data center, e.g. us-east")],
    config: ConfigOption = None,
    run_dir: RunDirOption = None,
) -> None:
    """Send users to a drained data center again (once its health checks pass)."""
    _set_drained(name, False, config, run_dir)


@dc_app.command("fail")
def dc_fail(
    name: Annotated[str, typer.Argument(help="data center, e.g. eu-west")],
    config: ConfigOption = None,
    run_dir: RunDirOption = None,
) -> None:
    """Fail a whole data center (chaos): SIGKILL every process of it and leave them down.
    The geo DNS stops sending users there after its failed health checks; bring it back
    with `millions dc restore NAME`."""
    from millions.topology.control import ControlClient, ControlError

    directory = resolve_run_dir(load_config(config), run_dir)
    try:
        result = ControlClient(directory).request("POST", "/dc/fail", {"dc": name})
    except ControlError as exc:
        raise fail(str(exc)) from None
    killed = ", ".join(f"{component} (pid {pid})" for component, pid in result["killed"].items())
    console.print(f"data center {name} failed: killed {killed or 'nothing'}; left down")


@dc_app.command("restore")
def dc_restore(
    name: Annotated[str, typer.Argument(help="data center, e.g. eu-west")],
    config: ConfigOption = None,
    run_dir: RunDirOption = None,
) -> None:
    """Start the processes of a failed data center again and wait until they are healthy;
    the geo DNS sends users back after its health checks pass."""
    from millions.topology.control import ControlClient, ControlError

    directory = resolve_run_dir(load_config(config), run_dir)
    with console.status(f"starting the components of {name}…"):
        try:
            result = ControlClient(directory).request("POST", "/dc/restore", {"dc": name})
        except ControlError as exc:
            raise fail(str(exc)) from None
    started = ", ".join(result["started"]) or "nothing was down"
    console.print(f"data center {name} restored: {started}")
    failback = result.get("failback")
    if failback:
        console.print(
            f"its shard copies caught up in {failback['caught_up_s']}s; switched back: "
            f"{', '.join(failback['switched_back']) or 'none'} (longest write pause "
            f"{failback['max_write_pause_ms']} ms)"
        )


@dc_app.command("failover")
def dc_failover(
    name: Annotated[str, typer.Argument(help="the failed data center, e.g. eu-west")],
    config: ConfigOption = None,
    run_dir: RunDirOption = None,
) -> None:
    """Promote replicas in the other data centers for every shard whose primary is in NAME
    (the supervisor also does it by itself once every process of NAME has been down for
    `replication.failover_after_s`). Prints the writes lost: those the replicas never got."""
    from millions.topology.control import ControlClient, ControlError

    directory = resolve_run_dir(load_config(config), run_dir)
    try:
        report = ControlClient(directory).request("POST", "/dc/failover", {"dc": name})
    except ControlError as exc:
        raise fail(str(exc)) from None
    for line in report["report"]:
        console.print(line)
    unknown = report["unknown_losses"]
    console.print(
        f"writes lost: {report['writes_lost']}"
        + (f" (and unknown for {', '.join(unknown)})" if unknown else "")
    )


def _set_drained(name: str, drained: bool, config: Path | None, run_dir: Path | None) -> None:
    from millions.dns.admin import DnsAdminError, drain_dc, undrain_dc

    url, token = _dns_admin(config, run_dir)
    try:
        now_drained = (drain_dc if drained else undrain_dc)(url, token, name)
    except DnsAdminError as exc:
        raise fail(str(exc), code=2) from None
    verb = "drained" if drained else "undrained"
    console.print(f"{verb} {name}; drained data centers: {', '.join(now_drained) or 'none'}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
