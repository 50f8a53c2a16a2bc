"""The purge admin API on the edge's ops listener: each purge kind, soft against hard,
authentication, bad requests, and the loopback-only ops address."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from edge_server_support import Origin, Route, free_port, run
from hypothesis import given
from hypothesis import strategies as st

from millions.edge.admin import (
    PurgeKind,
    PurgeRequestError,
    bearer_matches,
    parse_purge_request,
    require_loopback,
    url_cache_key,
)
from millions.edge.main import EdgeProcess
from millions.edge.server import EdgeServer

pytestmark = pytest.mark.timeout(30)

EDGE_HOST = "127.0.90.1"
ORIGIN_HOST = "127.0.90.2"
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CACHEABLE = [("Cache-Control", "max-age=600, stale-if-error=600")]


@dataclass
class Running:
    process: EdgeProcess
    origin: Origin
    client: httpx.AsyncClient
    ops: httpx.AsyncClient

    @property
    def base(self) -> str:
        return f"http://{EDGE_HOST}:{self.process.edge.port}"

    async def purge(self, document: Any, headers: dict[str, str] = AUTH) -> httpx.Response:
        return await self.ops.post("/purge", content=json.dumps(document), headers=headers)


@asynccontextmanager
async def running_edge(token: str | None = TOKEN) -> AsyncIterator[Running]:
    origin = Origin(ORIGIN_HOST)
    await origin.start()
    edge = EdgeServer(f"http://{ORIGIN_HOST}:{origin.port}", (EDGE_HOST, 0), 1 << 20, "edge-a")
    process = EdgeProcess(edge, (EDGE_HOST, 0), token)
    await process.start()
    client = httpx.AsyncClient(base_url=f"http://{EDGE_HOST}:{edge.port}", timeout=10.0)
    ops = httpx.AsyncClient(base_url=f"http://{EDGE_HOST}:{process.ops_port}", timeout=10.0)
    try:
        yield Running(process, origin, client, ops)
    finally:
        await client.aclose()
        await ops.aclose()
        await process.stop(0.5)
        await origin.stop()


async def x_cache(client: httpx.AsyncClient, path: str) -> str:
    return (await client.get(path)).headers["x-cache"]


def test_url_purge_removes_one_object() -> None:
    async def scenario() -> None:
        async with running_edge() as edge:
            for path in ("/a", "/b"):
                edge.origin.routes[path] = Route(b"body", CACHEABLE)
                await edge.client.get(path)
            response = await edge.purge({"url": f"{edge.base}/a"})
            assert (response.status_code, response.json()) == (200, {"purged": 1})
            assert await x_cache(edge.client, "/a") == "MISS"
            assert await x_cache(edge.client, "/b") == "HIT"
            assert edge.origin.count("/a") == 2

    run(scenario())


def test_prefix_purge_removes_everything_under_it() -> None:
    async def scenario() -> None:
        async with running_edge() as edge:
            for path in ("/static/a.css", "/static/b.js", "/other"):
                edge.origin.routes[path] = Route(b"body", CACHEABLE)
                await edge.client.get(path)
            response = await edge.purge({"prefix": f"{edge.base}/static/"})
            assert response.json() == {"purged": 2}
            assert await x_cache(edge.client, "/static/a.css") == "MISS"
            assert await x_cache(edge.client, "/static/b.js") == "MISS"
            assert await x_cache(edge.client, "/other") == "HIT"

    run(scenario())


def test_surrogate_key_purge_matches_surrogate_key_and_cache_tag() -> None:
    async def scenario() -> None:
        async with running_edge() as edge:
            edge.origin.routes["/sk"] = Route(b"1", [*CACHEABLE, ("Surrogate-Key", "red blue")])
            edge.origin.routes["/ct"] = Route(b"2", [*CACHEABLE, ("Cache-Tag", "green,blue")])
            edge.origin.routes["/none"] = Route(b"3", [*CACHEABLE, ("Surrogate-Key", "green")])
            for path in ("/sk", "/ct", "/none"):
                await edge.client.get(path)
            assert (await edge.purge({"key": "blue"})).json() == {"purged": 2}
            assert await x_cache(edge.client, "/sk") == "MISS"
            assert await x_cache(edge.client, "/ct") == "MISS"
            assert await x_cache(edge.client, "/none") == "HIT"

    run(scenario())


def test_soft_purge_keeps_the_object_for_stale_if_error() -> None:
    async def scenario() -> None:
        async with running_edge() as edge:
            edge.origin.routes["/s"] = Route(b"kept", CACHEABLE)
            await edge.client.get("/s")
            assert (await edge.purge({"url": f"{edge.base}/s", "soft": True})).json() == {
                "purged": 1
            }
            await edge.origin.stop()
            stale = await edge.client.get("/s")
            assert (stale.status_code, stale.headers["x-cache"]) == (200, "STALE")
            assert stale.content == b"kept"

    run(scenario())


def test_soft_purge_revalidates_while_the_origin_is_up() -> None:
    async def scenario() -> None:
        async with running_edge() as edge:
            edge.origin.routes["/r"] = Route(b"old", CACHEABLE)
            await edge.client.get("/r")
            await edge.purge({"key": "nothing-tagged"})
            assert await x_cache(edge.client, "/r") == "HIT"
            await edge.purge({"prefix": f"{edge.base}/r", "soft": True})
            edge.origin.routes["/r"] = Route(b"new", CACHEABLE)
            response = await edge.client.get("/r")
            assert (response.headers["x-cache"], response.content) == ("MISS", b"new")

    run(scenario())


def test_hard_purge_leaves_nothing_to_serve_when_the_origin_is_down() -> None:
    async def scenario() -> None:
        async with running_edge() as edge:
            edge.origin.routes["/h"] = Route(b"gone", CACHEABLE)
            await edge.client.get("/h")
            assert (await edge.purge({"url": f"{edge.base}/h", "soft": False})).json() == {
                "purged": 1
            }
            await edge.origin.stop()
            response = await edge.client.get("/h")
            assert response.status_code == 502

    run(scenario())


def test_purge_needs_the_right_bearer_token() -> None:
    async def scenario() -> None:
        async with running_edge() as edge:
            edge.origin.routes["/p"] = Route(b"body", CACHEABLE)
            await edge.client.get("/p")
            document = {"url": f"{edge.base}/p"}
            missing = await edge.purge(document, headers={})
            wrong = await edge.purge(document, headers={"Authorization": "Bearer nope"})
            basic = await edge.purge(document, headers={"Authorization": f"Basic {TOKEN}"})
            assert [r.status_code for r in (missing, wrong, basic)] == [401, 401, 401]
            assert await x_cache(edge.client, "/p") == "HIT"

    run(scenario())


def test_purge_without_a_configured_token_is_forbidden() -> None:
    async def scenario() -> None:
        async with running_edge(token=None) as edge:
            response = await edge.purge({"key": "x"})
            assert response.status_code == 403
            assert response.text.strip() == "purge disabled: no admin token configured"
            assert (await edge.ops.get("/healthz")).json()["status"] == "ok"

    run(scenario())


def test_malformed_purge_requests_get_400() -> None:
    async def scenario() -> None:
        async with running_edge() as edge:
            bad_json = await edge.ops.post("/purge", content=b"{not json", headers=AUTH)
            assert bad_json.status_code == 400
            assert "not JSON" in bad_json.text
            for document in (
                {},
                {"url": f"{edge.base}/a", "key": "k"},
                {"key": ""},
                {"key": 5},
                {"key": "k", "soft": "yes"},
                {"key": "k", "extra": 1},
                ["key"],
                {"url": "/relative"},
            ):
                response = await edge.purge(document)
                assert response.status_code == 400, document

    run(scenario())


def test_ops_listener_refuses_a_non_loopback_address() -> None:
    edge = EdgeServer(f"http://{ORIGIN_HOST}:1", (EDGE_HOST, 0), 1000)
    with pytest.raises(ValueError, match="loopback"):
        EdgeProcess(edge, ("0.0.0.0", 9000), TOKEN)
    with pytest.raises(ValueError, match="loopback"):
        EdgeProcess(edge, ("localhost", 9000), TOKEN)
    for host in ("127.0.90.9", "::1"):
        require_loopback(host)


def test_url_cache_key_normalizes_like_requests() -> None:
    assert url_cache_key("http://CDN.Example:80/a?b=1") == b"http://cdn.example/a?b=1"
    with pytest.raises(PurgeRequestError):
        url_cache_key("ftp://cdn.example/a")


def test_bearer_matching() -> None:
    assert bearer_matches("Bearer abc", "abc")
    assert bearer_matches("bearer abc", "abc")
    assert not bearer_matches("Bearer abcd", "abc")
    assert not bearer_matches(None, "abc")


@given(st.binary(max_size=200))
def test_purge_parser_never_fails_otherwise(body: bytes) -> None:
    try:
        request = parse_purge_request(body)
    except PurgeRequestError:
        return
    assert request.kind in PurgeKind
    assert request.target


@given(st.sampled_from(["url", "prefix", "key"]), st.text(min_size=1, max_size=50), st.booleans())
def test_purge_parser_on_json_documents(kind: str, value: str, soft: bool) -> None:
    body = json.dumps({kind: value, "soft": soft}).encode()
    try:
        request = parse_purge_request(body)
    except PurgeRequestError:
        return
    assert request.kind is PurgeKind(kind)
    assert request.soft is soft


LAUNCH = """
import json, sys
from pathlib import Path
from millions.edge.main import run
args = json.loads(sys.argv[1])
run((args["host"], args["port"]), args["origin"], (args["host"], args["ops_port"]),
    1 << 20, "edge-proc", None, cache_dir=Path(args["cache_dir"]))
