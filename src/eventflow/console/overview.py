"""The overview: the pipeline now, and the last hour minute by minute, from
PostgreSQL and Redis (no Prometheus needed)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from redis.asyncio import Redis
from sqlalchemy import TextClause, text

from eventflow.api.context import ApiContext
from eventflow.api.summary import PartitionOut, Recent, queue_state, recent_processing
from eventflow.pipeline.streams import StreamState

MINUTES = 60
SAMPLE_EVERY_S = 15


def _per_minute(table: str, column: str, extra: str = "") -> TextClause:
    """Rows of the last hour by minutes ago, read through ``column``'s index."""
    return text(
        f"SELECT floor(extract(epoch FROM now() - {column}) / 60)::int AS ago, "
        f"count(*) AS n{extra} FROM {table} "
        f"WHERE {column} > now() - interval '60 minutes' GROUP BY 1"
    )


_RECEIVED = _per_minute("raw_events", "received_at")
_PROCESSED = _per_minute(
    "processed_events",
    "processed_at",
    ", percentile_cont(0.95) WITHIN GROUP ("
    "ORDER BY extract(epoch FROM processed_at - received_at)) AS p95_s",
)
_FAILED = _per_minute("failed_events", "failed_at")
_NOW = text(
    """
    SELECT
        (SELECT count(*) FROM raw_events
         WHERE received_at > now() - interval '60 seconds') AS received_last_min,
        (SELECT count(*) FROM unsettled_events) AS unsettled,
        (SELECT count(*) FROM failed_events WHERE replayed_at IS NULL) AS dead
    """
)


@dataclass
class Overview:
    in_per_s: float
    recent: Recent
    unsettled: int
    dead_letters: int
    queue: StreamState | None
    partitions: list[PartitionOut]
    postgres: str | None
    redis: str | None
    received: list[float | None] = field(default_factory=list)
    processed: list[float | None] = field(default_factory=list)
    latency_p95_ms: list[float | None] = field(default_factory=list)
    failed: list[float | None] = field(default_factory=list)
    backlog: list[float | None] = field(default_factory=list)


def _by_minute(rows: Sequence[tuple[int, float | None]]) -> list[float | None]:
    """Oldest minute first; minutes without rows are 0."""
    series: list[float | None] = [0.0] * MINUTES
    for ago, value in rows:
        if 0 <= ago < MINUTES:
            series[MINUTES - 1 - ago] = value
    return series


async def _backlog_history(redis: Redis, key: str, backlog: int) -> list[float | None]:
    """Backlog samples of the last hour (taken while someone looks at the
    overview, at most one per ``SAMPLE_EVERY_S``), by minute."""
    now = time.time()
    last = await redis.zrevrange(key, 0, 0, withscores=True)
    if not last or now - float(last[0][1]) >= SAMPLE_EVERY_S:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zadd(key, {f"{now:.3f}:{backlog}": now})
            pipe.zremrangebyscore(key, 0, now - MINUTES * 60)
            pipe.expire(key, MINUTES * 60 * 2)
            await pipe.execute()
    samples = await redis.zrangebyscore(
        key, now - MINUTES * 60, "+inf", withscores=True
    )
    series: list[float | None] = [None] * MINUTES
    for pair in samples:  # (member, score)
        member, score = pair[0], pair[1]
        raw = member.decode() if isinstance(member, bytes) else str(member)
        ago = int((now - float(score)) // 60)
        if 0 <= ago < MINUTES:
            value = float(raw.rsplit(":", 1)[1])
            current = series[MINUTES - 1 - ago]
            series[MINUTES - 1 - ago] = max(value, current or 0.0)
    return series


async def overview(ctx: ApiContext) -> Overview:
    async with ctx.engine.connect() as conn:
        now = (await conn.execute(_NOW)).one()
        recent = await recent_processing(conn)
        received = [(r.ago, float(r.n)) for r in await conn.execute(_RECEIVED)]
        processed = (await conn.execute(_PROCESSED)).all()
        failed = [(r.ago, float(r.n)) for r in await conn.execute(_FAILED)]
    queue: StreamState | None = None
    partitions: list[PartitionOut] = []
    backlog: list[float | None] = [None] * MINUTES
    if ctx.redis_error is None:
        queue, partitions = await queue_state(ctx.redis, ctx.streams)
        backlog = await _backlog_history(
            ctx.redis, f"{ctx.streams.name}:console:backlog", queue.lag + queue.pending
        )
    latency = _by_minute(
        [
            (r.ago, None if r.p95_s is None else round(float(r.p95_s) * 1000, 1))
            for r in processed
        ]
    )
    return Overview(
        in_per_s=round(now.received_last_min / 60, 3),
        recent=recent,
        unsettled=now.unsettled,
        dead_letters=now.dead,
        queue=queue,
        partitions=partitions,
        postgres=ctx.postgres_error,
        redis=ctx.redis_error,
        received=_by_minute(received),
        processed=_by_minute([(r.ago, float(r.n)) for r in processed]),
        latency_p95_ms=[None if v == 0.0 else v for v in latency],
        failed=_by_minute(failed),
        backlog=backlog,
    )
