"""A stateless web server: uvicorn running any ASGI app with shared sessions.

The server keeps no per-user state: sessions go to the shared store named in the
config, so the load balancer may send any request to any web server. The process
handles SIGTERM as a graceful stop (uvicorn finishes in-flight requests).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import uvicorn

from millions.edge.links import CDN_HEALTH_URL_ENV, CDN_PURGE_URLS_ENV, CDN_URL_ENV
from millions.import_path import ImportPathError, import_object
from millions.telemetry import logs
from millions.topology.app_env import export_data_locations
from millions.topology.config import MillionsConfig
from millions.topology.run_secrets import run_secret
from millions.web.ops import OpsMiddleware

log = logging.getLogger("millions.web")
SECRET_FILE = "session-secret"


class AppImportError(Exception):
    """The configured `app = "module:attr"` cannot be imported."""


def load_app(app_path: str) -> Any:
    """Import `module:attr`; errors say which part is wrong."""
    try:
        target = import_object(app_path, "app")
    except ImportPathError as exc:
        raise AppImportError(str(exc)) from None
    if not callable(target):
        raise AppImportError(f"app: {app_path} is not an ASGI application")
    return target


def session_secret(config: MillionsConfig, run_dir: Path) -> str:
    """The cookie signing key every web server of a run shares.

    From config or MILLIONS_SESSION_SECRET when set, else generated once per run
    directory and kept in a file only the owner can read.
    """
    if config.sessions.secret:
        return config.sessions.secret
    from_env = os.environ.get("MILLIONS_SESSION_SECRET")
    if from_env:
        return from_env
    return run_secret(run_dir / SECRET_FILE)


def prepare_environment(
    config: MillionsConfig, run_dir: Path, name: str, dc: str | None = None
) -> None:
    """Tell the app where its data and shards live, who it is, which queue takes its jobs
    and, for a server of a DC with CDN edges, which edge its pages link to and where to
    purge (read by the reference app)."""
    os.environ["MILLIONS_MAX_UPLOAD_BYTES"] = str(config.web.max_upload_bytes)
    os.environ["MILLIONS_COMPONENT"] = name
    os.environ["MILLIONS_QUEUE_URL"] = config.queue.resolved_url(run_dir).url
    export_data_locations(config.shards, run_dir, list(config.dcs) if config.replicates else [])
    if dc is not None and config.edge.enabled:
        os.environ[CDN_URL_ENV] = config.edge_url(dc)
        os.environ[CDN_HEALTH_URL_ENV] = config.edge_ops_url(dc) + "/healthz"
        os.environ[CDN_PURGE_URLS_ENV] = ",".join(config.edge_purge_urls())


async def serve(
    config: MillionsConfig,
    run_dir: Path,
    listen: tuple[str, int],
    name: str,
    app_path: str | None = None,
    dc: str | None = None,
) -> None:
    """Run one web server until SIGTERM/SIGINT."""
    from millions.sessions import open_store
    from millions.sessions.middleware import SessionMiddleware

    prepare_environment(config, run_dir, name, dc)
    app = load_app(app_path or config.app)
    store = open_store(config.sessions.engine, config.sessions.url, run_dir)
    wrapped = OpsMiddleware(
        SessionMiddleware(
            app,
            store,
            session_secret(config, run_dir),
            cookie_name=config.sessions.cookie_name,
            ttl_s=config.sessions.ttl_s,
        ),
        component=name,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            wrapped,
            host=listen[0],
            port=listen[1],
            loop="none",
            http="httptools",
            lifespan="auto",
            access_log=False,
            log_config=None,
            server_header=False,
            timeout_graceful_shutdown=10,
            timeout_keep_alive=75,
            limit_concurrency=2000,
        )
    )
    log.info("web server starting", extra={"listen": f"{listen[0]}:{listen[1]}"})
    try:
        await server.serve()
    finally:
        await store.close()
    log.info("web server stopped")


def run(
    config: MillionsConfig,
    run_dir: Path,
    listen: tuple[str, int],
    name: str,
    app_path: str | None = None,
    log_file: Path | None = None,
    dc: str | None = None,
) -> None:
    """Blocking entry point used by `millions web` and the supervisor."""
    import uvloop

    logs.configure(name, log_file)
    uvloop.run(serve(config, run_dir, listen, name, app_path, dc))
