"""The benchmark scenarios. Each runs one repetition and returns its measurements:
``{"metrics": {key: number}, "details": {...}}``; ``run.py`` repeats them and takes
medians. The metrics shown in the table, with their targets, are in ``METRICS``."""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from harness import (
    BENCH_DIR,
    BenchError,
    Deployment,
    Stack,
    closed_loop,
    deployment,
    memory_kib,
    open_loop,
    percentiles_ms,
    plain_pg_url,
    send_batches,
    spawn,
    wait_http,
)
from measure import (
    COPY_BATCH,
    GENERATOR,
    TOTAL,
    CpuMeter,
    copy_batches,
    per_event_us,
    scratch_rows,
    scratch_table,
    stack_meter,
    staged_drain,
    wait_drained,
)

from eventflow.config import Settings
from eventflow.local.servers import free_port
from eventflow.store.tables import engine_for
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
    drain_events: int
    memory_events: int
    pg_rows: int
    drain_timeout_s: float = 60.0

    @classmethod
    def full(cls) -> Sizes:
        return cls(15, 32, {100: 100_000, 1000: 200_000}, 4, 20,
                   200_000, 1_000_000, 200_000)  # fmt: skip

    @classmethod
    def quick(cls) -> Sizes:
        return cls(3, 32, {100: 20_000, 1000: 20_000}, 4, 3,
                   20_000, 50_000, 20_000)  # fmt: skip


@dataclass
class Context:
    stack: Stack
    sizes: Sizes
    generator: str  # "wrk" or "python"
    log: Callable[[str], None]
    # The scenarios run so far, as results.json holds them ({"summary": …}):
    # the latency scenario takes half the single-event capacity from here.
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


# Short names of the CPU groups in the metrics: "<tag>.cpu.<name>".
CPU_NAMES = {
    "api": "api",
    "workers": "worker",
    "postgresql": "postgresql",
    "redis": "redis",
    GENERATOR: "generator",
    TOTAL: "total",
}


def cpu_metrics(prefix: str, per_event: dict[str, float | None]) -> Metrics:
    """``per_event_us`` figures as metrics ``<prefix>cpu.<name>``."""
    return {f"{prefix}cpu.{CPU_NAMES[k]}": v for k, v in per_event.items()}


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
ON CONFLICT (event_id, received_at) DO NOTHING
"""


def _columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    return [[row[i] for row in rows] for i in range(8)]


async def ceiling_postgres(ctx: Context) -> Rep:
    """Rows/s for batches of 1000 into a copy of processed_events, each batch
    committed on its own (as the worker does), and all batches in one transaction
    (asyncpg ``executemany``, pipelined), and via COPY."""
    db = await ctx.stack.db()
    rows = ctx.sizes.pg_rows
    metrics: Metrics = {}
    conn = await asyncpg.connect(plain_pg_url(ctx.stack.database_url))
    try:

        async def unnest_commit_each(batches: list[list[tuple[Any, ...]]]) -> None:
            for batch in batches:
                await conn.execute(_UNNEST, *_columns(batch), "bench-worker")

        async def unnest_executemany(batches: list[list[tuple[Any, ...]]]) -> None:
            args = [(*_columns(batch), "bench-worker") for batch in batches]
            await conn.executemany(_UNNEST, args)

        async def copy_commit_each(batches: list[list[tuple[Any, ...]]]) -> None:
            await copy_batches(conn, [row for batch in batches for row in batch])

        methods = {
            "unnest_rows_per_s": unnest_commit_each,
            "unnest_executemany_rows_per_s": unnest_executemany,
            "copy_rows_per_s": copy_commit_each,
        }
        async with scratch_table(db):
            for key, method in methods.items():
                data = scratch_rows(rows)
                batches = [data[i : i + COPY_BATCH] for i in range(0, rows, COPY_BATCH)]
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
    return {"metrics": metrics, "details": {"rows": rows, "batch": COPY_BATCH}}


# --- 3. single_e2e ------------------------------------------------------------------


async def _e2e_after_load(
    ctx: Context,
    dep: Deployment,
    meter: CpuMeter,
    started: float,
    accepted_by_client: int,
) -> tuple[Metrics, dict[str, Any]]:
    """Wait until the workers have emptied the streams and settled every event,
    stop the CPU meter, then end-to-end figures from PostgreSQL."""
    counts, waited = await wait_drained(
        ctx.stack, dep.stream, ctx.sizes.drain_timeout_s, settle_s=0.3
    )
    cpu = meter.stop()
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
        **cpu_metrics("", per_event_us(cpu, processed)),
    }
    details = {
        **counts,
        "waited_s": round(waited, 3),
        "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
    }
    return metrics, details


async def _single(
    ctx: Context, apis: int, workers: int, auth: bool = False
) -> tuple[Metrics, Any]:
    key = ctx.stack.api_key() if auth else None
    name = f"single{apis}x{workers}{'auth' if auth else ''}"
    async with deployment(ctx.stack, name, apis, workers, auth) as dep:
        meter = stack_meter(ctx.stack, dep)
        meter.start()
        started = time.time()
        load = await closed_loop(
            ctx.generator,
            dep.api_urls,
            ctx.sizes.connections,
            ctx.sizes.duration_s,
            key,
        )
        e2e, db = await _e2e_after_load(ctx, dep, meter, started, load.ok)
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
            rates[auth].append(float(m["ingest_per_s"] or 0))
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
            meter = stack_meter(ctx.stack, dep)
            meter.start()
            run = await send_batches(
                dep.api_urls[0], bodies, ctx.sizes.batch_connections
            )
            e2e, db = await _e2e_after_load(ctx, dep, meter, run.started, run.accepted)
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

LOW_RATE = 100  # events/s


async def _capacity(ctx: Context) -> tuple[float, str]:
    """The single-event capacity (1 API + 1 worker, end to end, events/s): the
    median of this run's ``single_e2e``, or measured now when it did not run."""
    summary = (ctx.results.get("single_e2e") or {}).get("summary") or {}
    median = (summary.get("1x1.e2e_per_s") or {}).get("median")
    if median:
        return float(median), "single_e2e of this run (median)"
    ctx.log("  single_e2e did not run: measuring the single-event capacity")
    metrics, _ = await _single(ctx, 1, 1)
    if not metrics["e2e_per_s"]:
        raise BenchError("could not measure the single-event capacity")
    return float(metrics["e2e_per_s"]), "measured by this scenario (1 API + 1 worker)"


