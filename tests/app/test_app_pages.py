"""The HTML site: pages render, forms post-redirect-get, CSRF tokens are enforced."""

from __future__ import annotations

import re

import httpx
import pytest
from app_harness import MAX_UPLOAD, PASSWORD, image_bytes, sign_up, upload

pytestmark = pytest.mark.timeout(30)

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


async def form_token(client: httpx.AsyncClient, path: str) -> str:
    page = await client.get(path)
    assert page.status_code == 200
    match = TOKEN.search(page.text)
    assert match is not None, f"no CSRF field on {path}"
    return match.group(1)


async def test_anonymous_home_introduces_the_site(client: httpx.AsyncClient) -> None:
    home = await client.get("/")
    assert home.status_code == 200
    assert home.headers["content-type"].startswith("text/html")
    assert "Share photos with millions" in home.text
    assert 'href="/signup"' in home.text and 'href="/login"' in home.text
    assert "Served by <strong" in home.text and "web-test-1" in home.text
    assert home.headers["x-served-by"] == "web-test-1"
    assert "set-cookie" not in home.headers  # no form, no session needed


async def test_signup_form_logs_in_and_redirects_home(client: httpx.AsyncClient) -> None:
    token = await form_token(client, "/signup")
    response = await client.post(
        "/signup", data={"csrf_token": token, "username": "carol", "password": PASSWORD}
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    home = await client.get("/")
    assert "Your photos" in home.text
    assert "@carol" in home.text
    assert (await client.get("/api/me")).json()["username"] == "carol"
    assert (await client.get("/signup")).status_code == 303  # already logged in


@pytest.mark.parametrize(
    ("username", "password", "status", "message"),
    [
        ("x", PASSWORD, 400, "username must be"),
        ("carol", "short", 400, "password must be"),
        ("taken_name", PASSWORD, 409, "is taken"),
    ],
)
async def test_signup_form_errors_rerender_with_status(
    client: httpx.AsyncClient, username: str, password: str, status: int, message: str
) -> None:
    await sign_up(client, "taken_name")
    await client.post("/api/logout")
    token = await form_token(client, "/signup")
    response = await client.post(
        "/signup", data={"csrf_token": token, "username": username, "password": password}
    )
    assert response.status_code == status
    assert message in response.text
    assert f'value="{username}"' in response.text  # the form keeps what was typed
    assert (await client.get("/api/me")).status_code == 401


async def test_login_form_and_logout_button(client: httpx.AsyncClient) -> None:
    await sign_up(client, "dave")
    await client.post("/api/logout")
    token = await form_token(client, "/login")
    wrong = await client.post(
        "/login", data={"csrf_token": token, "username": "dave", "password": "not it at all"}
    )
    assert wrong.status_code == 401
    assert "wrong username or password" in wrong.text
    right = await client.post(
        "/login", data={"csrf_token": token, "username": "dave", "password": PASSWORD}
    )
    assert right.status_code == 303
    logout_token = await form_token(client, "/")  # the header's logout form
    assert logout_token != token  # login renews the token
    out = await client.post("/logout", data={"csrf_token": logout_token})
    assert out.status_code == 303
    assert (await client.get("/api/me")).status_code == 401


@pytest.mark.parametrize("token", [None, "", "forged-token"])
async def test_form_posts_without_the_sessions_token_are_refused(
    client: httpx.AsyncClient, token: str | None
) -> None:
    await sign_up(client, "erin")
    await client.post("/api/logout")
    await form_token(client, "/login")  # the session has a real token
    fields = {"username": "erin", "password": PASSWORD}
    if token is not None:
        fields["csrf_token"] = token
    login = await client.post("/login", data=fields)
    assert login.status_code == 403
    assert "form expired" in login.text
    assert (await client.get("/api/me")).status_code == 401


async def test_logout_and_upload_forms_need_the_token(client: httpx.AsyncClient) -> None:
    await sign_up(client, "erin")
    logout = await client.post("/logout", data={"csrf_token": "forged"})
    assert logout.status_code == 403
    files = {"photo": ("a.png", image_bytes("PNG"), "image/png")}
    forged_upload = await client.post("/upload", data={"csrf_token": "forged"}, files=files)
    assert forged_upload.status_code == 403
    assert (await client.get("/api/photos")).json() == {"photos": []}
    assert (await client.get("/api/me")).status_code == 200


async def test_upload_form_redirects_to_the_photo_page(client: httpx.AsyncClient) -> None:
    await sign_up(client, "frank")
    token = await form_token(client, "/upload")
    files = {"photo": ("beach.jpg", image_bytes("JPEG", (64, 48)), "image/jpeg")}
    response = await client.post(
        "/upload", data={"csrf_token": token, "title": "Beach"}, files=files
    )
    assert response.status_code == 303
    location = response.headers["location"]
    assert re.fullmatch(r"/p/\d+", location)
    photo_page = await client.get(location)
    assert photo_page.status_code == 200
    assert "Beach" in photo_page.text and "@frank" in photo_page.text
    assert "64\N{MULTIPLICATION SIGN}48" in photo_page.text
    photo_id = location.rsplit("/", 1)[1]
    assert f'src="/photos/{photo_id}/image"' in photo_page.text
    home = await client.get("/")
    assert f'href="/p/{photo_id}"' in home.text


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"just some text", 415, "not a JPEG, PNG or WebP"),
        (image_bytes("PNG") + b"\0" * MAX_UPLOAD, 413, "limit"),
    ],
)
async def test_upload_form_errors_rerender_with_status(
    client: httpx.AsyncClient, data: bytes, status: int, message: str
) -> None:
    await sign_up(client, "gina")
    token = await form_token(client, "/upload")
    files = {"photo": ("p.png", data, "image/png")}
    response = await client.post("/upload", data={"csrf_token": token}, files=files)
    assert response.status_code == status
    assert message in response.text
    assert "Upload a photo" in response.text


async def test_anonymous_upload_pages_send_you_to_login(client: httpx.AsyncClient) -> None:
    for response in [await client.get("/upload"), await client.post("/upload")]:
        assert response.status_code == 303
        assert response.headers["location"] == "/login"


async def test_photo_page_is_public(client: httpx.AsyncClient) -> None:
    await sign_up(client, "hana")
    photo = (await upload(client, image_bytes("WEBP"), title="<script>x</script>")).json()
    await client.post("/api/logout")
    page = await client.get(photo["page_url"])
    assert page.status_code == 200
    assert "&lt;script&gt;x&lt;/script&gt;" in page.text
    assert "<script>x</script>" not in page.text
    assert page.headers["cache-control"] == "no-store"


async def test_html_errors_are_pages(client: httpx.AsyncClient) -> None:
    for path in ["/p/12345", "/p/not-a-number", "/no/such/page"]:
        missing = await client.get(path)
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("text/html")
        assert "not found" in missing.text
    wrong_method = await client.delete("/login")
    assert wrong_method.status_code == 405
    assert "method not allowed" in wrong_method.text
