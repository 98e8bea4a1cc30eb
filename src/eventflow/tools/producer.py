"""``eventflow produce``: send realistic events, optionally rate-limited or batched."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter

import httpx
import uvloop
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from eventflow.tools.events import EventGenerator, EventKind
from eventflow.tools.sending import (
    Answer,
    Clients,
    ErrorLog,
    Outcome,
    describe_exception,
    quiet_http_logs,
    send,
)

SHOWN_ERRORS = 5


class ProduceOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    count: int = Field(ge=1)
    rate: float = Field(default=0.0, ge=0, description="events/s; 0 = no limit")
    kind: EventKind | None = None
    batch: int = Field(default=1, ge=1, le=1000)
    url: str = "http://localhost:8000"
    api_key: str | None = Field(default=None, repr=False)
    concurrency: int = Field(default=8, ge=1)
    retries: int = Field(default=3, ge=0)
    as_json: bool = False
    progress: bool = True
    seed: int | None = None


class ProduceReport(BaseModel):
    url: str
    sent: int
    accepted: int
    duplicates: int
    refused: int
    failed: int
    retries: int
    elapsed_s: float
    events_per_second: float
    errors: list[str]


class _Tally:
    def __init__(self) -> None:
        self.outcomes: Counter[Outcome] = Counter()
        self.errors = ErrorLog()
        self.retries = 0

    def add(self, answer: Answer) -> None:
        self.outcomes.update(answer.outcomes)
        self.errors.add(answer.errors)


async def _send_with_retries(
    client: httpx.AsyncClient, body: bytes, count: int, opts: ProduceOptions, t: _Tally
) -> Answer:
    """Retry what got no judgement (transport errors, 429, 5xx): safe, because
    every event carries its own id, so a re-send is at worst a duplicate."""
    for attempt in range(opts.retries + 1):
        answer = await send(client, body, count, opts.batch > 1)
        if not answer.retryable or attempt == opts.retries:
            return answer
        t.retries += 1
        await asyncio.sleep(min(answer.retry_after or 0.25 * 2**attempt, 10.0))
    raise AssertionError("unreachable")


async def _check_reachable(client: httpx.AsyncClient) -> str | None:
    try:
        await client.get("/health/live")
    except httpx.HTTPError as exc:
        return describe_exception(exc)
    return None


async def produce(opts: ProduceOptions, progress: Progress | None) -> ProduceReport:
    bodies = EventGenerator(opts.kind, opts.seed).bodies(opts.count, opts.batch)
    interval = opts.batch / opts.rate if opts.rate else 0.0
    tally = _Tally()
    task = progress.add_task("sending", total=opts.count) if progress else None
    jobs = iter(enumerate(bodies))
    async with Clients(opts.url, opts.concurrency, api_key=opts.api_key) as clients:
        problem = await _check_reachable(clients.for_slot(0))
        if problem:
            raise ConnectionError(f"cannot reach {opts.url}: {problem}")
        start = time.perf_counter()

        async def sender(slot: int) -> None:
            client = clients.for_slot(slot)
            for index, (ids, body) in jobs:  # shared iterator: each body once
                delay = start + index * interval - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tally.add(await _send_with_retries(client, body, len(ids), opts, tally))
                if progress and task is not None:
                    progress.advance(task, len(ids))

        await asyncio.gather(*(sender(slot) for slot in range(opts.concurrency)))
        elapsed = time.perf_counter() - start
    n = tally.outcomes
    return ProduceReport(
        url=opts.url,
        sent=opts.count,
        accepted=n[Outcome.accepted],
        duplicates=n[Outcome.duplicate],
        refused=n[Outcome.refused],
        failed=n[Outcome.failed],
        retries=tally.retries,
        elapsed_s=round(elapsed, 3),
        events_per_second=round(opts.count / elapsed, 1) if elapsed else 0.0,
        errors=tally.errors.first(SHOWN_ERRORS),
    )


def _print_report(report: ProduceReport, console: Console) -> None:
    console.print(
        f"Sent {report.sent} events to {report.url} in {report.elapsed_s:.2f} s "
        f"({report.events_per_second:.1f} events/s, {report.retries} retries)",
        highlight=False,
    )
    for label, value in (
        ("accepted", report.accepted),
        ("duplicate", report.duplicates),
        ("refused", report.refused),
        ("failed", report.failed),
    ):
        console.print(f"  {label:<10}{value:>8}", highlight=False)
    if report.errors:
        console.print("First errors:", highlight=False)
        for error in report.errors:
            console.print(f"  - {error}", highlight=False, markup=False)


def run(opts: ProduceOptions) -> int:
    """Entry point of ``eventflow produce``; non-zero when anything was not taken."""
    quiet_http_logs()
    err = Console(stderr=True)
    show = opts.progress and not opts.as_json
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not show,
    )
    try:
        with progress:
            report = uvloop.run(produce(opts, progress))
    except ConnectionError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False)
        return 1
    if opts.as_json:
        sys.stdout.write(report.model_dump_json() + "\n")
    else:
        _print_report(report, Console(highlight=False))
    return 1 if report.refused or report.failed else 0
