"""Password hashing with argon2 off the event loop, with a bounded number of threads.

An argon2 hash costs tens of milliseconds of CPU and (with the default RFC 9106
low-memory profile) 64 MiB of RAM. The hashing runs in a small dedicated thread pool
(argon2-cffi releases the GIL) sized to the CPU count, so a burst of logins queues
instead of blocking the event loop or allocating gigabytes at once.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError


class Passwords:
    """Hashes and checks passwords; `verify` takes as long for unknown users as for known."""

    def __init__(self, hasher: PasswordHasher, workers: int | None = None) -> None:
        self._hasher = hasher
        self._pool = ThreadPoolExecutor(
            max_workers=workers or os.cpu_count() or 1, thread_name_prefix="argon2"
        )
        self._decoy_hash: str | None = None

    async def hash(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True when `password` matches; a None hash (unknown user) still costs one check."""
        if password_hash is None:
            if self._decoy_hash is None:
                self._decoy_hash = await self.hash(secrets.token_urlsafe(16))
            password_hash = self._decoy_hash
            password = ""  # never matches the decoy's random password
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._matches, password_hash, password)

    def _matches(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the hash was made with other parameters than today's."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
