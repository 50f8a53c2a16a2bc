"""A test backend (aiohttp, independent of the proxy code under test), run as a process:

    python backend_app.py HOST PORT NAME

Endpoints: /healthz, /name, /echo (request as JSON), /slow?ms=N, /big?bytes=N,
POST /upload (body size and digest), POST /health/fail and /health/pass (flip /healthz).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys

from aiohttp import web

NAME = "backend"
HEALTHY = True


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok" if HEALTHY else "failing", status=200 if HEALTHY else 503)


async def name(request: web.Request) -> web.Response:
    return web.Response(text=NAME)


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "server": NAME,
            "method": request.method,
            "path": request.path_qs,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body_bytes": len(body),
        }
    )


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(int(request.query.get("ms", "500")) / 1000)
    return web.Response(text=NAME)


async def big(request: web.Request) -> web.StreamResponse:
    size = int(request.query["bytes"])
    response = web.StreamResponse()
    if request.query.get("chunked") != "1":
        response.content_length = size
    await response.prepare(request)
    block = bytes(range(256)) * 256  # 64 KiB
    sent = 0
    while sent < size:
        piece = block[: min(len(block), size - sent)]
        await response.write(piece)
        sent += len(piece)
    await response.write_eof()
    return response


async def upload(request: web.Request) -> web.Response:
    digest = hashlib.sha256()
    total = 0
    async for piece in request.content.iter_any():
        digest.update(piece)
        total += len(piece)
    return web.json_response({"server": NAME, "bytes": total, "sha256": digest.hexdigest()})


async def set_health(request: web.Request) -> web.Response:
    global HEALTHY
    HEALTHY = request.match_info["state"] == "pass"
    return web.Response(text="ok")


def main() -> None:
    global NAME
    host, port, NAME = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    app = web.Application(client_max_size=1 << 30)
    app.add_routes(
        [
            web.get("/healthz", healthz),
            web.get("/name", name),
            web.route("*", "/echo", echo),
            web.get("/slow", slow),
            web.get("/big", big),
            web.post("/upload", upload),
            web.post("/health/{state}", set_health),
        ]
    )
    print(json.dumps({"listening": f"{host}:{port}"}), flush=True)
    web.run_app(app, host=host, port=port, print=None, access_log=None, reuse_address=True)


if __name__ == "__main__":
    main()
