"""The benchmark scenarios. Each runs one repetition and returns its measurements:
``{"metrics": {key: number}, "details": {...}}``; ``run.py`` repeats them and takes
medians. The metrics shown in the table, with their targets, are in ``METRICS``."""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
from harness import (
    BENCH_DIR,
    BenchError,
    Stack,
    closed_loop,
    deployment,
    memory_kib,
    plain_pg_url,
    run_command,
    send_batches,
    spawn,
    wait_http,
)

from eventflow.local.servers import free_port
from eventflow.models import Event, canonical_body
from eventflow.pipeline.streams import Streams
from eventflow.tools.events import EventGenerator

Metrics = dict[str, float | int | None]
Rep = dict[str, Any]


@dataclass(frozen=True)
class Sizes:
    duration_s: float  # closed-loop single-event load (ceiling_http, single_e2e)
    connections: int
    batch_events: dict[int, int]  # batch size -> events sent
    batch_connections: int
    latency_s: float  # per rate
    latency_rates: tuple[int, ...]
    drain_events: int
    memory_events: int
    pg_rows: int
    drain_timeout_s: float = 60.0

    @classmethod
    def full(cls) -> Sizes:
        return cls(15, 32, {100: 100_000, 1000: 200_000}, 4, 20, (100, 1000),
                   200_000, 1_000_000, 200_000)  # fmt: skip

    @classmethod
    def quick(cls) -> Sizes:
        return cls(3, 32, {100: 20_000, 1000: 20_000}, 4, 3, (100, 1000),
                   20_000, 50_000, 20_000)  # fmt: skip


@dataclass
class Context:
    stack: Stack
    sizes: Sizes
    generator: str  # "wrk" or "python"
    log: Callable[[str], None]


Scenario = Callable[[Context], Awaitable[Rep]]


# --- 1. ceiling_http ----------------------------------------------------------------


async def ceiling_http(ctx: Context) -> Rep:
    """Requests/s of a validate-only FastAPI endpoint under the same load."""
    port = free_port()
    argv = [
        sys.executable, "-m", "uvicorn", "ceiling_app:app",
        "--app-dir", str(BENCH_DIR), "--host", "127.0.0.1", "--port", str(port),
        "--loop", "uvloop", "--http", "httptools", "--no-access-log",
        "--log-level", "warning",
    ]  # fmt: skip
    proc = spawn("ceiling", argv, ctx.stack.env("unused"), ctx.stack.log_dir)
    try:
        url = f"http://127.0.0.1:{port}"
        await wait_http(f"{url}/health/ready", proc)
        load = await closed_loop(
            ctx.generator, [url], ctx.sizes.connections, ctx.sizes.duration_s
        )
    finally:
        proc.stop()
    return {
        "metrics": {"requests_per_s": round(load.rate, 1), "non_2xx": load.non_2xx},
        "details": vars(load),
    }


# --- 2. ceiling_postgres ------------------------------------------------------------

_UNNEST = """
INSERT INTO bench_scratch (event_id, event_type, user_id, event_timestamp,
    properties, enrichment, correlation_id, received_at, processed_by, attempts)
SELECT t.id, t.type, t.usr, t.ts, t.props::jsonb, t.enr::jsonb, t.cid, t.recv,
    $9, 1
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[],
            $6::text[], $7::text[], $8::timestamptz[])
    AS t(id, type, usr, ts, props, enr, cid, recv)
ON CONFLICT (event_id) DO NOTHING
"""
_COPY_COLUMNS = [
    "event_id", "event_type", "user_id", "event_timestamp", "properties",
    "enrichment", "correlation_id", "received_at", "processed_by", "attempts",
]  # fmt: skip
PG_BATCH = 1000


def _scratch_rows(count: int) -> list[tuple[Any, ...]]:
    now = datetime.now(UTC)
    props = orjson.dumps(
        {"amount": 12.5, "currency": "EUR", "product_id": "sku-1", "quantity": 1}
    ).decode()
    enrichment = orjson.dumps(
        {"category": "small", "total": 12.5, "processed_by": "bench"}
    ).decode()
    return [
        (uuid.uuid4(), "purchase", f"user-{i % 1000}", now, props, enrichment,
         "bench", now, "bench-worker", 1)
        for i in range(count)
    ]  # fmt: skip


