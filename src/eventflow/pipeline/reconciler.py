"""Republishes accepted events that Redis no longer holds.

An accepted event has a row in ``unsettled_events`` until a worker settles it.
If Redis lost it (restart without persistence, FLUSHALL, a failed
publish, an API killed between commit and publish), nothing would ever process it.
The reconciler finds such events and publishes them again. An event is only
republished when it was published (``published_at``) well before the oldest entry
that Redis still has to deliver or acknowledge, so events that are merely queued
behind a backlog are left alone. Duplicates it might still create are harmless:
workers write with ``ON CONFLICT (event_id) DO NOTHING``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow.metrics import Metrics
from eventflow.pipeline.streams import Streams
from eventflow.store.events import event_from_raw

log = logging.getLogger(__name__)

LOCK_KEY = 815002
PUBLISH_SLACK = timedelta(seconds=5)

_CLAIM = text(
    """
    WITH stale AS (
        SELECT u.received_at, u.event_id
        FROM unsettled_events u
        JOIN raw_events r
            ON r.received_at = u.received_at AND r.event_id = u.event_id
        WHERE r.published_at < :cutoff
        ORDER BY r.published_at
        LIMIT :limit
        FOR UPDATE OF u SKIP LOCKED
    )
    UPDATE raw_events r SET published_at = now(), publish_count = publish_count + 1
    FROM stale
    WHERE r.event_id = stale.event_id AND r.received_at = stale.received_at
    RETURNING r.event_id, r.event_type, r.user_id, r.event_timestamp, r.properties,
        r.body_hash, r.correlation_id, r.received_at, r.partition_key,
        r.schema_version
    """
)


async def reconcile_once(
    engine: AsyncEngine,
    streams: Streams,
    metrics: Metrics,
    min_age: timedelta,
    limit: int = 5000,
    publish_slack: timedelta = PUBLISH_SLACK,
    stuck_after: timedelta | None = None,
) -> int:
    """One pass; returns how many events were republished.

    ``min_age``: leave events younger than this alone. ``publish_slack``: how much
    earlier than the oldest entry Redis still holds an event's ``published_at``
    must be (covers the gap between the commit and the XADD, and clock skew).
    ``stuck_after``: entries pending longer than this (a worker will dead-letter
    them as poison) do not hold the cutoff back.
    """
    stuck_ms = None if stuck_after is None else int(stuck_after.total_seconds() * 1000)
    oldest_ms = await streams.oldest_unsettled_ms(stuck_ms)
    cutoff = datetime.now(UTC) - min_age
    if oldest_ms is not None:
        oldest = datetime.fromtimestamp(oldest_ms / 1000, UTC)
        cutoff = min(cutoff, oldest - publish_slack)
    async with engine.begin() as conn:
        locked = await conn.scalar(
            text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": LOCK_KEY}
        )
        if not locked:
            return 0
        rows = (await conn.execute(_CLAIM, {"cutoff": cutoff, "limit": limit})).all()
        events = [event_from_raw(r) for r in rows]
        # Publish inside the transaction: if Redis fails, published_at rolls back.
        await streams.publish(events)
    if events:
        metrics.republished.inc(len(events))
        log.warning(
            "republished accepted events that Redis did not hold",
            extra={"events": len(events), "cutoff": cutoff.isoformat()},
        )
    return len(events)
