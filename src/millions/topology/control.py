"""The supervisor's control API and the client the CLI uses to reach it.

The API listens on 127.0.0.1 only, on a port picked at start, and every call needs the
bearer token written (mode 0600) to `<run_dir>/control.json` next to the address. So
`millions status`, `kill`, `scale` and `down` work from any shell on the machine that
can read the run directory, and from nowhere else.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from millions.edge.admin import PurgeRequestError, parse_purge_request
from millions.shards import ShardError
from millions.topology.components import RunPaths
from millions.topology.supervisor import StartupError, Supervisor, write_json_atomic


class ControlError(Exception):
    """A control call failed; the message says what to do next."""


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ControlServer:
    """Serves status, kill, scale, DC failure and restore, purge and down for one
    supervisor."""

    def __init__(self, supervisor: Supervisor, on_down: Callable[[], None]) -> None:
        self.supervisor = supervisor
        self.on_down = on_down
        self.token = secrets.token_urlsafe(32)
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application(middlewares=[self._auth], client_max_size=64 * 1024)
        app.router.add_get("/status", self._status)
        app.router.add_post("/kill", self._kill)
        app.router.add_post("/scale", self._scale)
        app.router.add_post("/down", self._down)
        app.router.add_post("/purge", self._purge)
        app.router.add_post("/dc/fail", self._fail_dc)
        app.router.add_post("/dc/restore", self._restore_dc)
        app.router.add_post("/dc/failover", self._failover_dc)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        await web.SockSite(self._runner, listener).start()
        url = f"http://127.0.0.1:{port}"
        self.supervisor.control_url = url
        paths = self.supervisor.paths
        write_json_atomic(
            paths.control, {"url": url, "token": self.token, "pid": os.getpid()}, mode=0o600
        )
        return url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        paths = self.supervisor.paths
        try:
            control = json.loads(paths.control.read_text())
            if control.get("pid") == os.getpid():
                paths.control.unlink()
        except (OSError, ValueError):
            pass

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        expected = f"Bearer {self.token}"
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return web.json_response({"error": "missing or wrong token"}, status=401)
        return await handler(request)

    async def _status(self, _request: web.Request) -> web.Response:
        return web.json_response(self.supervisor.status())

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text='{"error":"body must be JSON"}') from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text='{"error":"body must be a JSON object"}')
        return body

    async def _kill(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        name = str(body.get("name", ""))
        try:
            pid = self.supervisor.kill(name, restart=bool(body.get("restart", True)))
        except KeyError:
            names = ", ".join(self.supervisor.processes)
            return web.json_response(
                {"error": f"no component named {name!r}; components: {names}"}, status=404
            )
        return web.json_response({"killed": name, "pid": pid})

    def _unknown_dc(self, dc: str) -> web.Response:
        dcs = ", ".join(self.supervisor.config.dcs)
        return web.json_response(
            {"error": f"no data center named {dc!r}; data centers: {dcs}"}, status=404
        )

    async def _fail_dc(self, request: web.Request) -> web.Response:
        dc = str((await self._body(request)).get("dc", ""))
        try:
            return web.json_response({"dc": dc, "killed": await self.supervisor.fail_dc(dc)})
        except KeyError:
            return self._unknown_dc(dc)

    async def _restore_dc(self, request: web.Request) -> web.Response:
        dc = str((await self._body(request)).get("dc", ""))
        try:
            return web.json_response({"dc": dc, **await self.supervisor.restore_dc(dc)})
        except KeyError:
            return self._unknown_dc(dc)
        except (StartupError, ShardError) as exc:
            return web.json_response({"error": str(exc)}, status=500)

    async def _failover_dc(self, request: web.Request) -> web.Response:
        dc = str((await self._body(request)).get("dc", ""))
        try:
            return web.json_response(await self.supervisor.failover_dc(dc))
        except KeyError:
            return self._unknown_dc(dc)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        except ShardError as exc:
            return web.json_response({"error": f"failover failed: {exc}"}, status=500)

    async def _scale(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        dc = str(body.get("dc", ""))
        web_count = body.get("web")
        if not isinstance(web_count, int) or isinstance(web_count, bool):
            return web.json_response({"error": "web must be an integer"}, status=400)
        try:
            result = await self.supervisor.scale(dc, web_count)
        except KeyError:
            return self._unknown_dc(dc)
        except (ValueError, StartupError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(result)

    async def _purge(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        url = body.get("url")
        check = (
            {**body, "url": "http://edge" + url}
            if isinstance(url, str) and url[:1] == "/"
            else body
        )
        try:
            parse_purge_request(json.dumps(check).encode())
        except PurgeRequestError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if not self.supervisor.edges():
            return web.json_response(
                {"error": "this topology runs no CDN edges (edge.enabled = false)"}, status=400
            )
        return web.json_response({"edges": await self.supervisor.purge(body)})

    async def _down(self, _request: web.Request) -> web.Response:
        asyncio.get_running_loop().call_soon(self.on_down)
        return web.json_response({"stopping": True})


class ControlClient:
    """What the CLI uses to talk to a running supervisor."""

    def __init__(self, run_dir: Path) -> None:
        self.paths = RunPaths(run_dir.resolve())
        try:
            control = json.loads(self.paths.control.read_text())
            self.url: str = control["url"]
            self.token: str = control["token"]
            self.pid: int = int(control["pid"])
        except (OSError, ValueError, KeyError):
            raise ControlError(
                f"no topology is running in {self.paths.root}; start one with `millions up`"
            ) from None
        if not pid_alive(self.pid):
            raise ControlError(
                f"the supervisor of {self.paths.root} (pid {self.pid}) is gone; "
                "start again with `millions up`"
            )

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        timeout = aiohttp.ClientTimeout(total=120)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.request(method, self.url + path, json=body, headers=headers) as response,
            ):
                data = await response.json(content_type=None)
                if response.status >= 400:
                    raise ControlError(str(data.get("error", data)))
                return data
        except aiohttp.ClientError as exc:
            raise ControlError(f"cannot reach the supervisor at {self.url}: {exc}") from None

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return asyncio.run(self.call(method, path, body))


def pid_alive(pid: int) -> bool:
    """True for a running process; a zombie (dead, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True
