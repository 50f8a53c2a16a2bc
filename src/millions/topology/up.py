"""`millions up`: run a topology in the foreground or detached, and show it as a table."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from millions.telemetry import logs
from millions.topology.components import RunPaths
from millions.topology.config import MillionsConfig
from millions.topology.control import ControlClient, ControlError, ControlServer, pid_alive
from millions.topology.supervisor import StartupError, Supervisor

STATE_STYLE = {
    "running": "green",
    "starting": "yellow",
    "restarting": "yellow",
    "unhealthy": "red",
    "stopping": "yellow",
    "stopped": "red",
    "down": "red",
}


def status_table(status: dict[str, Any]) -> Table:
    """The component table printed by `up` and `status`."""
    table = Table(title=f"millions — {status['run_dir']} ({status['phase']})", title_justify="left")
    for column in ("component", "DC", "state", "address", "URL", "pid", "uptime", "restarts"):
        table.add_column(column, justify="right" if column in ("pid", "restarts") else "left")
    for c in status["components"]:
        style = STATE_STYLE.get(c["state"], "")
        table.add_row(
            c["name"],
            c["dc"] or "-",
            f"[{style}]{c['state']}[/]" if style else c["state"],
            c["address"],
            c["url"],
            str(c["pid"] or "-"),
            _duration(c["uptime_s"]),
            str(c["restarts"]),
        )
    return table


def _duration(seconds: float) -> str:
    if seconds <= 0:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"


def ensure_not_running(run_dir: Path) -> None:
    """Refuse to start a second supervisor on the same run directory."""
    try:
        client = ControlClient(run_dir)
    except ControlError:
        return
    raise StartupError(
        f"a topology is already running in {client.paths.root} (supervisor pid {client.pid}); "
        "see `millions status` or stop it with `millions down`"
    )


async def run_foreground(config: MillionsConfig, run_dir: Path, console: Console) -> int:
    """Start everything, print the table, run until Ctrl-C or `millions down`."""
    ensure_not_running(run_dir)
    supervisor = Supervisor(config, run_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    supervisor.paths.root.mkdir(parents=True, exist_ok=True)
    logs.configure("supervisor", supervisor.paths.log_file("supervisor"))
    control = ControlServer(supervisor, stop.set)
    await control.start()
    code = 0
    try:
        with console.status("starting the topology…") as spinner:
            starting = asyncio.create_task(
                supervisor.start(progress=lambda message: spinner.update(message))
            )
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, StartupError):
                await starting
            console.print("[yellow]interrupted during start-up[/]")
            code = 130
        elif (failure := starting.exception()) is not None:
            console.print(f"[red]start-up failed:[/] {failure}")
            code = failure.exit_code if isinstance(failure, StartupError) else 1
        else:
            stopping.cancel()
            console.print(status_table(supervisor.status()))
            console.print(
                f"control API {control.supervisor.control_url} (token in "
                f"{supervisor.paths.control}); logs in {supervisor.paths.logs}\n"
                "Ctrl-C or `millions down` stops everything."
            )
            await stop.wait()
    finally:
        with console.status("stopping…"):
            await supervisor.stop()
            await control.close()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    if code == 0:
        console.print("stopped: every component exited")
    return code


def start_detached(
    config_path: Path | None, run_dir: Path, console: Console, timeout_s: float
) -> int:
    """Run the supervisor in the background; return once healthy."""
    ensure_not_running(run_dir)
    paths = RunPaths(run_dir.resolve())
    paths.logs.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        paths.state.unlink()
    argv = [sys.executable, "-m", "millions", "up", "--run-dir", str(paths.root)]
    if config_path is not None:
        argv += ["--config", str(config_path.resolve())]
    output_path = paths.output_file("supervisor")
    with open(output_path, "ab") as output:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,
            env={**os.environ, "COLUMNS": "160", "TERM": "dumb"},
        )
    deadline = time.monotonic() + timeout_s
    with console.status("starting the topology in the background…"):
        while time.monotonic() < deadline:
            if child.poll() is not None:
                tail = output_path.read_text(errors="replace").strip().splitlines()[-5:]
                console.print(f"[red]start-up failed[/] (exit {child.returncode}):")
                for line in tail:
                    console.print(f"  {line}", markup=False)
                return child.returncode if child.returncode == 2 else 1
            try:
                state = json.loads(paths.state.read_text())
            except (OSError, ValueError):
                state = {}
            if state.get("phase") == "running" and state.get("supervisor_pid") == child.pid:
                console.print(status_table(state))
                console.print(
                    f"running in the background (supervisor pid {child.pid}); "
                    "`millions down` stops it"
                )
                return 0
            time.sleep(0.1)
    child.send_signal(signal.SIGTERM)
    console.print(f"[red]start-up timed out[/] after {timeout_s:.0f}s; see {output_path}")
    return 1


def stop_detached(run_dir: Path, console: Console, timeout_s: float = 60.0) -> int:
    client = ControlClient(run_dir)
    client.request("POST", "/down")
    deadline = time.monotonic() + timeout_s
    with console.status(f"stopping the topology (supervisor pid {client.pid})…"):
        while time.monotonic() < deadline:
            if not pid_alive(client.pid):
                console.print("stopped: every component exited")
                return 0
            time.sleep(0.1)
    console.print(
        f"[red]the supervisor (pid {client.pid}) is still running after {timeout_s:.0f}s[/]"
    )
    return 1
