"""The load balancer process: `run()` blocks until SIGTERM or SIGINT.

Signals: SIGTERM/SIGINT stop gracefully (stop accepting, let requests in flight finish for
a few seconds, exit 0); SIGHUP re-reads the backends file.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import uvloop

from millions.lb.service import LoadBalancer
from millions.telemetry import logs
from millions.topology.config import LoadBalancerConfig

log = logging.getLogger("millions.lb")

#: Longest wait for requests in flight at shutdown.
STOP_GRACE_S = 5.0


def run(
    listen: tuple[str, int],
    ops: tuple[str, int],
    config: LoadBalancerConfig,
    backends: list[str] | None = None,
    backends_file: Path | None = None,
    name: str = "lb",
    log_file: Path | None = None,
) -> None:
    """Run one load balancer until SIGTERM/SIGINT (blocking)."""
    logs.configure(name, log_file)
    balancer = LoadBalancer(config, listen, ops, backends, backends_file, name)
    uvloop.run(_serve(balancer, min(STOP_GRACE_S, config.drain_timeout_s)))


async def _serve(balancer: LoadBalancer, grace_s: float) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, balancer.reload)
    await balancer.start()
    await stop.wait()
    log.info("stopping")
    await balancer.stop(grace_s)
