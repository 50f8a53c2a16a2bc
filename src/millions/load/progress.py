"""Showing a load run: a live panel while it runs and tables when it is done.

`snapshot_panel` and `report_tables` build Rich renderables from plain data (testable
without a terminal); `run_with_progress` and `render_report` put them on a console.
"""

from __future__ import annotations

import asyncio
import contextlib

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table

from millions.load.runner import LoadRunner
from millions.load.stats import LoadReport, LoadSnapshot

REFRESH_S = 0.25


async def run_with_progress(
    runner: LoadRunner, console: Console, *, live: bool | None = None
) -> LoadReport:
    """Run `runner`, redrawing a live panel ~4x/s when `live` (default: console is a terminal).

    Cancelling this coroutine stops the run and still waits for its clean shutdown."""
    show = console.is_terminal and not console.is_dumb_terminal if live is None else live
    run = asyncio.ensure_future(runner.run())
    if not show:
        return await _finish(runner, run)
    with Live(
        snapshot_panel(runner.snapshot()), console=console, auto_refresh=False, transient=False
    ) as display:
        try:
            while not run.done():
                await asyncio.wait([run], timeout=REFRESH_S)
                display.update(snapshot_panel(runner.snapshot()), refresh=True)
        except asyncio.CancelledError:
            runner.stop()
            with contextlib.suppress(Exception):
                await asyncio.shield(run)
            raise
    return run.result()


async def _finish(runner: LoadRunner, run: asyncio.Future[LoadReport]) -> LoadReport:
    try:
        return await asyncio.shield(run)
    except asyncio.CancelledError:
        runner.stop()
        with contextlib.suppress(Exception):
            await run
        raise


def snapshot_panel(snapshot: LoadSnapshot) -> RenderableType:
    """The live view: phase, elapsed/total bar, rps, latency, failures, sessions."""
    if snapshot.phase in ("idle", "setup"):
        done = snapshot.users_ready
        title = f"setting up users {done}/{snapshot.users}"
        bar = ProgressBar(total=max(snapshot.users, 1), completed=done, width=40)
    else:
        elapsed = min(snapshot.elapsed_s, snapshot.duration_s)
        title = f"{snapshot.phase} {snapshot.elapsed_s:6.1f}s / {snapshot.duration_s:g}s"
        bar = ProgressBar(total=snapshot.duration_s, completed=elapsed, width=40)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(justify="right", style="bold")
    grid.add_column()
    grid.add_column(justify="right", style="bold")
    grid.add_column()
    grid.add_row("rps", f"{snapshot.rps:,.0f}", "requests", f"{snapshot.requests:,}")
    grid.add_row("p50", f"{snapshot.p50_ms:.1f} ms", "failed", _failures(snapshot.failed_requests))
    grid.add_row(
        "p99",
        f"{snapshot.p99_ms:.1f} ms",
        "logged out",
        _failures(snapshot.logged_out_users, unit=" users"),
    )
    grid.add_row(
        "logged in",
        f"{snapshot.users_logged_in}/{snapshot.users}",
        "setup failed",
        _failures(snapshot.setup_failures),
    )
    if snapshot.dropped_requests:
        grid.add_row("", "", "dropped", _failures(snapshot.dropped_requests))
    return Panel(Group(bar, grid), title=title, title_align="left", expand=False)


def _failures(count: int, unit: str = "") -> str:
    return f"[red]{count:,}{unit}[/red]" if count else f"0{unit}"


def report_tables(report: LoadReport) -> list[RenderableType]:
    """The final report as Rich tables: summary, per action, statuses, servers, errors."""
    summary = Table(title="load run", show_header=False, title_justify="left")
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    rate = "closed loop" if report.target_rate is None else f"{report.target_rate:g} req/s"
    rows = [
        ("users ready", f"{report.users_ready}/{report.users}"),
        ("pacing", rate),
        ("duration", f"{report.duration_s:.2f} s" + (" (stopped)" if report.stopped_early else "")),
        ("requests", f"{report.requests:,}"),
        ("failed", _failures(report.failed_requests)),
        ("logged-out users", _failures(report.logged_out_users)),
        ("throughput", f"{report.throughput_rps:,.1f} req/s"),
        ("latency p50", f"{report.p50_ms:.2f} ms"),
        ("latency p90", f"{report.p90_ms:.2f} ms"),
        ("latency p99", f"{report.p99_ms:.2f} ms"),
        ("latency max", f"{report.max_ms:.2f} ms"),
        ("setup requests", f"{report.setup_requests:,} in {report.setup_duration_s:.2f} s"),
        ("setup failures", _failures(report.setup_failures)),
    ]
    if report.dropped_requests:
        rows.append(("dropped (all users busy)", _failures(report.dropped_requests)))
    if report.cancelled_requests:
        rows.append(("cancelled at end", f"{report.cancelled_requests:,}"))
    for name, value in rows:
        summary.add_row(name, value)
    tables: list[RenderableType] = [summary]

    if report.actions:
        actions = Table(title="by action", title_justify="left")
        for column in ("action", "requests", "failed", "p50 ms", "p99 ms"):
            actions.add_column(column, justify="left" if column == "action" else "right")
        for name, stats in report.actions.items():
            actions.add_row(
                name,
                f"{stats.requests:,}",
                _failures(stats.failed),
                f"{stats.p50_ms:.2f}",
                f"{stats.p99_ms:.2f}",
            )
        tables.append(actions)

    if report.served_by:
        total = sum(report.served_by.values())
        servers = Table(title="served by", title_justify="left")
        servers.add_column("server")
        servers.add_column("responses", justify="right")
        servers.add_column("share", justify="right")
        for name, count in sorted(report.served_by.items()):
            servers.add_row(name, f"{count:,}", f"{100 * count / total:.1f}%")
        tables.append(servers)

    if report.status_counts:
        statuses = Table(title="status codes", title_justify="left")
        statuses.add_column("status")
        statuses.add_column("count", justify="right")
        for status, count in sorted(report.status_counts.items()):
            statuses.add_row(str(status), f"{count:,}")
        tables.append(statuses)

    all_errors = [
        (kind, count, report.error_examples.get(kind, []))
        for kind, count in sorted(report.errors.items())
    ]
    all_errors += [
        (f"setup: {kind}", count, report.setup_error_examples.get(kind, []))
        for kind, count in sorted(report.setup_errors.items())
    ]
    if all_errors:
        errors = Table(title="errors", title_justify="left")
        errors.add_column("kind", style="red")
        errors.add_column("count", justify="right")
        errors.add_column("examples", overflow="fold")
        for kind, count, examples in all_errors:
            errors.add_row(kind, f"{count:,}", "\n".join(examples))
        tables.append(errors)
    return tables


def render_report(report: LoadReport, console: Console) -> None:
    """Print the final report as tables."""
    for table in report_tables(report):
        console.print(table)
