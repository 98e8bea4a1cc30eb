"""What the API's routes share, built once in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow.config import Settings
from eventflow.errors import short_reason
from eventflow.metrics import Metrics
from eventflow.pipeline.ingest import GroupCommitter
from eventflow.pipeline.ownership import partition_owners
from eventflow.pipeline.streams import Streams, StreamState, combine
from eventflow.schemas.registry import SchemaRegistry
from eventflow.security.keys import KeyCache
from eventflow.security.ratelimit import RateLimiter

log = logging.getLogger(__name__)


@dataclass
class ApiContext:
    settings: Settings
    engine: AsyncEngine
    redis: Redis
    streams: Streams
    committer: GroupCommitter
    metrics: Metrics
    registry: SchemaRegistry
    keys: KeyCache
    limiter: RateLimiter
    stream_state: StreamState | None = None
    postgres_error: str | None = None
    redis_error: str | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def check_postgres(self) -> str | None:
        try:
            async with asyncio.timeout(self.settings.health_check_timeout_s):
                async with self.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
            self.postgres_error = None
        except Exception as exc:
            self.postgres_error = self._failed("postgres", self.postgres_error, exc)
        self.metrics.dependency_up.labels("postgres").set(self.postgres_error is None)
        return self.postgres_error

    async def check_redis(self) -> str | None:
        try:
            async with asyncio.timeout(self.settings.health_check_timeout_s):
                await self.redis.ping()
            self.redis_error = None
        except Exception as exc:
            self.redis_error = self._failed("redis", self.redis_error, exc)
        self.metrics.dependency_up.labels("redis").set(self.redis_error is None)
        return self.redis_error

    @staticmethod
    def _failed(dependency: str, before: str | None, exc: BaseException) -> str:
        """A short reason for clients (``/health``); the detail goes to the log,
        once per outage."""
        reason = short_reason(exc)
        if before is None:
            log.warning(
                "dependency check failed",
                extra={
                    "dependency": dependency,
                    "error": f"{type(exc).__name__}: {exc}"[:500],
                },
            )
        return reason

    async def refresh_stream_state(self) -> None:
        try:
            states = await self.streams.states()
            owners = await partition_owners(self.redis, self.streams)
        except Exception:
            return
        self.stream_state = combine(states)
        self.metrics.set_stream_state(self.stream_state)
        self.metrics.set_partitions(states, owners)

    async def refresh_schemas(self, force: bool = False) -> None:
        """New schema versions reach this process within ``schema_refresh_s``."""
        try:
            if await self.registry.refresh(force):
                self.metrics.precreate(self.registry.types)
        except Exception as exc:
            log.warning("could not refresh event schemas", extra={"error": str(exc)})

    async def refresh_keys(self) -> None:
        """Created and revoked keys reach this process within ``key_refresh_s``."""
        if not self.settings.auth_required:
            return
        try:
            await self.keys.refresh()
        except Exception as exc:
            log.warning("could not refresh API keys", extra={"error": str(exc)})

    def backlog(self) -> int:
        state = self.stream_state
        return 0 if state is None else state.lag + state.pending

    async def _watch(self) -> None:
        """Keep dependency state and stream gauges fresh, once a second.

        Stops on ``_closed`` as well as on cancellation: a cancellation that lands
        inside a client library's connect can be absorbed by it.
        """
        while not self._closed.is_set():
            await asyncio.gather(self.check_postgres(), self.check_redis())
            if self.redis_error is None:
                await self.refresh_stream_state()
            if self.postgres_error is None:
                await self.refresh_schemas()
                await self.refresh_keys()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), 1.0)

    def start(self) -> None:
        self.committer.start()
        self.limiter.start()
        self._tasks.append(asyncio.create_task(self._watch(), name="api-watch"))

    async def close(self) -> None:
        self._closed.set()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        await self.committer.close()
        await self.limiter.close()
        await self.redis.aclose()
        await self.engine.dispose()