def _columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    return [[row[i] for row in rows] for i in range(8)]


async def ceiling_postgres(ctx: Context) -> Rep:
    """Rows/s for batches of 1000 into a copy of processed_events, each batch
    committed on its own (as the worker does), and all batches in one transaction
    (asyncpg ``executemany``, pipelined), and via COPY."""
    db = await ctx.stack.db()
    rows = ctx.sizes.pg_rows
    metrics: Metrics = {}
    await db.execute("DROP TABLE IF EXISTS bench_scratch")
    await db.execute("CREATE TABLE bench_scratch (LIKE processed_events INCLUDING ALL)")
    conn = await asyncpg.connect(plain_pg_url(ctx.stack.database_url))
    try:

        async def unnest_commit_each(batches: list[list[tuple[Any, ...]]]) -> None:
            for batch in batches:
                await conn.execute(_UNNEST, *_columns(batch), "bench-worker")

        async def unnest_executemany(batches: list[list[tuple[Any, ...]]]) -> None:
            args = [(*_columns(batch), "bench-worker") for batch in batches]
            await conn.executemany(_UNNEST, args)

        async def copy_commit_each(batches: list[list[tuple[Any, ...]]]) -> None:
            for batch in batches:
                await conn.copy_records_to_table(
                    "bench_scratch", records=batch, columns=_COPY_COLUMNS
                )

        methods = {
            "unnest_rows_per_s": unnest_commit_each,
            "unnest_executemany_rows_per_s": unnest_executemany,
            "copy_rows_per_s": copy_commit_each,
        }
        for key, method in methods.items():
            data = _scratch_rows(rows)
            batches = [data[i : i + PG_BATCH] for i in range(0, rows, PG_BATCH)]
            await db.execute("TRUNCATE bench_scratch")
            await db.execute("CHECKPOINT")
            start = time.perf_counter()
            await method(batches)
            elapsed = time.perf_counter() - start
            count = await db.fetchval("SELECT count(*) FROM bench_scratch")
            if count != rows:
                raise BenchError(f"{key}: {count} rows stored, expected {rows}")
            metrics[key] = round(rows / elapsed, 1)
    finally:
        await conn.close()
        await db.execute("DROP TABLE IF EXISTS bench_scratch")
    return {"metrics": metrics, "details": {"rows": rows, "batch": PG_BATCH}}


# --- 3. single_e2e ------------------------------------------------------------------


async def _e2e_after_load(
    ctx: Context, started: float, accepted_by_client: int
) -> tuple[Metrics, dict[str, Any]]:
    """Wait for the backlog, then end-to-end figures from PostgreSQL."""
    counts, waited = await ctx.stack.wait_settled(ctx.sizes.drain_timeout_s)
    _, last = await ctx.stack.processed_span()
    processed = counts["processed"]
    e2e = processed / (last - started) if last and last > started else None
    settled = processed + counts["failed"]
    metrics: Metrics = {
        "e2e_per_s": round(e2e, 1) if e2e else None,
        # Accepted means a row in raw_events; the client's count of 2xx answers can
        # be lower (answers in flight when the load stopped), never higher unless
        # something answered 2xx without storing: either way it must be settled.
        "lost": max(counts["raw"], accepted_by_client) - settled,
        "dead_lettered": counts["failed"],
    }
    details = {**counts, "waited_s": round(waited, 3)}
    return metrics, details


async def _single(
    ctx: Context, apis: int, workers: int, auth: bool = False
) -> tuple[Metrics, Any]:
    key = ctx.stack.api_key() if auth else None
    name = f"single{apis}x{workers}{'auth' if auth else ''}"
    async with deployment(ctx.stack, name, apis, workers, auth) as dep:
        started = time.time()
        load = await closed_loop(
            ctx.generator,
            dep.api_urls,
            ctx.sizes.connections,
            ctx.sizes.duration_s,
            key,
        )
        e2e, db = await _e2e_after_load(ctx, started, load.ok)
    metrics: Metrics = {
        "ingest_per_s": round(load.ok / load.duration_s, 1),
        **e2e,
        "non_2xx": load.non_2xx,
        "errors": load.errors,
    }
    return metrics, {"load": vars(load), "db": db}


