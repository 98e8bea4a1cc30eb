"""Group commit for a worker's partitions: batches that are ready at the same time
share one transaction.

Each partition a worker owns is consumed by a task of its own, and each task
commits its batches one after the other. Under a steady flow of single events,
spread over the partitions, those batches are small, and a transaction per batch
(its round trips, the fence check, the commit's WAL flush) costs more than the
rows it writes. The writer takes every batch submitted while the previous
transaction was in flight and commits them together: the fences of all their
partitions are checked first (one statement, rows locked in partition order),
then all rows are written by the same statements, in submission order, so each
partition's rows keep their stream order. Nothing waits for company: a batch
submitted to an idle writer is written at once. Up to ``in_flight`` (2)
transactions run at the same time, so that reading, processing and committing
overlap when a worker drains a backlog. A partition never has two batches in
them: its next batch is submitted only after the previous one committed.

If a combined transaction fails (a partition fenced out, a row the database
refuses, a connection lost), each batch is written again in a transaction of its
own, so each gets exactly the outcome it would have had alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from uuid import UUID

import asyncpg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow.pipeline.ownership import Fence, check_fences
from eventflow.store.events import FailedRow, ProcessedRow, write_results
from eventflow.store.tables import raw_transaction

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Submission:
    processed: Sequence[ProcessedRow]
    failed: Sequence[FailedRow]
    fence: Fence | None
    done: asyncio.Future[set[UUID]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def ids(self) -> set[UUID]:
        return {p.event.event_id for p in self.processed} | {
            f.event_id for f in self.failed
        }


class BatchWriter:
    """Writes worker batches, several per transaction when they queue up."""

    def __init__(
        self,
        engine: AsyncEngine,
        worker: str,
        max_rows: int = 5000,
        in_flight: int = 2,
    ) -> None:
        self.engine = engine
        self.worker = worker
        self.max_rows = max_rows
        self.in_flight = in_flight
        self._queue: list[_Submission] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def write(
        self,
        processed: Sequence[ProcessedRow],
        failed: Sequence[FailedRow],
        fence: Fence | None,
    ) -> set[UUID]:
        """Commit one batch; the ids newly inserted into ``processed_events``."""
        submission = _Submission(processed, failed, fence)
        self._queue.append(submission)
        if len(self._tasks) < self.in_flight:
            task = asyncio.create_task(self._drain(), name="batch-writer")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await submission.done

    async def _drain(self) -> None:
        while self._queue:
            group = self._take()
            if len(group) == 1:
                await self._alone(group[0])
            else:
                await self._together(group)

    def _take(self) -> list[_Submission]:
        group = [self._queue.pop(0)]
        rows = len(group[0].processed) + len(group[0].failed)
        seen = group[0].ids()
        while self._queue:
            nxt = self._queue[0]
            size = len(nxt.processed) + len(nxt.failed)
            ids = nxt.ids()
            # An event in two batches (a copy republished meanwhile) is written
            # by two transactions, as it would be without grouping.
            if rows + size > self.max_rows or ids & seen:
                break
            group.append(self._queue.pop(0))
            rows += size
            seen |= ids
        return group

    async def _alone(self, s: _Submission) -> None:
        await _settle(s, lambda: self._transaction([s]))

    async def _together(self, group: list[_Submission]) -> None:
        try:
            inserted = await self._transaction(group)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("combined commit failed", extra={"error": str(exc)})
            for s in group:
                await self._alone(s)
            return
        for s in group:
            if not s.done.done():
                s.done.set_result(inserted & s.ids())

    async def _transaction(self, group: list[_Submission]) -> set[UUID]:
        fences = sorted(
            {s.fence for s in group if s.fence is not None}, key=lambda f: f.partition
        )
        try:
            async with raw_transaction(self.engine) as conn:
                if fences:
                    await check_fences(conn, fences)
                return await write_results(
                    conn,
                    [p for s in group for p in s.processed],
                    [f for s in group for f in s.failed],
                    self.worker,
                )
        except asyncpg.PostgresError as exc:
            # The worker's commit policy (retry, split, dead-letter) reads
            # SQLAlchemy's errors, as elsewhere.
            raise DBAPIError(None, None, exc) from exc


async def _settle(s: _Submission, write: Callable[[], Awaitable[set[UUID]]]) -> None:
    try:
        result = await write()
    except asyncio.CancelledError:
        if not s.done.done():
            s.done.cancel()
        raise
    except Exception as exc:
        if not s.done.done():
            s.done.set_exception(exc)
        return
    if not s.done.done():
        s.done.set_result(result)
