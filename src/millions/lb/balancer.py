"""The load balancer's decisions, without I/O: backend health and server choice.

Health state machine per backend (HAProxy's rise/fall, with passive detection):

* `checking`: just added, not yet checked. The first check decides: pass -> `up`,
  fail -> `down`.
* `up`: takes traffic. `fall` consecutive failed checks -> `down`; a passive failure
  (refused connect, reset of a fresh connection) -> `down` at once.
* `down`: no traffic. `rise` consecutive passed checks -> `up`.
* draining (a flag over the health): removed from the configuration; no new requests,
  requests in flight finish, then the backend is forgotten. Adding it back clears the flag.

Choice: least outstanding requests among the backends that are up and not draining, ties
broken round-robin, skipping backends already tried for this request.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable


class Health(enum.Enum):
    CHECKING = "checking"
    UP = "up"
    DOWN = "down"


class Backend:
    """One backend server as the balancer sees it."""

    __slots__ = ("address", "draining", "failures", "health", "in_flight", "passes", "requests")

    def __init__(self, address: str) -> None:
        self.address = address
        self.health = Health.CHECKING
        self.draining = False
        self.in_flight = 0
        self.requests = 0
        self.passes = 0  # consecutive passed checks while down
        self.failures = 0  # consecutive failed checks while up

    @property
    def state(self) -> str:
        """`up`, `down`, `checking` or `draining` (what /backends reports)."""
        return "draining" if self.draining else self.health.value

    @property
    def eligible(self) -> bool:
        return self.health is Health.UP and not self.draining

    def __repr__(self) -> str:
        return f"Backend({self.address!r}, {self.state}, in_flight={self.in_flight})"


class Balancer:
    """Backends by address, their health, and the least-outstanding choice."""

    def __init__(self, rise: int, fall: int) -> None:
        if rise < 1 or fall < 1:
            raise ValueError("rise and fall must be at least 1")
        self.rise = rise
        self.fall = fall
        self.backends: dict[str, Backend] = {}
        self._eligible: list[Backend] = []
        self._next = 0  # where the round-robin scan starts

    # -- membership -----------------------------------------------------------------------

    def set_backends(self, addresses: Iterable[str]) -> tuple[list[Backend], list[Backend]]:
        """Make `addresses` the configured set. Returns (added, now draining): new
        addresses start `checking`; missing ones start draining; a draining backend that
        is listed again stops draining (and is not reported as added)."""
        wanted = list(dict.fromkeys(addresses))
        added: list[Backend] = []
        for address in wanted:
            backend = self.backends.get(address)
            if backend is None:
                backend = self.backends[address] = Backend(address)
                added.append(backend)
            elif backend.draining:
                backend.draining = False
        keep = set(wanted)
        draining = []
        for backend in self.backends.values():
            if backend.address not in keep and not backend.draining:
                backend.draining = True
                draining.append(backend)
        self._refresh()
        return added, draining

    def forget(self, backend: Backend) -> None:
        """Drop a drained backend for good."""
        if self.backends.get(backend.address) is backend:
            del self.backends[backend.address]
            self._refresh()

    def drained(self, backend: Backend) -> bool:
        return backend.draining and backend.in_flight == 0

    # -- health -----------------------------------------------------------------------------

    def check_passed(self, backend: Backend) -> bool:
        """An active check passed; True when the backend just came up."""
        backend.failures = 0
        if backend.health is Health.UP:
            return False
        if backend.health is Health.CHECKING:
            backend.health = Health.UP
        else:
            backend.passes += 1
            if backend.passes < self.rise:
                return False
            backend.health = Health.UP
        backend.passes = 0
        self._refresh()
        return True

    def check_failed(self, backend: Backend) -> bool:
        """An active check failed; True when the backend just went down."""
        backend.passes = 0
        if backend.health is Health.DOWN:
            return False
        if backend.health is Health.UP:
            backend.failures += 1
            if backend.failures < self.fall:
                return False
        return self._mark_down(backend)

    def passive_failure(self, backend: Backend) -> bool:
        """Traffic showed the backend unreachable; True when it just went down."""
        backend.passes = 0
        if backend.health is Health.DOWN:
            return False
        return self._mark_down(backend)

    def _mark_down(self, backend: Backend) -> bool:
        backend.health = Health.DOWN
        backend.failures = 0
        self._refresh()
        return True

    def _refresh(self) -> None:
        self._eligible = [b for b in self.backends.values() if b.eligible]
        if self._next >= len(self._eligible):
            self._next = 0

    # -- choice -------------------------------------------------------------------------------

    @property
    def up_count(self) -> int:
        return len(self._eligible)

    def choose(self, exclude: Collection[Backend] = ()) -> Backend | None:
        """The eligible backend with the fewest requests in flight (round-robin among
        equals), not in `exclude`; it is counted as busy until `finish`."""
        eligible = self._eligible
        count = len(eligible)
        if not count:
            return None
        start = self._next
        best: Backend | None = None
        best_load = 0
        best_index = 0
        for offset in range(count):
            index = start + offset
            if index >= count:
                index -= count
            backend = eligible[index]
            if (best is None or backend.in_flight < best_load) and backend not in exclude:
                best = backend
                best_load = backend.in_flight
                best_index = index
                if best_load == 0:
                    break
        if best is None:
            return None
        self._next = best_index + 1 if best_index + 1 < count else 0
        best.in_flight += 1
        best.requests += 1
        return best

    def finish(self, backend: Backend) -> None:
        """A request that `choose` returned is over."""
        backend.in_flight -= 1