async def single_e2e(ctx: Context) -> Rep:
    """POST /events at full speed: 1 API + 1 worker, then 2 APIs + 2 workers."""
    metrics: Metrics = {}
    details: dict[str, Any] = {}
    for apis, workers in ((1, 1), (2, 2)):
        tag = f"{apis}x{workers}"
        ctx.log(f"  {tag}")
        m, d = await _single(ctx, apis, workers)
        metrics.update({f"{tag}.{k}": v for k, v in m.items()})
        details[tag] = d
    return {"metrics": metrics, "details": details}


async def single_auth(ctx: Context) -> Rep:
    """Single events (1 API + 1 worker) with authentication off and on, twice in
    turn: what checking a key (cached, no database round trip) costs."""
    metrics: Metrics = {}
    details: dict[str, Any] = {}
    rates: dict[bool, list[float]] = {False: [], True: []}
    for round_ in (1, 2):
        for auth in (False, True):
            tag = f"{'on' if auth else 'off'}{round_}"
            ctx.log(f"  authentication {tag}")
            m, d = await _single(ctx, 1, 1, auth)
            rates[auth].append(float(m["ingest_per_s"]))
            details[tag] = {**d, "metrics": m}
            if m["non_2xx"]:
                raise RuntimeError(f"{m['non_2xx']} requests refused with {tag}")
    off, on = (statistics.mean(rates[a]) for a in (False, True))
    metrics["off.ingest_per_s"] = round(off, 1)
    metrics["on.ingest_per_s"] = round(on, 1)
    metrics["on_share_of_off"] = round(on / off, 3) if off else 0.0
    return {"metrics": metrics, "details": details}


# --- 4. batch_e2e -------------------------------------------------------------------


def batch_bodies(total: int, size: int) -> list[tuple[int, bytes]]:
    """Pre-serialized ``{"events": [...]}`` bodies with unique event ids."""
    return [
        (len(ids), body) for ids, body in EventGenerator(seed=7).bodies(total, size)
    ]


async def batch_e2e(ctx: Context) -> Rep:
    """POST /events/batch at full speed (1 API + 1 worker), batches of 100 and
    1000, over a few keep-alive connections; bodies are made before the clock."""
    metrics: Metrics = {}
    details: dict[str, Any] = {}
    for size, total in sorted(ctx.sizes.batch_events.items()):
        ctx.log(f"  batch {size}: {total} events")
        bodies = batch_bodies(total, size)
        async with deployment(ctx.stack, f"batch{size}", 1, 1) as dep:
            run = await send_batches(
                dep.api_urls[0], bodies, ctx.sizes.batch_connections
            )
            e2e, db = await _e2e_after_load(ctx, run.started, run.accepted)
        del bodies
        metrics.update(
            {
                f"b{size}.ingest_per_s": round(run.accepted / run.duration_s, 1),
                **{f"b{size}.{k}": v for k, v in e2e.items()},
                f"b{size}.failed_requests": run.failed_requests,
                f"b{size}.rejected": run.rejected,
            }
        )
        details[f"b{size}"] = {"sent": total, **vars(run), "db": db}
    return {"metrics": metrics, "details": details}


# --- 5. latency ---------------------------------------------------------------------


