"""``eventflow load-test``: an open-loop load generator with end-to-end following.

Requests are sent on a fixed timetable (request ``i`` is due at ``i * batch /
rate`` seconds) whatever the answers, bounded only by ``concurrency``: when every
slot is busy the send waits, and the report says how far behind it fell. Rate 0
means as fast as possible (a closed loop of ``concurrency`` senders)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

import uvloop
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import SQLAlchemyError

from eventflow.tools.events import EventGenerator
from eventflow.tools.follow import follow_api, follow_database
from eventflow.tools.report import (
    EndToEndReport,
    IngestReport,
    LoadTestReport,
    ScheduleReport,
    latency_stats,
    render,
)
from eventflow.tools.sending import (
    Answer,
    Clients,
    ErrorLog,
    Outcome,
    quiet_http_logs,
    send,
)

LATE_S = 0.010
SHOWN_ERRORS = 5


class LoadTestOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    events: int = Field(ge=1)
    rate: float = Field(ge=0, description="events/s; 0 = as fast as possible")
    concurrency: int = Field(default=64, ge=1)
    batch: int = Field(default=1, ge=1, le=1000)
    url: str = "http://localhost:8000"
    api_key: str | None = Field(default=None, repr=False)
    as_json: bool = False
    database_url: str | None = Field(
        default=None, description="None: DATABASE_URL; empty: follow via the API"
    )
    timeout: float = Field(default=30.0, ge=0, description="end-to-end wait, s")
    follow: bool = True
    request_timeout: float = Field(default=30.0, gt=0)


@dataclass(slots=True)
class _Sent:
    ids: list[str]
    behind_s: float  # actual start - due time
    wall: float  # time.time() at the start, for end-to-end latency
    started: float  # perf_counter
    finished: float
    answer: Answer


async def _drive(
    clients: Clients, opts: LoadTestOptions
) -> tuple[list[_Sent], int, float]:
    """Send every body on the timetable; returns the records, how many sends found
    every slot busy, and the perf_counter start."""
    bodies = EventGenerator().bodies(opts.events, opts.batch)
    interval = opts.batch / opts.rate if opts.rate else 0.0
    slots: asyncio.LifoQueue[int] = asyncio.LifoQueue()  # warm connections first
    for slot in reversed(range(opts.concurrency)):
        slots.put_nowait(slot)
    records: list[_Sent] = []
    tasks: set[asyncio.Task[None]] = set()
    waits = 0
    batched = opts.batch > 1

    async def one(slot: int, ids: list[str], body: bytes, due: float) -> None:
        try:
            wall, started = time.time(), time.perf_counter()
            answer = await send(clients.for_slot(slot), body, len(ids), batched)
            finished = time.perf_counter()
        finally:
            slots.put_nowait(slot)
        records.append(_Sent(ids, started - due, wall, started, finished, answer))

    start = time.perf_counter()
    for index, (ids, body) in enumerate(bodies):
        due = start + index * interval
        delay = due - time.perf_counter()
        await asyncio.sleep(max(delay, 0))  # also lets started requests run
        if slots.empty():
            waits += 1
        slot = await slots.get()
        task = asyncio.create_task(one(slot, ids, body, due if interval else start))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    return records, waits if interval else 0, start


def _schedule(
    opts: LoadTestOptions, records: list[_Sent], waits: int, start: float
) -> ScheduleReport:
    last_start = max(r.started for r in records)
    finished = max(r.finished for r in records)
    if opts.rate:
        window = last_start - start + opts.batch / opts.rate
    else:
        window = finished - start
    achieved = opts.events / window if window > 0 else 0.0
    behind = latency_stats([r.behind_s for r in records]) if opts.rate else None
    late = sum(r.behind_s > LATE_S for r in records) if opts.rate else 0
    return ScheduleReport(
        requested_rate=opts.rate or None,
        achieved_send_rate=round(achieved, 1),
        fell_behind=bool(opts.rate) and (waits > 0 or achieved < 0.95 * opts.rate),
        late_sends=late,
        concurrency_waits=waits,
        max_behind_ms=behind.max_ms if behind else 0.0,
        p99_behind_ms=behind.p99_ms if behind else 0.0,
    )


def _ingest(records: list[_Sent], start: float) -> IngestReport:
    outcomes: Counter[Outcome] = Counter()
    statuses: Counter[str] = Counter()
    errors = ErrorLog()
    failures = failed_requests = 0
    for r in records:
        statuses[r.answer.status] += 1
        if r.answer.ok:
            outcomes.update(r.answer.outcomes)
        else:
            failures += len(r.ids)
            failed_requests += 1
        errors.add(r.answer.errors)
    duration = max(r.finished for r in records) - start
    accepted = outcomes[Outcome.accepted]
    return IngestReport(
        requests=len(records),
        events=sum(len(r.ids) for r in records),
        accepted=accepted,
        duplicates=outcomes[Outcome.duplicate],
        rejected=outcomes[Outcome.refused],
        failures=failures,
        failed_requests=failed_requests,
        status_counts=dict(statuses),
        errors=errors.first(SHOWN_ERRORS),
        duration_s=round(duration, 3),
        throughput_per_second=round(accepted / duration, 1) if duration > 0 else 0.0,
        latency=latency_stats([r.finished - r.started for r in records]),
    )


def _taken(records: list[_Sent]) -> dict[str, float]:
    """Events the API took (accepted or duplicate): id -> client send time."""
    taken: dict[str, float] = {}
    for r in records:
        if r.answer.ok:
            for event_id, outcome in zip(r.ids, r.answer.outcomes, strict=False):
                if outcome in (Outcome.accepted, Outcome.duplicate):
                    taken[event_id] = r.wall
    return taken


async def load_test(opts: LoadTestOptions) -> LoadTestReport:
    started_at = datetime.now(UTC)
    database_url = (
        os.environ.get("DATABASE_URL")
        if opts.database_url is None
        else opts.database_url
    )
    async with Clients(
        opts.url, opts.concurrency, opts.request_timeout, opts.api_key
    ) as clients:
        records, waits, start = await _drive(clients, opts)
        records.sort(key=lambda r: r.started)
        ingest = _ingest(records, start)
        taken = _taken(records)
        end_to_end: EndToEndReport | None = None
        if opts.follow and taken:
            if database_url:
                try:
                    end_to_end = await follow_database(
                        database_url, taken, opts.timeout
                    )
                except (OSError, SQLAlchemyError) as exc:
                    print(
                        f"cannot follow events in PostgreSQL ({exc.__class__.__name__}"
                        f": {exc}); following them through the API instead",
                        file=sys.stderr,
                    )
            if end_to_end is None:
                end_to_end = await follow_api(clients.for_slot(0), taken, opts.timeout)
    ok = not (ingest.failures or ingest.rejected) and (
        end_to_end is None
        or not (end_to_end.lost or end_to_end.dead_lettered or end_to_end.duplicated)
    )
    return LoadTestReport(
        url=opts.url,
        started_at=started_at,
        concurrency=opts.concurrency,
        batch=opts.batch,
        schedule=_schedule(opts, records, waits, start),
        ingest=ingest,
        end_to_end=end_to_end,
        ok=ok,
    )


def run(opts: LoadTestOptions) -> int:
    """Entry point of ``eventflow load-test``; non-zero unless everything sent was
    accepted and (when followed) processed exactly once."""
    quiet_http_logs()
    if not opts.as_json:
        print(
            f"Sending {opts.events} events to {opts.url} at "
            + (f"{opts.rate:g} events/s" if opts.rate else "full speed")
            + f" (concurrency {opts.concurrency}, batch {opts.batch})…",
            file=sys.stderr,
            flush=True,
        )
    report = uvloop.run(load_test(opts))
    if opts.as_json:
        sys.stdout.write(report.model_dump_json(indent=2) + "\n")
    else:
        print(render(report))
    return 0 if report.ok else 1
