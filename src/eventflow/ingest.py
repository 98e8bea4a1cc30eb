"""Group commit: concurrent requests share one INSERT and one pipelined publish."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from uuid import UUID

from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from eventflow.errors import DependencyUnavailable
from eventflow.metrics import Metrics
from eventflow.models import Event
from eventflow.retry import is_transient
from eventflow.store import InsertOutcome, insert_raw_events
from eventflow.streams import Streams

log = logging.getLogger(__name__)

PUBLISH_BACKOFF_S = 1.0


class Outcome(Enum):
    accepted = "accepted"
    duplicate = "duplicate"
    conflict = "conflict"


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    received_at: datetime


_Pending = tuple[Sequence[Event], "asyncio.Future[list[Result]]"]


class GroupCommitter:
    """Collects events from concurrent requests and stores them together.

    A request's future resolves only after its events are committed to PostgreSQL,
    so an answer of ``202`` means the event is durable. Publishing to Redis follows
    the commit; if it fails the event stays ``accepted`` and the reconciler
    republishes it.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        streams: Streams,
        metrics: Metrics,
        max_batch: int = 2000,
        label: Callable[[str], str] = str,
    ) -> None:
        self.engine = engine
        self.label = label
        self.streams = streams
        self.metrics = metrics
        self.max_batch = max_batch
        self._queue: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._publish_paused_until = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-commit")

    async def close(self) -> None:
        """Flush whatever is queued, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    async def submit(self, events: Sequence[Event]) -> list[Result]:
        if self._closing:
            raise DependencyUnavailable("api", "shutting down")
        future: asyncio.Future[list[Result]] = (
            asyncio.get_running_loop().create_future()
        )
        self._queue.append((events, future))
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch: list[_Pending] = []
            size = 0
            while self._queue and (
                not batch or size + len(self._queue[0][0]) <= self.max_batch
            ):
                item = self._queue.pop(0)
                batch.append(item)
                size += len(item[0])
            try:
                await self._flush(batch)
            except Exception as exc:  # every waiter must hear about it
                log.warning("group commit failed", extra={"error": str(exc)})
                error = (
                    exc
                    if isinstance(exc, DependencyUnavailable)
                    else DependencyUnavailable("postgres", type(exc).__name__)
                )
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)

    async def _flush(self, batch: list[_Pending]) -> None:
        # The first occurrence of an id is stored; later ones are compared with it.
        unique: dict[UUID, Event] = {}
        for events, _ in batch:
            for event in events:
                unique.setdefault(event.event_id, event)
        to_store = list(unique.values())
        outcome = await self._insert(to_store)
        # A retried INSERT whose first attempt did commit finds our own rows: they
        # carry our receipt time, so they are ours, not duplicates.
        for event_id, stored in list(outcome.existing.items()):
            mine = unique[event_id]
            if (stored.received_at, stored.body_hash) == (
                mine.received_at,
                mine.body_hash,
            ):
                outcome.inserted.add(event_id)
                del outcome.existing[event_id]
        self.metrics.ingest_batch_size.observe(len(to_store))
        fresh = [e for e in to_store if e.event_id in outcome.inserted]
        for event_type, n in Counter(e.event_type for e in fresh).items():
            self.metrics.events_received.labels(self.label(event_type)).inc(n)
        # Answer first: the events are durable now. Publishing is not on the path.
        claimed: set[UUID] = set()
        for events, future in batch:
            results = []
            for event in events:
                if event.event_id in outcome.inserted and event.event_id not in claimed:
                    claimed.add(event.event_id)
                    results.append(Result(Outcome.accepted, event.received_at))
                    continue
                first = outcome.existing.get(event.event_id)
                stored_hash = (
                    first.body_hash if first else unique[event.event_id].body_hash
                )
                received = (
                    first.received_at if first else unique[event.event_id].received_at
                )
                same = stored_hash == event.body_hash
                results.append(
                    Result(Outcome.duplicate if same else Outcome.conflict, received)
                )
            if not future.done():
                future.set_result(results)
        if fresh:
            await self._publish(fresh)

    async def _insert(self, events: list[Event]) -> InsertOutcome:
        """The INSERT is idempotent, so a dropped connection is retried briefly
        (a restarted database leaves dead connections in the pool)."""
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(3),
                wait=wait_exponential_jitter(multiplier=0.05, max=0.5, jitter=0.05),
                retry=retry_if_exception(is_transient),
                reraise=True,
            ):
                with attempt:
                    return await insert_raw_events(self.engine, events)
        except (OSError, DBAPIError, OperationalError) as exc:
            raise DependencyUnavailable("postgres", str(exc)[:200]) from exc
        raise AssertionError("unreachable")

    async def _publish(self, events: list[Event]) -> None:
        """Publish after the commit. After a failure, publishing pauses for
        ``PUBLISH_BACKOFF_S`` so that an unreachable Redis (a connect timeout per
        attempt) does not slow down the commits; the reconciler publishes what was
        skipped."""
        if time.monotonic() < self._publish_paused_until:
            self.metrics.publish_failures.inc(len(events))
            return
        try:
            await self.streams.publish(events)
        except (RedisError, OSError) as exc:
            self._publish_paused_until = time.monotonic() + PUBLISH_BACKOFF_S
            self.metrics.publish_failures.inc(len(events))
            log.warning(
                "publish to redis failed; the reconciler will republish",
                extra={"events": len(events), "error": str(exc)},
            )