async def latency(ctx: Context) -> Rep:
    """Open-loop single events at fixed rates with ``eventflow load-test``,
    which follows every event to its processed_events row."""
    metrics: Metrics = {}
    details: dict[str, Any] = {}
    for rate in ctx.sizes.latency_rates:
        events = int(rate * ctx.sizes.latency_s)
        ctx.log(f"  {rate} events/s: {events} events")
        async with deployment(ctx.stack, f"latency{rate}", 1, 1) as dep:
            argv = [
                sys.executable, "-m", "eventflow", "load-test",
                "--events", str(events), "--rate", str(rate), "--json",
                "--url", dep.api_urls[0],
                "--database-url", ctx.stack.database_url, "--timeout", "60",
            ]  # fmt: skip
            code, out, err = await run_command(argv, ctx.stack.env(dep.stream))
        try:
            report: dict[str, Any] = orjson.loads(out)
        except orjson.JSONDecodeError as exc:
            raise BenchError(f"load-test failed ({code}):\n{out}\n{err}") from exc
        e2e = report.get("end_to_end") or {}
        lat = e2e.get("latency") or {}
        schedule = report["schedule"]
        metrics.update(
            {
                f"r{rate}.p50_ms": lat.get("p50_ms"),
                f"r{rate}.p95_ms": lat.get("p95_ms"),
                f"r{rate}.p99_ms": lat.get("p99_ms"),
                f"r{rate}.max_ms": lat.get("max_ms"),
                f"r{rate}.achieved_rate": schedule["achieved_send_rate"],
                f"r{rate}.fell_behind": int(schedule["fell_behind"]),
                f"r{rate}.lost": e2e.get("lost"),
                f"r{rate}.failures": report["ingest"]["failures"],
            }
        )
        details[f"r{rate}"] = report
    return {"metrics": metrics, "details": details}


# --- 6. drain -----------------------------------------------------------------------

_DRAIN_PROPS: dict[str, dict[str, Any]] = {
    "purchase": {"amount": 12.5, "currency": "EUR", "quantity": 1},
    "page_view": {"page": "/pricing", "duration_ms": 1200},
    "user_signup": {"email": "user-9@example.com", "plan": "pro"},
    "custom": {"name": "video.played", "value": 3},
}
FILL_CHUNK = 5000


def drain_events(count: int) -> Iterator[list[Event]]:
    """``count`` valid events as EventFlow's API would publish them, in chunks."""
    kinds = list(_DRAIN_PROPS)
    now = datetime.now(UTC)
    for start in range(0, count, FILL_CHUNK):
        chunk = []
        for i in range(start, min(count, start + FILL_CHUNK)):
            kind = kinds[i % len(kinds)]
            props = _DRAIN_PROPS[kind]
            user = f"user-{i % 1000}"
            ts = now - timedelta(seconds=i % 60)
            chunk.append(
                Event(
                    event_id=uuid.uuid4(),
                    event_type=kind,
                    user_id=user,
                    timestamp=ts,
                    properties=props,
                    received_at=now,
                    correlation_id=uuid.uuid4().hex,
                    body_hash=hashlib.sha256(
                        canonical_body(kind, user, ts, props)
                    ).hexdigest()[:32],
                )
            )
        yield chunk


async def drain(ctx: Context) -> Rep:
    """One worker empties a stream filled beforehand (no API running)."""
    total = ctx.sizes.drain_events
    async with deployment(ctx.stack, "drain", 0, 0) as dep:
        redis = await ctx.stack.redis()
        streams = Streams(redis, dep.stream, "eventflow-workers")
        await streams.ensure_group()
        for chunk in drain_events(total):
            await streams.publish(chunk)
        length = (await streams.state()).length
        if length != total:
            raise BenchError(f"stream holds {length} entries, expected {total}")
        await ctx.stack.db()  # connect before the worker starts
        await ctx.stack.start_workers(dep, 1)
        counts, waited = await ctx.stack.wait_settled(
            max(120.0, total / 1000), expected=total
        )
        db = await ctx.stack.db()
        row = await db.fetchrow(
            "WITH first AS (SELECT min(processed_at) AS t FROM processed_events)"
            " SELECT extract(epoch FROM (SELECT t FROM first))::float8 AS first,"
            " extract(epoch FROM max(processed_at))::float8 AS last,"
            " count(*) FILTER (WHERE processed_at = (SELECT t FROM first)) AS n1"
            " FROM processed_events"
        )
        assert row is not None
    done = counts["processed"] + counts["failed"]
    if done < total:
        raise BenchError(f"drain: {done} of {total} events settled in {waited:.0f} s")
    span = row["last"] - row["first"]
    rate = (counts["processed"] - row["n1"]) / span if span > 0 else None
    return {
        "metrics": {
            "events_per_s": round(rate, 1) if rate else None,
            "dead_lettered": counts["failed"],
        },
        "details": {
            "events": total,
            "first_batch": row["n1"],
            "span_s": round(span, 3),
            **counts,
        },
    }


# --- 7. memory ----------------------------------------------------------------------


