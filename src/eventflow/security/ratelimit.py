"""Per-key request rates, shared by every API process through Redis.

Time is cut into one-second windows. Each process counts the requests it let
through in the current window locally, and every ``sync_s`` (50 ms) adds its
counts to Redis in one pipelined round trip for all keys (``INCRBY`` +
``EXPIRE``), learning the deployment-wide totals in the same trip. A request is
refused (``429``) when the last known total plus what this process let through
since then would pass the key's limit. So Redis is never on a request's path, and
a key can exceed its limit by at most what the other processes let through within
one sync interval.

If Redis cannot be reached, ingestion is let through (PostgreSQL is the source of
truth) and everything else is refused with ``503`` (fail closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass

from redis.asyncio import Redis

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int  # seconds until the window ends

    def headers(self) -> dict[str, str]:
        out = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
        }
        if not self.allowed:
            out["Retry-After"] = str(self.reset_s)
        return out


class RedisUnavailable(Exception):
    """The shared counts are unknown (the last sync with Redis failed)."""


class RateLimiter:
    def __init__(self, redis: Redis, namespace: str, sync_s: float = 0.05) -> None:
        self.redis = redis
        self.namespace = namespace
        self.sync_s = sync_s
        self._pending: dict[tuple[str, int], int] = defaultdict(int)
        self._known: dict[tuple[str, int], int] = {}
        self._healthy = True
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="rate-limit-sync")

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 2)

    def check(self, key: str, limit: float, fail_open: bool) -> Decision:
        """Count one request of ``key`` against ``limit`` per second."""
        now = time.time()
        window = int(now)
        reset = max(1, math.ceil(window + 1 - now))
        cap = max(1, int(limit))
        if not self._healthy and not fail_open:
            raise RedisUnavailable("rate limits cannot be checked")
        slot = (key, window)
        used = self._known.get(slot, 0) + self._pending.get(slot, 0)
        if used >= cap and self._healthy:
            return Decision(False, cap, 0, reset)
        self._pending[slot] += 1
        return Decision(True, cap, max(0, cap - used - 1), reset)

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.sync_s)
            await self.sync()

    async def sync(self) -> None:
        """Add this process's counts to Redis and learn the totals."""
        current = int(time.time())
        for slot in [s for s in self._known if s[1] < current]:
            del self._known[slot]
        if not self._pending:
            return
        pending, self._pending = self._pending, defaultdict(int)
        slots = [s for s in pending if s[1] >= current - 1]
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, window in slots:
                    name = f"{self.namespace}:{key}:{window}"
                    pipe.incrby(name, pending[(key, window)])
                    pipe.expire(name, 3)
                replies = await pipe.execute()
        except Exception as exc:
            if self._healthy:
                log.warning("rate limits: Redis unavailable", extra={"error": str(exc)})
            self._healthy = False
            return
        self._healthy = True
        for index, slot in enumerate(slots):
            self._known[slot] = int(replies[2 * index])
