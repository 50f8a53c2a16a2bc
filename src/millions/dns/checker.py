"""Active health checks of every data center and edge: one task per target.

Each task GETs the target's health URL every `interval_s` (start to start) on a fresh
connection, with the load balancer's own checker (`millions.lb.health.check_health`: any
2xx passes, anything else, a timeout or a refused connection fails), and feeds the result
to the `HealthBoard`. When a target changes state, `on_change` is called so the answers
follow at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from millions.dns.health import HealthBoard, TargetKind
from millions.lb.health import check_health

log = logging.getLogger("millions.dns")

Check = Callable[[str, float], Awaitable[bool]]


async def check_url(url: str, timeout_s: float) -> bool:
    """One HTTP check of `url`; True when it answered 2xx within `timeout_s`."""
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return await check_health(f"{parts.hostname}:{parts.port or 80}", path, timeout_s)


@dataclass(frozen=True, slots=True)
class CheckTarget:
    kind: TargetKind
    name: str
    url: str


class HealthChecker:
    """Checks every target forever (until `stop`) and keeps `board` current."""

    def __init__(
        self,
        board: HealthBoard,
        targets: list[CheckTarget],
        interval_s: float,
        timeout_s: float,
        on_change: Callable[[], None],
        check: Check = check_url,
    ) -> None:
        self.board = board
        self.targets = targets
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.on_change = on_change
        self.check = check
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._check_forever(t)) for t in self.targets]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _check_forever(self, target: CheckTarget) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            passed = await self.check(target.url, self.timeout_s)
            if self.board.record(target.kind, target.name, passed):
                state = self.board.states[target.kind][target.name]
                log.warning(
                    f"{target.kind.value} {'up' if state.up else 'down'}",
                    extra={"target": target.name, "url": target.url, "up": state.up},
                )
                try:
                    self.on_change()
                except Exception:  # a bug there must not end the checks of this target
                    log.exception("applying a health change failed")
            await asyncio.sleep(max(0.0, started + self.interval_s - loop.time()))
