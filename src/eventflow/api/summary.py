"""``GET /metrics/summary``: the state of the whole deployment, as JSON.

Counts come from PostgreSQL and the queue from Redis, so the answer is the same
whichever API process serves it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter
from pydantic import BaseModel
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from eventflow.api.deps import Context, Read
from eventflow.pipeline.ownership import partition_owners
from eventflow.pipeline.streams import Streams, StreamState, combine

router = APIRouter(tags=["operations"])

_COUNTS = text(
    """
    SELECT
        (SELECT count(*) FROM raw_events) AS received,
        (SELECT count(*) FROM processed_events) AS processed,
        (SELECT count(*) FROM failed_events) AS failed,
        (SELECT count(*) FROM unsettled_events) AS unsettled
    """
)

_RECENT = text(
    """
    SELECT count(*) AS n,
        avg(extract(epoch FROM processed_at - received_at)) AS avg_s,
        percentile_cont(0.95) WITHIN GROUP (
            ORDER BY extract(epoch FROM processed_at - received_at)) AS p95_s
    FROM processed_events
    WHERE processed_at > now() - interval '60 seconds'
    """
)


class PartitionOut(BaseModel):
    partition: int
    stream: str
    length: int
    lag: int
    pending: int
    owner: str | None


class Summary(BaseModel):
    received: int
    processed: int
    failed: int
    duplicates: int
    unsettled: int
    queue_length: int
    pending_messages: int
    consumer_lag: int
    consumers: int
    oldest_pending_age_seconds: float
    processing_rate_per_second: float
    avg_processing_time_ms: float | None
    p95_processing_time_ms: float | None
    partitions: list[PartitionOut]
    timestamp: datetime


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(float(seconds) * 1000, 3)


class Recent(BaseModel):
    """Processing over the last minute."""

    processed: int
    rate_per_second: float
    avg_ms: float | None
    p95_ms: float | None


async def recent_processing(conn: AsyncConnection) -> Recent:
    recent = (await conn.execute(_RECENT)).one()
    return Recent(
        processed=recent.n,
        rate_per_second=round(recent.n / 60, 3),
        avg_ms=_ms(recent.avg_s),
        p95_ms=_ms(recent.p95_s),
    )


async def queue_state(
    redis: Redis, streams: Streams
) -> tuple[StreamState, list[PartitionOut]]:
    """The whole queue, and each partition with its owner."""
    states = await streams.states()
    owners = await partition_owners(redis, streams)
    partitions = [
        PartitionOut(
            partition=p,
            stream=streams.partitions[p].stream,
            length=s.length,
            lag=s.lag,
            pending=s.pending,
            owner=owner,
        )
        for p, (s, owner) in enumerate(zip(states, owners, strict=True))
    ]
    return combine(states), partitions


@router.get("/metrics/summary", response_model=Summary)
async def summary(ctx: Context, _: Read) -> Summary:
    """Totals (received = accepted into ``raw_events``), the queue, the processing
    rate over the last minute and the time from receipt to stored row."""
    async with ctx.engine.connect() as conn:
        counts = (await conn.execute(_COUNTS)).one()
        recent = await recent_processing(conn)
    state, partitions = await queue_state(ctx.redis, ctx.streams)
    duplicates = await ctx.streams.duplicates()
    return Summary(
        received=counts.received,
        processed=counts.processed,
        failed=counts.failed,
        duplicates=duplicates,
        unsettled=counts.unsettled,
        queue_length=state.length,
        pending_messages=state.pending,
        consumer_lag=state.lag,
        consumers=state.consumers,
        oldest_pending_age_seconds=round(state.oldest_pending_age_s, 3),
        processing_rate_per_second=recent.rate_per_second,
        avg_processing_time_ms=recent.avg_ms,
        p95_processing_time_ms=recent.p95_ms,
        partitions=partitions,
        timestamp=datetime.now(UTC),
    )
