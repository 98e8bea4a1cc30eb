"""The consumer: read a batch, process it, commit it, then acknowledge it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow.config import Settings
from eventflow.errors import (
    FencedOut,
    InvalidEvent,
    UndecodableMessage,
    UnknownSchema,
)
from eventflow.metrics import Metrics
from eventflow.models import Event, decode_message
from eventflow.pipeline.batchwriter import BatchWriter
from eventflow.pipeline.ownership import Fence, Ownership
from eventflow.pipeline.processing import enrich
from eventflow.pipeline.reconciler import reconcile_once
from eventflow.pipeline.reprocess import Reprocessor, ReprocessProcess
from eventflow.pipeline.retry import is_transient, retrying
from eventflow.pipeline.streams import (
    Entry,
    Stream,
    Streams,
    entry_ms,
    partition_key,
)
from eventflow.processors import Processor, load_processors
from eventflow.procs import freeze_startup_heap
from eventflow.schemas.registry import SchemaRegistry
from eventflow.store import lifecycle
from eventflow.store.events import (
    FailedRow,
    ProcessedRow,
    mark_quarantined,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
LATENCY_SAMPLE = 64

# Undecodable entries carry no event id; derive a stable one from the entry id so a
# redelivered bad entry still ends as one dead letter.
UNDECODABLE_NAMESPACE = uuid.UUID("6f1c1d6e-4f43-4f43-9a55-0e0e7f1a2b3c")


@dataclass
class BatchReport:
    processed: int = 0
    duplicates: int = 0
    failed: int = 0


@dataclass
class Worker:
    """One consumer of the group. Build it in an entry point and ``run`` it."""

    settings: Settings
    engine: AsyncEngine
    redis: Redis
    metrics: Metrics = field(default_factory=Metrics)
    consumer: str = ""
    processors: dict[str, Processor] = field(default_factory=load_processors)

    def __post_init__(self) -> None:
        self.consumer = self.consumer or self.settings.resolved_consumer_name()
        self.streams = Streams.from_settings(self.redis, self.settings)
        self.ownership = Ownership(
            self.redis,
            self.engine,
            self.streams,
            self.consumer,
            self.settings.lease_ttl_ms,
        )
        self._consumers: dict[int, asyncio.Task[None]] = {}
        self._handover: dict[int, asyncio.Event] = {}
        self._progress: dict[int, float] = {}
        self._until_empty = False
        self._exiting = False
        self._next_run_check = 0.0
        self.registry = SchemaRegistry(
            self.engine,
            self.settings.schema_refresh_s,
            self.settings.unknown_event_types,
        )
        self.reprocessor = Reprocessor(
            self.engine, self.registry, self.processors, self.consumer
        )
        self.reprocess_process = ReprocessProcess(self.settings, self.consumer)
        self.batch_writer = BatchWriter(self.engine, self.consumer)
        self._stopping = asyncio.Event()
        self._degraded = False
        self._last_reconcile = time.monotonic()
        self._last_housekeeping = 0.0
        self._last_lifecycle = -1e9
        self.totals = BatchReport()

    # --- lifecycle ------------------------------------------------------------------

    def stop(self) -> None:
        """Stop reading; in-flight batches are finished and acknowledged first."""
        if not self._stopping.is_set():
            log.info("worker stopping", extra={"consumer": self.consumer})
        self._stopping.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def run(self, until_empty: bool = False) -> BatchReport:
        """Consume until stopped, or with ``until_empty`` until nothing is left to do
        (no new entry, nothing pending, in any partition).

        This loop supervises: it keeps the ownership of partitions up to date and
        runs one consuming task per owned partition (``_consume``)."""
        s = self.settings
        self._until_empty = until_empty
        # Redis not there yet (a cluster failing over): wait for it up to two
        # lease periods, as a running worker would; after that, exit non-zero so
        # that a supervisor sees it.
        patience = time.monotonic() + 2 * s.lease_ttl_ms / 1000
        while True:
            try:
                await self._with_retry("ensure_group", self.streams.ensure_group)
                break
            except Exception as exc:
                if (
                    until_empty
                    or not is_transient(exc)
                    or self._stopping.is_set()
                    or time.monotonic() > patience
                ):
                    raise
                self._failed(exc)
                await self._pause(1.0)
                self._degraded = False
        log.info(
            "worker started",
            extra={
                "consumer": self.consumer,
                "stream": s.stream_name,
                "partitions": len(self.streams),
                "group": s.consumer_group,
            },
        )
        tick_s = s.lease_ttl_ms / 3000
        next_tick = 0.0
        try:
            while not self._stopping.is_set():
                self.metrics.heartbeat.set(time.time())
                try:
                    if self._degraded:
                        # Nothing is read while a dependency is failing:
                        # recovering would raise delivery counts until valid
                        # entries looked like poison. Probe; resume when it answers.
                        await self._probe_database()
                        # A keyed command: on a cluster it goes to the live master
                        # of its slot (a plain PING may pick a dead node).
                        await self.redis.exists(self.ownership.members_key)
                        self._degraded = False
                        log.info("database reachable again; resuming")
                    if not self.registry.loaded:
                        await self.registry.ensure_loaded()
                        self.metrics.precreate(self.registry.types)
                        freeze_startup_heap()
                    if time.monotonic() >= next_tick:
                        # While a partition that is ours is still being handed
                        # over, look again soon rather than in a third of a lease.
                        waiting = await self._rebalance()
                        next_tick = time.monotonic() + (
                            min(tick_s, 0.2) if waiting else tick_s
                        )
                    await self._reap()
                    await self._maintenance(force=until_empty)
                    if until_empty and await self._idle():
                        break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if until_empty and not is_transient(exc):
                        raise
                    self._failed(exc)
                await self._pause(0.05 if until_empty else min(tick_s, 0.5))
        finally:
            self._exiting = True  # drained, stopped or failed: nothing new starts
            await self._finish_partitions()
        await self._leave()
        return self.totals

    async def _rebalance(self) -> bool:
        """One ownership round: start consuming what we took, stop what we lost
        or must hand over. True while we wait for a partition to be handed over."""
        assignment = await self.ownership.tick()
        for p in assignment.lost:
            log.warning(
                "partition lease lost",
                extra={"consumer": self.consumer, "partition": p},
            )
            self._handover.setdefault(p, asyncio.Event()).set()
        for p in assignment.to_release:
            self._handover.setdefault(p, asyncio.Event()).set()
            if p not in self._consumers:
                await self.ownership.release(p)
        for p, fence in assignment.taken.items():
            self._start(p, fence)
        self.metrics.partitions_owned.set(len(self.ownership.owned))
        return assignment.waiting

    def _start(self, partition: int, fence: Fence) -> None:
        self._progress[partition] = time.monotonic()
        handover = asyncio.Event()
        self._handover[partition] = handover
        self._consumers[partition] = asyncio.create_task(
            self._consume(partition, fence, handover)
        )

    async def _reap(self) -> None:
        """Restart the consuming task of a partition we still own if it ended;
        give up a partition whose lease or token turned out to be stale."""
        stall = max(10.0, 3 * self.settings.lease_ttl_ms / 1000)
        for p, task in list(self._consumers.items()):
            if not task.done():
                # A consuming task goes round at least once per blocking read;
                # one that has not for this long is stuck in a call that will not
                # return (seen with a connection to a dead cluster node): cancel
                # it, and it restarts, finishing its pending entries first.
                if time.monotonic() - self._progress.get(p, time.monotonic()) > stall:
                    log.warning(
                        "partition consumer stalled; restarting it",
                        extra={"consumer": self.consumer, "partition": p},
                    )
                    task.cancel()
                    self._progress[p] = time.monotonic()
                continue
            del self._consumers[p]
            if not task.cancelled() and task.exception() is not None:
                exc = task.exception()
                assert exc is not None
                if self._until_empty and not (
                    is_transient(exc) or isinstance(exc, FencedOut)
                ):
                    raise exc  # a drain reports what stopped it
                self._failed(exc)
                if isinstance(exc, FencedOut):
                    with contextlib.suppress(RedisError, OSError):
                        await self.ownership.forget(p)
            fence = self.ownership.owned.get(p)
            handover = self._handover.get(p)
            if fence is not None and not (handover and handover.is_set()):
                self._start(p, fence)

    def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, FencedOut):
            log.warning(str(exc), extra={"consumer": self.consumer})
        elif is_transient(exc):
            if not self._degraded:
                log.warning(
                    "dependency unavailable; pausing",
                    extra={"error": f"{type(exc).__name__}: {exc}"[:300]},
                )
            self._degraded = True
        else:
            # Unexpected: the batch stays pending and is read again first; an
            # entry that keeps failing becomes a dead letter.
            log.error("batch failed; it will be retried", exc_info=exc)

    async def _finish_partitions(self) -> None:
        """Stopping: let every partition finish (commit and acknowledge) its
        in-flight batches, and a reprocessing run its batch."""
        await self.reprocess_process.stop(self.settings.shutdown_timeout_s)
        for handover in self._handover.values():
            handover.set()
        results = await asyncio.gather(
            *self._consumers.values(), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                log.warning("in-flight batch failed at shutdown", exc_info=result)
        self._consumers.clear()

    async def _consume(
        self, partition: int, fence: Fence, handover: asyncio.Event
    ) -> None:
        """Consume one owned partition until it is handed over or we stop.

        Batches commit one after the other, in stream order; the next batch is
        read and prepared while the previous one commits. Pending entries (the
        previous owner's, or ours after a failure) are finished first."""
        s = self.settings
        stream = self.streams.partitions[partition]
        prev: asyncio.Task[BatchReport] | None = None
        recovered = False
        last_id = "0-0"
        try:
            while not (self._stopping.is_set() or handover.is_set()):
                self._progress[partition] = time.monotonic()
                if self._degraded:
                    await self._pause(0.1)
                    continue
                if not recovered:
                    await self._recover(stream, fence)
                    recovered = True
                entries = await stream.read_owned(self.consumer, s.worker_batch_size)
                if not entries:
                    if prev is not None:
                        await prev
                        prev = None
                    else:
                        # Everything we read is acknowledged (and deleted): any
                        # entry after the last one we read is new.
                        await stream.wait_for_new(last_id, s.worker_block_ms)
                    continue
                last_id = entries[-1].entry_id
                batch = asyncio.create_task(
                    self.handle(entries, stream=stream, fence=fence, after=prev)
                )
                if prev is not None:
                    try:
                        await prev
                    except BaseException:
                        await asyncio.gather(batch, return_exceptions=True)
                        raise
                prev = batch
                if len(entries) < s.worker_batch_size:
                    # This read emptied the partition: rather than read again
                    # now (a round trip that finds nothing, under a light flow),
                    # let the batch commit, then wait for what came meanwhile
                    # (at once if something did). The next batch could not
                    # commit before this one anyway.
                    prev = None
                    await batch
                    await stream.wait_for_new(last_id, s.worker_block_ms)
            if prev is not None:
                await prev
        finally:
            if prev is not None and not prev.done():
                await asyncio.gather(prev, return_exceptions=True)
            if handover.is_set() and self.ownership.owned.get(partition) == fence:
                with contextlib.suppress(RedisError, OSError):
                    await self.ownership.release(partition)

    async def _recover(self, stream: Stream, fence: Fence) -> None:
        """Finish every entry pending in the partition, oldest first."""
        while not self._stopping.is_set():
            self._progress[stream.partition] = time.monotonic()
            claimed = await stream.reclaim(
                self.consumer, 0, self.settings.worker_batch_size
            )
            if not claimed:
                return
            self.metrics.reclaimed.inc(len(claimed))
            log.info(
                "finishing pending entries",
                extra={
                    "consumer": self.consumer,
                    "partition": stream.partition,
                    "entries": len(claimed),
                },
            )
            await self.handle(claimed, stream=stream, fence=fence)

    async def _probe_database(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def _idle(self) -> bool:
        """In ``until_empty`` mode: is there really nothing left, anywhere?"""
        state = await self.streams.state()
        return state.lag == 0 and state.pending == 0

    async def _leave(self) -> None:
        """On a clean exit: hand every partition over, and drop our consumer
        where it holds nothing pending."""
        try:
            await self.ownership.leave()
            for stream in self.streams.partitions:
                if await stream.consumer_pending(self.consumer) == 0:
                    await stream.delete_consumer(self.consumer)
        except Exception as exc:
            log.warning("could not deregister consumer", extra={"error": str(exc)})
        log.info("worker stopped", extra={"consumer": self.consumer})

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _maintenance(self, force: bool = False) -> None:
        """Reconcile (the owner of partition 0 does), refresh the registry and
        the gauges: each on its interval."""
        s = self.settings
        now = time.monotonic()
        if (force or now - self._last_reconcile >= s.reconcile_interval_s) and (
            0 in self.ownership.owned
        ):
            self._last_reconcile = now
            await reconcile_once(
                self.engine,
                self.streams,
                self.metrics,
                timedelta(seconds=s.reconcile_min_age_s),
                s.reconcile_batch_size,
                timedelta(seconds=s.reconcile_publish_slack_s),
                # Past max_deliveries attempts, an entry is poison, not queued.
                stuck_after=timedelta(
                    milliseconds=(s.max_deliveries + 1) * s.claim_idle_ms
                ),
            )
        if (force or now - self._last_lifecycle >= s.maintenance_interval_s) and (
            0 in self.ownership.owned
        ):
            self._last_lifecycle = now
            await self._lifecycle()
        await self._reprocessing(now)
        await self.registry.refresh()
        if now - self._last_housekeeping >= s.housekeeping_interval_s:
            self._last_housekeeping = now
            await self._refresh_gauges()

    async def _reprocessing(self, now: float) -> None:
        """The owner of partition 0 keeps a reprocessing process while a run is
        pending (see ``eventflow.pipeline.reprocess``)."""
        if 0 not in self.ownership.owned or self._stopping.is_set() or self._exiting:
            await self.reprocess_process.stop(self.settings.shutdown_timeout_s)
        elif not self.reprocess_process.alive and now >= self._next_run_check:
            self._next_run_check = now + (0.2 if self._until_empty else 1.0)
            if await self.reprocessor.next_run() is not None:
                self.reprocess_process.start()

    async def _lifecycle(self) -> None:
        """Time partitions: create ahead, drop past retention; table gauges."""
        report = await lifecycle.maintain(self.engine, self.settings)
        for table, names in report.dropped.items():
            if names:
                self.metrics.partitions_dropped.labels(table).inc(len(names))
                log.info(
                    "dropped partitions past retention",
                    extra={"table": table, "partitions": names},
                )
        for t in await lifecycle.status(self.engine, self.settings):
            self.metrics.table_bytes.labels(t.table).set(t.bytes)
            if t.oldest is not None:
                self.metrics.oldest_partition.labels(t.table).set(t.oldest.timestamp())

    async def _refresh_gauges(self) -> None:
        s = self.settings
        m = self.metrics
        m.set_stream_state(await self.streams.state())
        async with self.engine.connect() as conn:
            count = await conn.scalar(text("SELECT count(*) FROM failed_events"))
        m.dead_letters.set(count or 0)
        for p in list(self.ownership.owned):
            removed = await self.streams.partitions[p].remove_idle_consumers(
                max(10 * s.claim_idle_ms, int(s.idle_consumer_timeout_s * 1000)),
                keep=self.consumer,
            )
            if removed:
                log.info(
                    "removed idle consumers",
                    extra={"partition": p, "consumers": removed},
                )

    # --- one batch --------------------------------------------------------------------

    async def handle(
        self,
        entries: Sequence[Entry],
        *,
        stream: Stream | None = None,
        fence: Fence | None = None,
        after: asyncio.Task[BatchReport] | None = None,
    ) -> BatchReport:
        """Process, commit and acknowledge one batch of stream entries.

        ``stream``: the partition they came from (default: the first). ``fence``:
        commit only while this worker still owns it. ``after``: the previous
        batch of the partition, which must commit first."""
        start = time.perf_counter()
        stream = stream or self.streams.partitions[0]
        await self.registry.ensure_loaded()  # loaded already, unless called alone
        now = datetime.now(UTC)
        report = BatchReport()
        processed: list[ProcessedRow] = []
        failed: list[FailedRow] = []
        seen: set[uuid.UUID] = set()
        rows = [self._process_entry(stream, entry, now) for entry in entries]
        if any(r is None for r in rows):
            # A type or version this process has not loaded yet (registered
            # moments ago): look again before calling the event invalid.
            await self.registry.refresh(force=True)
            rows = [
                r or self._process_entry(stream, entry, now, final=True)
                for entry, r in zip(entries, rows, strict=True)
            ]
        for row in rows:
            assert row is not None
            if isinstance(row, FailedRow):
                failed.append(row)
            elif row.event.event_id in seen:
                report.duplicates += 1  # the same event twice in one batch
            else:
                seen.add(row.event.event_id)
                processed.append(row)
        # A batch can hold two copies of one event (a redelivery and a republished
        # copy): if one copy is stored, the other must not become a dead letter.
        failed = [f for f in failed if f.event_id not in seen]
        if after is not None:
            # Stream order: the previous batch commits first; if it failed, this
            # one is read again after it (its entries stay pending).
            await after
        inserted = await self._commit(processed, failed, fence)
        await self._with_retry("ack", lambda: stream.ack([e.entry_id for e in entries]))
        commit_time = datetime.now(UTC)
        m = self.metrics
        by_type: Counter[str] = Counter()
        stored = []
        for row in processed:
            if row.event.event_id in inserted:
                by_type[row.event.event_type] += 1
                stored.append(row.event.received_at)
            else:
                report.duplicates += 1
        # The latency histogram takes an even sample of at most LATENCY_SAMPLE
        # events per batch: the distribution is kept, the cost stays per batch.
        step = -(-len(stored) // LATENCY_SAMPLE) or 1
        for received_at in stored[::step]:
            m.end_to_end_latency.observe((commit_time - received_at).total_seconds())
        report.processed = sum(by_type.values())
        for event_type, n in by_type.items():
            m.events_processed.labels(self.registry.label(event_type)).inc(n)
        for f in failed:
            report.failed += 1
            m.events_failed.labels(
                self.registry.label(f.event_type), f.error_type
            ).inc()
        if report.duplicates:
            m.duplicates.labels("worker").inc(report.duplicates)
            with contextlib.suppress(RedisError, OSError):  # statistics only
                await self.streams.count_duplicates(report.duplicates)
        m.worker_batch_size.observe(len(entries))
        m.processing_duration.observe(time.perf_counter() - start)
        self.totals.processed += report.processed
        self.totals.duplicates += report.duplicates
        self.totals.failed += report.failed
        log.info(
            "batch committed",
            extra={
                "consumer": self.consumer,
                "entries": len(entries),
                "processed": report.processed,
                "duplicates": report.duplicates,
                "failed": report.failed,
                "correlation_ids": sorted(
                    {
                        r.event.correlation_id
                        for r in processed
                        if r.event.correlation_id
                    }
                ),
            },
        )
        return report

    def _process_entry(
        self, stream: Stream, entry: Entry, now: datetime, final: bool = False
    ) -> ProcessedRow | FailedRow | None:
        """The row to write for ``entry``; ``None`` (unless ``final``) when its
        event names a schema this process has not loaded."""
        raw = entry.data or b""
        event: Event | None = None
        try:
            if entry.data is None:
                raise UndecodableMessage("stream entry has no EventFlow payload field")
            event = decode_message(entry.data)
        except UndecodableMessage as exc:
            if entry.deliveries <= self.settings.max_deliveries:
                return self._dead_letter(stream, entry, None, raw, exc)
        # Before anything else can fail again: an entry delivered too often ends
        # here, whatever it holds.
        if entry.deliveries > self.settings.max_deliveries:
            return self._dead_letter(
                stream,
                entry,
                event,
                raw,
                None,
                error=f"delivered {entry.deliveries} times without being acknowledged "
                f"(limit {self.settings.max_deliveries})",
                error_type="PoisonMessage",
            )
        assert event is not None
        try:
            event.schema_version, enrichment = enrich(
                event, now, self.registry, self.processors
            )
        except UnknownSchema as exc:
            return self._dead_letter(stream, entry, event, raw, exc) if final else None
        except InvalidEvent as exc:
            return self._dead_letter(stream, entry, event, raw, exc)
        except Exception as exc:  # a bug in a processor must not stop the worker
            log.exception("processor raised", extra={"event_id": str(event.event_id)})
            return self._dead_letter(stream, entry, event, raw, exc)
        return ProcessedRow(event, enrichment, entry.deliveries)

    def _dead_letter(
        self,
        stream: Stream,
        entry: Entry,
        event: Event | None,
        raw: bytes,
        exc: BaseException | None,
        error: str = "",
        error_type: str = "",
    ) -> FailedRow:
        event_id = (
            event.event_id
            if event is not None
            else uuid.uuid5(UNDECODABLE_NAMESPACE, f"{stream.stream}/{entry.entry_id}")
        )
        row = FailedRow(
            event_id=event_id,
            event_type=event.event_type if event else None,
            payload=_storable(raw.decode("utf-8", errors="backslashreplace")),
            error=_storable(error or str(exc)),
            error_type=error_type or (type(exc).__name__ if exc else "Error"),
            attempts=entry.deliveries,
            correlation_id=event.correlation_id if event else None,
            stream_entry_id=entry.entry_id,
            received_at=event.received_at
            if event is not None
            else datetime.fromtimestamp(entry_ms(entry.entry_id) / 1000, UTC),
            key=partition_key(event) if event is not None else None,
        )
        log.warning(
            "event dead-lettered",
            extra={
                "event_id": str(event_id),
                "entry_id": entry.entry_id,
                "error_type": row.error_type,
                "error": row.error[:300],
                "correlation_id": row.correlation_id,
            },
        )
        return row

    async def _commit(
        self,
        processed: list[ProcessedRow],
        failed: list[FailedRow],
        fence: Fence | None = None,
    ) -> set[uuid.UUID]:
        """One transaction for the whole batch, retried while failures are transient.

        A batch that the database refuses for a permanent reason is split so that
        only the offending events are dead-lettered.
        """
        if not processed and not failed:
            return set()
        try:
            return await self._with_retry(
                "commit", lambda: self._write(processed, failed, fence)
            )
        except DBAPIError as exc:
            if is_transient(exc) or len(processed) + len(failed) == 1:
                if is_transient(exc):
                    raise
                return await self._commit_alone(processed, failed, exc, fence)
            log.warning("batch refused by the database; writing events one by one")
            inserted: set[uuid.UUID] = set()
            for row in processed:
                inserted |= await self._commit([row], [], fence)
            for frow in failed:
                await self._commit([], [frow], fence)
            return inserted

    async def _commit_alone(
        self,
        processed: list[ProcessedRow],
        failed: list[FailedRow],
        exc: DBAPIError,
        fence: Fence | None,
    ) -> set[uuid.UUID]:
        """One row the database refused: store it as a dead letter instead, and if
        even that is refused, quarantine the entry (it is acknowledged after)."""
        if processed:
            row = processed[0]
            event = row.event
            dead = FailedRow(
                event_id=event.event_id,
                event_type=event.event_type,
                payload=event.to_message().decode(),
                error=str(exc.orig)[:2000],
                error_type="DatabaseRejected",
                attempts=row.attempts,
                correlation_id=event.correlation_id,
                stream_entry_id="",
                received_at=event.received_at,
                key=partition_key(event),
            )
        else:
            dead = failed[0]
        try:
            await self._with_retry("commit", lambda: self._write([], [dead], fence))
        except DBAPIError as again:
            if is_transient(again):
                raise
            await self._quarantine(dead, again)
        return set()

    async def _quarantine(self, dead: FailedRow, exc: DBAPIError) -> None:
        error = f"{dead.error_type}: {dead.error}"[:2000]
        await self._with_retry(
            "quarantine",
            lambda: self.streams.quarantine(
                dead.stream_entry_id,
                dead.payload,
                f"{error}; the dead letter was refused: {exc.orig}"[:4000],
            ),
        )
        # Settled, so that the reconciler does not publish it again.
        async with self.engine.begin() as conn:
            await mark_quarantined(conn, [dead.event_id])
        self.metrics.quarantined.inc()
        log.error(
            "entry quarantined: not even its dead letter could be stored",
            extra={
                "event_id": str(dead.event_id),
                "entry_id": dead.stream_entry_id,
                "error": str(exc.orig)[:300],
            },
        )

    async def _write(
        self,
        processed: list[ProcessedRow],
        failed: list[FailedRow],
        fence: Fence | None,
    ) -> set[uuid.UUID]:
        # Batches of several partitions that are ready together share a commit.
        return await self.batch_writer.write(processed, failed, fence)

    async def _with_retry(self, operation: str, fn: Callable[[], Awaitable[T]]) -> T:
        async for attempt in retrying(self.settings, self.metrics, operation):
            with attempt:
                return await fn()
        raise AssertionError("unreachable")


def _storable(value: str) -> str:
    """PostgreSQL text cannot hold NUL characters; keep them visible, escaped."""
    return value.replace("\x00", "\\x00")
