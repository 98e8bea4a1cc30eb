"""Scaling benchmark: how drain throughput grows with workers and partitions, and
what each component costs per event. One command, a stack of its own.

    make bench-scaling                                  # the committed run
    .venv/bin/python benchmarks/scaling.py              # the same
    .venv/bin/python benchmarks/scaling.py --quick      # small: checks the harness
    .venv/bin/python benchmarks/scaling.py --repeat 1 --workers 1,2 --partitions 1,4

Every round (3 by default; the configurations alternate, so a busy moment on the
machine does not land on one configuration alone) measures:

- the COPY ceiling, measured as ``benchmarks/run.py`` does (``ceiling_postgres``:
  rows like ``processed_events``' COPYed into a copy of it, 1,000 per commit);
- drain: for 1, 2 and 4 worker processes and 1, 4 and 16 partitions, the events
  stored per second when the workers find N events waiting (in ``raw_events`` and
  in the partition streams, as the API leaves them), with the CPU time per event of
  the workers, PostgreSQL and Redis, and a check of per-key order;
- CPU per event in the standard configuration (1 API + 1 worker, 8 partitions):
  single events (``POST /events``) and batches of 100 and of 1,000, end to end.

CPU time is ``utime + stime`` (and ``cutime + cstime``, for exited children such as
PostgreSQL backends) from ``/proc/<pid>/stat``, read before and after, for each
component's processes and their descendants. Results go to
``benchmarks/records/scaling-<UTC date-time>.json`` (every round's figures, the
machine, the versions, the command); a Markdown summary is printed. See
docs/scaling.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import uvloop
from harness import (
    REPO,
    BenchError,
    Deployment,
    Stack,
    closed_loop,
    send_batches,
    wrk_path,
    wrk_version,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow.config import Settings
from eventflow.models import Event
from eventflow.pipeline.ownership import partition_owners
from eventflow.pipeline.streams import Streams, partition_stream
from eventflow.store.events import insert_raw_events
from eventflow.store.tables import engine_for
from eventflow.tools.events import EventGenerator

RECORDS = REPO / "benchmarks" / "records"
GROUP = "eventflow-workers"
CLK_TCK = os.sysconf("SC_CLK_TCK")
STANDARD_PARTITIONS = 8  # EventFlow's default
# Workers renew leases every third of this and hand partitions over at that pace:
# 3 s instead of the default 10 s lets 4 workers settle their partitions in a few
# seconds instead of ~12 before each measurement. It costs a few Redis commands
# per second, nothing measurable next to thousands of events per second.
LEASE_TTL_MS = 3000
PRELOAD_CHUNK = 5000
USERS = 1000  # distinct partition keys in the drain's events
DASH = "\u2013"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- machine and versions (as benchmarks/run.py records them) ----------------------


def _proc_field(path: str, name: str) -> str | None:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == name:
                return value.strip()
    return None


def _git(*args: str) -> str | None:
    result = subprocess.run(
        ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
    )
    return result.stdout.strip() if result.returncode == 0 else None


def machine_info() -> dict[str, Any]:
    mem = _proc_field("/proc/meminfo", "MemTotal")
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem.split()[0]) / 1024 / 1024, 1) if mem else None,
        "cpu_model": _proc_field("/proc/cpuinfo", "model name") or "unknown",
        "kernel": platform.release(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def git_info() -> dict[str, Any]:
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(status) if status is not None else None,
    }


# --- CPU time from /proc ---------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, utime + stime + cutime + cstime in clock ticks), every process."""
    table: dict[int, tuple[int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            raw = Path(entry.path, "stat").read_text()
            # Fields after the command name (which may hold spaces and parentheses).
            fields = raw[raw.rindex(")") + 2 :].split()
            ppid = int(fields[1])
            ticks = sum(int(x) for x in fields[11:15])
            table[int(entry.name)] = (ppid, ticks)
    return table


def _tree_ticks(roots: Sequence[int], table: dict[int, tuple[int, int]]) -> int:
    """CPU ticks of ``roots`` and every live descendant. A child that exited was
    reaped by its parent and is in the parent's cutime + cstime, so a process that
    lives across the measurement (a PostgreSQL backend that disconnects) counts
    exactly once: its time before in its own line, after in its parent's."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, todo, seen = 0, list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in table:
            continue
        seen.add(pid)
        total += table[pid][1]
        todo += children.get(pid, [])
    return total


@dataclass
class CpuMeter:
    """CPU seconds of named groups of process trees between ``start`` and ``stop``."""

    groups: dict[str, list[int]]
    _before: dict[str, int] = dataclasses.field(default_factory=dict)
    _self_before: float = 0.0
    _wall: float = 0.0

    def start(self) -> None:
        table = _proc_table()
        self._before = {k: _tree_ticks(v, table) for k, v in self.groups.items()}
        self._self_before = self._self()
        self._wall = time.perf_counter()

    @staticmethod
    def _self() -> float:
        """This script (batch sender, polling) and its exited children (wrk)."""
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def stop(self) -> dict[str, float]:
        table = _proc_table()
        out = {
            name: (_tree_ticks(pids, table) - self._before[name]) / CLK_TCK
            for name, pids in self.groups.items()
        }
        out["load generator"] = self._self() - self._self_before
        out["wall"] = time.perf_counter() - self._wall
        return out


def per_event_us(cpu: dict[str, float], events: int) -> dict[str, float | None]:
    """CPU µs per event of each group, and their sum (wall time left out)."""
    if not events:
        return {name: None for name in cpu if name != "wall"}
    out: dict[str, float | None] = {
        name: round(seconds * 1e6 / events, 1)
        for name, seconds in cpu.items()
        if name != "wall"
    }
    out["total (EventFlow, PostgreSQL, Redis)"] = round(
        sum(v or 0.0 for k, v in out.items() if k != "load generator"), 1
    )
    return out


# --- the stack -------------------------------------------------------------------


@dataclass
class ScalingStack(Stack):
    """The benchmark stack, with ``EVENTFLOW_PARTITIONS`` for the processes it
    starts. ``harness.Stack`` itself leaves the setting at its default."""

    partitions: int = STANDARD_PARTITIONS

    def env(self, stream: str) -> dict[str, str]:
        env = super().env(stream)
        env["EVENTFLOW_PARTITIONS"] = str(self.partitions)
        env["EVENTFLOW_LEASE_TTL_MS"] = str(LEASE_TTL_MS)
        return env

    def server_pids(self) -> dict[str, list[int]]:
        assert self.pg is not None and self.pg.proc is not None
        assert self.redis_server is not None and self.redis_server.proc is not None
        return {
            "postgresql": [self.pg.proc.pid],
            "redis": [self.redis_server.proc.pid],
        }


def stream_keys(stream: str, partitions: int) -> list[str]:
    """Every Redis key a deployment on ``stream`` may have made."""
    keys = [f"{stream}:workers", f"{stream}:stats", f"{stream}:quarantine"]
    for p in range(partitions):
        key = partition_stream(stream, p)
        keys += [key, f"{key}:lease"]
    return keys


async def wait_owned(
    stack: ScalingStack, dep: Deployment, workers: int, limit_s: float = 90.0
) -> float:
    """Wait until ``workers`` workers are registered and partition p is held by the
    (p mod N)-th of them by name, as the ownership rules settle it; returns the
    time it took."""
    redis = await stack.redis()
    streams = Streams(redis, dep.stream, GROUP, stack.partitions)
    ttl_ms = LEASE_TTL_MS
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        for proc in dep.workers:
            if not proc.alive():
                raise BenchError(f"{proc.name} exited:\n{proc.tail()}")
        now_ms = int(time.time() * 1000)
        raw = await redis.zrangebyscore(
            f"{dep.stream}:workers", now_ms - ttl_ms, "+inf"
        )
        members = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in raw)
        if len(members) == workers:
            owners = await partition_owners(redis, streams)
            if all(owner == members[p % workers] for p, owner in enumerate(owners)):
                # The new owners finish the (empty) pending lists and block in XREAD.
                await asyncio.sleep(0.5)
                return time.monotonic() - start
        await asyncio.sleep(0.1)
    raise BenchError(f"partitions of {dep.stream} not assigned within {limit_s:.0f} s")


async def wait_drained(
    stack: ScalingStack,
    stream: str,
    partitions: int,
    limit_s: float,
    expected: int | None = None,
) -> tuple[dict[str, int], float]:
    """Wait until every partition stream is empty (workers delete what they have
    acknowledged, after the commit) and PostgreSQL has settled ``expected`` events
    (default: every row of ``raw_events``). Returns the counts and the wait.

    Polls Redis (``XLEN``, nearly free) and counts rows only once the streams are
    empty: counting the growing tables every 100 ms, as ``Stack.wait_settled``
    does, scans them and would add to PostgreSQL's CPU per event."""
    redis = await stack.redis()
    keys = [partition_stream(stream, p) for p in range(partitions)]
    start = time.monotonic()
    while True:
        async with redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.xlen(key)
            lengths = await pipe.execute()
        waited = time.monotonic() - start
        if sum(lengths) == 0 or waited > limit_s:
            counts = await stack.counts()
            done = counts["processed"] + counts["failed"]
            if done >= (counts["raw"] if expected is None else expected):
                return counts, waited
            if waited > limit_s:
                return counts, waited
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def deployment(
    stack: ScalingStack, name: str, partitions: int, apis: int, workers: int
) -> AsyncIterator[tuple[Deployment, float]]:
    """Empty tables, a fresh stream, ``apis`` APIs and ``workers`` workers on
    ``partitions`` partitions, each partition with its owner; always torn down.
    Yields the deployment and the seconds the partitions took to settle."""
    stack.partitions = partitions
    stream = f"bench:{name}:{uuid.uuid4().hex[:8]}"
    await stack.reset()
    dep = await stack.deploy(stream, apis, 0)
    try:
        await stack.start_workers(dep, workers)
        settled = await wait_owned(stack, dep, workers)
        yield dep, settled
    finally:
        codes = stack.teardown(dep)
        bad = {name: code for name, code in codes.items() if code not in (0, None)}
        if bad:
            log(f"  processes exited with {bad}")
        with contextlib.suppress(Exception):
            await (await stack.redis()).delete(*stream_keys(stream, partitions))


# --- the COPY ceiling --------------------------------------------------------------

COPY_BATCH = 1000
_COPY_COLUMNS = [
    "event_id", "event_type", "user_id", "event_timestamp", "properties",
    "enrichment", "correlation_id", "received_at", "processed_by", "attempts",
]  # fmt: skip


async def copy_ceiling(stack: ScalingStack, rows: int) -> dict[str, float]:
    """Rows/s that PostgreSQL takes with COPY into a copy of ``processed_events``,
    1,000 rows per commit: the method and rows of ``ceiling_postgres`` in
    ``benchmarks/scenarios.py`` (its ``copy_rows_per_s``), the most this database
    can store on this machine without any EventFlow code in the way."""
    db = await stack.db()
    now = datetime.now(UTC)
    props = orjson.dumps(
        {"amount": 12.5, "currency": "EUR", "product_id": "sku-1", "quantity": 1}
    ).decode()
    enrichment = orjson.dumps(
        {"category": "small", "total": 12.5, "processed_by": "bench"}
    ).decode()
    data = [
        (uuid.uuid4(), "purchase", f"user-{i % 1000}", now, props, enrichment,
         "bench", now, "bench-worker", 1)
        for i in range(rows)
    ]  # fmt: skip
    await db.execute("DROP TABLE IF EXISTS bench_scratch")
    await db.execute("CREATE TABLE bench_scratch (LIKE processed_events INCLUDING ALL)")
    try:
        await db.execute("CHECKPOINT")
        start = time.perf_counter()
        for i in range(0, rows, COPY_BATCH):
            await db.copy_records_to_table(
                "bench_scratch", records=data[i : i + COPY_BATCH], columns=_COPY_COLUMNS
            )
        elapsed = time.perf_counter() - start
        count = await db.fetchval("SELECT count(*) FROM bench_scratch")
        if count != rows:
            raise BenchError(f"COPY ceiling: {count} rows stored, expected {rows}")
    finally:
        await db.execute("DROP TABLE IF EXISTS bench_scratch")
    return {"copy_rows_per_s": round(rows / elapsed, 1)}


# --- drain -----------------------------------------------------------------------

_PROPS: dict[str, dict[str, Any]] = {
    "purchase": {"amount": 12.5, "currency": "EUR", "quantity": 1},
    "page_view": {"page": "/pricing", "duration_ms": 1200},
    "user_signup": {"email": "user-9@example.com", "plan": "pro"},
    "custom": {"name": "video.played", "value": 3},
}


def drain_events(count: int) -> Iterator[list[Event]]:
    """``count`` valid events of ``USERS`` keys, as the API would publish them, in
    chunks. The correlation id is the event's sequence number, so per-key order
    can be checked in ``processed_events`` afterwards."""
    kinds = list(_PROPS)
    for start in range(0, count, PRELOAD_CHUNK):
        now = datetime.now(UTC)
        chunk = []
        for i in range(start, min(count, start + PRELOAD_CHUNK)):
            kind = kinds[i % len(kinds)]
            props = _PROPS[kind]
            user = f"user-{i % USERS}"
            ts = now - timedelta(seconds=i % 60)
            chunk.append(
                Event(
                    event_id=uuid.uuid4(),
                    event_type=kind,
                    user_id=user,
                    timestamp=ts,
                    properties=props,
                    received_at=now,
                    correlation_id=f"{i:010d}",
                    body_hash=f"{i:032x}",  # the worker does not read it
                )
            )
        yield chunk


_ORDER_CHECK = """
SELECT count(*) FROM (
    SELECT correlation_id,
        lag(correlation_id) OVER (PARTITION BY user_id ORDER BY id) AS previous
    FROM processed_events
) t WHERE previous > correlation_id
"""

_DRAIN_FIGURES = """
WITH first AS (SELECT min(processed_at) AS t FROM processed_events)
SELECT extract(epoch FROM (SELECT t FROM first))::float8 AS first,
    extract(epoch FROM max(processed_at))::float8 AS last,
    count(*) FILTER (WHERE processed_at = (SELECT t FROM first)) AS n1,
    count(*) AS processed,
    count(DISTINCT processed_by) AS writers
FROM processed_events
"""


async def drain(
    stack: ScalingStack,
    engine: AsyncEngine,
    partitions: int,
    workers: int,
    total: int,
) -> dict[str, Any]:
    """``workers`` workers find ``total`` events waiting in ``partitions``
    partitions. The events are put in ``raw_events`` and in staging streams while
    the workers settle their partitions, then moved under the workers' keys at
    once (``RENAME``, one MULTI), which wakes their blocked reads."""
    name = f"drain-p{partitions}-w{workers}"
    async with deployment(stack, name, partitions, 0, workers) as (dep, settled_s):
        redis = await stack.redis()
        staging = Streams(redis, f"{dep.stream}:staging", GROUP, partitions)
        await staging.ensure_group()
        window = timedelta(days=Settings().duplicate_window_days)
        filled = time.perf_counter()
        # raw_events first, then the stream, chunk by chunk: as the API does,
        # published moments after the commit (the reconciler leaves them alone).
        for chunk in drain_events(total):
            await insert_raw_events(engine, chunk, window)
            await staging.publish(chunk)
        fill_s = time.perf_counter() - filled
        lengths = [await redis.xlen(s.stream) for s in staging.partitions]
        if sum(lengths) != total:
            raise BenchError(f"staging holds {sum(lengths)} entries, not {total}")
        meter = CpuMeter(
            {"workers": [w.pid for w in dep.workers], **stack.server_pids()}
        )
        load = os.getloadavg()[0]
        meter.start()
        released = time.time()
        async with redis.pipeline(transaction=True) as pipe:
            for p in range(partitions):
                pipe.rename(
                    partition_stream(staging.name, p), partition_stream(dep.stream, p)
                )
            await pipe.execute()
        counts, waited = await wait_drained(
            stack, dep.stream, partitions, max(120.0, total / 500), expected=total
        )
        cpu = meter.stop()
        db = await stack.db()
        row = await db.fetchrow(_DRAIN_FIGURES)
        assert row is not None
        violations = await db.fetchval(_ORDER_CHECK)
        republished = await db.fetchval(
            "SELECT count(*) FROM raw_events WHERE publish_count > 1"
        )
        unsettled = await db.fetchval(
            "SELECT count(*) FROM raw_events WHERE status = 'accepted'"
        )
        left = sum(
            [
                await redis.xlen(partition_stream(dep.stream, p))
                for p in range(partitions)
            ]
        )
    done = counts["processed"] + counts["failed"]
    if done < total:
        raise BenchError(f"{name}: {done} of {total} events settled in {waited:.0f} s")
    span = row["last"] - released
    after_first = row["last"] - row["first"]
    return {
        "events_per_s": round(row["processed"] / span, 1) if span > 0 else None,
        # As benchmarks/run.py's drain: from the first commit on, first batch left out.
        "events_per_s_after_first_batch": round(
            (row["processed"] - row["n1"]) / after_first, 1
        )
        if after_first > 0
        else None,
        "cpu_us_per_event": per_event_us(cpu, row["processed"]),
        "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
        "events": total,
        "processed": row["processed"],
        "dead_lettered": counts["failed"],
        "writers": row["writers"],
        "order_violations": violations,
        "republished": republished,
        "unsettled": unsettled,
        "left_in_streams": left,
        "drain_s": round(span, 3),
        "partitions_settled_s": round(settled_s, 2),
        "preload_s": round(fill_s, 2),
        "load_average_before": round(load, 2),
    }


# --- CPU per event, standard configuration -----------------------------------------


async def standard(
    stack: ScalingStack, generator: str, single_s: float, batch_events: int
) -> dict[str, Any]:
    """1 API + 1 worker on 8 partitions: single events for ``single_s`` seconds
    (closed loop, 32 connections), then batches of 100 and of 1,000; CPU per
    event of every component, from the start of the load until every event is
    stored."""
    out: dict[str, Any] = {}
    loads: list[tuple[str, int]] = [("single", 1), ("batch100", 100)]
    loads.append(("batch1000", 1000))
    for tag, size in loads:
        bodies = [
            (len(ids), body)
            for ids, body in EventGenerator(seed=7).bodies(batch_events, size)
        ]
        async with deployment(stack, f"cpu-{tag}", STANDARD_PARTITIONS, 1, 1) as (
            dep,
            _,
        ):
            meter = CpuMeter(
                {
                    "api": [dep.apis[0].pid],
                    "workers": [dep.workers[0].pid],
                    **stack.server_pids(),
                }
            )
            load = os.getloadavg()[0]
            meter.start()
            started = time.time()
            if size == 1:
                result = await closed_loop(generator, dep.api_urls, 32, single_s)
                sent, failed = result.ok, result.non_2xx + result.errors
                ingest_s = result.duration_s
            else:
                run = await send_batches(dep.api_urls[0], bodies, 4)
                sent, failed = run.accepted, run.failed_requests + run.rejected
                ingest_s = run.duration_s
            counts, _ = await wait_drained(
                stack, dep.stream, STANDARD_PARTITIONS, 120.0
            )
            cpu = meter.stop()
            _, last = await stack.processed_span()
        processed = counts["processed"]
        out[tag] = {
            "cpu_us_per_event": per_event_us(cpu, processed),
            "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
            "ingest_per_s": round(sent / ingest_s, 1),
            "e2e_per_s": round(processed / (last - started), 1) if last else None,
            "accepted": sent,
            "processed": processed,
            "not_accepted": failed,
            "lost": counts["raw"] - processed - counts["failed"],
            "load_average_before": round(load, 2),
        }
    return out


# --- rounds, summary, output -------------------------------------------------------


def stats(values: Sequence[float | None]) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    return {
        "median": statistics.median(present) if present else None,
        "min": min(present) if present else None,
        "max": max(present) if present else None,
        "values": list(values),
    }


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    copy = [r["ceiling"]["copy_rows_per_s"] for r in rounds]
    drains: dict[str, Any] = {}
    for key in rounds[0]["drain"]:
        reps = [r["drain"][key] for r in rounds]
        rates = [d["events_per_s"] for d in reps]
        drains[key] = {
            "events_per_s": stats(rates),
            "share_of_copy": stats(
                [
                    round(rate / c, 3) if rate and c else None
                    for rate, c in zip(rates, copy, strict=True)
                ]
            ),
            "cpu_us_per_event": {
                name: stats([d["cpu_us_per_event"][name] for d in reps])
                for name in reps[0]["cpu_us_per_event"]
            },
            "order_violations": max(d["order_violations"] for d in reps),
            "republished": max(d["republished"] for d in reps),
        }
    cpu: dict[str, Any] = {}
    for tag in rounds[0]["standard"]:
        reps = [r["standard"][tag] for r in rounds]
        cpu[tag] = {
            "cpu_us_per_event": {
                name: stats([d["cpu_us_per_event"][name] for d in reps])
                for name in reps[0]["cpu_us_per_event"]
            },
            "ingest_per_s": stats([d["ingest_per_s"] for d in reps]),
            "e2e_per_s": stats([d["e2e_per_s"] for d in reps]),
            "lost": max(d["lost"] for d in reps),
        }
    return {
        "copy_rows_per_s": stats(copy),
        "drain": drains,
        "standard": cpu,
    }


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def spread(stat: dict[str, Any], digits: int = 0) -> str:
    if len(stat["values"]) < 2:
        return fmt(stat["median"], digits)
    return (
        f"{fmt(stat['median'], digits)} ({fmt(stat['min'], digits)}{DASH}"
        f"{fmt(stat['max'], digits)})"
    )


def render(results: dict[str, Any]) -> str:
    s = results["summary"]
    m = results["machine"]
    workers, partitions = results["workers"], results["partitions"]
    lines = [
        f"- {results['date']}; `{results['command']}`; commit "
        f"`{(results['git']['commit'] or '?')[:12]}`"
        + (" (uncommitted changes)" if results["git"]["dirty"] else ""),
        f"- {m['cores']} cores, {m['cpu_model']}; load average "
        f"{m['load_average_at_start']} at start, {m['load_average_at_end']} at end",
        f"- {results['repeat']} round(s): median (min{DASH}max); "
        f"{results['sizes']['drain_events']:,} events per drain",
        "",
        f"COPY ceiling: {spread(s['copy_rows_per_s'])} rows/s",
        "",
        "Drain, events/s (share of the COPY ceiling):",
        "",
        "| workers \\ partitions | " + " | ".join(str(p) for p in partitions) + " |",
        "| --- |" + " ---: |" * len(partitions),
    ]
    for w in workers:
        cells = []
        for p in partitions:
            d = s["drain"][f"p{p}-w{w}"]
            cells.append(
                f"{spread(d['events_per_s'])} ({fmt(d['share_of_copy']['median'], 2)})"
            )
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    lines += ["", "Drain, CPU µs per event (median): workers / PostgreSQL / Redis", ""]
    lines += [
        "| workers \\ partitions | " + " | ".join(str(p) for p in partitions) + " |",
        "| --- |" + " ---: |" * len(partitions),
    ]
    for w in workers:
        cells = []
        for p in partitions:
            c = s["drain"][f"p{p}-w{w}"]["cpu_us_per_event"]
            cells.append(
                " / ".join(
                    fmt(c[k]["median"]) for k in ("workers", "postgresql", "redis")
                )
            )
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    tags = list(s["standard"])
    names = list(s["standard"][tags[0]]["cpu_us_per_event"])
    lines += [
        "",
        f"CPU µs per event, 1 API + 1 worker, {STANDARD_PARTITIONS} partitions:",
        "",
        "| component | " + " | ".join(tags) + " |",
        "| --- |" + " ---: |" * len(tags),
    ]
    for name in names:
        cells = [spread(s["standard"][t]["cpu_us_per_event"][name]) for t in tags]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for field in ("ingest_per_s", "e2e_per_s"):
        cells = [spread(s["standard"][t][field]) for t in tags]
        lines.append(
            f"| {field.replace('_per_s', '')}, events/s | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def check(results: dict[str, Any]) -> list[str]:
    """What must hold in every round: nothing lost, nothing stored twice or out
    of order, nothing republished."""
    problems = []
    for index, rnd in enumerate(results["rounds"]):
        for key, d in rnd["drain"].items():
            for field in (
                "order_violations",
                "republished",
                "unsettled",
                "dead_lettered",
            ):
                if d[field]:
                    problems.append(f"round {index + 1} {key}: {field} = {d[field]}")
            if d["processed"] != d["events"] or d["left_in_streams"]:
                problems.append(
                    f"round {index + 1} {key}: {d['processed']} of {d['events']} "
                    f"stored, {d['left_in_streams']} left in the streams"
                )
        for tag, d in rnd["standard"].items():
            if d["lost"]:
                problems.append(f"round {index + 1} {tag}: {d['lost']} lost")
    return problems


async def run(args: argparse.Namespace) -> dict[str, Any]:
    generator = "wrk" if wrk_path() else "python"
    results: dict[str, Any] = {
        "schema": 1,
        "benchmark": "scaling",
        "command": shlex.join(sys.orig_argv),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "repeat": args.repeat,
        "workers": args.workers,
        "partitions": args.partitions,
        "machine": machine_info(),
        "git": git_info(),
        "software": {"python": sys.version.split()[0]},
        "generator": f"wrk ({wrk_version()})" if generator == "wrk" else "python",
        "sizes": {
            "drain_events": args.events,
            "single_s": args.single_s,
            "batch_events": args.batch_events,
            "copy_rows": args.copy_rows,
            "drain_keys": USERS,
        },
        "configuration": "EventFlow defaults (INFO logs in JSON, worker batches of "
        "500, two batches in flight per partition) except: EVENTFLOW_PARTITIONS as "
        f"listed, EVENTFLOW_LEASE_TTL_MS={LEASE_TTL_MS} (partitions settle faster "
        "between measurements), EVENTFLOW_WORKER_METRICS_PORT=0, authentication off",
        "rounds": [],
    }
    configs = [(p, w) for p in args.partitions for w in args.workers]
    with tempfile.TemporaryDirectory(prefix="eventflow-scaling-") as tmp:
        os.chmod(tmp, 0o755)  # PostgreSQL may run as another user (we are root)
        stack = ScalingStack(Path(tmp))
        engine: AsyncEngine | None = None
        try:
            log(f"starting PostgreSQL and Valkey in {tmp}")
            stack.start_servers()
            results["software"].update(await stack.versions())
            engine = engine_for(Settings(), stack.database_url, 2)
            for index in range(args.repeat):
                # Alternate: each round walks the configurations from another start.
                shift = index * len(configs) // max(1, args.repeat)
                order = configs[shift:] + configs[:shift]
                if index % 2:
                    order.reverse()
                rnd: dict[str, Any] = {"drain": {}, "order": []}
                log(f"round {index + 1}/{args.repeat}: COPY ceiling")
                rnd["ceiling"] = await copy_ceiling(stack, args.copy_rows)
                for p, w in order:
                    log(f"round {index + 1}/{args.repeat}: drain, P={p}, {w} worker(s)")
                    d = await drain(stack, engine, p, w, args.events)
                    log(
                        f"  {d['events_per_s']:,.0f} events/s; CPU µs/event "
                        f"{d['cpu_us_per_event']}"
                    )
                    rnd["drain"][f"p{p}-w{w}"] = d
                    rnd["order"].append(f"p{p}-w{w}")
                log(f"round {index + 1}/{args.repeat}: CPU per event, 1 API + 1 worker")
                rnd["standard"] = await standard(
                    stack, generator, args.single_s, args.batch_events
                )
                # Keys in the same order in every round, for the summary.
                rnd["drain"] = {
                    f"p{p}-w{w}": rnd["drain"][f"p{p}-w{w}"] for p, w in configs
                }
                results["rounds"].append(rnd)
        finally:
            if engine is not None:
                await engine.dispose()
            await stack.close()
            stack.stop_servers()
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["summary"] = summarize(results["rounds"])
    results["problems"] = check(results)
    return results


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Drain throughput by workers and partitions, CPU per event, "
        "on a stack of its own (docs/scaling.md)."
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 round")
    parser.add_argument("--repeat", type=int, default=None, help="rounds (default 3)")
    parser.add_argument("--workers", type=int_list, default=[1, 2, 4])
    parser.add_argument("--partitions", type=int_list, default=[1, 4, 16])
    parser.add_argument("--events", type=int, default=None, help="events per drain")
    parser.add_argument("--single-s", type=float, default=None)
    parser.add_argument("--batch-events", type=int, default=None)
    parser.add_argument("--copy-rows", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="the JSON record")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "repeat": 1 if quick else 3,
        "events": 5_000 if quick else 20_000,
        "single_s": 3.0 if quick else 6.0,
        "batch_events": 5_000 if quick else 20_000,
        "copy_rows": 20_000 if quick else 100_000,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d-%H%M%S")
    out: Path = (
        args.out or RECORDS / f"scaling-{stamp}{'-quick' if args.quick else ''}.json"
    )
    started = time.perf_counter()
    try:
        results = uvloop.run(run(args))
    except KeyboardInterrupt:
        log("interrupted; every process started was stopped, nothing recorded")
        return 130
    results["duration_s"] = round(time.perf_counter() - started, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    print(render(results))
    for problem in results["problems"]:
        log(f"PROBLEM: {problem}")
    log(f"results in {out} ({results['duration_s']} s)")
    return 1 if results["problems"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
