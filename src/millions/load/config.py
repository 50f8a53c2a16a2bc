"""What a load run does: how many users, for how long, at what pace, doing what, and
(optionally) through which geo DNS server and from which client networks.

`LoadConfig` validates itself on construction so a bad value is one clear `ValueError`
naming the field, before any connection is opened.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

# The actions a simulated user picks from, with the request each one makes:
#   browse  GET /                      home page HTML
#   me      GET /api/me                who am I (authenticated)
#   list    GET /api/photos            my photos (authenticated)
#   view    GET /p/{id}                a photo's HTML page
#   image   GET /photos/{id}/image     a photo's image bytes
#   upload  POST /api/photos           a small generated image (authenticated)
ACTIONS: tuple[str, ...] = ("browse", "me", "list", "view", "image", "upload")

# A photo-sharing site is mostly reads: pages and images, few uploads.
DEFAULT_MIX: dict[str, float] = {
    "browse": 30.0,
    "me": 10.0,
    "list": 10.0,
    "view": 20.0,
    "image": 25.0,
    "upload": 5.0,
}

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_REQUEST_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class GeoDnsClients:
    """Users resolve target names through `server` (HOST:PORT), each from the source
    address of its region (`sources`: region -> 127.x address), spread round-robin."""

    server: str
    sources: dict[str, str]

    def __post_init__(self) -> None:
        host, sep, port = self.server.rpartition(":")
        _require(
            bool(sep) and _is_ipv4(host) and port.isdigit() and 0 < int(port) < 65536,
            "dns.server",
            f"expected IPV4:PORT of the DNS server, got {self.server!r}",
        )
        _require(bool(self.sources), "dns.sources", "at least one region is needed")
        for region, source in self.sources.items():
            _require(
                _is_ipv4(source) and ipaddress.IPv4Address(source).is_loopback,
                "dns.sources",
                f"source of region {region!r} must be a 127.x address, got {source!r}",
            )

    @property
    def server_address(self) -> tuple[str, int]:
        host, _, port = self.server.rpartition(":")
        return host, int(port)

    def region_for_user(self, user_index: int) -> tuple[str, str]:
        """(region, source address) of user number `user_index`."""
        regions = list(self.sources.items())
        return regions[user_index % len(regions)]


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class LoadConfig:
    """One load run. `rate=None` is closed loop; a number is open-loop total requests/s."""

    targets: list[str]
    users: int = 10
    duration_s: float = 10.0
    rate: float | None = None
    think_time_s: float = 0.0
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    upload_bytes: int = 20_000
    upload_format: Literal["jpeg", "png"] = "jpeg"
    request_timeout_s: float = 10.0
    setup_concurrency: int = 16
    seed: int = 0
    dns: GeoDnsClients | None = None  # None: connect to the targets' hosts as given

    def __post_init__(self) -> None:
        if not self.targets:
            raise ValueError("targets: at least one base URL is needed")
        for target in self.targets:
            parts = urlsplit(target)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"targets: {target!r} is not an http:// or https:// base URL")
            if parts.path not in ("", "/") or parts.query or parts.fragment:
                raise ValueError(f"targets: {target!r} must be scheme://host[:port] only")
        _require(self.users >= 1, "users", f"must be at least 1, got {self.users}")
        _require(
            math.isfinite(self.duration_s) and self.duration_s > 0,
            "duration_s",
            f"must be a positive number of seconds, got {self.duration_s}",
        )
        if self.rate is not None:
            _require(
                math.isfinite(self.rate) and self.rate > 0,
                "rate",
                f"must be a positive number of requests/s or None, got {self.rate}",
            )
            _require(
                self.think_time_s == 0,
                "think_time_s",
                "applies to closed loop only (rate=None); open loop paces by rate",
            )
        _require(
            math.isfinite(self.think_time_s) and self.think_time_s >= 0,
            "think_time_s",
            f"must be >= 0, got {self.think_time_s}",
        )
        unknown = sorted(set(self.mix) - set(ACTIONS))
        _require(not unknown, "mix", f"unknown action(s) {unknown}; known: {', '.join(ACTIONS)}")
        for action, weight in self.mix.items():
            _require(
                math.isfinite(weight) and weight >= 0,
                "mix",
                f"weight of {action!r} must be >= 0, got {weight}",
            )
        _require(sum(self.mix.values()) > 0, "mix", "at least one weight must be > 0")
        _require(
            1024 <= self.upload_bytes <= MAX_UPLOAD_BYTES,
            "upload_bytes",
            f"must be between 1024 and {MAX_UPLOAD_BYTES}, got {self.upload_bytes}",
        )
        _require(
            self.upload_format in ("jpeg", "png"),
            "upload_format",
            f"must be 'jpeg' or 'png', got {self.upload_format!r}",
        )
        _require(
            math.isfinite(self.request_timeout_s)
            and 0 < self.request_timeout_s <= MAX_REQUEST_TIMEOUT_S,
            "request_timeout_s",
            f"must be in (0, {MAX_REQUEST_TIMEOUT_S:g}], got {self.request_timeout_s}",
        )
        _require(
            self.setup_concurrency >= 1,
            "setup_concurrency",
            f"must be at least 1, got {self.setup_concurrency}",
        )

    def weighted_actions(self) -> tuple[list[str], list[float]]:
        """Actions with a positive weight and their cumulative weights, for `Random.choices`."""
        names: list[str] = []
        cumulative: list[float] = []
        total = 0.0
        for action in ACTIONS:
            weight = self.mix.get(action, 0.0)
            if weight > 0:
                total += weight
                names.append(action)
                cumulative.append(total)
        return names, cumulative


def _require(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise ValueError(f"{key}: {problem}")
