"""Scenario `failover`: a whole data center dies under load, then comes back.

Simulated users in both regions resolve `www` through the geo DNS from their region's
source address (honoring the TTL, like browsers) and keep browsing, reading and
uploading. Then every process of the last data center is killed with SIGKILL and left
down. Measured, by polling with 50 ms granularity:

- `dns_failover_s`: from the kill until the DNS server answers the dead DC's region with
  another DC's load balancer (its health checks need two failures at a 1 s interval);
- `recovery_s`: from the kill until every simulated user's latest request succeeded
  (users of the dead DC's region fail until their cached answer's TTL runs out);
- `failed_requests`: requests that failed from the kill until the end of the scenario
  (during and after the switch, failback included);
- `writes_lost`: the RPO, counted by the promotion that the supervisor starts once every
  process of the DC has been down for `replication.failover_after_s`: changes the dead
  DC's primaries committed that their replicas never applied (None when they could not
  be counted — the run then fails rather than report 0);
- `replication_lag_p99_ms`: how far behind the replicas were before the failure (every
  replica copy sampled 20 times, 100 ms apart);
- `failback_s`: from restarting the DC's processes until the DNS answers with it again
  and every user of its region is served by one of its web servers again; in between,
  its shard copies resync as replicas and its shards switch back (the time that took and
  the longest write pause of the switch are reported too).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console

from millions.load import LoadConfig, LoadRunner, run_with_progress
from millions.load.resolver import GeoDnsClient, ResolveError
from millions.load.runner import SimulatedUser
from millions.load.topology import topology_targets
from millions.scenarios import Scenario
from millions.scenarios.base import Timeline, fresh_topology, wait_until
from millions.topology.config import MillionsConfig
from millions.topology.supervisor import Supervisor

USERS = 16
WARMUP_REQUESTS = 400
SETTLE_S = 3.0
POLL_S = 0.05
DNS_FAILOVER_TARGET_S = 3.0
RECOVERY_TIMEOUT_S = 60.0
LAG_SAMPLES = 20
LAG_INTERVAL_S = 0.1


async def seconds_until(predicate: Callable[[], Any], started: float, what: str) -> float:
    """Seconds from `started` until `predicate()` (awaited when async) is true."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    while time.monotonic() < deadline:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return round(time.monotonic() - started, 3)
        await asyncio.sleep(POLL_S)
    raise TimeoutError(f"timed out after {RECOVERY_TIMEOUT_S:.0f}s waiting for {what}")


