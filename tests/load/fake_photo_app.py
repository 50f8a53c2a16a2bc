"""A tiny in-memory stand-in for the photo-sharing app, with faults to inject.

It speaks the real app's JSON API closely enough for the load generator, counts what it
served (so tests can compare the client's numbers with the server's) and can fail every
Nth request with a 500, cut every Nth response short, forget all sessions, answer with
the wrong user, or stall.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

COOKIE = "millions_session"
SETUP_PATHS = ("/api/signup", "/api/login")


@dataclass
class Faults:
    """What to break. Counters of main-phase requests (anything but signup/login) decide."""

    fail_every: int = 0  # answer 500 to every Nth main request
    drop_every: int = 0  # cut every Nth main response short and close the connection
    forget_sessions_after: int = 0  # drop every session once, after N main requests
    swap_identity: bool = False  # /api/me names somebody else
    delay_s: float = 0.0  # stall every main request this long


@dataclass
class FakeState:
    """Everything the fake app knows and counted."""

    name: str
    faults: Faults = field(default_factory=Faults)
    users: dict[str, tuple[str, int]] = field(default_factory=dict)  # name -> (password, id)
    sessions: dict[str, str] = field(default_factory=dict)  # session id -> username
    photos: dict[int, tuple[str, bytes, str]] = field(default_factory=dict)
    requests_by_path: Counter[str] = field(default_factory=Counter)
    main_requests: int = 0
    served_500: int = 0
    dropped: int = 0
    unauthorized: int = 0
    forgotten: bool = False
    title_mismatches: int = 0  # upload titled with a name other than the session's user
    authenticated_users: set[str] = field(default_factory=set)
    sessions_issued: dict[str, str] = field(default_factory=dict)  # every sid ever -> user
    host_headers: Counter[str] = field(default_factory=Counter)
    served_at: list[tuple[float, str]] = field(default_factory=list)  # (time, local address)

    @property
    def setup_requests(self) -> int:
        return sum(self.requests_by_path[p] for p in SETUP_PATHS)


def build_app(state: FakeState) -> Any:
    def current_user(request: Request) -> str | None:
        sid = request.cookies.get(COOKIE)
        user = state.sessions.get(sid) if sid else None
        if user is not None:
            state.authenticated_users.add(user)
        return user

    def unauthorized() -> JSONResponse:
        state.unauthorized += 1
        return JSONResponse({"error": "not logged in"}, status_code=401)

    def logged_in(username: str, status: int) -> JSONResponse:
        sid = secrets.token_urlsafe(16)
        state.sessions[sid] = username
        state.sessions_issued[sid] = username
        response = JSONResponse(
            {"id": state.users[username][1], "username": username}, status_code=status
        )
        response.set_cookie(COOKIE, sid, httponly=True, samesite="lax")
        return response

    async def signup(request: Request) -> Response:
        body = await request.json()
        username, password = body["username"], body["password"]
        if username in state.users:
            return JSONResponse({"error": "taken"}, status_code=409)
        state.users[username] = (password, len(state.users) + 1)
        return logged_in(username, 201)

    async def login(request: Request) -> Response:
        body = await request.json()
        known = state.users.get(body["username"])
        if known is None or known[0] != body["password"]:
            return JSONResponse({"error": "bad credentials"}, status_code=401)
        return logged_in(body["username"], 200)

    async def me(request: Request) -> Response:
        user = current_user(request)
        if user is None:
            return unauthorized()
        if state.faults.swap_identity:
            user = "somebody_else"
        return JSONResponse({"id": 1, "username": user})

    async def photos(request: Request) -> Response:
        user = current_user(request)
        if user is None:
            return unauthorized()
        if request.method == "GET":
            own = [
                {"id": pid, "title": title}
                for pid, (owner, _, title) in sorted(state.photos.items(), reverse=True)
                if owner == user
            ]
            return JSONResponse({"photos": own})
        form = await request.form()
        upload = form["photo"]
        title = str(form.get("title", ""))
        if not title.startswith(f"{user} "):
            state.title_mismatches += 1
        data = await upload.read()  # type: ignore[union-attr]
        pid = len(state.photos) + 1
        state.photos[pid] = (user, data, title)
        return JSONResponse(
            {"id": pid, "url": f"/photos/{pid}/image", "page_url": f"/p/{pid}"}, status_code=201
        )

    async def photo_page(request: Request) -> Response:
        pid = int(request.path_params["pid"])
        if pid not in state.photos:
            return HTMLResponse("no such photo", status_code=404)
        return HTMLResponse(f"<html><body><img src='/photos/{pid}/image'></body></html>")

    async def photo_image(request: Request) -> Response:
        photo = state.photos.get(int(request.path_params["pid"]))
        if photo is None:
            return Response(b"", status_code=404)
        return Response(photo[1], media_type="image/jpeg")

    async def home(request: Request) -> Response:
        return HTMLResponse("<html><body>millions</body></html>")

    app = Starlette(
        routes=[
            Route("/", home),
            Route("/api/signup", signup, methods=["POST"]),
            Route("/api/login", login, methods=["POST"]),
            Route("/api/me", me),
            Route("/api/photos", photos, methods=["GET", "POST"]),
            Route("/p/{pid}", photo_page),
            Route("/photos/{pid}/image", photo_image),
        ]
    )

    async def with_faults(scope: Scope, receive: Receive, send: Send) -> None:
        """Count every request and inject the configured faults before the real app."""
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        path = scope["path"]
        state.requests_by_path[path] += 1
        state.served_at.append((time.monotonic(), scope["server"][0]))
        for name, value in scope["headers"]:
            if name == b"host":
                state.host_headers[value.decode()] += 1

        async def send_served_by(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message["headers"], (b"x-served-by", state.name.encode())]
            await send(message)

        if path in SETUP_PATHS:
            await app(scope, receive, send_served_by)
            return
        state.main_requests += 1
        n = state.main_requests
        faults = state.faults
        if faults.delay_s:
            await asyncio.sleep(faults.delay_s)
        if faults.forget_sessions_after and n > faults.forget_sessions_after:
            if not state.forgotten:
                state.forgotten = True
                state.sessions.clear()
        if faults.fail_every and n % faults.fail_every == 0:
            state.served_500 += 1
            await Response("boom", status_code=500)(scope, receive, send_served_by)
            return
        if faults.drop_every and n % faults.drop_every == 0:
            state.dropped += 1
            await send_served_by(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"100")],
                }
            )
            await send({"type": "http.response.body", "body": b"partial", "more_body": True})
            raise ConnectionAbortedError("fake app drops this connection")
        await app(scope, receive, send_served_by)

    return with_faults


class FakeServer:
    """The fake app on uvicorn in a background thread, on a loopback address of ours (and,
    sharing its state and port, on `extra_hosts`: one site reached at several addresses)."""

    def __init__(self, host: str, name: str, extra_hosts: tuple[str, ...] = ()) -> None:
        self.state = FakeState(name=name)
        self._sock = _listener(host, 0)
        self.port = self._sock.getsockname()[1]
        self._extra = [_listener(extra, self.port) for extra in extra_hosts]
        self.url = f"http://{host}:{self.port}"
        config = uvicorn.Config(
            build_app(self.state),
            log_level="critical",
            access_log=False,
            lifespan="off",
            loop="uvloop",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock, *self._extra]}, daemon=True
        )

    def start(self, timeout_s: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"fake app on {self.url} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        for sock in [self._sock, *self._extra]:
            sock.close()


def _listener(host: str, port: int) -> socket.socket:
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when the
    # listening socket says proto=TCP; with proto 0 every keep-alive response stalls ~40 ms.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock
