"""A data center's replicator as a long-running process: `run_replicator` plus a loopback
HTTP listener with `/metrics` (Prometheus) and `/healthz` (200 once the placement is
loaded, 503 before), stopped by SIGTERM or SIGINT after the transaction in flight.

Used by `millions replicator` (the topology's per-DC component) and by
`python -m millions.shards.replication`.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from millions.shards.config import ShardsConfig
from millions.shards.replication.replicator import run_replicator
from millions.shards.schema import ShardSchema
from millions.workers.metrics import check_loopback


async def serve(
    config: ShardsConfig,
    run_dir: Path,
    dc: str,
    dcs: Sequence[str],
    *,
    listen: tuple[str, int] | None = None,
    schema: ShardSchema | None = None,
) -> None:
    """Replicate into `dc`'s copies until SIGTERM/SIGINT; metrics on `listen` (loopback)."""
    registry = CollectorRegistry()
    ready = asyncio.Event()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(_request: web.Request) -> web.Response:
        state = {"status": "ok" if ready.is_set() else "starting", "dc": dc}
        return web.Response(
            body=json.dumps(state).encode(),
            status=200 if ready.is_set() else 503,
            content_type="application/json",
        )

    runner: web.AppRunner | None = None
    if listen is not None:
        check_loopback(listen[0])
        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", healthz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, *listen).start()
    try:
        await run_replicator(
            config, run_dir, dc, stop, dcs=dcs, schema=schema, registry=registry, on_ready=ready
        )
    finally:
        if runner is not None:
            await runner.cleanup()