async def memory(ctx: Context) -> Rep:
    """RSS of the API and the worker, sampled every second, while a long run of
    batches (1000 events each) goes through, and their peak (VmHWM)."""
    total = ctx.sizes.memory_events
    ctx.log(f"  {total} events")
    bodies = batch_bodies(total, 1000)
    progress = [0]
    samples: list[dict[str, float]] = []
    async with deployment(ctx.stack, "memory", 1, 1) as dep:
        pids = {"api": dep.apis[0].pid, "worker": dep.workers[0].pid}
        start = time.perf_counter()
        stop = asyncio.Event()

        def sample() -> None:
            entry = {"t": round(time.perf_counter() - start, 2), "sent": progress[0]}
            for name, pid in pids.items():
                entry[f"{name}_rss_mib"] = round(memory_kib(pid)[0] / 1024, 1)
            samples.append(entry)

        async def sampler() -> None:
            while not stop.is_set():
                sample()
                await asyncio.sleep(1.0)

        task = asyncio.create_task(sampler())
        try:
            run = await send_batches(
                dep.api_urls[0], bodies, ctx.sizes.batch_connections, progress
            )
            del bodies
            counts, _ = await ctx.stack.wait_settled(
                max(ctx.sizes.drain_timeout_s, total / 2000)
            )
        finally:
            stop.set()
            await task
        sample()  # 100 %: everything sent and processed
        peaks = {name: memory_kib(pid)[1] / 1024 for name, pid in pids.items()}
    metrics: Metrics = {}
    for name in pids:
        key = f"{name}_rss_mib"
        at10 = next(s[key] for s in samples if s["sent"] >= 0.1 * total)
        at50 = next(s[key] for s in samples if s["sent"] >= 0.5 * total)
        at100 = samples[-1][key]
        metrics.update(
            {
                f"{name}.rss10_mib": at10,
                f"{name}.rss50_mib": at50,
                f"{name}.rss100_mib": at100,
                f"{name}.growth_mib": round(at100 - at10, 1),
                f"{name}.peak_mib": round(peaks[name], 1),
            }
        )
    metrics["lost"] = counts["raw"] - counts["processed"] - counts["failed"]
    return {
        "metrics": metrics,
        "details": {"events": total, **vars(run), **counts, "samples": samples},
    }


SCENARIOS: dict[str, Scenario] = {
    "ceiling_http": ceiling_http,
    "ceiling_postgres": ceiling_postgres,
    "single_e2e": single_e2e,
    "single_auth": single_auth,
    "batch_e2e": batch_e2e,
    "latency": latency,
    "drain": drain,
    "memory": memory,
}


# --- what the table shows ------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    op: str  # ">=", "<=", "<", "=="
    value: float
    judge: str = "median"  # which aggregate is compared: "median" or "max"

    def met(self, value: float) -> bool:
        return {
            ">=": value >= self.value,
            "<=": value <= self.value,
            "<": value < self.value,
            "==": value == self.value,
        }[self.op]

    def describe(self) -> str:
        sign = {">=": "≥", "<=": "≤", "<": "<", "==": "="}[self.op]
        shown = (
            f"{self.value:,.0f}" if self.value == int(self.value) else f"{self.value}"
        )
        return f"{sign} {shown}" + (" (worst)" if self.judge == "max" else "")


@dataclass(frozen=True)
class MetricSpec:
    scenario: str
    key: str
    label: str
    unit: str
    target: Target | None = None


LOST = Target("==", 0, "max")
FLAT = Target("<=", 10, "max")
MEM = Target("<", 150, "max")
BATCH = Target(">=", 30_000)

