"""SessionMiddleware around real Starlette apps, with real and recording stores."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from session_support import (
    DownStore,
    FakeClock,
    MemoryStore,
    RecordingStore,
    call_asgi,
    http_scope,
    parse_set_cookie,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from millions.sessions.base import SessionDataError, SessionStore
from millions.sessions.middleware import SessionMiddleware
from millions.sessions.redis import RedisSessionStore
from millions.sessions.sqlite import SqliteSessionStore

pytestmark = pytest.mark.timeout(30)

SECRET = "middleware-test-secret"
COOKIE = "millions_session"


async def whoami(request: Request) -> Response:
    session = request.session
    return JSONResponse({"user": session.get("user"), "visits": session.get("visits", 0)})


async def login(request: Request) -> Response:
    request.scope["session"].rotate()
    request.session["user"] = request.query_params["user"]
    return PlainTextResponse("welcome")


async def logout(request: Request) -> Response:
    request.scope["session"].destroy()
    return PlainTextResponse("bye")


async def visit(request: Request) -> Response:
    request.session["visits"] = request.session.get("visits", 0) + 1
    return PlainTextResponse("counted")


async def cached(request: Request) -> Response:
    request.session["seen"] = True
    return PlainTextResponse("x", headers={"cache-control": "no-store"})


async def stream(request: Request) -> Response:
    request.session["streamed"] = True

    async def chunks() -> AsyncIterator[bytes]:
        for n in range(3):
            yield f"chunk{n};".encode()

    return StreamingResponse(chunks())


async def bad_data(request: Request) -> Response:
    request.session["when"] = {1, 2}
    return PlainTextResponse("never")


async def websocket_whoami(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json({"user": websocket.session.get("user")})
    await websocket.close()


ROUTES = [
    Route("/", whoami),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/visit", visit, methods=["POST"]),
    Route("/cached", cached, methods=["POST"]),
    Route("/stream", stream),
    Route("/bad", bad_data, methods=["POST"]),
    WebSocketRoute("/ws", websocket_whoami),
]


def web_server(store: SessionStore, **options: Any) -> SessionMiddleware:
    """One stateless web server: a fresh app and middleware over the shared store."""
    return SessionMiddleware(Starlette(routes=ROUTES), store, SECRET, **options)


def client_for(app: ASGIApp, base_url: str = "http://testserver") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


async def fetch(
    app: ASGIApp,
    method: str,
    path: str,
    cookie: str | None = None,
    base_url: str = "http://testserver",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """One request with exactly the given cookie (no cookie jar between requests)."""
    sent = dict(headers or {})
    if cookie is not None:
        sent["cookie"] = f"{COOKIE}={cookie}"
    async with client_for(app, base_url) as client:
        return await client.request(method, path, headers=sent)


def session_cookie(response: httpx.Response) -> tuple[str, dict[str, str]] | None:
    """The value and attributes of the response's session Set-Cookie, if any."""
    for header in response.headers.get_list("set-cookie"):
        name, value, attributes = parse_set_cookie(header)
        if name == COOKIE:
            return value, attributes
    return None


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def shared_store(tmp_path: Path) -> AsyncIterator[RecordingStore]:
    store = RecordingStore(SqliteSessionStore(tmp_path / "sessions.sqlite3"))
    yield store
    await store.close()


async def log_in(app: ASGIApp, user: str = "ada", cookie: str | None = None) -> str:
    response = await fetch(app, "POST", f"/login?user={user}", cookie)
    assert response.status_code == 200
    issued = session_cookie(response)
    assert issued is not None
    return issued[0]


async def test_login_sets_a_secure_by_default_session_cookie(
    shared_store: RecordingStore,
) -> None:
    app = web_server(shared_store, ttl_s=900)
    response = await fetch(app, "POST", "/login?user=ada")
    issued = session_cookie(response)
    assert issued is not None
    value, attributes = issued
    assert attributes == {"max-age": "900", "path": "/", "httponly": "", "samesite": "Lax"}
    assert response.headers["cache-control"] == "private"
    assert (await fetch(app, "GET", "/", value)).json() == {"user": "ada", "visits": 0}
    assert await shared_store.count() == 1


