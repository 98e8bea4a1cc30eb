"""What ``benchmarks/run.py`` and ``benchmarks/scaling.py`` both measure with: the
machine and versions, CPU time per component from ``/proc``, the COPY ceiling,
waiting until the partition streams are drained, and a worker drain of a stream
filled beforehand.

CPU time is ``utime + stime + cutime + cstime`` from ``/proc/<pid>/stat``, read
before and after a measurement, summed over each component's processes and their
descendants (PostgreSQL's backends are children of its postmaster). The harness
itself (the batch sender, the open-loop generator, waiting) and the children it
has reaped (wrk) are read from ``os.times()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from harness import REPO, BenchError, Deployment, Stack
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow.config import Settings
from eventflow.models import Event
from eventflow.pipeline.ownership import partition_owners
from eventflow.pipeline.streams import Streams, partition_stream
from eventflow.store.events import insert_raw_events

CLK_TCK = os.sysconf("SC_CLK_TCK")
GROUP = "eventflow-workers"
GENERATOR = "load generator"
TOTAL = "total (EventFlow, PostgreSQL, Redis)"

# --- machine and versions ------------------------------------------------------------


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


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine_info() -> dict[str, Any]:
    mem = _proc_field("/proc/meminfo", "MemTotal")
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem.split()[0]) / 1024 / 1024, 1) if mem else None,
        "cpu_model": _proc_field("/proc/cpuinfo", "model name") or "unknown",
        "kernel": platform.release(),
        "load_average_at_start": load_average(),
    }


def emit(result: dict[str, Any], record: Path | None) -> None:
    """Print a benchmark's result as JSON, and write it to ``record`` if given."""
    text = json.dumps(result, indent=2)
    print(text)
    if record is not None:
        record.write_text(text + "\n")


def git_info() -> dict[str, Any]:
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(status) if status is not None else None,
    }


# --- CPU time from /proc -----------------------------------------------------------


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


def _self_seconds() -> float:
    """This process (batch sender, open-loop generator, polling) and its exited
    children (wrk)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class CpuMeter:
    """CPU seconds of named groups of process trees between ``start`` and ``stop``;
    with ``generator``, also this process and its reaped children, as
    ``load generator``."""

    groups: dict[str, list[int]]
    generator: bool = True
    _before: dict[str, int] = field(default_factory=dict)
    _self_before: float = 0.0
    _wall: float = 0.0

    def start(self) -> None:
        table = _proc_table()
        self._before = {k: _tree_ticks(v, table) for k, v in self.groups.items()}
        self._self_before = _self_seconds()
        self._wall = time.perf_counter()

    def stop(self) -> dict[str, float]:
        table = _proc_table()
        out = {
            name: (_tree_ticks(pids, table) - self._before[name]) / CLK_TCK
            for name, pids in self.groups.items()
        }
        if self.generator:
            out[GENERATOR] = _self_seconds() - self._self_before
        out["wall"] = time.perf_counter() - self._wall
        return out


def stack_meter(stack: Stack, dep: Deployment, generator: bool = True) -> CpuMeter:
    """A meter of a deployment's APIs and workers and the stack's servers."""
    groups: dict[str, list[int]] = {}
    if dep.apis:
        groups["api"] = [p.pid for p in dep.apis]
    if dep.workers:
        groups["workers"] = [p.pid for p in dep.workers]
    return CpuMeter({**groups, **stack.server_pids()}, generator)


def per_event_us(cpu: dict[str, float], events: int) -> dict[str, float | None]:
    """CPU µs per event of each group, and the sum of every group but the load
    generator (wall time left out)."""
    if not events:
        return {name: None for name in cpu if name != "wall"}
    out: dict[str, float | None] = {
        name: round(seconds * 1e6 / events, 1)
        for name, seconds in cpu.items()
        if name != "wall"
    }
    out[TOTAL] = round(sum(v or 0.0 for k, v in out.items() if k != GENERATOR), 1)
    return out


# --- the COPY ceiling --------------------------------------------------------------

COPY_BATCH = 1000
COPY_COLUMNS = [
    "event_id", "event_type", "user_id", "event_timestamp", "properties",
    "enrichment", "correlation_id", "received_at", "processed_by", "attempts",
]  # fmt: skip


def scratch_rows(count: int) -> list[tuple[Any, ...]]:
    """Rows like ``processed_events``' for the scratch table."""
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


@contextlib.asynccontextmanager
async def scratch_table(db: asyncpg.Connection) -> AsyncIterator[None]:
    """``bench_scratch``, a copy of ``processed_events`` (columns, indexes)."""
    await db.execute("DROP TABLE IF EXISTS bench_scratch")
    await db.execute("CREATE TABLE bench_scratch (LIKE processed_events INCLUDING ALL)")
    try:
        yield
    finally:
        await db.execute("DROP TABLE IF EXISTS bench_scratch")