METRICS: list[MetricSpec] = [
    MetricSpec("ceiling_http", "requests_per_s", "validate-only FastAPI", "req/s"),
    MetricSpec("ceiling_postgres", "unnest_rows_per_s",
               "INSERT … unnest, 1000/commit", "rows/s"),
    MetricSpec("ceiling_postgres", "unnest_executemany_rows_per_s",
               "INSERT … unnest, executemany, 1 tx", "rows/s"),
    MetricSpec("ceiling_postgres", "copy_rows_per_s", "COPY, 1000/commit", "rows/s"),
    MetricSpec("single_e2e", "1x1.ingest_per_s", "1 API + 1 worker: ingest", "req/s"),
    MetricSpec("single_e2e", "1x1.e2e_per_s", "1 API + 1 worker: end to end",
               "events/s", Target(">=", 2000)),
    MetricSpec("single_e2e", "1x1.lost", "1 API + 1 worker: lost", "events", LOST),
    MetricSpec("single_e2e", "1x1.non_2xx", "1 API + 1 worker: non-2xx", "answers"),
    MetricSpec("single_e2e", "2x2.ingest_per_s", "2 API + 2 workers: ingest", "req/s"),
    MetricSpec("single_e2e", "2x2.e2e_per_s", "2 API + 2 workers: end to end",
               "events/s"),
    MetricSpec("single_e2e", "2x2.lost", "2 API + 2 workers: lost", "events", LOST),
    MetricSpec("single_e2e", "2x2.non_2xx", "2 API + 2 workers: non-2xx", "answers"),
    MetricSpec("single_auth", "off.ingest_per_s", "authentication off", "req/s"),
    MetricSpec("single_auth", "on.ingest_per_s", "authentication on (key)", "req/s"),
    MetricSpec("single_auth", "on_share_of_off", "on ÷ off", "ratio",
               Target(">=", 0.95)),
    MetricSpec("batch_e2e", "b100.ingest_per_s", "batches of 100: ingest", "events/s"),
    MetricSpec("batch_e2e", "b100.e2e_per_s", "batches of 100: end to end",
               "events/s", BATCH),
    MetricSpec("batch_e2e", "b100.lost", "batches of 100: lost", "events", LOST),
    MetricSpec("batch_e2e", "b1000.ingest_per_s", "batches of 1000: ingest",
               "events/s"),
    MetricSpec("batch_e2e", "b1000.e2e_per_s", "batches of 1000: end to end",
               "events/s", BATCH),
    MetricSpec("batch_e2e", "b1000.lost", "batches of 1000: lost", "events", LOST),
    MetricSpec("latency", "r100.p50_ms", "100 events/s: p50", "ms"),
    MetricSpec("latency", "r100.p95_ms", "100 events/s: p95", "ms"),
    MetricSpec("latency", "r100.p99_ms", "100 events/s: p99", "ms", Target("<=", 25)),
    MetricSpec("latency", "r100.max_ms", "100 events/s: max", "ms"),
    MetricSpec("latency", "r100.achieved_rate", "100 events/s: rate sent", "events/s"),
    MetricSpec("latency", "r1000.p50_ms", "1000 events/s: p50", "ms"),
    MetricSpec("latency", "r1000.p95_ms", "1000 events/s: p95", "ms"),
    MetricSpec("latency", "r1000.p99_ms", "1000 events/s: p99", "ms"),
    MetricSpec("latency", "r1000.max_ms", "1000 events/s: max", "ms"),
    MetricSpec("latency", "r1000.achieved_rate", "1000 events/s: rate sent",
               "events/s"),
    MetricSpec("drain", "events_per_s", "1 worker, pre-filled stream", "events/s",
               Target(">=", 40_000)),
    MetricSpec("memory", "api.rss10_mib", "API RSS at 10 %", "MiB"),
    MetricSpec("memory", "api.rss50_mib", "API RSS at 50 %", "MiB"),
    MetricSpec("memory", "api.rss100_mib", "API RSS at 100 %", "MiB"),
    MetricSpec("memory", "api.growth_mib", "API growth 10 % → 100 %", "MiB", FLAT),
    MetricSpec("memory", "api.peak_mib", "API peak (VmHWM)", "MiB", MEM),
    MetricSpec("memory", "worker.rss10_mib", "worker RSS at 10 %", "MiB"),
    MetricSpec("memory", "worker.rss50_mib", "worker RSS at 50 %", "MiB"),
    MetricSpec("memory", "worker.rss100_mib", "worker RSS at 100 %", "MiB"),
    MetricSpec("memory", "worker.growth_mib", "worker growth 10 % → 100 %", "MiB",
               FLAT),
    MetricSpec("memory", "worker.peak_mib", "worker peak (VmHWM)", "MiB", MEM),
    MetricSpec("memory", "lost", "lost", "events", LOST),
]  # fmt: skip
