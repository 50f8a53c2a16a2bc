"""Coarse timeouts for many connections with one periodic timer.

A connection sets a float `deadline` (0 means none) whenever its state changes; a single
timer checks all registered connections every `resolution_s`. Setting a float per request
is far cheaper than creating and cancelling a timer handle per request, and a timeout a
tenth of a second late does not matter for slowloris, idle or response timeouts.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class HasDeadline(Protocol):
    deadline: float

    def deadline_expired(self) -> None: ...


class Deadlines:
    """The set of connections whose `deadline` is checked periodically."""

    __slots__ = ("_handle", "_items", "_loop", "_resolution")

    def __init__(self, loop: asyncio.AbstractEventLoop, resolution_s: float = 0.1) -> None:
        self._loop = loop
        self._resolution = resolution_s
        self._items: set[HasDeadline] = set()
        self._handle: asyncio.TimerHandle | None = None

    def add(self, item: HasDeadline) -> None:
        self._items.add(item)
        if self._handle is None:
            self._handle = self._loop.call_later(self._resolution, self._tick)

    def discard(self, item: HasDeadline) -> None:
        self._items.discard(item)

    def __len__(self) -> int:
        return len(self._items)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        now = self._loop.time()
        for item in list(self._items):
            deadline = item.deadline
            if deadline and deadline <= now:
                item.deadline = 0.0
                item.deadline_expired()
        self._handle = self._loop.call_later(self._resolution, self._tick) if self._items else None
