"""The CDN edge as part of a running topology (127.0.75.x): pages link through it, the
edge caches what they link, `millions purge` reaches it, a deleted photo is purged by
surrogate key, and when the edge is down pages fall back to origin URLs and `status`
says so.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from topology_harness import Topology, running_topology, wait_for

pytestmark = pytest.mark.timeout(150)

LB = "http://127.0.75.1:8080"
EDGE = "http://127.0.75.2:8080"
CONFIG = """
[dcs.test-dc]
subnet = "127.0.75"
web = 2

[lb]
health_interval_s = 0.2

[supervisor]
restart_backoff_s = 0.1

[dns]
host = "127.0.75.53"
"""
STYLESHEET = re.compile(r'href="([^"]*/static/style\.[0-9a-f]{10}\.css)"')


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    with running_topology(tmp_path, CONFIG) as topo:
        yield topo


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 30, 90)).save(buffer, "PNG")
    return buffer.getvalue()


def stylesheet_link(client: httpx.Client) -> str:
    match = STYLESHEET.search(client.get(f"{LB}/").text)
    assert match is not None
    return match.group(1)


def both_servers_link(client: httpx.Client, prefix: str) -> bool:
    """Whether two page loads in a row (one per web server) link assets under `prefix`."""
    return all(stylesheet_link(client).startswith(prefix) for _ in range(2))


def test_pages_use_the_edge_purges_reach_it_and_pages_fall_back_when_it_is_down(
    topology: Topology,
) -> None:
    status = topology.status()
    assert status["edge-test"]["state"] == "running"
    assert status["edge-test"]["address"] == "127.0.75.2:8080"
    assert sorted(status) == [
        "dns",
        "edge-test",
        "lb-test-dc",
        "web-test-dc-1",
        "web-test-dc-2",
        "worker-test-dc-1",
    ]

    with httpx.Client(timeout=10) as client:
        wait_for(lambda: both_servers_link(client, EDGE), 20, "pages to link through the edge")

        # A content-hashed asset: a miss, then hits, immutable for a year.
        asset = stylesheet_link(client)
        first = client.get(asset)
        assert first.status_code == 200 and first.headers["x-cache"] == "MISS"
        assert "immutable" in first.headers["cache-control"]
        assert client.get(asset).headers["x-cache"] == "HIT"

        # `millions purge PATH` purges that path on the edge's own address.
        path = asset.removeprefix(EDGE)
        purged = topology.cli("purge", path, "--json")
        assert purged.returncode == 0, purged.stderr
        report = json.loads(purged.stdout)["edges"]
        assert [(e["edge"], e["ok"], e["purged"]) for e in report] == [("edge-test", True, 1)]
        assert client.get(asset).headers["x-cache"] == "MISS"
        table = topology.cli("purge", "--prefix", "/static/")
        assert table.returncode == 0 and "edge-test" in table.stdout and "purged" in table.stdout

        # A photo is linked through the edge and cached there; deleting it purges it.
        signup = client.post(
            f"{LB}/api/signup", json={"username": "cdn_user", "password": "correct horse"}
        )
        assert signup.status_code == 201, signup.text
        upload = client.post(
            f"{LB}/api/photos", files={"photo": ("p.png", png_bytes(), "image/png")}
        )
        assert upload.status_code == 201, upload.text
        photo = upload.json()
        page = client.get(f"{LB}{photo['page_url']}").text
        image = f"{EDGE}/photos/{photo['id']}/image"
        assert f'src="{image}"' in page
        assert client.get(image).headers["x-cache"] == "MISS"
        cached = client.get(image)
        assert cached.headers["x-cache"] == "HIT" and cached.content == png_bytes()
        deleted = client.delete(f"{LB}/api/photos/{photo['id']}")
        assert deleted.status_code == 204
        gone = client.get(image)
        assert gone.status_code == 404 and gone.headers["x-cache"] != "HIT"

        # Edge down: status says so, pages link to the origin, purges report the failure.
        assert topology.cli("kill", "edge-test", "--no-restart").returncode == 0
        wait_for(lambda: topology.status()["edge-test"]["state"] == "down", 10, "edge down")
        wait_for(lambda: both_servers_link(client, "/static/"), 10, "origin links")
        origin_asset = client.get(f"{LB}{stylesheet_link(client)}")
        assert origin_asset.status_code == 200 and "x-cache" not in origin_asset.headers
        failed = topology.cli("purge", "--key", "photo-1")
        assert failed.returncode == 1
        assert "edge-test" in failed.stdout and "failed" in failed.stdout

    bad = topology.cli("purge", "/a", "--key", "k")
    assert bad.returncode == 2 and "exactly one of" in bad.stderr
