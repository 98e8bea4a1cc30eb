"""Reprocessing: stored events of a time range go through validation and
processing again (after a processor or schema change).

A run is a row of ``reprocess_runs``: who started it, the range, its state and
counts, and a cursor (the acceptance time and id of the last event done). The
worker that owns stream partition 0 executes runs, one bounded batch per
transaction, in acceptance order: each batch's rows and the cursor commit
together, so a run that is interrupted (a worker killed, a restart) resumes after
the last committed batch without redoing it, and a run repeated over the same
range stores the same result again (``processed_events`` is updated in place, one
row per event). Between batches it sleeps as long as its rate limit asks, and
each batch is a short transaction of its own, so live traffic is not held up.

An event that the current schema now refuses keeps its stored row: it is counted
in ``failed`` and the first error is kept in ``last_error``.

The worker does not execute runs in its own event loop: while a run is pending it
keeps a child process (``ReprocessProcess``) that does, at a lower CPU priority
(``EVENTFLOW_REPROCESS_NICE``), so that live batches neither wait behind a
reprocessing batch in the loop nor for the CPU. The child exits when no run is
left and when the worker stops or loses partition 0; it is killed with the
worker (its batch rolls back, as the worker's own would).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field, model_validator
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow.config import Settings
from eventflow.errors import InvalidEvent
from eventflow.jsoncodec import dumps
from eventflow.pipeline.processing import enrich
from eventflow.processors import Processor
from eventflow.procs import signal_on_parent_death
from eventflow.schemas.registry import SchemaRegistry
from eventflow.store.events import SETTLED_SQL, event_from_raw, lock_settling

log = logging.getLogger(__name__)

BATCH = 100
# After each batch the run yields for this share of the batch's own time, so that
# live batches of the same worker are not queued behind a run.
YIELD_SHARE = 0.5


class RunState(StrEnum):
    pending = "pending"
    running = "running"
    done = "done"
    cancelled = "cancelled"


class ReprocessIn(BaseModel):
    """What to re-process: events accepted in [``from``, ``to``)."""

    model_config = {"populate_by_name": True, "extra": "forbid"}

    from_: datetime = Field(alias="from", description="Acceptance time, inclusive.")
    to: datetime = Field(description="Acceptance time, exclusive.")
    event_type: str | None = Field(default=None, min_length=1, max_length=64)
    dry_run: bool = Field(
        default=False, description="Count what would change; write nothing."
    )
    rate_limit: float | None = Field(
        default=None, gt=0, le=1_000_000, description="Events per second at most."
    )

    @model_validator(mode="after")
    def _range(self) -> ReprocessIn:
        if self.from_.tzinfo is None or self.to.tzinfo is None:
            raise ValueError("from and to need a UTC offset (e.g. Z)")
        if self.from_ >= self.to:
            raise ValueError("from must be before to")
        return self


class RunOut(BaseModel):
    id: int
    started_by: str
    created_at: datetime
    from_: datetime = Field(serialization_alias="from")
    to: datetime
    event_type: str | None
    dry_run: bool
    rate_limit: float | None
    state: RunState
    total: int
    done: int
    changed: int
    failed: int
    last_error: str | None
    updated_at: datetime | None
    finished_at: datetime | None


_RUN_COLUMNS = (
    "id, started_by, created_at, from_ts, to_ts, event_type, dry_run, rate_limit, "
    "state, total, done, changed, failed, last_error, updated_at, finished_at"
)

_COUNT = text(
    "SELECT count(*) FROM raw_events WHERE received_at >= :lo AND received_at < :hi "
    "AND (CAST(:type AS text) IS NULL OR event_type = :type) "
    "AND status <> 'quarantined' AND " + SETTLED_SQL.format(r="raw_events")
)

# The next batch after the cursor, with the stored processed row if any.
_BATCH = text(
    f"""
    SELECT r.event_id, r.event_type, r.user_id, r.event_timestamp, r.properties,
        r.received_at, r.correlation_id, r.body_hash, r.partition_key,
        p.processed_at, p.enrichment
    FROM raw_events r
    LEFT JOIN processed_events p
        ON p.event_id = r.event_id AND p.received_at = r.received_at
        AND p.received_at >= :lo AND p.received_at < :hi
    WHERE r.received_at >= :lo AND r.received_at < :hi
        AND (r.received_at, r.event_id) > (:after_ts, :after_id)
        AND (CAST(:type AS text) IS NULL OR r.event_type = :type)
        AND r.status <> 'quarantined' AND {SETTLED_SQL.format(r="r")}
    ORDER BY r.received_at, r.event_id
    LIMIT :n
    """
)

# Upsert the new result (one row per event), settle the raw row, clear a dead
# letter the event may have had.
_WRITE = text(
    """
    WITH incoming AS (
        SELECT * FROM unnest(
            CAST(:ids AS uuid[]), CAST(:types AS text[]), CAST(:users AS text[]),
            CAST(:ts AS timestamptz[]), CAST(:props AS text[]),
            CAST(:enrichment AS text[]), CAST(:cids AS text[]),
            CAST(:received AS timestamptz[]), CAST(:versions AS int[])
        ) AS t(event_id, event_type, user_id, ts, props, enrichment, cid,
               received_at, version)
    ),
    up AS (
        INSERT INTO processed_events AS p (event_id, event_type, user_id,
            event_timestamp, properties, enrichment, correlation_id, received_at,
            processed_by, attempts, schema_version, reprocessed_at, reprocess_run_id)
        SELECT event_id, event_type, user_id, ts, CAST(props AS jsonb),
            CAST(enrichment AS jsonb), cid, received_at, :by, 1, version, now(), :run
        FROM incoming
        ON CONFLICT (event_id, received_at) DO UPDATE SET
            enrichment = EXCLUDED.enrichment,
            schema_version = EXCLUDED.schema_version,
            reprocessed_at = EXCLUDED.reprocessed_at,
            reprocess_run_id = EXCLUDED.reprocess_run_id
        RETURNING 1
    ),
    settle AS (
        UPDATE raw_events r SET status = 'processed', settled_at = now()
        FROM incoming i
        WHERE r.event_id = i.event_id AND r.received_at = i.received_at
            AND r.received_at >= :lo AND r.received_at < :hi
            AND r.status IN ('failed', 'quarantined')
        RETURNING 1
    ),
    resolved AS (
        DELETE FROM failed_events f USING incoming i
        WHERE f.event_id = i.event_id AND f.received_at = i.received_at
            AND f.received_at >= :lo AND f.received_at < :hi
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM up)
    """
)

_ADVANCE = text(
    """
    UPDATE reprocess_runs SET state = :state, done = done + :done,
        changed = changed + :changed, failed = failed + :failed,
        cursor_received_at = :after_ts, cursor_event_id = :after_id,
        last_error = coalesce(last_error, :error), updated_at = now(),
        finished_at = CASE WHEN :state = 'done' THEN now() END
    WHERE id = :run AND state IN ('pending', 'running')
    """
)


async def create_run(engine: AsyncEngine, request: ReprocessIn, by: str) -> RunOut:
    """Register a run (workers pick it up); ``total`` is counted now."""
    async with engine.begin() as conn:
        total = await conn.scalar(
            _COUNT, {"lo": request.from_, "hi": request.to, "type": request.event_type}
        )
        row = (
            await conn.execute(
                text(
                    "INSERT INTO reprocess_runs (started_by, from_ts, to_ts, "
                    "event_type, dry_run, rate_limit, total) VALUES (:by, :lo, :hi, "
                    f":type, :dry, :rate, :total) RETURNING {_RUN_COLUMNS}"
                ),
                {
                    "by": by,
                    "lo": request.from_,
                    "hi": request.to,
                    "type": request.event_type,
                    "dry": request.dry_run,
                    "rate": request.rate_limit,
                    "total": total or 0,
                },
            )
        ).one()
    return _run(row)


async def get_run(engine: AsyncEngine, run_id: int) -> RunOut | None:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(f"SELECT {_RUN_COLUMNS} FROM reprocess_runs WHERE id = :id"),
                {"id": run_id},
            )
        ).one_or_none()
    return None if row is None else _run(row)


async def list_runs(engine: AsyncEngine, limit: int = 50) -> list[RunOut]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                f"SELECT {_RUN_COLUMNS} FROM reprocess_runs ORDER BY id DESC LIMIT :n"
            ),
            {"n": limit},
        )
        return [_run(r) for r in rows]


def _run(row: Any) -> RunOut:
    return RunOut(
        id=row.id,
        started_by=row.started_by,
        created_at=row.created_at,
        from_=row.from_ts,
        to=row.to_ts,
        event_type=row.event_type,
        dry_run=row.dry_run,
        rate_limit=row.rate_limit,
        state=RunState(row.state),
        total=row.total,
        done=row.done,
        changed=row.changed,
        failed=row.failed,
        last_error=row.last_error,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
    )


class Reprocessor:
    """Executes runs, one batch at a time (see the module's docstring)."""

    def __init__(
        self,
        engine: AsyncEngine,
        registry: SchemaRegistry,
        processors: Mapping[str, Processor],
        worker: str,
        batch: int = BATCH,
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.processors = processors
        self.worker = worker
        self.batch = batch

    async def next_run(self) -> int | None:
        async with self.engine.connect() as conn:
            run_id: int | None = await conn.scalar(
                text(
                    "SELECT id FROM reprocess_runs WHERE state IN "
                    "('pending', 'running') ORDER BY id LIMIT 1"
                )
            )
        return run_id

    async def step(self, run_id: int) -> bool:
        """One batch of ``run_id``; False once the run is finished."""
        started = time.monotonic()
        async with self.engine.begin() as conn:
            # Live commits do not wait behind this batch's WAL flush. If the
            # server crashes, the batch and the cursor are lost together (WAL
            # order), and the run does that batch again.
            await conn.execute(text("SET LOCAL synchronous_commit = off"))
            run = (
                await conn.execute(
                    text(
                        "SELECT id, from_ts, to_ts, event_type, dry_run, rate_limit, "
                        "state, cursor_received_at, cursor_event_id "
                        "FROM reprocess_runs WHERE id = :id FOR UPDATE SKIP LOCKED"
                    ),
                    {"id": run_id},
                )
            ).one_or_none()
            if run is None or run.state not in ("pending", "running"):
                return False
            window = {"lo": run.from_ts, "hi": run.to_ts}
            rows = (
                await conn.execute(
                    _BATCH,
                    {
                        **window,
                        "after_ts": run.cursor_received_at or run.from_ts,
                        "after_id": run.cursor_event_id
                        or UUID("00000000-0000-0000-0000-000000000000"),
                        "type": run.event_type,
                        "n": self.batch,
                    },
                )
            ).all()
            results, failed, error = self._process(list(rows))
            changed = sum(
                1 for row, (_, enrichment) in results if row.enrichment != enrichment
            )
            if results and not run.dry_run:
                # As a worker settling a copy of one of these events would.
                await lock_settling(
                    conn, (event_from_raw(r, latest_schema=True) for r, _ in results)
                )
                await conn.execute(
                    _WRITE,
                    {
                        **window,
                        "ids": [r.event_id for r, _ in results],
                        "types": [r.event_type for r, _ in results],
                        "users": [r.user_id for r, _ in results],
                        "ts": [r.event_timestamp for r, _ in results],
                        "props": [dumps(r.properties).decode() for r, _ in results],
                        "enrichment": [dumps(e).decode() for _, (_, e) in results],
                        "cids": [r.correlation_id for r, _ in results],
                        "received": [r.received_at for r, _ in results],
                        "versions": [v for _, (v, _) in results],
                        "by": self.worker,
                        "run": run_id,
                    },
                )
            last = rows[-1] if rows else None
            finished = len(rows) < self.batch
            await conn.execute(
                _ADVANCE,
                {
                    "run": run_id,
                    "state": "done" if finished else "running",
                    "done": len(rows),
                    "changed": changed,
                    "failed": failed,
                    "after_ts": last.received_at if last else run.cursor_received_at,
                    "after_id": last.event_id if last else run.cursor_event_id,
                    "error": error,
                },
            )
        if finished:
            log.info("reprocessing run finished", extra={"run": run_id})
            return False
        took = time.monotonic() - started
        pause = took * YIELD_SHARE
        if run.rate_limit:
            # At most rate_limit events per second, batch by batch.
            pause = max(pause, len(rows) / run.rate_limit - took)
        await asyncio.sleep(pause)
        return True

    def _process(
        self, rows: list[Any]
    ) -> tuple[list[tuple[Any, tuple[int | None, dict[str, Any]]]], int, str | None]:
        results = []
        failed = 0
        error: str | None = None
        for row in rows:
            event = event_from_raw(row, latest_schema=True)
            # The latest schema (schema_version None); the time of the first
            # processing keeps the enrichment's latency what it was.
            now = row.processed_at or row.received_at
            try:
                results.append(
                    (row, enrich(event, now, self.registry, self.processors))
                )
            except InvalidEvent as exc:
                failed += 1
                error = error or f"{row.event_id}: {exc}"[:2000]
            except Exception as exc:  # a processor's bug counts as a failure
                failed += 1
                error = error or f"{row.event_id}: {type(exc).__name__}: {exc}"[:2000]
        return results, failed, error

    async def serve(
        self,
        keep_going: Callable[[], bool],
        idle_s: float = 1.0,
        until_idle: bool = False,
    ) -> None:
        """Execute runs, oldest first, while ``keep_going()``; while there is
        nothing to do, look again every ``idle_s``, or return if ``until_idle``."""
        while keep_going():
            run_id = await self.next_run()
            if run_id is None:
                if until_idle:
                    return
                await asyncio.sleep(idle_s)
                continue
            log.info("reprocessing run started", extra={"run": run_id})
            steps = 0
            while keep_going() and await self.step(run_id):
                steps += 1
            if steps == 0:  # another process holds the run (or it just ended)
                await asyncio.sleep(idle_s)


class ReprocessProcess:
    """A child process that executes the pending runs (see the module's
    docstring), started and stopped by the worker that owns partition 0."""

    def __init__(self, settings: Settings, worker: str) -> None:
        self.settings = settings
        self.worker = worker
        self._process: multiprocessing.process.BaseProcess | None = None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def start(self) -> None:
        if self.alive:
            return
        # A fresh interpreter: the worker's event loop, threads and sockets are
        # not inherited.
        context = multiprocessing.get_context("spawn")
        self._process = context.Process(
            target=_child,
            args=(self.settings, self.worker, os.getpid()),
            name="eventflow-reprocess",
            daemon=True,
        )
        self._process.start()
        log.info("reprocessing process started", extra={"pid": self._process.pid})

    async def stop(self, timeout_s: float) -> None:
        """Let the child finish its batch and exit (SIGTERM), then kill it."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.is_alive():
            process.terminate()
            await asyncio.to_thread(process.join, timeout_s)
        if process.is_alive():
            process.kill()
            await asyncio.to_thread(process.join, 5)
        process.close()


def _die_with(parent: int) -> None:
    """Be killed with the worker: its batch rolls back, as the worker's own."""
    signal_on_parent_death(signal.SIGKILL)
    if os.getppid() != parent:  # it died before that
        sys.exit(0)


def _child(settings: Settings, worker: str, parent: int) -> None:
    from eventflow.logs import configure
    from eventflow.processors import load_processors
    from eventflow.store.tables import engine_for

    _die_with(parent)
    with contextlib.suppress(OSError):
        os.nice(settings.reprocess_nice)
    configure(settings.log_level, settings.log_format, "eventflow-reprocess")

    async def serve() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stopping.set)
        loop.add_signal_handler(signal.SIGINT, stopping.set)
        dsn = settings.database_dsn
        if dsn is None:
            raise RuntimeError("the reprocessing process needs DATABASE_URL")
        engine = engine_for(settings, dsn, 2)
        try:
            registry = SchemaRegistry(
                engine, settings.schema_refresh_s, settings.unknown_event_types
            )
            await registry.ensure_loaded()
            reprocessor = Reprocessor(engine, registry, load_processors(), worker)
            await reprocessor.serve(
                lambda: not stopping.is_set() and os.getppid() == parent,
                until_idle=True,
            )
        finally:
            await engine.dispose()

    asyncio.run(serve())