async def sample_lag(supervisor: Supervisor, samples: int) -> list[float]:
    """Seconds behind of every replica copy, sampled `samples` times, LAG_INTERVAL_S apart."""
    seconds: list[float] = []
    for _ in range(samples):
        for copies in (await supervisor.data.lag()).values():
            seconds.extend(float(copy["seconds_behind"]) for copy in copies)
        await asyncio.sleep(LAG_INTERVAL_S)
    return seconds


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile (0.0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def everyone_served_since(users: list[SimulatedUser], since: float) -> bool:
    return all(user.last_ok and user.last_at > since for user in users)


def served_by_dc(users: list[SimulatedUser], dc: str, since: float) -> bool:
    return all(
        user.last_ok
        and user.last_at > since
        and (user.last_served_by or "").startswith(f"web-{dc}-")
        for user in users
    )


async def run(base: MillionsConfig, console: Console, quiet: bool) -> dict[str, Any]:
    async with fresh_topology(base, console, quiet, scenario="failover") as supervisor:
        config = supervisor.config
        if not config.dns.enabled or len(config.dcs) < 2:
            raise ValueError("the failover scenario needs the geo DNS and two data centers")
        victim = list(config.dcs)[-1]
        region = config.region(victim)
        source = config.client_source(region)
        www = f"www.{config.dns.zone}"
        resolver = GeoDnsClient((config.dns.host, config.dns.port))

        async def answer() -> str | None:
            try:
                return (await resolver.resolve(www, source)).address
            except ResolveError:
                return None

        targets, geo_dns = topology_targets(config)
        runner = LoadRunner(
            LoadConfig(
                targets=targets,
                dns=geo_dns,
                users=USERS,
                duration_s=600.0,
                mix={"browse": 2, "me": 3, "list": 2, "view": 2, "upload": 1},
                think_time_s=0.02,
            )
        )
        region_users = [u for u in runner.users if u.region == region]
        timeline = Timeline(console=None if quiet else console)
        load = asyncio.create_task(runner.run() if quiet else run_with_progress(runner, console))
        try:
            await wait_until(
                lambda: (
                    runner.snapshot().requests >= WARMUP_REQUESTS
                    and everyone_served_since(runner.users, 0.0)
                ),
                120,
                "every simulated user to be served",
            )
            assert await answer() == config.lb_host(victim), "the region's own DC answers"
            lag_samples = await sample_lag(supervisor, LAG_SAMPLES)
            timeline.mark(
                f"replication lag sampled ({len(lag_samples)} values over {LAG_SAMPLES} rounds)"
            )
            failed_before = runner.snapshot().failed_requests
            killed_at = time.monotonic()
            killed = await supervisor.fail_dc(victim)
            timeline.mark(f"every process of {victim} killed ({len(killed)} processes)")

            async def dns_left_victim() -> bool:
                address = await answer()
                return address is not None and address != config.lb_host(victim)

            dns_failover_s = await seconds_until(dns_left_victim, killed_at, "the DNS switch")
            timeline.mark(f"DNS answers {region} users with another DC after {dns_failover_s}s")
            recovery_s = await seconds_until(
                lambda: everyone_served_since(runner.users, killed_at),
                killed_at,
                "every user to be served again",
            )
            timeline.mark(f"every user served again after {recovery_s}s")
            await wait_until(
                lambda: victim in supervisor.failovers, RECOVERY_TIMEOUT_S, "the promotion"
            )
            promotion = supervisor.failovers[victim]
            timeline.mark(
                f"replicas promoted automatically ({promotion['writes_lost']} writes lost)"
            )
            await asyncio.sleep(SETTLE_S)

            restore_started = time.monotonic()
            restored = await supervisor.restore_dc(victim)
            failback = restored.get("failback", {})
            timeline.mark(
                f"{victim} restarted; its copies caught up and shards "
                f"{', '.join(failback.get('switched_back', [])) or '(none)'} switched back"
            )

            async def dns_back() -> bool:
                return await answer() == config.lb_host(victim)

            dns_failback_s = await seconds_until(dns_back, restore_started, "the DNS to return")
            failback_s = await seconds_until(
                lambda: served_by_dc(region_users, victim, restore_started),
                restore_started,
                f"{region} users to be served by {victim} again",
            )
            timeline.mark(f"{region} users served by {victim} again after {failback_s}s")
            await asyncio.sleep(SETTLE_S)
            failed_requests = runner.snapshot().failed_requests - failed_before
        finally:
            runner.stop()
            report = await load
    unknown = promotion["unknown_losses"]
    return {
        "dns_failover_s": dns_failover_s,
        "recovery_s": recovery_s,
        "failed_requests": failed_requests,
        "writes_lost": None if unknown else promotion["writes_lost"],
        "replication_lag_p99_ms": round(percentile(lag_samples, 0.99) * 1000, 1),
        "failback_s": failback_s,
        "failover_promoted": promotion["promoted"],
        "failback_caught_up_s": failback.get("caught_up_s"),
        "failback_write_pause_ms": failback.get("max_write_pause_ms"),
        "dns_failback_s": dns_failback_s,
        "failed_dc": victim,
        "requests": report.requests,
        "errors": report.errors,
        "served_by": report.served_by,
        "events": timeline.events,
    }


def passed(result: dict[str, Any]) -> bool:
    """The DNS switched in time and the writes lost were counted (a loss that could not
    be counted fails the run: it would hide data loss)."""
    return bool(
        result["dns_failover_s"] <= DNS_FAILOVER_TARGET_S
        and result["requests"] > 0
        and result["writes_lost"] is not None
    )


SCENARIO = Scenario(
    name="failover",
    summary="kill every process of one data center under load from both regions, then "
    "bring it back; expect the DNS to switch within 3 s and every user served again",
    run=run,
    passed=passed,
)