async def latency(ctx: Context) -> Rep:
    """Open-loop single events at a fixed rate (``harness.open_loop``): 100
    events/s, and half the single-event capacity measured in this run. Every
    event is followed to its processed_events row; the latency of an event is its
    ``processed_at`` minus the moment its request was due. The generator's
    achieved rate is checked: a run that did not reach its rate says so."""
    capacity, source = await _capacity(ctx)
    metrics: Metrics = {"capacity_per_s": capacity}
    details: dict[str, Any] = {"capacity_source": source}
    for tag, rate in (("r100", float(LOW_RATE)), ("half", round(capacity / 2))):
        events = max(1, int(rate * ctx.sizes.latency_s))
        ctx.log(f"  {rate:g} events/s: {events} events")
        async with deployment(ctx.stack, f"latency-{tag}", 1, 1) as dep:
            meter = stack_meter(ctx.stack, dep)
            run = await open_loop(dep.api_urls[0], rate, events, on_start=meter.start)
            counts, waited = await wait_drained(
                ctx.stack, dep.stream, ctx.sizes.drain_timeout_s, settle_s=0.3
            )
            cpu = meter.stop()
            db = await ctx.stack.db()
            # The tables hold this deployment's events only.
            rows = await db.fetch(
                "SELECT event_id::text AS id,"
                " extract(epoch FROM processed_at)::float8 AS at"
                " FROM processed_events"
            )
        due = run.due
        taken = [row["at"] - due[row["id"]] for row in rows if row["id"] in due]
        settled = counts["processed"] + counts["failed"]
        metrics.update(
            {
                **{f"{tag}.{k}": v for k, v in percentiles_ms(taken).items()},
                f"{tag}.target_rate": rate,
                f"{tag}.achieved_rate": run.achieved_rate,
                f"{tag}.reached": int(run.reached),
                f"{tag}.lag_p99_ms": run.lag_ms["p99_ms"],
                f"{tag}.lost": max(counts["raw"], run.ok) - settled,
                f"{tag}.failures": run.non_2xx + run.errors,
                **cpu_metrics(f"{tag}.", per_event_us(cpu, counts["processed"])),
            }
        )
        details[tag] = {
            **run.summary(),
            **counts,
            "followed": len(taken),
            "waited_s": round(waited, 3),
            "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
        }
    return {"metrics": metrics, "details": details}


# --- 6. drain -----------------------------------------------------------------------


