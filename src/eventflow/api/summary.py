"""``GET /metrics/summary``: the state of the whole deployment, as JSON.

Counts come from PostgreSQL and the queue from Redis, so the answer is the same
whichever API process serves it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import text

from eventflow.api.deps import Context, Read
from eventflow.pipeline.ownership import partition_owners
from eventflow.pipeline.streams import combine

router = APIRouter(tags=["operations"])

_COUNTS = text(
    """
    SELECT
        (SELECT count(*) FROM raw_events) AS received,
        (SELECT count(*) FROM processed_events) AS processed,
        (SELECT count(*) FROM failed_events) AS failed,
        (SELECT count(*) FROM raw_events WHERE status = 'accepted') AS unsettled
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


@router.get("/metrics/summary", response_model=Summary)
async def summary(ctx: Context, _: Read) -> Summary:
    """Totals (received = accepted into ``raw_events``), the queue, the processing
    rate over the last minute and the time from receipt to stored row."""
    async with ctx.engine.connect() as conn:
        counts = (await conn.execute(_COUNTS)).one()
        recent = (await conn.execute(_RECENT)).one()
    states = await ctx.streams.states()
    owners = await partition_owners(ctx.redis, ctx.streams)
    state = combine(states)
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
        processing_rate_per_second=round(recent.n / 60, 3),
        avg_processing_time_ms=_ms(recent.avg_s),
        p95_processing_time_ms=_ms(recent.p95_s),
        partitions=[
            PartitionOut(
                partition=p,
                stream=ctx.streams.partitions[p].stream,
                length=s.length,
                lag=s.lag,
                pending=s.pending,
                owner=owner,
            )
            for p, (s, owner) in enumerate(zip(states, owners, strict=True))
        ],
        timestamp=datetime.now(UTC),
    )
