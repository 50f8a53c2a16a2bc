"""Simulated users driving the photo-sharing app over real HTTP.

A run has two phases. Setup signs every user up (a unique `u<runid>_<n>` name) and logs
them in, a bounded number at a time because password hashing is the server's most
expensive request. The main phase then runs for `duration_s`:

- closed loop (`rate=None`): every user issues its next request as soon as the previous
  one finishes, after an optional exponentially distributed think time;
- open loop (`rate=R`): a pacer schedules R requests/s on a fixed timetable and hands
  each to an idle user; when every user is busy the request is counted as dropped
  rather than delayed, so a slow server cannot quietly lower the offered load
  (no coordinated omission).

Each user has one request in flight at most and its own cookies (`cookies.py`); users
share one aiohttp session and keep-alive connector per client network. With geo DNS
(`LoadConfig.dns`) a user resolves the target's name through the DNS server from its
region's source address, caches the answer for its TTL (`resolver.py`), connects from
that address to the IP it got and names the site in the Host header, like a browser.
When the run ends, in-flight requests get a short grace period and are then cancelled
and counted as such. A user that gets a 401 on an authenticated action is counted as
logged out once and logs in again as its next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import secrets
import string
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple
from urllib.parse import quote, urlsplit

import aiohttp

from millions.load.config import LoadConfig
from millions.load.cookies import apply_set_cookie, cookie_header
from millions.load.images import CONTENT_TYPES, EXTENSIONS, VARIANTS, generated_image
from millions.load.outcomes import (
    BAD_RESPONSE,
    DNS_FAILURE,
    LOGGED_OUT,
    exception_failure,
    identity_failure,
    photo_list_failure,
    status_failure,
    upload_failure,
)
from millions.load.resolver import AnswerCache, GeoDnsClient, ResolveError, is_ip_literal
from millions.load.stats import LoadReport, LoadSnapshot, LoadStats
from millions.load.targets import target_for_user

DRAIN_GRACE_S = 2.0
PHOTO_POOL_SIZE = 1024
PACER_MAX_SLEEP_S = 0.05
USER_AGENT = "millions-load/0.1"
MESSAGE_BODY_CHARS = 200
PASSWORD_ALPHABET = string.ascii_letters + string.digits


@dataclass
class SimulatedUser:
    """One browser: its account, the data center it talks to and its cookies."""

    index: int
    username: str
    password: str
    base_url: str
    rng: random.Random
    cookies: dict[str, str] = field(default_factory=dict)
    logged_in: bool = False
    uploads: int = 0
    region: str | None = None
    source_address: str | None = None  # the client network it connects and resolves from
    answers: AnswerCache = field(default_factory=AnswerCache)
    last_ok: bool | None = None  # the outcome of its latest request (None: none yet)
    last_at: float = 0.0  # when that request ended (time.monotonic())
    last_served_by: str | None = None  # the X-Served-By of that request


class _Result(NamedTuple):
    ok: bool
    document: Any  # the parsed JSON body when the request asked for one


class LoadRunner:
    """Runs one load test; `run()` once, `stop()` to end early, `snapshot()` to watch."""

    def __init__(self, config: LoadConfig) -> None:
        self.config = config
        self.run_id = secrets.token_hex(4)
        self._stats = LoadStats(config.users, config.duration_s, config.rate)
        self._halt = asyncio.Event()
        self._started = False
        self._finished = False
        self._actions, self._cumulative_weights = config.weighted_actions()
        self._photo_ids: deque[str] = deque(maxlen=PHOTO_POOL_SIZE)
        self._inflight: set[asyncio.Task[None]] = set()  # open-loop requests
        self._tasks: set[asyncio.Task[None]] = set()  # every task this run started
        self._task_errors: list[BaseException] = []
        self._sessions: dict[str | None, aiohttp.ClientSession] = {}
        self.dns = None if config.dns is None else GeoDnsClient(config.dns.server_address)
        secret_rng = random.SystemRandom()
        self.users = [
            SimulatedUser(
                index=n,
                username=f"u{self.run_id}_{n}",
                password="".join(secret_rng.choices(PASSWORD_ALPHABET, k=16)),
                base_url=target_for_user(config.targets, n),
                rng=random.Random(f"{config.seed}:{n}"),
            )
            for n in range(config.users)
        ]
        if config.dns is not None:
            for user in self.users:
                user.region, user.source_address = config.dns.region_for_user(user.index)

    def stop(self) -> None:
        """End the run early: no new requests; in-flight ones get a short grace period.

        Call from the event loop's thread (a task or a signal handler)."""
        if self._finished or self._halt.is_set():
            return
        self._stats.stopped_early = True
        self._halt.set()

    def snapshot(self) -> LoadSnapshot:
        """Live counters, cheap enough to call several times a second."""
        return self._stats.snapshot(time.monotonic())

    async def run(self) -> LoadReport:
        """Set up every user, drive load for `duration_s` (or until `stop()`), report."""
        if self._started:
            raise RuntimeError("a LoadRunner runs once; create a new one")
        self._started = True
        try:
            async with contextlib.AsyncExitStack() as sessions:
                for source in {user.source_address for user in self.users}:
                    self._sessions[source] = await sessions.enter_async_context(
                        self._client_session(source)
                    )
                try:
                    await self._setup_phase()
                    ready = [user for user in self.users if user.logged_in]
                    if ready and not self._halt.is_set():
                        await self._main_phase(ready)
                finally:
                    await self._cancel_leftovers()
        finally:
            self._finished = True
            self._stats.phase = "done"
        if self._task_errors:
            raise self._task_errors[0]
        return self._stats.report()

    def _client_session(self, source: str | None) -> aiohttp.ClientSession:
        """The keep-alive session of one client network (connections leave from `source`)."""
        connector = aiohttp.TCPConnector(
            limit=self.config.users,
            limit_per_host=0,
            local_addr=None if source is None else (source, 0),
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=self.config.request_timeout_s),
            headers={"User-Agent": USER_AGENT},
        )

    async def _address(self, user: SimulatedUser) -> tuple[str, str | None]:
        """The URL base to connect to and the Host header to send (None: from the URL).

        Without geo DNS the target itself; with it, the address the user's cached (or a
        fresh) answer names. ResolveError when the name does not resolve."""
        parts = urlsplit(user.base_url)
        host = parts.hostname or ""
        if self.dns is None or is_ip_literal(host):
            return user.base_url, None
        now = time.monotonic()
        address = user.answers.get(host, now)
        if address is None:
            answer = await self.dns.resolve(host, user.source_address)
            user.answers.put(host, answer, now)
            address = answer.address
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{address}{port}", parts.netloc

    # phases

    async def _setup_phase(self) -> None:
        stats = self._stats
        stats.phase = "setup"
        started = time.monotonic()
        pending = iter(self.users)

        async def setup_worker() -> None:
            for user in pending:
                if self._halt.is_set():
                    return
                await self._sign_up(user)

        workers = [
            self._track(setup_worker())
            for _ in range(min(self.config.setup_concurrency, self.config.users))
        ]
        await self._wait_until_done_or_halted(workers, deadline=None)
        await self._drain(workers)
        stats.setup_duration_s = time.monotonic() - started

    async def _main_phase(self, ready: list[SimulatedUser]) -> None:
        stats = self._stats
        started = time.monotonic()
        stats.main_started_at = started
        stats.phase = "running"
        deadline = started + self.config.duration_s
        if self.config.rate is None:
            drivers = [self._track(self._closed_loop_user(user, deadline)) for user in ready]
        else:
            drivers = [self._track(self._open_loop_pacer(ready, started, deadline))]
        await self._wait_until_done_or_halted(drivers, deadline=deadline)
        self._halt.set()
        stats.phase = "draining"
        await self._drain([*drivers, *self._inflight])
        stats.main_duration_s = time.monotonic() - started

    async def _closed_loop_user(self, user: SimulatedUser, deadline: float) -> None:
        think = self.config.think_time_s
        while not self._halt.is_set() and time.monotonic() < deadline:
            await self._act(user)
            if think > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._halt.wait(), user.rng.expovariate(1 / think))

    async def _open_loop_pacer(
        self, users: list[SimulatedUser], started: float, deadline: float
    ) -> None:
        rate = self.config.rate
        assert rate is not None
        idle = deque(users)
        scheduled_total = math.ceil(self.config.duration_s * rate)
        sent = 0

        async def act_then_idle(user: SimulatedUser) -> None:
            try:
                await self._act(user)
            finally:
                idle.append(user)

        while not self._halt.is_set() and sent < scheduled_total:
            now = time.monotonic()
            if now >= deadline:
                break
            due = min(scheduled_total, int((now - started) * rate) + 1)
            while sent < due:
                sent += 1
                if idle:
                    self._inflight.add(self._track(act_then_idle(idle.popleft())))
                else:
                    self._stats.dropped_requests += 1
            wait = started + sent / rate - time.monotonic()
            await asyncio.sleep(min(max(wait, 0.0), PACER_MAX_SLEEP_S))

    # task bookkeeping

    def _track(self, coro: Any) -> asyncio.Task[None]:
        """Start `coro` as a task whose unexpected exception fails the run instead of vanishing."""
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.add_done_callback(self._task_done)
        self._tasks.add(task)
        return task

    async def _cancel_leftovers(self) -> None:
        """Nothing outlives `run()`, even when `run()` itself is cancelled."""
        self._halt.set()
        leftovers = [task for task in self._tasks if not task.done()]
        for task in leftovers:
            task.cancel()
        if leftovers:
            await asyncio.gather(*leftovers, return_exceptions=True)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self._task_errors.append(error)
            self._halt.set()

    async def _wait_until_done_or_halted(
        self, tasks: Iterable[asyncio.Task[None]], deadline: float | None
    ) -> None:
        """Return when every task is done, the run is halted or `deadline` has passed."""
        pending: set[asyncio.Future[Any]] = {task for task in tasks if not task.done()}
        halted = asyncio.ensure_future(self._halt.wait())
        try:
            while pending and not self._halt.is_set():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return
                _, pending = await asyncio.wait(
                    [*pending, halted], timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                pending.discard(halted)
        finally:
            halted.cancel()

    async def _drain(self, tasks: Iterable[asyncio.Task[None]]) -> None:
        """Let in-flight work finish for a grace period, then cancel what is left."""
        pending = {task for task in tasks if not task.done()}
        if pending:
            _, pending = await asyncio.wait(pending, timeout=DRAIN_GRACE_S)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    # what a user does

    async def _sign_up(self, user: SimulatedUser) -> None:
        credentials = {"username": user.username, "password": user.password}
        signed_up = await self._request(
            user,
            "signup",
            "POST",
            "/api/signup",
            setup=True,
            json_body=credentials,
            check=lambda doc: identity_failure(doc, user.username),
        )
        if not signed_up.ok:
            return
        if await self._log_in(user, setup=True):
            self._stats.users_ready += 1

    async def _log_in(self, user: SimulatedUser, *, setup: bool) -> bool:
        result = await self._request(
            user,
            "login",
            "POST",
            "/api/login",
            setup=setup,
            json_body={"username": user.username, "password": user.password},
            check=lambda doc: identity_failure(doc, user.username),
        )
        if result.ok:
            self._set_logged_in(user, True)
        return result.ok

    def _set_logged_in(self, user: SimulatedUser, logged_in: bool) -> None:
        if user.logged_in != logged_in:
            self._stats.users_logged_in += 1 if logged_in else -1
            user.logged_in = logged_in

    async def _act(self, user: SimulatedUser) -> None:
        """One request: log back in if the session was lost, else a weighted random action."""
        if not user.logged_in:
            await self._log_in(user, setup=False)
            return
        action = user.rng.choices(self._actions, cum_weights=self._cumulative_weights)[0]
        if action in ("view", "image") and not self._photo_ids:
            action = "upload"  # nothing to look at yet
        if action == "browse":
            await self._request(user, "browse", "GET", "/")
        elif action == "me":
            await self._request(
                user, "me", "GET", "/api/me", check=lambda doc: identity_failure(doc, user.username)
            )
        elif action == "list":
            result = await self._request(
                user, "list", "GET", "/api/photos", check=photo_list_failure
            )
            if result.ok:
                self._photo_ids.extend(str(photo["id"]) for photo in result.document["photos"][:4])
        elif action in ("view", "image"):
            photo_id = quote(self._photo_ids[user.rng.randrange(len(self._photo_ids))], safe="")
            path = f"/p/{photo_id}" if action == "view" else f"/photos/{photo_id}/image"
            await self._request(user, action, "GET", path)
        else:
            await self._upload(user)

    async def _upload(self, user: SimulatedUser) -> None:
        fmt = self.config.upload_format
        image = generated_image(self.config.upload_bytes, fmt, user.rng.randrange(VARIANTS))
        user.uploads += 1
        form = aiohttp.FormData()
        form.add_field("title", f"{user.username} photo {user.uploads}")
        form.add_field(
            "photo",
            image,
            filename=f"photo{user.uploads}.{EXTENSIONS[fmt]}",
            content_type=CONTENT_TYPES[fmt],
        )
        result = await self._request(
            user, "upload", "POST", "/api/photos", form=form, check=upload_failure
        )
        if result.ok:
            self._photo_ids.append(str(result.document["id"]))

    async def _request(
        self,
        user: SimulatedUser,
        action: str,
        method: str,
        path: str,
        *,
        setup: bool = False,
        json_body: dict[str, str] | None = None,
        form: aiohttp.FormData | None = None,
        check: Callable[[Any], str | None] | None = None,
    ) -> _Result:
        """Send one request as `user`, classify it and count it. `check` validates JSON."""
        url = f"{user.base_url}{path}"
        headers = {"Cookie": cookie_header(user.cookies)} if user.cookies else {}
        status: int | None = None
        served_by: str | None = None
        body = b""
        failure: str | None = None
        message = ""
        started = time.perf_counter()
        try:
            base, host = await self._address(user)
            if host is not None:
                headers["Host"] = host
            async with self._sessions[user.source_address].request(
                method,
                f"{base}{path}",
                headers=headers,
                json=json_body,
                data=form,
                allow_redirects=False,
            ) as response:
                body = await response.read()
                status = response.status
                served_by = response.headers.get("X-Served-By")
                set_cookies = response.headers.getall("Set-Cookie", [])
                if set_cookies:
                    apply_set_cookie(user.cookies, set_cookies, datetime.now(UTC))
        except asyncio.CancelledError:
            self._stats.cancelled_requests += 1
            raise
        except ResolveError as exc:
            failure = DNS_FAILURE
            message = f"{method} {url}: DNS: {exc}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            failure = exception_failure(exc)
            message = f"{method} {url}: {type(exc).__name__}: {exc}"
        latency = time.perf_counter() - started
        document: Any = None
        if status is not None:
            failure = status_failure(action, status)
            if failure is None and check is not None:
                failure, document = _checked_json(body, check)
            if failure is not None:
                snippet = body[:MESSAGE_BODY_CHARS].decode("utf-8", "replace")
                message = f"{method} {url} -> {status} [{served_by or '-'}]: {snippet}"
        user.last_ok, user.last_at = failure is None, time.monotonic()
        user.last_served_by = served_by
        self._stats.record(
            setup=setup,
            user_id=user.index,
            action=action,
            latency_s=latency,
            status=status,
            served_by=served_by,
            failure=failure,
            message=message,
            now=time.monotonic(),
        )
        if failure == LOGGED_OUT:
            user.cookies.clear()
            self._set_logged_in(user, False)
        return _Result(failure is None, document)


def _checked_json(body: bytes, check: Callable[[Any], str | None]) -> tuple[str | None, Any]:
    try:
        document = json.loads(body)
    except ValueError:
        return BAD_RESPONSE, None
    return check(document), document
