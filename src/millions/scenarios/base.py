"""What every scenario needs: an isolated topology and a timeline of injected faults."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from millions.telemetry import logs
from millions.topology.config import DataCenterConfig, MillionsConfig
from millions.topology.supervisor import Supervisor

SCENARIO_SUBNET_BASE = 201
#: Each scenario's first subnet, three apart (two DCs and the DNS server), so that
#: different scenarios can run side by side.
SUBNET_BASES = {"stateless": 201, "queue": 204, "reshard": 207, "failover": 210}


def isolated_config(
    base: MillionsConfig,
    run_dir: Path,
    web: int | None = None,
    subnet_base: int = SCENARIO_SUBNET_BASE,
) -> MillionsConfig:
    """The config with scenario-only addresses (DC subnets from `subnet_base` on, the
    DNS server after them) and run directory.

    Client networks stay: they are source addresses of simulated users, not listeners."""
    dcs = {
        name: DataCenterConfig(
            subnet=f"127.0.{subnet_base + i}",
            web=dc.web if web is None else web,
            clients=dc.clients,
        )
        for i, (name, dc) in enumerate(base.dcs.items())
    }
    dns = base.dns.model_copy(update={"host": f"127.0.{subnet_base + len(dcs)}.53"})
    return base.model_copy(update={"dcs": dcs, "dns": dns, "run_dir": str(run_dir)})


@contextlib.asynccontextmanager
async def fresh_topology(
    base: MillionsConfig,
    console: Console,
    quiet: bool,
    keep_run_dir: bool = False,
    scenario: str = "stateless",
) -> AsyncIterator[Supervisor]:
    """Start a topology in a new run directory, on the addresses of `scenario`; stop it
    (and remove the directory) after."""
    run_dir = Path(tempfile.mkdtemp(prefix="millions-scenario-"))
    config = isolated_config(base, run_dir, subnet_base=SUBNET_BASES[scenario])
    supervisor = Supervisor(config, run_dir)
    logs.configure("scenario", supervisor.paths.log_file("supervisor"))
    try:
        if quiet:
            await supervisor.start()
        else:
            with console.status("starting a fresh topology…") as spinner:
                await supervisor.start(progress=lambda message: spinner.update(message))
            console.print(f"topology up in {run_dir}")
        yield supervisor
    finally:
        await supervisor.stop()
        if not keep_run_dir:
            shutil.rmtree(run_dir, ignore_errors=True)


@dataclass
class Timeline:
    """Injected events with their time since the start of load."""

    started: float = field(default_factory=time.monotonic)
    events: list[dict[str, object]] = field(default_factory=list)
    console: Console | None = None

    def mark(self, what: str) -> None:
        at = round(time.monotonic() - self.started, 2)
        self.events.append({"t_s": at, "event": what})
        if self.console is not None:
            self.console.log(what)


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], timeout_s: float, what: str
) -> None:
    """Poll `predicate` every 50 ms until true; raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
