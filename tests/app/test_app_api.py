"""The JSON API: accounts and sessions, uploads and their validation, images, errors."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from app_harness import (
    CHEAP_HASHER,
    COOKIE,
    MAX_UPLOAD,
    PASSWORD,
    image_bytes,
    me_with_cookie,
    png_bomb,
    serve,
    sign_up,
    upload,
    with_sessions,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.types import ASGIApp

from millions.app import create_app
from millions.sessions.sqlite import SqliteSessionStore

pytestmark = pytest.mark.timeout(30)


# accounts and sessions


async def test_signup_logs_in_and_me_names_the_user(client: httpx.AsyncClient) -> None:
    created = await sign_up(client, "alice")
    assert created["username"] == "alice"
    assert isinstance(created["id"], int)
    me = await client.get("/api/me")
    assert me.status_code == 200
    assert me.json() == created


async def test_signup_of_a_taken_name_is_409(client: httpx.AsyncClient) -> None:
    await sign_up(client, "alice")
    again = await client.post("/api/signup", json={"username": "alice", "password": PASSWORD})
    assert again.status_code == 409
    assert "taken" in again.json()["error"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"username": "Al", "password": PASSWORD}, 422, "username must be 3-32"),
        ({"username": "bad name", "password": PASSWORD}, 422, "username must be"),
        ({"username": "alice", "password": "short"}, 422, "password must be 8-256"),
        ({"username": "alice", "password": "x" * 257}, 422, "password must be 8-256"),
        ({"username": "alice"}, 400, "'password' are required"),
        ({"username": 7, "password": PASSWORD}, 400, "as strings"),
        (["alice", PASSWORD], 400, "JSON object"),
    ],
)
async def test_signup_rejects_bad_input_with_a_clear_error(
    client: httpx.AsyncClient, body: object, status: int, message: str
) -> None:
    response = await client.post("/api/signup", json=body)
    assert response.status_code == status
    assert message in response.json()["error"]
    assert (await client.get("/api/me")).status_code == 401


async def test_lone_surrogates_in_json_are_refused_not_crashed(
    client: httpx.AsyncClient,
) -> None:
    await sign_up(client, "alice")
    raw = b'{"username": "alice", "password": "abcdefgh\\ud800"}'
    headers = {"content-type": "application/json"}
    signup = await client.post(
        "/api/signup", content=raw.replace(b"alice", b"bob"), headers=headers
    )
    assert signup.status_code == 422
    assert "valid Unicode" in signup.json()["error"]
    login = await client.post("/api/login", content=raw, headers=headers)
    assert login.status_code == 401


async def test_signup_needs_a_json_body(client: httpx.AsyncClient) -> None:
    form = await client.post("/api/signup", data={"username": "alice", "password": PASSWORD})
    assert form.status_code == 415
    assert "application/json" in form.json()["error"]
    broken = await client.post(
        "/api/signup", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert broken.status_code == 400
    assert "not valid JSON" in broken.json()["error"]
    huge = await client.post(
        "/api/signup",
        content=b'{"username": "' + b"a" * 40_000 + b'"}',
        headers={"content-type": "application/json"},
    )
    assert huge.status_code == 413


async def test_login_rotates_the_session_id_and_kills_the_old_one(
    client: httpx.AsyncClient,
) -> None:
    await sign_up(client, "alice")
    first = client.cookies[COOKIE]
    login = await client.post("/api/login", json={"username": "alice", "password": PASSWORD})
    assert login.status_code == 200
    assert login.json()["username"] == "alice"
    second = client.cookies[COOKIE]
    assert second != first
    assert (await client.get("/api/me")).json()["username"] == "alice"
    stale = await me_with_cookie(client, first)
    assert stale.status_code == 401


async def test_anonymous_session_gets_a_new_id_at_login(client: httpx.AsyncClient) -> None:
    await sign_up(client, "alice")
    await client.post("/api/logout")
    await client.get("/login")  # the login form puts a CSRF token in a fresh session
    anonymous = client.cookies[COOKIE]
    await client.post("/api/login", json={"username": "alice", "password": PASSWORD})
    assert client.cookies[COOKIE] != anonymous


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("alice", "wrong password"),
        ("nobody", PASSWORD),
        ("NOT VALID", PASSWORD),
        ("alice", ""),
    ],
)
async def test_bad_credentials_are_401_without_saying_which(
    client: httpx.AsyncClient, username: str, password: str
) -> None:
    await sign_up(client, "alice")
    await client.post("/api/logout")
    response = await client.post("/api/login", json={"username": username, "password": password})
    assert response.status_code == 401
    assert response.json() == {"error": "wrong username or password"}
    assert (await client.get("/api/me")).status_code == 401


async def test_logout_destroys_the_session(client: httpx.AsyncClient) -> None:
    await sign_up(client, "alice")
    cookie = client.cookies[COOKIE]
    response = await client.post("/api/logout")
    assert response.status_code == 204
    assert COOKIE not in client.cookies
    me = await me_with_cookie(client, cookie)
    assert me.status_code == 401
    assert me.json() == {"error": "not logged in"}


# uploads


@pytest.mark.parametrize(
    ("fmt", "content_type", "filename"),
    [
        ("JPEG", "image/jpeg", "a.jpg"),
        ("PNG", "image/png", "b.png"),
        ("WEBP", "image/webp", "misnamed.txt"),
    ],
)
async def test_upload_of_a_real_image_is_described_correctly(
    client: httpx.AsyncClient, fmt: str, content_type: str, filename: str
) -> None:
    await sign_up(client, "alice")
    data = image_bytes(fmt, (41, 17))
    response = await upload(client, data, filename, title="  Sunset\n over  the bay ")
    assert response.status_code == 201, response.text
    photo = response.json()
    assert photo["content_type"] == content_type
    assert (photo["width"], photo["height"]) == (41, 17)
    assert photo["bytes"] == len(data)
    assert photo["title"] == "Sunset over the bay"
    assert photo["url"] == f"/photos/{photo['id']}/image"
    assert photo["page_url"] == f"/p/{photo['id']}"
    image = await client.get(photo["url"])
    assert image.status_code == 200
    assert image.headers["content-type"] == content_type
    assert image.content == data
    meta = await client.get(f"/api/photos/{photo['id']}")
    assert meta.json()["owner"] == "alice"


async def test_upload_needs_login(client: httpx.AsyncClient) -> None:
    response = await upload(client, image_bytes("PNG"))
    assert response.status_code == 401
    assert response.json() == {"error": "not logged in"}


@pytest.mark.parametrize(
    ("data", "filename", "message"),
    [
        (b"hello, I am plain text\n" * 10, "notes.png", "not a JPEG, PNG or WebP"),
        (image_bytes("JPEG", (300, 200))[:-400], "cut.jpg", "damaged or truncated"),
        (image_bytes("PNG", (300, 200))[:-40], "cut.png", "damaged or truncated"),
        (image_bytes("GIF"), "anim.png", "GIF images are not accepted"),
        (b"", "empty.jpg", "empty"),
    ],
)
async def test_upload_of_something_else_is_415(
    client: httpx.AsyncClient, data: bytes, filename: str, message: str
) -> None:
    await sign_up(client, "alice")
    response = await upload(client, data, filename)
    assert response.status_code == 415
    assert message in response.json()["error"]
    assert (await client.get("/api/photos")).json() == {"photos": []}


async def test_decompression_bomb_is_a_clear_413(client: httpx.AsyncClient) -> None:
    await sign_up(client, "alice")
    bomb = png_bomb(100_000, 100_000)
    assert len(bomb) < 1000
    response = await upload(client, bomb, "bomb.png")
    assert response.status_code == 413
    assert "pixels" in response.json()["error"]


async def test_upload_must_be_multipart_with_a_photo_field(client: httpx.AsyncClient) -> None:
    await sign_up(client, "alice")
    raw = await client.post(
        "/api/photos", content=image_bytes("PNG"), headers={"content-type": "image/png"}
    )
    assert raw.status_code == 415
    assert "multipart/form-data" in raw.json()["error"]
    wrong_field = await client.post(
        "/api/photos", files={"picture": ("a.png", image_bytes("PNG"), "image/png")}
    )
    assert wrong_field.status_code == 400
    assert "'photo'" in wrong_field.json()["error"]
    no_boundary = await client.post(
        "/api/photos", content=b"--x\r\n", headers={"content-type": "multipart/form-data"}
    )
    assert no_boundary.status_code == 400
    assert "malformed multipart body" in no_boundary.json()["error"]


async def test_photo_of_exactly_the_limit_is_accepted_and_one_byte_more_is_413(
    client: httpx.AsyncClient,
) -> None:
    await sign_up(client, "alice")
    png = image_bytes("PNG")
    # Bytes after IEND are ignored by decoders: pad a real PNG to an exact size.
    exact = png + b"\0" * (MAX_UPLOAD - len(png))
    assert (await upload(client, exact, "exact.png")).status_code == 201
    response = await upload(client, exact + b"\0", "over.png")
    assert response.status_code == 413
    assert "limit" in response.json()["error"]


class BodyCounter:
    """A streamed multipart body that counts how much of it the server pulled."""

    CHUNK = 16 * 1024

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.pulled += 1
        yield (
            b'--b0undary\r\nContent-Disposition: form-data; name="photo"; '
            b'filename="big.png"\r\nContent-Type: image/png\r\n\r\n'
        )
        for _ in range(self.chunks):
            self.pulled += 1
            yield b"\0" * self.CHUNK


async def test_oversized_streamed_body_is_refused_without_reading_it_all(
    client: httpx.AsyncClient,
) -> None:
    await sign_up(client, "alice")
    body = BodyCounter(chunks=200)  # 3.2 MB against a 64 KiB limit
    response = await client.post(
        "/api/photos",
        content=body,
        headers={"content-type": "multipart/form-data; boundary=b0undary"},
    )
    assert response.status_code == 413
    assert "limit" in response.json()["error"]
    assert body.pulled <= MAX_UPLOAD // BodyCounter.CHUNK + 3


async def test_declared_oversized_body_is_refused_before_reading(
    client: httpx.AsyncClient,
) -> None:
    await sign_up(client, "alice")
    body = BodyCounter(chunks=200)
    response = await client.post(
        "/api/photos",
        content=body,
        headers={
            "content-type": "multipart/form-data; boundary=b0undary",
            "content-length": str(200 * BodyCounter.CHUNK + 200),
        },
    )
    assert response.status_code == 413
    assert body.pulled == 0


async def test_photo_list_is_the_users_own_newest_first(client: httpx.AsyncClient) -> None:
    await sign_up(client, "bob")
    bob_photo = (await upload(client, image_bytes("PNG"), title="bob's")).json()
    await sign_up(client, "alice")
    ids = [(await upload(client, image_bytes("PNG"), title=f"n{i}")).json()["id"] for i in range(3)]
    listed = (await client.get("/api/photos")).json()["photos"]
    assert [photo["id"] for photo in listed] == list(reversed(ids))
    assert [photo["title"] for photo in listed] == ["n2", "n1", "n0"]
    assert bob_photo["id"] not in [photo["id"] for photo in listed]
    await client.post("/api/logout")
    assert (await client.get("/api/photos")).status_code == 401


async def test_image_has_cache_headers_and_revalidates_with_304(
    client: httpx.AsyncClient,
) -> None:
    await sign_up(client, "alice")
    url = (await upload(client, image_bytes("JPEG"))).json()["url"]
    first = await client.get(url)
    etag = first.headers["etag"]
    assert etag.startswith('"') and len(etag) == 66
    assert first.headers["cache-control"] == "public, max-age=86400"
    assert first.headers["last-modified"].endswith("GMT")
    again = await client.get(url, headers={"if-none-match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    assert (await client.get(url, headers={"if-none-match": '"other"'})).status_code == 200
    since = await client.get(url, headers={"if-modified-since": first.headers["last-modified"]})
    assert since.status_code == 304
    head = await client.head(url)
    assert head.status_code == 200
    assert head.headers["etag"] == etag


@pytest.mark.parametrize("path", ["/photos/999/image", "/photos/abc/image", "/photos/0/image"])
async def test_unknown_image_is_404(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(path)).status_code == 404


@pytest.mark.parametrize("photo_id", ["999", "x", "99999999999999999999999", "-1"])
async def test_unknown_photo_metadata_is_a_json_404(
    client: httpx.AsyncClient, photo_id: str
) -> None:
    response = await client.get(f"/api/photos/{photo_id}")
    assert response.status_code == 404
    assert response.json() == {"error": "no such photo"}


# cross-site requests


@pytest.mark.parametrize(
    "headers",
    [
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},
        {"origin": "https://evil.example"},
        {"origin": "null"},
    ],
)
async def test_cross_site_api_posts_are_refused(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    await sign_up(client, "alice")
    files = {"photo": ("a.png", image_bytes("PNG"), "image/png")}
    response = await client.post("/api/photos", files=files, headers=headers)
    assert response.status_code == 403
    assert "cross-site" in response.json()["error"]
    logout = await client.post("/api/logout", headers=headers)
    assert logout.status_code == 403
    assert (await client.get("/api/me")).status_code == 200


async def test_same_origin_browser_posts_are_allowed(client: httpx.AsyncClient) -> None:
    await sign_up(client, "alice")
    files = {"photo": ("a.png", image_bytes("PNG"), "image/png")}
    by_fetch = await client.post(
        "/api/photos", files=files, headers={"sec-fetch-site": "same-origin"}
    )
    assert by_fetch.status_code == 201
    by_origin = await client.post(
        "/api/photos", files=files, headers={"origin": "http://testserver"}
    )
    assert by_origin.status_code == 201


# errors and headers


async def test_api_errors_are_json(client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/nothing-here")
    assert missing.status_code == 404
    assert missing.json() == {"error": "not found"}
    wrong_method = await client.get("/api/login")
    assert wrong_method.status_code == 405
    assert wrong_method.json() == {"error": "method not allowed"}
    assert "POST" in wrong_method.headers["allow"]


async def test_every_response_names_the_server_and_api_answers_are_not_cached(
    client: httpx.AsyncClient,
) -> None:
    for response in [await client.get("/api/me"), await client.get("/nope"), await client.get("/")]:
        assert response.headers["x-served-by"] == "web-test-1"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-content-type-options"] == "nosniff"


async def test_unexpected_errors_give_no_traceback(
    make_app: Callable[..., ASGIApp], monkeypatch: pytest.MonkeyPatch
) -> None:
    from millions.app.store import ShardedAppStore

    async def broken(self: object, user_id: int) -> None:
        raise RuntimeError("database on fire")

    monkeypatch.setattr(ShardedAppStore, "user_by_id", broken)
    async with serve([make_app()], raise_app_exceptions=False) as client:
        await sign_up(client, "alice")
        api = await client.get("/api/me")
        page = await client.get("/")
    assert api.status_code == 500
    assert api.json() == {"error": "internal server error"}
    assert api.headers["x-served-by"] == "web-test-1"
    assert page.status_code == 500
    assert "something went wrong" in page.text
    for response in (api, page):
        assert "Traceback" not in response.text
        assert "on fire" not in response.text


async def test_without_the_session_middleware_the_error_says_what_is_missing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bare = create_app(tmp_path / "data", MAX_UPLOAD, password_hasher=CHEAP_HASHER)
    async with serve([bare], raise_app_exceptions=False) as client:
        response = await client.get("/api/me")
    assert response.status_code == 500
    assert response.json() == {"error": "internal server error"}
    assert "needs millions.sessions.middleware.SessionMiddleware" in caplog.text


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)
SIGNUP_BODIES = JSON_VALUES | st.fixed_dictionaries(
    {
        "username": JSON_VALUES | st.text(max_size=40),
        "password": JSON_VALUES | st.text(max_size=300),
    }
)


@pytest.mark.timeout(60)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=SIGNUP_BODIES)
def test_any_json_body_gets_a_clear_answer_never_a_500(body: object) -> None:
    async def attempt() -> httpx.Response:
        with tempfile.TemporaryDirectory() as data_dir:
            app = create_app(Path(data_dir), MAX_UPLOAD, password_hasher=CHEAP_HASHER)
            store = SqliteSessionStore(Path(data_dir) / "sessions.sqlite3")
            try:
                async with serve([with_sessions(app, store)]) as client:
                    return await client.post(
                        "/api/signup",
                        content=json.dumps(body),
                        headers={"content-type": "application/json"},
                    )
            finally:
                await store.close()

    response = asyncio.run(attempt())
    assert response.status_code in (201, 400, 409, 422), response.text
    if response.status_code != 201:
        assert isinstance(response.json()["error"], str)