async def test_another_web_server_sees_the_session(tmp_path: Path) -> None:
    """Two servers, each with its own middleware and store connection, one database."""
    store_a = SqliteSessionStore(tmp_path / "shared.sqlite3")
    store_b = SqliteSessionStore(tmp_path / "shared.sqlite3")
    try:
        server_a, server_b = web_server(store_a), web_server(store_b)
        cookie = await log_in(server_a, "grace")
        assert (await fetch(server_b, "GET", "/", cookie)).json()["user"] == "grace"
        await fetch(server_b, "POST", "/visit", cookie)
        assert (await fetch(server_a, "GET", "/", cookie)).json() == {"user": "grace", "visits": 1}
    finally:
        await store_a.close()
        await store_b.close()


async def test_rotation_issues_a_new_id_and_kills_the_old_cookie(
    shared_store: RecordingStore,
) -> None:
    app = web_server(shared_store)
    visit = await fetch(app, "POST", "/visit")
    issued = session_cookie(visit)
    assert issued is not None
    anonymous_cookie = issued[0]
    rotated_before = metric("millions_sessions_rotated_total")

    logged_in_cookie = await log_in(app, "ada", anonymous_cookie)

    old_id = anonymous_cookie.split(".")[0]
    new_id = logged_in_cookie.split(".")[0]
    assert new_id != old_id
    assert await shared_store.load(old_id) is None
    assert await shared_store.load(new_id) == {"visits": 1, "user": "ada"}
    assert (await fetch(app, "GET", "/", anonymous_cookie)).json() == {"user": None, "visits": 0}
    assert (await fetch(app, "GET", "/", logged_in_cookie)).json() == {"user": "ada", "visits": 1}
    assert metric("millions_sessions_rotated_total") == rotated_before + 1


async def test_destroy_deletes_the_session_and_clears_the_cookie(
    shared_store: RecordingStore,
) -> None:
    app = web_server(shared_store)
    cookie = await log_in(app)
    response = await fetch(app, "POST", "/logout", cookie)
    cleared = session_cookie(response)
    assert cleared is not None
    assert cleared[0] == "" and cleared[1]["max-age"] == "0"
    assert await shared_store.count() == 0
    assert (await fetch(app, "GET", "/", cookie)).json()["user"] is None


async def test_anonymous_requests_never_touch_the_store(shared_store: RecordingStore) -> None:
    app = web_server(shared_store, touch_interval_s=0)
    for _ in range(5):
        response = await fetch(app, "GET", "/")
        assert response.status_code == 200
        assert session_cookie(response) is None
    assert shared_store.events == []


async def test_reads_within_the_touch_interval_only_load(shared_store: RecordingStore) -> None:
    app = web_server(shared_store, ttl_s=1800, touch_interval_s=600)
    cookie = await log_in(app)
    shared_store.events.clear()
    for _ in range(3):
        response = await fetch(app, "GET", "/", cookie)
        assert session_cookie(response) is None
    assert shared_store.ops() == ["load", "load", "load"]


async def test_sliding_expiry_touches_once_per_interval_and_keeps_the_session_alive() -> None:
    clock = FakeClock()
    store = RecordingStore(MemoryStore(clock))
    app = web_server(store, ttl_s=100, touch_interval_s=10, clock=clock)
    cookie = await log_in(app)

    clock.advance(5)
    store.events.clear()
    assert session_cookie(await fetch(app, "GET", "/", cookie)) is None
    assert store.ops() == ["load"]

    clock.advance(10)  # 15 s after login: past the touch interval
    response = await fetch(app, "GET", "/", cookie)
    assert store.ops() == ["load", "load", "touch"]
    refreshed = session_cookie(response)
    assert refreshed is not None and refreshed[1]["max-age"] == "100"

    clock.advance(90)  # 105 s after login, 90 s after the touch: alive only thanks to it
    assert (await fetch(app, "GET", "/", refreshed[0])).json()["user"] == "ada"


async def test_an_expired_session_reads_as_anonymous() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    app = web_server(store, ttl_s=100, clock=clock)
    cookie = await log_in(app)
    expired_before = metric("millions_session_invalid_cookies_total", reason="expired")

    clock.advance(101)
    response = await fetch(app, "GET", "/", cookie)
    assert response.status_code == 200
    assert response.json()["user"] is None
    cleared = session_cookie(response)
    assert cleared is not None and cleared[1]["max-age"] == "0"
    assert metric("millions_session_invalid_cookies_total", reason="expired") == (
        expired_before + 1
    )