async def drain(ctx: Context) -> Rep:
    """One worker (EventFlow's default 8 partitions) empties streams filled
    beforehand, with the events also in ``raw_events`` as the API leaves them
    (``measure.staged_drain``, as ``benchmarks/scaling.py`` measures it)."""
    settings = Settings()
    engine = engine_for(settings, ctx.stack.database_url, 2)
    try:
        d = await staged_drain(
            ctx.stack,
            engine,
            ctx.stack.partitions,
            1,
            ctx.sizes.drain_events,
            settings.lease_ttl_ms,
            ctx.log,
        )
    finally:
        await engine.dispose()
    problems = ("order_violations", "republished", "unsettled", "left_in_streams")
    return {
        "metrics": {
            "events_per_s": d["events_per_s"],
            "dead_lettered": d["dead_lettered"],
            "lost": d["events"] - d["processed"] - d["dead_lettered"],
            **{k: d[k] for k in problems},
            **cpu_metrics("", d["cpu_us_per_event"]),
        },
        "details": d,
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


def _latency_specs(tag: str, name: str) -> list[MetricSpec]:
    """The rows of one rate of the latency scenario."""
    specs = [
        MetricSpec("latency", f"{tag}.target_rate", f"{name}: rate due", "events/s"),
        MetricSpec("latency", f"{tag}.achieved_rate", f"{name}: rate sent", "events/s"),
        MetricSpec("latency", f"{tag}.lag_p99_ms", f"{name}: p99 send lag", "ms"),
    ]
    for q in ("p50", "p95", "p99", "max"):
        specs.append(MetricSpec("latency", f"{tag}.{q}_ms", f"{name}: {q}", "ms"))
    specs.append(MetricSpec("latency", f"{tag}.lost", f"{name}: lost", "events", LOST))
    return specs


METRICS: list[MetricSpec] = [
    MetricSpec("ceiling_http", "requests_per_s", "validate-only FastAPI", "req/s"),
    MetricSpec("ceiling_postgres", "unnest_rows_per_s",
               "INSERT … unnest, 1000/commit", "rows/s"),
    MetricSpec("ceiling_postgres", "unnest_executemany_rows_per_s",
               "INSERT … unnest, executemany, 1 tx", "rows/s"),
    MetricSpec("ceiling_postgres", "copy_rows_per_s", "COPY, 1000/commit", "rows/s"),
    MetricSpec("single_e2e", "1x1.ingest_per_s", "1 API + 1 worker: ingest", "req/s"),
    MetricSpec("single_e2e", "1x1.e2e_per_s", "1 API + 1 worker: end to end",
               "events/s"),
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
               "events/s"),
    MetricSpec("batch_e2e", "b100.lost", "batches of 100: lost", "events", LOST),
    MetricSpec("batch_e2e", "b1000.ingest_per_s", "batches of 1000: ingest",
               "events/s"),
    MetricSpec("batch_e2e", "b1000.e2e_per_s", "batches of 1000: end to end",
               "events/s"),
    MetricSpec("batch_e2e", "b1000.lost", "batches of 1000: lost", "events", LOST),
    MetricSpec("latency", "capacity_per_s", "single-event capacity (half is used)",
               "events/s"),
    *_latency_specs("r100", "100 events/s"),
    *_latency_specs("half", "half capacity"),
    MetricSpec("drain", "events_per_s", "1 worker, pre-filled streams", "events/s"),
    MetricSpec("drain", "lost", "lost", "events", LOST),
    MetricSpec("drain", "order_violations", "per-key order violations", "events",
               LOST),
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


# --- the goals: shares of the ceilings measured in the same run ----------------------


@dataclass(frozen=True)
class Goal:
    """A figure judged against its goal: ``scenario``'s ``key`` (median over the
    repetitions), divided by the ``ceiling`` metric's median when given. With
    ``reached``, a 0/1 metric that must be 1 in every repetition (the load
    generator sent the rate it was asked for), or the figure is invalid."""

    name: str  # a stable key, for --compare
    label: str
    scenario: str
    key: str
    target: Target
    unit: str
    ceiling: tuple[str, str] | None = None
    reached: str | None = None


GOALS: list[Goal] = [
    Goal("single_share", "single-event end to end ÷ validate-only HTTP ceiling",
         "single_e2e", "1x1.e2e_per_s", Target(">=", 0.50), "ratio",
         ("ceiling_http", "requests_per_s")),
    Goal("batch1000_share", "batch (1,000) end to end ÷ COPY ceiling",
         "batch_e2e", "b1000.e2e_per_s", Target(">=", 0.35), "ratio",
         ("ceiling_postgres", "copy_rows_per_s")),
    Goal("drain_share", "worker drain ÷ COPY ceiling",
         "drain", "events_per_s", Target(">=", 0.60), "ratio",
         ("ceiling_postgres", "copy_rows_per_s")),
    Goal("p99_100", "end-to-end p99 at 100 events/s",
         "latency", "r100.p99_ms", Target("<=", 10), "ms", reached="r100.reached"),
    Goal("p99_half", "end-to-end p99 at half the single-event capacity",
         "latency", "half.p99_ms", Target("<=", 25), "ms", reached="half.reached"),
]  # fmt: skip


# --- CPU per event: which measurements, which components -----------------------------

CPU_ROWS: list[tuple[str, str, str]] = [
    ("single_e2e", "1x1.", "single events, 1 API + 1 worker"),
    ("single_e2e", "2x2.", "single events, 2 APIs + 2 workers"),
    ("batch_e2e", "b100.", "batches of 100"),
    ("batch_e2e", "b1000.", "batches of 1,000"),
    ("drain", "", "drain, 1 worker"),
    ("latency", "r100.", "latency, 100 events/s"),
    ("latency", "half.", "latency, half capacity"),
]
CPU_COLUMNS: list[tuple[str, str]] = [
    ("api", "API"),
    ("worker", "worker"),
    ("postgresql", "PostgreSQL"),
    ("redis", "Valkey"),
    ("total", "sum"),
    ("generator", "load generator"),
]