"""


def test_run_takes_the_admin_token_from_the_environment(tmp_path: Path) -> None:
    host = "127.0.92.1"

    async def scenario() -> None:
        origin = Origin("127.0.92.2")
        await origin.start()
        origin.routes["/e"] = Route(b"env", CACHEABLE)
        port, ops_port = free_port(host), free_port(host)
        args = {
            "host": host,
            "port": port,
            "ops_port": ops_port,
            "origin": f"http://127.0.92.2:{origin.port}",
            "cache_dir": str(tmp_path / "cache"),
        }
        environment = {**os.environ, "MILLIONS_ADMIN_TOKEN": TOKEN}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", LAUNCH, json.dumps(args), env=environment
        )
        try:
            async with httpx.AsyncClient(timeout=5.0) as client:
                ops = f"http://{host}:{ops_port}"
                async with asyncio.timeout(20):
                    while True:
                        assert process.returncode is None, "edge process exited"
                        try:
                            if (await client.get(f"{ops}/healthz")).status_code == 200:
                                break
                        except httpx.TransportError:
                            await asyncio.sleep(0.05)
                edge = f"http://{host}:{port}"
                await client.get(f"{edge}/e")
                purge = await client.post(f"{ops}/purge", json={"url": f"{edge}/e"}, headers=AUTH)
                assert purge.json() == {"purged": 1}
                assert (await client.get(f"{edge}/e")).headers["x-cache"] == "MISS"
                metrics = (await client.get(f"{ops}/metrics")).text
                assert 'millions_edge_stored_objects{tier="disk"} 1.0' in metrics
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 10) == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            await origin.stop()

    run(scenario(), timeout_s=40)
