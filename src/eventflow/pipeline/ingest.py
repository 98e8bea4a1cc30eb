"""Group commit: concurrent requests share one INSERT and one pipelined publish."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from uuid import UUID

import asyncpg
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from eventflow.errors import DependencyUnavailable, short_reason
from eventflow.metrics import Metrics
from eventflow.models import Event
from eventflow.pipeline.retry import is_transient
from eventflow.pipeline.streams import PUBLISH_CHUNK, Streams
from eventflow.store.events import InsertOutcome, insert_raw_events

log = logging.getLogger(__name__)


class Outcome(Enum):
    accepted = "accepted"
    duplicate = "duplicate"
    conflict = "conflict"
    refused = "refused"  # PostgreSQL refused this event itself: nothing stored


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    received_at: datetime
    error: str | None = None


class RefusedByDatabase(Exception):
    """A permanent database error for a group: some event in it cannot be stored."""


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
        publish_backoff_s: float = 1.0,
        insert_attempts: int = 3,
        max_queued: int = 20_000,
        deadline_s: float = 10.0,
        duplicate_window: timedelta = timedelta(days=7),
        backlog_limit: int = 100_000,
    ) -> None:
        self.engine = engine
        self.label = label
        self.publish_backoff_s = publish_backoff_s
        self.insert_attempts = insert_attempts
        self.streams = streams
        self.metrics = metrics
        self.max_batch = max_batch
        self.max_queued = max_queued
        self.deadline_s = deadline_s
        self.duplicate_window = duplicate_window
        self._queue: list[_Pending] = []
        self._queued = 0  # events in the queue
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._publish_paused_until = 0.0
        self._backlog: dict[int, deque[Event]] = {}
        self._held = 0
        self.backlog_limit = backlog_limit

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-commit")

    async def close(self) -> None:
        """Flush whatever is queued, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    async def submit(self, events: Sequence[Event]) -> list[Result]:
        """Store ``events`` with the next group; one result per event.

        Refused at once (``DependencyUnavailable``, a 503) when the queue holds
        ``max_queued`` events; a request still queued after ``deadline_s`` is
        taken out and refused the same way, with nothing stored. A request whose
        group is already being written waits for that write's outcome.
        """
        if self._closing:
            raise DependencyUnavailable("api", "shutting down")
        if self._queued + len(events) > self.max_queued:
            self.metrics.events_rejected.labels("overloaded").inc(len(events))
            raise DependencyUnavailable("api", "the ingest queue is full")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Result]] = loop.create_future()
        item = (events, future)
        self._queue.append(item)
        self._queued += len(events)
        self._wakeup.set()
        # A timer, not asyncio.wait_for: no task per request on the hot path.
        timer = loop.call_later(self.deadline_s, self._expire, item)
        try:
            return await future
        finally:
            timer.cancel()

    def _expire(self, item: _Pending) -> None:
        """The deadline passed: a request still queued is taken out, refused,
        and nothing of it is stored; one already being written is left alone."""
        events, future = item
        if item in self._queue and not future.done():
            self._queue.remove(item)
            self._queued -= len(events)
            future.set_exception(
                DependencyUnavailable("postgres", "no commit within the deadline")
            )

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    if self._backlog:
                        with contextlib.suppress(Exception):
                            await self._publish([])  # a last try; else reconciled
                    return
                self._wakeup.clear()
                if not self._backlog:
                    await self._wakeup.wait()
                    continue
                # Held events: try again when Redis may answer.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), 0.2)
                if not self._queue:
                    with contextlib.suppress(Exception):
                        await self._publish([])
                continue
            batch: list[_Pending] = []
            size = 0
            while self._queue and (
                not batch or size + len(self._queue[0][0]) <= self.max_batch
            ):
                item = self._queue.pop(0)
                self._queued -= len(item[0])
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
        refused: dict[UUID, str] = {}
        try:
            outcome = await self._insert(to_store)
        except RefusedByDatabase:
            # Confine the failure to the events that cause it.
            outcome = await self._insert_isolating(to_store, refused)
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
                if event.event_id in refused:
                    results.append(
                        Result(
                            Outcome.refused, event.received_at, refused[event.event_id]
                        )
                    )
                    continue
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
                stop=stop_after_attempt(self.insert_attempts),
                wait=wait_exponential_jitter(multiplier=0.05, max=0.5, jitter=0.05),
                retry=retry_if_exception(is_transient),
                reraise=True,
            ):
                with attempt:
                    return await insert_raw_events(
                        self.engine, events, self.duplicate_window
                    )
        except (
            OSError,
            DBAPIError,
            OperationalError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
        ) as exc:
            log.warning(
                "group commit insert failed",
                extra={
                    "events": len(events),
                    "error": f"{type(exc).__name__}: {exc}"[:500],
                },
            )
            if isinstance(exc, DBAPIError | asyncpg.PostgresError) and not (
                is_transient(exc)
            ):
                raise RefusedByDatabase(_sqlstate_reason(exc)) from exc
            raise DependencyUnavailable("postgres", short_reason(exc)) from exc
        raise AssertionError("unreachable")

    async def _insert_isolating(
        self, events: list[Event], refused: dict[UUID, str]
    ) -> InsertOutcome:
        """``events`` were refused together: insert them in halves until each
        event the database refuses is alone. The refused ones go to ``refused``
        (id -> reason), the rest are stored."""
        if len(events) == 1:
            return await self._try_insert(events, refused)
        middle = len(events) // 2
        first = await self._try_insert(events[:middle], refused)
        second = await self._try_insert(events[middle:], refused)
        return InsertOutcome(
            first.inserted | second.inserted, {**first.existing, **second.existing}
        )

    async def _try_insert(
        self, events: list[Event], refused: dict[UUID, str]
    ) -> InsertOutcome:
        try:
            return await self._insert(events)
        except RefusedByDatabase as exc:
            if len(events) == 1:
                refused[events[0].event_id] = str(exc)
                return InsertOutcome(set(), {})
        return await self._insert_isolating(events, refused)

    async def _publish(self, events: list[Event]) -> None:
        """Publish after the commit, keeping each partition's order.

        Events a partition could not take (Redis down, a cluster master failing
        over) wait in that partition's backlog, and the partition's later events
        queue behind them, so that they reach the stream in the order they were
        accepted once Redis answers again. After a failure of every partition,
        publishing pauses for ``publish_backoff_s`` so that an unreachable Redis
        (a connect timeout per attempt) does not slow down the commits. A backlog
        past ``backlog_limit`` events drops its oldest: the reconciler publishes
        those (the one case where a key's order is not kept), as it does for a
        backlog lost with its process."""
        groups = self.streams.by_partition(events) if events else {}
        if self._backlog and time.monotonic() >= self._publish_paused_until:
            await self._drain_backlog()
        direct: dict[int, list[Event]] = {}
        for p, group in groups.items():
            if p in self._backlog or time.monotonic() < self._publish_paused_until:
                self._hold(p, group)
            else:
                direct[p] = group
        failed = await self.streams.publish_groups(direct)
        for p in failed:
            self._hold(p, direct[p])
        if failed:
            if len(failed) == len(direct):
                self._publish_paused_until = time.monotonic() + self.publish_backoff_s
            self.metrics.publish_failures.inc(sum(len(direct[p]) for p in failed))
            log.warning(
                "publish to redis failed; kept in order until Redis answers",
                extra={
                    "partitions": sorted(failed),
                    "error": str(next(iter(failed.values()))),
                },
            )
        self.metrics.publish_backlog.set(self._held)

    def _hold(self, partition: int, events: list[Event]) -> None:
        backlog = self._backlog.setdefault(partition, deque())
        backlog.extend(events)
        self._held += len(events)
        while self._held > self.backlog_limit:
            oldest = max(self._backlog, key=lambda p: len(self._backlog[p]))
            self._backlog[oldest].popleft()
            self._held -= 1
            if not self._backlog[oldest]:
                del self._backlog[oldest]

    async def _drain_backlog(self) -> None:
        """Publish held events, oldest first, partition by partition."""
        while self._backlog:
            chunks = {
                p: list(itertools.islice(q, PUBLISH_CHUNK))
                for p, q in self._backlog.items()
            }
            failed = await self.streams.publish_groups(chunks)
            for p, chunk in chunks.items():
                if p in failed:
                    continue
                queue = self._backlog[p]
                for _ in chunk:
                    queue.popleft()
                self._held -= len(chunk)
                if not queue:
                    del self._backlog[p]
            if failed:
                if len(failed) == len(chunks):
                    self._publish_paused_until = (
                        time.monotonic() + self.publish_backoff_s
                    )
                break
        self.metrics.publish_backlog.set(self._held)


def _sqlstate_reason(exc: DBAPIError | asyncpg.PostgresError) -> str:
    """What the client may read: the SQLSTATE class, not the server's text."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return f"PostgreSQL refused the event (SQLSTATE {state or 'unknown'})"