async def copy_batches(conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> None:
    """COPY ``rows`` into ``bench_scratch``, one commit per 1,000."""
    for i in range(0, len(rows), COPY_BATCH):
        await conn.copy_records_to_table(
            "bench_scratch", records=rows[i : i + COPY_BATCH], columns=COPY_COLUMNS
        )


async def copy_ceiling(stack: Stack, rows: int) -> float:
    """Rows/s that PostgreSQL takes with COPY into a copy of ``processed_events``,
    1,000 rows per commit: the most this database stores on this machine without
    any EventFlow code in the way."""
    db = await stack.db()
    data = scratch_rows(rows)
    async with scratch_table(db):
        await db.execute("CHECKPOINT")
        start = time.perf_counter()
        await copy_batches(db, data)
        elapsed = time.perf_counter() - start
        count = await db.fetchval("SELECT count(*) FROM bench_scratch")
    if count != rows:
        raise BenchError(f"COPY ceiling: {count} rows stored, expected {rows}")
    return round(rows / elapsed, 1)


# --- waiting for the workers -------------------------------------------------------


async def wait_drained(
    stack: Stack,
    stream: str,
    limit_s: float,
    expected: int | None = None,
    settle_s: float = 0.0,
) -> tuple[dict[str, int], float]:
    """Wait until every partition stream is empty (workers delete what they have
    acknowledged, after the commit) and PostgreSQL has settled ``expected`` events
    (default: every row of ``raw_events``, unchanged for ``settle_s`` so that
    requests in flight when the load stopped are counted). Returns the counts and
    the wait.

    Polls Redis (``XLEN``, nearly free) and counts rows only once the streams are
    empty: counting the growing tables every 100 ms scans them and would add to
    PostgreSQL's CPU per event."""
    redis = await stack.redis()
    keys = [partition_stream(stream, p) for p in range(stack.partitions)]
    start = time.monotonic()
    last_raw = -1
    while True:
        async with redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.xlen(key)
            lengths = await pipe.execute()
        waited = time.monotonic() - start
        if sum(lengths) == 0 or waited > limit_s:
            counts = await stack.counts()
            done = counts["processed"] + counts["failed"]
            if waited > limit_s:
                return counts, waited
            if expected is not None and done >= expected:
                return counts, waited
            if expected is None and done >= counts["raw"]:
                if counts["raw"] == last_raw or settle_s <= 0:
                    return counts, waited
                last_raw = counts["raw"]
                await asyncio.sleep(settle_s)
                continue
        await asyncio.sleep(0.05)


# --- drain: workers find a stream filled beforehand --------------------------------

PRELOAD_CHUNK = 5000
USERS = 1000  # distinct partition keys in the drain's events
_PROPS: dict[str, dict[str, Any]] = {
    "purchase": {"amount": 12.5, "currency": "EUR", "quantity": 1},
    "page_view": {"page": "/pricing", "duration_ms": 1200},
    "user_signup": {"email": "user-9@example.com", "plan": "pro"},
    "custom": {"name": "video.played", "value": 3},
}


def stream_keys(stream: str, partitions: int) -> list[str]:
    """Every Redis key a deployment on ``stream`` may have made."""
    keys = [f"{stream}:workers", f"{stream}:stats", f"{stream}:quarantine"]
    for p in range(partitions):
        key = partition_stream(stream, p)
        keys += [key, f"{key}:lease"]
    return keys


async def wait_owned(
    stack: Stack, dep: Deployment, workers: int, ttl_ms: int, limit_s: float = 90.0
) -> float:
    """Wait until ``workers`` workers are registered and partition p is held by the
    (p mod N)-th of them by name, as the ownership rules settle it; returns the
    time it took."""
    redis = await stack.redis()
    streams = Streams(redis, dep.stream, GROUP, stack.partitions)
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


@contextlib.asynccontextmanager
async def owned_deployment(
    stack: Stack,
    name: str,
    partitions: int,
    apis: int,
    workers: int,
    ttl_ms: int,
    log: Any = None,
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
        settled = await wait_owned(stack, dep, workers, ttl_ms)
        yield dep, settled
    finally:
        codes = stack.teardown(dep)
        bad = {name: code for name, code in codes.items() if code not in (0, None)}
        if bad and log is not None:
            log(f"  processes exited with {bad}")
        with contextlib.suppress(Exception):
            await (await stack.redis()).delete(*stream_keys(stream, partitions))


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


async def staged_drain(
    stack: Stack,
    engine: AsyncEngine,
    partitions: int,
    workers: int,
    total: int,
    ttl_ms: int,
    log: Any = None,
) -> dict[str, Any]:
    """``workers`` workers find ``total`` events waiting in ``partitions``
    partitions (in ``raw_events`` and in the streams, as the API leaves them). The
    events are put in ``raw_events`` and in staging streams while the workers
    settle their partitions, then moved under the workers' keys at once
    (``RENAME``, one MULTI), which wakes their blocked reads: the rate and the CPU
    per event leave the workers' start-up out and count every batch."""
    name = f"drain-p{partitions}-w{workers}"
    deploying = owned_deployment(stack, name, partitions, 0, workers, ttl_ms, log)
    async with deploying as (dep, settled_s):
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
        await (await stack.db()).execute("CHECKPOINT")
        meter = stack_meter(stack, dep, generator=False)
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
            stack, dep.stream, max(120.0, total / 500), expected=total
        )
        cpu = meter.stop()
        db = await stack.db()
        row = await db.fetchrow(_DRAIN_FIGURES)
        assert row is not None
        violations = await db.fetchval(_ORDER_CHECK)
        republished = await db.fetchval(
            "SELECT count(*) FROM raw_events WHERE publish_count > 1"
        )
        unsettled = await db.fetchval("SELECT count(*) FROM unsettled_events")
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
        # From the first commit on, the first batch left out.
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
