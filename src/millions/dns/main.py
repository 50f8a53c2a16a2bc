"""The geo DNS process: `run()` blocks until SIGTERM or SIGINT.

`GeoDns` wires the parts: the zone and region lookup feed the `Responder`, the
`HealthChecker` keeps the `HealthBoard` current, and every health change or drain hands
the responder a new view. Drains survive a restart when a state file is given (the
supervisor restarting a crashed DNS server must not undo an operator's drain).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

import uvloop
from aiohttp import web
from prometheus_client import CollectorRegistry

from millions.dns.admin import admin_app
from millions.dns.answers import Pick, pick_dc, pick_edge
from millions.dns.checker import Check, CheckTarget, HealthChecker, check_url
from millions.dns.config import DnsConfig
from millions.dns.health import HealthBoard, TargetKind
from millions.dns.metrics import DnsCollector
from millions.dns.regions import GeoIpDatabase, GeoIpError, Locator, PrefixTable
from millions.dns.responder import Responder
from millions.dns.server import DnsServer
from millions.dns.zone import build_zone
from millions.edge.admin import ADMIN_TOKEN_ENV
from millions.telemetry import logs

log = logging.getLogger("millions.dns")


class GeoDns:
    """One geo DNS server: DNS listeners, health checks and the admin listener."""

    def __init__(
        self,
        config: DnsConfig,
        admin_token: str | None = None,
        state_file: Path | None = None,
        check: Check = check_url,
    ) -> None:
        self.config = config
        self.admin_token = admin_token or None
        self.state_file = state_file
        self.zone = build_zone(config)
        geoip = None
        if config.maxmind is not None:
            maxmind = config.maxmind
            geoip = GeoIpDatabase.open(maxmind.path, maxmind.countries, maxmind.continents)
        self.locator = Locator(PrefixTable(config.prefixes), config.default_region, geoip)
        self.responder = Responder(self.zone, self.locator, config.max_udp_payload)
        self.board = HealthBoard(list(config.dcs), list(config.edges), config.rise, config.fall)
        self.drained: set[str] = self._load_drained()
        self.server = DnsServer(
            self.responder,
            config.listen_address,
            config.tcp_idle_timeout_s,
            config.tcp_max_connections,
        )
        targets = [
            CheckTarget(TargetKind.DC, name, dc.health_url) for name, dc in config.dcs.items()
        ] + [
            CheckTarget(TargetKind.EDGE, name, edge.health_url)
            for name, edge in config.edges.items()
        ]
        self.checker = HealthChecker(
            self.board,
            targets,
            config.check_interval_s,
            config.check_timeout_s,
            self._view_changed,
            check,
        )
        self.registry = CollectorRegistry()
        self.registry.register(
            DnsCollector(
                lambda: self.responder.stats, self.server.stats, self.board, lambda: self.drained
            )
        )
        self._admin: web.AppRunner | None = None
        self.admin_port = 0
        self._answers: dict[str, dict[str, Pick]] = {}
        self._view_changed()

    @property
    def port(self) -> int:
        return self.server.port

    async def start(self) -> None:
        await self.server.start()
        self._admin = web.AppRunner(
            admin_app(self, self.registry, self.admin_token),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=0.5,
        )
        await self._admin.setup()
        await web.TCPSite(self._admin, *self.config.admin_address).start()
        self.admin_port = self._admin.addresses[0][1]
        self.checker.start()
        host = self.config.listen_address[0]
        log.info(
            "dns listening",
            extra={
                "zone": self.config.zone,
                "listen": f"{host}:{self.port}",
                "admin": f"{self.config.admin_address[0]}:{self.admin_port}",
                "drained": sorted(self.drained),
            },
        )

    async def stop(self) -> None:
        await self.checker.stop()
        await self.server.stop()
        if self._admin is not None:
            await self._admin.cleanup()
        if self.locator.geoip is not None:
            self.locator.geoip.close()

    # -- drain ----------------------------------------------------------------------------

    def drain(self, dc: str) -> list[str]:
        """Send no new clients to `dc` while another healthy DC exists; the drained DCs."""
        if dc not in self.config.dcs:
            raise KeyError(dc)
        self.drained.add(dc)
        log.warning("dc drained", extra={"dc": dc})
        return self._drains_changed()

    def undrain(self, dc: str) -> list[str]:
        if dc not in self.config.dcs:
            raise KeyError(dc)
        self.drained.discard(dc)
        log.warning("dc undrained", extra={"dc": dc})
        return self._drains_changed()

    def _drains_changed(self) -> list[str]:
        self._save_drained()
        self._view_changed()
        return sorted(self.drained)

    def _load_drained(self) -> set[str]:
        if self.state_file is None:
            return set()
        try:
            saved = json.loads(self.state_file.read_text())["drained"]
        except FileNotFoundError:
            return set()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error(
                "drain state not read", extra={"file": str(self.state_file), "error": str(exc)}
            )
            return set()
        names = {str(dc) for dc in saved} if isinstance(saved, list) else set()
        unknown = names - set(self.config.dcs)
        if unknown:
            log.warning("drained data centers no longer configured", extra={"dcs": sorted(unknown)})
        return names & set(self.config.dcs)

    def _save_drained(self) -> None:
        if self.state_file is None:
            return
        temporary = self.state_file.with_name(self.state_file.name + ".tmp")
        try:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_text(json.dumps({"drained": sorted(self.drained)}))
            os.replace(temporary, self.state_file)
        except OSError as exc:
            log.error(
                "drain state not saved", extra={"file": str(self.state_file), "error": str(exc)}
            )

    # -- view -----------------------------------------------------------------------------

    def _view_changed(self) -> None:
        """Hand the responder the current view and log what changed for each region."""
        view = self.board.view()
        self.responder.set_view(view, self.drained)
        for region in self.config.regions:
            picks = {"www": pick_dc(self.zone, region, view, self.drained)}
            if self.config.edges:
                picks["cdn"] = pick_edge(self.zone, region, view, self.drained)
            before = self._answers.get(region, {})
            self._answers[region] = picks
            for name, pick in picks.items():
                if pick == before.get(name):
                    continue
                fields = {"region": region, "record": name, "target": pick.target}
                if pick.fail_open:
                    log.warning(
                        "no healthy target left: answering anyway (fail open)", extra=fields
                    )
                else:
                    log.info("answer changed", extra=fields)

    def state(self) -> dict[str, Any]:
        """The health view, drains and current answers, as `GET /state` serves them."""
        dcs = self.board.states[TargetKind.DC]
        edges = self.board.states[TargetKind.EDGE]
        regions = {}
        for region, preference in self.config.regions.items():
            www = self._answers[region]["www"]
            cdn = self._answers[region].get("cdn")
            regions[region] = {
                "preference": list(preference),
                "www": www.target,
                "www_fail_open": www.fail_open,
                "cdn": None if cdn is None else cdn.target,
                "cdn_fail_open": cdn is not None and cdn.fail_open,
            }
        return {
            "zone": self.config.zone,
            "listen": f"{self.config.listen_address[0]}:{self.port}",
            "drained": sorted(self.drained),
            "dcs": {
                name: {
                    "address": dc.address,
                    "health_url": dc.health_url,
                    "up": dcs[name].up,
                    "drained": name in self.drained,
                    "checks": dcs[name].checks,
                    "failures": dcs[name].failures,
                    "streak": dcs[name].streak,
                }
                for name, dc in self.config.dcs.items()
            },
            "edges": {
                name: {
                    "address": edge.address,
                    "health_url": edge.health_url,
                    "dc": edge.dc,
                    "up": edges[name].up,
                    "checks": edges[name].checks,
                    "failures": edges[name].failures,
                    "streak": edges[name].streak,
                }
                for name, edge in self.config.edges.items()
            },
            "regions": regions,
        }


def run(
    config: DnsConfig,
    name: str = "dns",
    log_file: Path | None = None,
    admin_token: str | None = None,
    state_file: Path | None = None,
) -> None:
    """Run one geo DNS server until SIGTERM/SIGINT (blocking).

    Listens on `config.listen` (UDP and TCP) and `config.admin`. `admin_token` (else the
    MILLIONS_ADMIN_TOKEN environment variable) enables /state, /drain and /undrain;
    `state_file` keeps drains across restarts."""
    logs.configure(name, log_file)
    token = admin_token if admin_token is not None else os.environ.get(ADMIN_TOKEN_ENV)
    try:
        geodns = GeoDns(config, token, state_file)
    except GeoIpError as exc:
        log.error("cannot start", extra={"error": str(exc)})
        raise SystemExit(f"{name}: {exc}") from None
    uvloop.run(_serve(geodns))


async def _serve(geodns: GeoDns) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await geodns.start()
    except OSError as exc:
        log.error("cannot listen", extra={"error": str(exc)})
        await geodns.stop()
        raise SystemExit(f"dns: cannot listen: {exc}") from None
    await stop.wait()
    log.info("stopping")
    await geodns.stop()
