"""Health checks against fake endpoints flipped to 503: failover after two failed checks,
restore after two passes, fail open when everything is down; drain and undrain through
the admin API and its CLI client; the state and metrics endpoints."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dns_support import (
    DNS_HOST,
    EU_CLIENT,
    EU_EDGE,
    EU_LB,
    TOKEN,
    US_CLIENT,
    US_EDGE,
    US_LB,
    FakeHealth,
    address_of,
    config_data,
    eventually,
    running_dns,
)

from millions.dns.admin import DnsAdminError, drain_dc, fetch_state, undrain_dc
from millions.dns.checker import check_url
from millions.dns.config import parse
from millions.dns.main import GeoDns

pytestmark = pytest.mark.timeout(60)

TARGETS = ["us-east", "eu-west", "edge-us", "edge-eu"]
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def health() -> AsyncIterator[FakeHealth]:
    fake = FakeHealth()
    await fake.start(TARGETS)
    yield fake
    await fake.stop()


def checked_config(fake: FakeHealth, **overrides: Any) -> Any:
    return parse(
        config_data(health=fake.urls(), check_interval_s=0.1, check_timeout_s=0.5, **overrides)
    )


async def answers(server: GeoDns, name: str, source: str, expected: str) -> bool:
    return await address_of(server, name, source) == expected


async def test_failover_after_two_failed_checks_and_restore_after_two_passes(
    health: FakeHealth,
) -> None:
    async with running_dns(checked_config(health), check=check_url) as server:
        await eventually(lambda: _checked(health, "us-east", 2), "first checks")
        assert await address_of(server, "www.millions.test", US_CLIENT) == US_LB
        assert await address_of(server, "cdn.millions.test", US_CLIENT) == US_EDGE

        health.status["us-east"] = 503
        flipped_at = health.hits["us-east"]
        await eventually(
            lambda: answers(server, "www.millions.test", US_CLIENT, EU_LB), "failover to eu-west"
        )
        assert health.hits["us-east"] - flipped_at >= 2, "down before two failed checks"
        state = server.state()["dcs"]["us-east"]
        assert (state["up"], state["failures"] >= 2) == (False, True)
        # the edge in front of the down DC is avoided too; eu clients are unaffected
        assert await address_of(server, "cdn.millions.test", US_CLIENT) == EU_EDGE
        assert await address_of(server, "www.millions.test", EU_CLIENT) == EU_LB

        health.status["us-east"] = 200
        restored_at = health.hits["us-east"]
        await eventually(
            lambda: answers(server, "www.millions.test", US_CLIENT, US_LB), "restore to us-east"
        )
        assert health.hits["us-east"] - restored_at >= 2, "up before two passed checks"
        assert await address_of(server, "cdn.millions.test", US_CLIENT) == US_EDGE


async def _checked(fake: FakeHealth, name: str, times: int) -> bool:
    return fake.hits[name] >= times


async def test_edge_failover_leaves_www_alone(health: FakeHealth) -> None:
    async with running_dns(checked_config(health), check=check_url) as server:
        health.status["edge-eu"] = 500
        await eventually(
            lambda: answers(server, "cdn.millions.test", EU_CLIENT, US_EDGE), "edge failover"
        )
        assert await address_of(server, "www.millions.test", EU_CLIENT) == EU_LB
        health.status["edge-eu"] = 200
        await eventually(
            lambda: answers(server, "cdn.millions.test", EU_CLIENT, EU_EDGE), "edge restore"
        )


async def test_every_dc_down_fails_open_to_the_preference(
    health: FakeHealth, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_dns(checked_config(health), check=check_url) as server:
        health.status["us-east"] = health.status["eu-west"] = 503

        async def both_down() -> bool:
            dcs = server.state()["dcs"]
            return not dcs["us-east"]["up"] and not dcs["eu-west"]["up"]

        await eventually(both_down, "both DCs down")
        assert await address_of(server, "www.millions.test", US_CLIENT) == US_LB
        assert await address_of(server, "www.millions.test", EU_CLIENT) == EU_LB
        regions = server.state()["regions"]
        assert regions["us"]["www_fail_open"] and regions["eu"]["www_fail_open"]
        assert server.responder.stats.fail_open["www"] == 2
    fail_open_logs = [r for r in caplog.records if "fail open" in r.getMessage()]
    assert {(r.region, r.record) for r in fail_open_logs} >= {("us", "www"), ("eu", "www")}  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_unreachable_health_url_counts_as_down(health: FakeHealth) -> None:
    urls = health.urls()
    urls["eu-west"] = "http://127.0.134.2:9/healthz"  # nothing listens there
    config = parse(config_data(health=urls, check_interval_s=0.1, check_timeout_s=0.5))
    async with running_dns(config, check=check_url) as server:
        await eventually(
            lambda: answers(server, "www.millions.test", EU_CLIENT, US_LB), "eu-west down"
        )


async def test_drain_and_undrain_through_the_admin_api() -> None:
    async with (
        running_dns() as server,
        httpx.AsyncClient(base_url=f"http://{DNS_HOST}:{server.admin_port}") as admin,
    ):
        assert (await admin.post("/drain", json={"dc": "us-east"})).status_code == 401
        wrong = await admin.post(
            "/drain", json={"dc": "us-east"}, headers={"Authorization": "Bearer x"}
        )
        assert wrong.status_code == 401
        assert "WWW-Authenticate" in wrong.headers
        assert (await admin.get("/state")).status_code == 401
        assert await address_of(server, "www.millions.test", US_CLIENT) == US_LB

        drained = await admin.post("/drain", json={"dc": "us-east"}, headers=AUTH)
        assert drained.json() == {"dc": "us-east", "drained": ["us-east"]}
        assert await address_of(server, "www.millions.test", US_CLIENT) == EU_LB
        assert await address_of(server, "cdn.millions.test", US_CLIENT) == EU_EDGE
        state = (await admin.get("/state", headers=AUTH)).json()
        assert state["drained"] == ["us-east"]
        assert state["dcs"]["us-east"]["drained"] is True
        assert state["regions"]["us"] == {
            "preference": ["us-east", "eu-west"],
            "www": "eu-west",
            "www_fail_open": False,
            "cdn": "edge-eu",
            "cdn_fail_open": False,
        }

        undrained = await admin.post("/undrain", json={"dc": "us-east"}, headers=AUTH)
        assert undrained.json() == {"dc": "us-east", "drained": []}
        assert await address_of(server, "www.millions.test", US_CLIENT) == US_LB

        unknown = await admin.post("/drain", json={"dc": "mars"}, headers=AUTH)
        assert unknown.status_code == 404
        assert "us-east" in unknown.json()["error"]
        bad = await admin.post("/drain", content=b"{not json", headers=AUTH)
        assert bad.status_code == 400
        extra = await admin.post("/drain", json={"dc": "us-east", "x": 1}, headers=AUTH)
        assert extra.status_code == 400
        assert server.drained == set()


async def test_admin_api_without_a_token_is_disabled_but_health_and_metrics_stay_open() -> None:
    async with (
        running_dns(token=None) as server,
        httpx.AsyncClient(base_url=f"http://{DNS_HOST}:{server.admin_port}") as admin,
    ):
        assert (await admin.post("/drain", json={"dc": "us-east"}, headers=AUTH)).status_code == 403
        assert (await admin.get("/healthz")).json()["status"] == "ok"
        assert (await admin.get("/metrics")).status_code == 200


async def test_metrics_count_queries_and_answers() -> None:
    async with (
        running_dns() as server,
        httpx.AsyncClient(base_url=f"http://{DNS_HOST}:{server.admin_port}") as admin,
    ):
        for _ in range(3):
            await address_of(server, "www.millions.test", EU_CLIENT)
        await address_of(server, "cdn.millions.test", US_CLIENT)
        text = (await admin.get("/metrics")).text
        assert 'millions_dns_queries_total{qtype="A",rcode="NOERROR",region="eu"} 3.0' in text
        assert 'millions_dns_answers_total{name="www",target="eu-west"} 3.0' in text
        assert 'millions_dns_answers_total{name="cdn",target="edge-us"} 1.0' in text
        assert 'millions_dns_target_up{kind="dc",name="us-east"} 1.0' in text
        assert 'millions_dns_dc_drained{dc="us-east"} 0.0' in text


async def test_cli_client_functions() -> None:
    async with running_dns() as server:
        url = f"http://{DNS_HOST}:{server.admin_port}"
        assert await asyncio.to_thread(drain_dc, url, TOKEN, "eu-west") == ["eu-west"]
        assert await address_of(server, "www.millions.test", EU_CLIENT) == US_LB
        state = await asyncio.to_thread(fetch_state, url, TOKEN)
        assert state["regions"]["eu"]["www"] == "us-east"
        assert await asyncio.to_thread(undrain_dc, url, TOKEN, "eu-west") == []
        with pytest.raises(DnsAdminError, match="401"):
            await asyncio.to_thread(drain_dc, url, "wrong", "eu-west")
        with pytest.raises(DnsAdminError, match="404: no data center named 'mars'"):
            await asyncio.to_thread(drain_dc, url, TOKEN, "mars")
    with pytest.raises(DnsAdminError, match="cannot reach"):
        await asyncio.to_thread(drain_dc, url, TOKEN, "eu-west", 1.0)


async def test_drains_survive_a_restart(tmp_path: Path) -> None:
    state_file = tmp_path / "dns-state.json"
    async with running_dns(state_file=state_file) as server:
        server.drain("us-east")
    async with running_dns(state_file=state_file) as server:
        assert server.drained == {"us-east"}
        assert await address_of(server, "www.millions.test", US_CLIENT) == EU_LB
        server.undrain("us-east")
    async with running_dns(state_file=state_file) as server:
        assert server.drained == set()
    state_file.write_text("not json")
    async with running_dns(state_file=state_file) as server:
        assert server.drained == set()