@pytest.mark.timeout(20)
async def test_a_session_expired_in_the_real_store_reads_as_anonymous(tmp_path: Path) -> None:
    store = SqliteSessionStore(tmp_path / "expiry.sqlite3")
    try:
        app = web_server(store, ttl_s=1, touch_interval_s=0)
        cookie = await log_in(app)
        session_id = cookie.split(".")[0]
        deadline = time.monotonic() + 5
        while await store.load(session_id) is not None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)  # expiry is wall-clock time; poll for it
        response = await fetch(app, "GET", "/", cookie)
        assert response.status_code == 200
        assert response.json()["user"] is None
    finally:
        await store.close()


async def test_the_secure_flag_follows_https(shared_store: RecordingStore) -> None:
    app = web_server(shared_store)
    direct = await fetch(app, "POST", "/login?user=ada", base_url="https://testserver")
    proxied = await fetch(app, "POST", "/login?user=ada", headers={"x-forwarded-proto": "https"})
    plain = await fetch(app, "POST", "/login?user=ada")
    for response, secure in ((direct, True), (proxied, True), (plain, False)):
        issued = session_cookie(response)
        assert issued is not None
        assert ("secure" in issued[1]) is secure


async def test_an_app_chosen_cache_control_is_kept(shared_store: RecordingStore) -> None:
    response = await fetch(web_server(shared_store), "POST", "/cached")
    assert session_cookie(response) is not None
    assert response.headers.get_list("cache-control") == ["no-store"]


async def test_the_session_is_saved_before_the_headers_leave_and_bodies_stream() -> None:
    events: list[tuple[str, str]] = []
    store = RecordingStore(MemoryStore(), events)
    app = web_server(store)

    def on_send(message: Message) -> None:
        events.append((message["type"], ""))

    sent = await call_asgi(app, http_scope("/stream"), on_send=on_send)
    kinds = [kind for kind, _ in events]
    assert kinds[:2] == ["save", "http.response.start"]
    assert b"".join(m.get("body", b"") for m in sent[1:]) == b"chunk0;chunk1;chunk2;"
    assert kinds.count("http.response.body") >= 3  # streamed, not buffered


async def test_unserializable_session_data_is_a_clear_error(
    shared_store: RecordingStore,
) -> None:
    app = web_server(shared_store)
    with pytest.raises(SessionDataError, match="JSON"):
        await fetch(app, "POST", "/bad")
    assert await shared_store.count() == 0


async def test_a_store_outage_answers_503_for_session_users_only() -> None:
    store = DownStore()
    app = web_server(store)
    errors_before = metric("millions_session_store_errors_total", op="load")
    cookie = SessionMiddleware(Starlette(), MemoryStore(), SECRET).cookies.sign("s" * 43)

    response = await fetch(app, "GET", "/", cookie)
    assert response.status_code == 503
    assert response.text.startswith("503 Service Unavailable")
    assert "Traceback" not in response.text
    assert metric("millions_session_store_errors_total", op="load") == errors_before + 1

    assert (await fetch(app, "GET", "/")).status_code == 200  # no session, no store
    saving = await fetch(app, "POST", "/visit")
    assert saving.status_code == 503
    assert session_cookie(saving) is None
    assert saving.text.startswith("503")


async def test_a_real_redis_outage_answers_503() -> None:
    store = RedisSessionStore("redis://127.0.0.1:1/0")
    try:
        response = await fetch(web_server(store), "POST", "/visit")
        assert response.status_code == 503
    finally:
        await store.close()


async def test_a_failed_touch_is_tolerated() -> None:
    clock = FakeClock()
    memory = MemoryStore(clock)
    app = web_server(memory, touch_interval_s=0, clock=clock)
    cookie = await log_in(app)

    class TouchFails(RecordingStore):
        async def touch(self, session_id: str, ttl_s: int) -> None:
            await DownStore().touch(session_id, ttl_s)

    flaky = web_server(TouchFails(memory), touch_interval_s=0, clock=clock)
    response = await fetch(flaky, "GET", "/", cookie)
    assert response.status_code == 200
    assert response.json()["user"] == "ada"
    assert session_cookie(response) is None


