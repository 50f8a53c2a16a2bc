"""Scenario `stateless`: logged-in users keep working while web servers die and come and go.

Steady load from logged-in users through both data centers' load balancers while
web-us-east-1 is killed with SIGKILL, then us-east is scaled from 2 to 4 web servers
and back to 2. Because sessions live in the shared store and the load balancer retries
and drains, the design promises zero failed requests and zero logged-out users.
"""

from __future__ import annotations

import asyncio
from typing import Any

from rich.console import Console

from millions.load import LoadConfig, LoadReport, LoadRunner, run_with_progress
from millions.load.topology import topology_targets
from millions.scenarios import Scenario
from millions.scenarios.base import Timeline, fresh_topology, wait_until
from millions.topology.config import MillionsConfig
from millions.topology.supervisor import ComponentState, Supervisor

USERS = 24
WARMUP_REQUESTS = 200
SETTLE_S = 2.0
REQUIRED_ZERO = ("failed_requests", "logged_out_users")


async def _faults(supervisor: Supervisor, runner: LoadRunner, timeline: Timeline) -> None:
    await wait_until(
        lambda: runner.snapshot().requests >= WARMUP_REQUESTS, 60, "the load to warm up"
    )
    victim = supervisor.processes["web-us-east-1"]
    pid = supervisor.kill(victim.spec.name, restart=True)
    timeline.mark(f"SIGKILL web-us-east-1 (pid {pid})")
    await wait_until(
        lambda: victim.state is ComponentState.RUNNING and victim.pid not in (None, pid),
        30,
        "web-us-east-1 to be restarted",
    )
    timeline.mark("web-us-east-1 restarted by the supervisor")
    await asyncio.sleep(SETTLE_S)
    await supervisor.scale("us-east", 4)
    timeline.mark("us-east scaled to 4 web servers")
    await asyncio.sleep(SETTLE_S)
    await supervisor.scale("us-east", 2)
    timeline.mark("us-east scaled back to 2 web servers (2 drained)")
    await asyncio.sleep(SETTLE_S)


async def run(base: MillionsConfig, console: Console, quiet: bool) -> dict[str, Any]:
    async with fresh_topology(base, console, quiet) as supervisor:
        config = supervisor.config
        targets, geo_dns = topology_targets(config)
        runner = LoadRunner(
            LoadConfig(
                targets=targets,
                dns=geo_dns,
                users=USERS,
                duration_s=120.0,
                mix={"browse": 3, "me": 3, "list": 2, "view": 2},
                think_time_s=0.01,
            )
        )
        timeline = Timeline(console=None if quiet else console)
        if quiet:
            load = asyncio.create_task(runner.run())
        else:
            load = asyncio.create_task(run_with_progress(runner, console))
        try:
            await _faults(supervisor, runner, timeline)
        finally:
            runner.stop()
            report: LoadReport = await load
    result: dict[str, Any] = {
        "requests": report.requests,
        "failed_requests": report.failed_requests,
        "logged_out_users": report.logged_out_users,
        "p50_ms": round(report.p50_ms, 2),
        "p99_ms": round(report.p99_ms, 2),
        "users": report.users,
        "duration_s": round(report.duration_s, 2),
        "throughput_rps": round(report.throughput_rps, 1),
        "served_by": report.served_by,
        "errors": report.errors,
        "events": timeline.events,
    }
    return result


def passed(result: dict[str, Any]) -> bool:
    return all(result[key] == 0 for key in REQUIRED_ZERO) and result["requests"] > 0


SCENARIO = Scenario(
    name="stateless",
    summary="kill a web server and scale a DC 2→4→2 under logged-in load; "
    "expect 0 failed requests and 0 logged-out users",
    run=run,
    passed=passed,
)