async def test_non_http_scopes_pass_through() -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)

    middleware = SessionMiddleware(app, DownStore(), SECRET)
    await middleware({"type": "lifespan", "asgi": {"version": "3.0"}}, _no_receive, _no_send)
    assert seen == [{"type": "lifespan", "asgi": {"version": "3.0"}}]


async def _no_receive() -> Message:
    raise AssertionError("not called")


async def _no_send(message: Message) -> None:
    raise AssertionError("not called")


async def test_websockets_get_the_session_read_only() -> None:
    store = MemoryStore()
    app = web_server(store)
    cookie = await log_in(app, "linus")
    scope = http_scope("/ws", headers=[(b"cookie", f"{COOKIE}={cookie}".encode())])
    scope.update(type="websocket", scheme="ws", subprotocols=[])
    sent = await call_asgi(app, scope, receive_messages=[{"type": "websocket.connect"}])
    assert sent[0]["type"] == "websocket.accept"
    assert sent[1]["text"] == '{"user":"linus"}'


@pytest.mark.parametrize(
    ("option", "value"),
    [("ttl_s", 0), ("touch_interval_s", -1), ("touch_interval_s", 1800), ("secret", "")],
)
def test_bad_middleware_options_are_refused(option: str, value: object) -> None:
    options: dict[str, Any] = {"secret": SECRET, option: value}
    with pytest.raises(ValueError):
        SessionMiddleware(Starlette(), MemoryStore(), **options)


# Tampered cookies: garbage and bit flips must give a fresh anonymous session, status 200.

FUZZ_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def fuzz_server() -> tuple[SessionMiddleware, RecordingStore, Callable[[], str]]:
    memory = MemoryStore()
    store = RecordingStore(memory)
    app = web_server(store)

    def new_cookie() -> str:
        session_id = "A" * 43
        memory.rows[session_id] = ('{"user": "ada"}', time.time() + 600)
        return app.cookies.sign(session_id)

    return app, store, new_cookie


async def whoami_with(app: ASGIApp, cookie_header: bytes) -> tuple[int, dict[str, Any]]:
    sent = await call_asgi(app, http_scope("/", headers=[(b"cookie", cookie_header)]))
    status = sent[0]["status"]
    body = b"".join(message.get("body", b"") for message in sent[1:])
    return status, json.loads(body)


@FUZZ_SETTINGS
@given(garbage=st.binary(max_size=400))
async def test_garbage_cookies_give_a_fresh_anonymous_session(garbage: bytes) -> None:
    app, store, _ = fuzz_server()
    status, body = await whoami_with(app, COOKIE.encode() + b"=" + garbage)
    assert status == 200
    assert body == {"user": None, "visits": 0}
    assert store.ops() == []  # rejected without a store lookup


@FUZZ_SETTINGS
@given(data=st.data())
async def test_bit_flipped_cookies_never_reach_another_session(data: st.DataObject) -> None:
    app, _, new_cookie = fuzz_server()
    raw = bytearray(new_cookie().encode())
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] ^= 1 << data.draw(st.integers(0, 7))
    status, body = await whoami_with(app, COOKIE.encode() + b"=" + bytes(raw))
    assert status == 200
    # Either the flip hit the signature's unused base64 bits (same session) or it is refused.
    assert body["user"] in (None, "ada")


async def test_a_tampered_cookie_is_counted_and_cleared() -> None:
    app, _, new_cookie = fuzz_server()
    before = metric("millions_session_invalid_cookies_total", reason="bad_signature")
    value = new_cookie()
    tampered = value[:-5] + ("AAAAA" if value[-5:] != "AAAAA" else "BBBBB")
    sent = await call_asgi(
        app, http_scope("/", headers=[(b"cookie", f"{COOKIE}={tampered}".encode())])
    )
    assert sent[0]["status"] == 200
    headers = dict(sent[0]["headers"])
    assert headers[b"set-cookie"].startswith(f"{COOKIE}=; Max-Age=0".encode())
    assert metric("millions_session_invalid_cookies_total", reason="bad_signature") == before + 1
