"""Batched, idempotent reads and writes. One statement per batch on the hot path."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal
from uuid import UUID

import asyncpg
from pydantic import AfterValidator, BaseModel, Field
from sqlalchemy import (
    Boolean,
    Table,
    and_,
    case,
    literal,
    literal_column,
    select,
    text,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventflow.jsoncodec import dumps
from eventflow.models import Event
from eventflow.pipeline.streams import partition_key, partition_of
from eventflow.store.tables import (
    Warmup,
    failed_events,
    processed_events,
    raw_events,
    raw_transaction,
    unsettled_events,
)

if TYPE_CHECKING:
    from eventflow.pipeline.ownership import Fence

# A search's text cannot hold NUL (PostgreSQL text cannot), nor be unbounded.
SearchText = Annotated[str, Field(max_length=255, pattern=r"^[^\x00]*$")]


def _utc(value: datetime) -> datetime:
    """A naive time is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


AwareTime = Annotated[datetime, AfterValidator(_utc)]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # an argument for statements warmed up

# The group commit talks to asyncpg directly (a prepared statement each, no
# SQLAlchemy statement compilation or greenlet switch per round trip): it runs for
# every group of concurrent requests.

# The hot path's statements look rows up by key, a few per event, in tables
# partitioned by day. PostgreSQL keeps a prepared statement's reusable plan once
# it judges it as cheap as planning each execution, until the table's statistics
# change; a plan chosen while the day's partition was empty or small (a new day,
# a table emptied) read that partition whole for every group, a cost that grew
# with the partition until the next automatic ANALYZE (at 38,000 rows a group of
# 32 events took 13 ms instead of 1). With sequential scans off for their
# transactions, every plan of these statements, reusable or not, looks rows up
# through the keys' indexes, and stays right as the partitions grow. Set by the
# first statement of each transaction (a lock it takes anyway): no round trip.
_NO_SEQ_SCANS = "set_config('enable_seqscan', 'off', true)"

# Events whose id is being stored by another transaction wait here for it to end
# (the tables are partitioned by acceptance time, so no unique key spans a resend
# and its first copy): the statement after this one then sees the first copy.
#
# It also sets, for the rest of the transaction, what the statements after it are
# planned with (``_NO_SEQ_SCANS``).
_LOCK_IDS = (
    f"SELECT {_NO_SEQ_SCANS}, (SELECT count("
    "pg_advisory_xact_lock(hashtextextended(CAST(i AS text), 815004))) "
    "FROM unnest($1::uuid[]) AS i)"
)


# Insert every event of a group commit that is not stored yet (within the
# duplicate-detection window), each with its row in unsettled_events; report, for
# each id, whether this statement inserted it or which body it already had (its
# first copy in the window). The probe reads the snapshot taken before the
# INSERT, so it finds only rows that existed before. It is a lateral subquery
# with a limit: one lookup by key per incoming event, whatever the statistics
# said when the plan was made (a join there was planned, on a day's partition
# still empty, as reading the whole window once).
_INSERT_RAW = """
    WITH incoming AS (
        SELECT * FROM unnest(
            $1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[],
            $6::text[], $7::text[], $8::timestamptz[], $9::int[], $10::text[],
            $11::text[]
        ) AS t(event_id, event_type, user_id, ts, props, body_hash, cid, received_at,
               version, source, pkey)
    ),
    probed AS (
        SELECT incoming.*, first.body_hash AS first_hash,
            first.received_at AS first_received
        FROM incoming LEFT JOIN LATERAL (
            SELECT r.body_hash, r.received_at FROM raw_events r
            WHERE r.event_id = incoming.event_id AND r.received_at >= $12
            ORDER BY r.received_at LIMIT 1
        ) first ON true
    ),
    ins AS (
        INSERT INTO raw_events (event_id, event_type, user_id, event_timestamp,
            properties, body_hash, correlation_id, received_at, published_at,
            schema_version, source, partition_key)
        SELECT event_id, event_type, user_id, ts, CAST(props AS jsonb), body_hash,
            cid, received_at, received_at, version, source, pkey
        FROM probed WHERE first_received IS NULL
        ON CONFLICT (event_id, received_at) DO NOTHING
        RETURNING event_id, received_at
    ),
    pending AS (
        INSERT INTO unsettled_events (received_at, event_id)
        SELECT received_at, event_id FROM ins
    )
    SELECT event_id, NULL AS body_hash, NULL::timestamptz AS received_at,
        true AS inserted
    FROM ins
    UNION ALL
    SELECT event_id, first_hash, first_received, false
    FROM probed WHERE first_received IS NOT NULL
"""


def event_from_raw(row: Any, latest_schema: bool = False) -> Event:
    """An accepted event rebuilt from its ``raw_events`` row; with
    ``latest_schema``, to be judged by its type's latest schema version."""
    return Event(
        event_id=row.event_id,
        event_type=row.event_type,
        user_id=row.user_id,
        timestamp=row.event_timestamp,
        properties=row.properties,
        received_at=row.received_at,
        correlation_id=row.correlation_id or "",
        body_hash=row.body_hash,
        schema_version=None if latest_schema else row.schema_version,
        partition_key=row.partition_key,
    )


@dataclass(frozen=True, slots=True)
class Existing:
    body_hash: str
    received_at: datetime


@dataclass(frozen=True, slots=True)
class InsertOutcome:
    inserted: set[UUID]
    existing: dict[UUID, Existing]


# The group commit's statements, with nothing to store (``tables.warm_pool``).
INGEST_WARMUP: list[Warmup] = [
    (_LOCK_IDS, ([],)),
    (_INSERT_RAW, (*([],) * 11, _EPOCH)),
]


async def insert_raw_events(
    engine: AsyncEngine, events: Sequence[Event], window: timedelta
) -> InsertOutcome:
    """Store accepted events in ``raw_events`` in one transaction (group commit).

    An id stored less than ``window`` before (the duplicate-detection window) is
    reported as existing instead."""
    ids = [e.event_id for e in events]
    args = (
        ids,
        [e.event_type for e in events],
        [e.user_id for e in events],
        [e.timestamp for e in events],
        [dumps(e.properties).decode() for e in events],
        [e.body_hash for e in events],
        [e.correlation_id for e in events],
        [e.received_at for e in events],
        [e.schema_version for e in events],
        [e.source for e in events],
        [e.partition_key for e in events],
        min(e.received_at for e in events) - window,
    )
    inserted: set[UUID] = set()
    existing: dict[UUID, Existing] = {}
    async with raw_transaction(engine) as conn:
        await conn.execute(_LOCK_IDS, sorted(set(ids), key=lambda i: i.bytes))
        rows = await conn.fetch(_INSERT_RAW, *args)
    for event_id, hash_, received_at, was_inserted in rows:
        if was_inserted:
            inserted.add(event_id)
        else:
            existing[event_id] = Existing(hash_, received_at)
    return InsertOutcome(inserted, existing)


@dataclass(slots=True)
class ProcessedRow:
    event: Event
    enrichment: dict[str, Any]
    attempts: int

    @property
    def key(self) -> str:
        return partition_key(self.event)


@dataclass(slots=True)
class FailedRow:
    event_id: UUID
    event_type: str | None
    payload: str
    error: str
    error_type: str
    attempts: int
    correlation_id: str | None
    stream_entry_id: str
    # The event's acceptance time (the partition it is stored in); for an entry
    # that held no event, the entry's creation time.
    received_at: datetime
    # The event's partition key (``partition_key``); None for an entry that held
    # no event, whose id stands for it.
    key: str | None = None


# The worker's write, like the group commit, talks to asyncpg directly: it runs
# for every batch, and a light flow of events makes batches of one or two.
_INSERT_PROCESSED = """
    WITH ins AS (
        INSERT INTO processed_events (event_id, event_type, user_id,
            event_timestamp, properties, enrichment, correlation_id, received_at,
            processed_by, attempts, schema_version)
        SELECT t.event_id, t.event_type, t.user_id, t.ts, CAST(t.props AS jsonb),
            CAST(t.enrichment AS jsonb), t.cid, t.received_at, $11, t.attempts,
            t.version
        FROM unnest(
            $1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[],
            $6::text[], $7::text[], $8::timestamptz[], $9::int[], $10::int[]
        ) AS t(event_id, event_type, user_id, ts, props, enrichment, cid,
               received_at, attempts, version)
        ON CONFLICT (event_id, received_at) DO NOTHING
        RETURNING event_id
    ),
    keys AS (
        SELECT * FROM unnest($1::uuid[], $8::timestamptz[])
            AS k(event_id, received_at)
    ),
    settle AS (
        DELETE FROM unsettled_events u USING keys
        WHERE u.received_at = keys.received_at AND u.event_id = keys.event_id
    ),
    -- Found by key (= ANY), not by a join: a join's plan, made while the table
    -- was empty, would read every dead letter of the batch's days each time.
    resolved AS (
        DELETE FROM failed_events f
        WHERE f.event_id = ANY($1::uuid[]) AND f.received_at BETWEEN $12 AND $13
            AND EXISTS (SELECT 1 FROM keys
                WHERE keys.event_id = f.event_id
                    AND keys.received_at = f.received_at)
        RETURNING f.event_id, f.received_at
    )
    -- The events stored, then those whose dead letter was resolved (``_REVIVE``).
    SELECT event_id, NULL::timestamptz FROM ins
    UNION ALL
    SELECT event_id, received_at FROM resolved
"""

# Only an event that was a dead letter had its raw row's status changed: a
# statement of its own, run when the processed insert resolved a dead letter.
_REVIVE = """
    UPDATE raw_events r SET status = 'processed', settled_at = now()
    FROM unnest($1::uuid[], $2::timestamptz[]) AS k(event_id, received_at)
    WHERE r.event_id = ANY($1::uuid[]) AND r.received_at = ANY($2::timestamptz[])
        AND r.received_at BETWEEN $3 AND $4
        AND r.event_id = k.event_id AND r.received_at = k.received_at
"""

_INSERT_FAILED = """
    WITH ins AS (
        INSERT INTO failed_events (event_id, event_type, payload, error, error_type,
            attempts, correlation_id, stream_entry_id, received_at)
        SELECT * FROM unnest(
            $1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[],
            $7::text[], $8::text[], $9::timestamptz[]
        ) AS t(event_id, event_type, payload, error, error_type, attempts, cid,
               entry, received_at)
        -- An event already processed is never also a dead letter.
        WHERE NOT EXISTS (
            SELECT 1 FROM processed_events p
            WHERE p.event_id = t.event_id AND p.received_at = t.received_at)
        ON CONFLICT (event_id, received_at) DO UPDATE SET
            error = EXCLUDED.error, error_type = EXCLUDED.error_type,
            attempts = failed_events.attempts + EXCLUDED.attempts,
            stream_entry_id = EXCLUDED.stream_entry_id,
            failed_at = now(), replayed_at = NULL
        WHERE NOT EXISTS (
            SELECT 1 FROM processed_events p
            WHERE p.event_id = EXCLUDED.event_id
                AND p.received_at = EXCLUDED.received_at)
        RETURNING event_id, received_at
    ),
    settle AS (
        DELETE FROM unsettled_events u USING ins
        WHERE u.received_at = ins.received_at AND u.event_id = ins.event_id
    )
    -- By key (= ANY), not by a join: a join's plan, made while the partition
    -- was empty, would read the whole range of times each time.
    UPDATE raw_events r SET status = 'failed', settled_at = now()
    WHERE r.event_id = ANY(ARRAY(SELECT event_id FROM ins))
        AND r.received_at = ANY(ARRAY(SELECT received_at FROM ins))
        AND r.received_at BETWEEN $10 AND $11
        AND EXISTS (SELECT 1 FROM ins
            WHERE ins.event_id = r.event_id AND ins.received_at = r.received_at)
"""


# Two copies of one event (a redelivery, a republished entry) may be written by
# two transactions at once, one storing it and one dead-lettering it. Each first
# takes the advisory lock of its events' buckets, in a statement of its own, so
# the second waits for the first and its statements then see the first's rows
# (the processed insert deletes the dead letter, the dead-letter insert skips a
# processed event): the event ends in one table. Copies share their key, so their
# bucket. A bucket is the key's partition among LOCK_BUCKETS (the most partitions
# there can be): with a number of partitions that divides it, the batches of
# different partitions never share a bucket, and a transaction takes at most
# LOCK_BUCKETS locks, however large. Nothing is written to take them.
# Whatever else settles or revives events (a dead-letter replay, a reprocessing
# run) takes the same locks first (``lock_settling``).
LOCK_BUCKETS = 1024
_TAKE_BUCKETS = "SELECT count(pg_advisory_xact_lock(815005, b)) FROM unnest({}) AS b"
_LOCK_BUCKETS = f"SELECT {_NO_SEQ_SCANS}, ({_TAKE_BUCKETS.format('$1::int[]')})"


def lock_buckets(keys: Iterable[str]) -> list[int]:
    """The settle locks' buckets of these partition keys, in the order to take
    them (ascending, after any fence: no two transactions wait in a circle)."""
    return sorted({partition_of(key, LOCK_BUCKETS) for key in keys})


async def lock_settling(conn: AsyncConnection, events: Iterable[Event]) -> None:
    """Take the settle locks of ``events`` in ``conn``'s transaction: a worker's
    transaction holding a copy of one of them finishes first, and one that
    starts later waits for this transaction and then sees its rows."""
    buckets = lock_buckets(partition_key(e) for e in events)
    await conn.execute(
        text(_TAKE_BUCKETS.format("CAST(:buckets AS int[])")), {"buckets": buckets}
    )


# The worker's statements, with nothing to write (``tables.warm_pool``).
WORKER_WARMUP: list[Warmup] = [
    (_LOCK_BUCKETS, ([],)),
    (
        _INSERT_PROCESSED,
        ([], [], [], [], [], [], [], [], [], [], "", _EPOCH, _EPOCH),
    ),
    (_REVIVE, ([], [], _EPOCH, _EPOCH)),
    (_INSERT_FAILED, ([], [], [], [], [], [], [], [], [], _EPOCH, _EPOCH)),
]


async def write_results(
    conn: asyncpg.Connection,
    processed: Sequence[ProcessedRow],
    failed: Sequence[FailedRow],
    worker: str,
    fence: Fence | None = None,
) -> set[UUID]:
    """Write one worker batch inside the caller's transaction
    (``store.tables.raw_transaction``).

    Returns the ids newly inserted into ``processed_events``; ids missing from the
    result were already there (a redelivery), which changes nothing.
    """
    inserted: set[UUID] = set()
    if fence is not None:
        # First: it serialises the commits of a partition and refuses a batch
        # whose worker no longer owns the partition.
        await fence.check(conn)
    # Processed rows are inserted in the order given (the stream's order), so
    # that processed_events.id follows acceptance order within a partition. No
    # deadlock between batches that share events: each first takes their
    # buckets' locks (``lock_buckets``) before it writes anything.
    keys = [p.key for p in processed] + [f.key or str(f.event_id) for f in failed]
    await conn.execute(_LOCK_BUCKETS, lock_buckets(keys))
    # The range of acceptance times: PostgreSQL reads only those partitions.
    times = [p.event.received_at for p in processed] + [f.received_at for f in failed]
    lo, hi = min(times), max(times)
    if processed:
        events = [p.event for p in processed]
        rows = await conn.fetch(
            _INSERT_PROCESSED,
            [e.event_id for e in events],
            [e.event_type for e in events],
            [e.user_id for e in events],
            [e.timestamp for e in events],
            [dumps(e.properties).decode() for e in events],
            [dumps(p.enrichment).decode() for p in processed],
            [e.correlation_id for e in events],
            [e.received_at for e in events],
            [p.attempts for p in processed],
            [e.schema_version for e in events],
            worker,
            lo,
            hi,
        )
        inserted = {row[0] for row in rows if row[1] is None}
        revived = [(row[0], row[1]) for row in rows if row[1] is not None]
        if revived:
            await conn.execute(
                _REVIVE, [k[0] for k in revived], [k[1] for k in revived], lo, hi
            )
    if failed:
        await conn.execute(
            _INSERT_FAILED,
            [f.event_id for f in failed],
            [f.event_type for f in failed],
            [f.payload for f in failed],
            [f.error for f in failed],
            [f.error_type for f in failed],
            [f.attempts for f in failed],
            [f.correlation_id for f in failed],
            [f.stream_entry_id for f in failed],
            [f.received_at for f in failed],
            lo,
            hi,
        )
    return inserted


async def mark_quarantined(conn: AsyncConnection, ids: Sequence[UUID]) -> None:
    """Settle events whose entries went to the quarantine stream."""
    await conn.execute(
        text(
            """
            WITH settled AS (
                DELETE FROM unsettled_events
                WHERE event_id = ANY(CAST(:ids AS uuid[]))
                RETURNING received_at, event_id
            )
            UPDATE raw_events r SET status = 'quarantined', settled_at = now()
            FROM settled
            WHERE r.event_id = settled.event_id
                AND r.received_at = settled.received_at
            """
        ),
        {"ids": list(ids)},
    )


# Literal, not parameters: the planner matches it with the partial index of
# failed and quarantined events (migration 0009).
_SETTLED_ELSEWHERE = literal_column(
    "raw_events.status IN ('failed', 'quarantined')", Boolean
)

# In SQL text: the raw row ``r`` has no unsettled_events row (it is settled).
SETTLED_SQL = (
    "NOT EXISTS (SELECT 1 FROM unsettled_events u "
    "WHERE u.received_at = {r}.received_at AND u.event_id = {r}.event_id)"
)


def with_unsettled() -> Any:
    """``raw_events`` joined with the unsettled_events row each event may have
    (an index probe per row, so a listing keeps its index order)."""
    r, u = raw_events.c, unsettled_events.c
    return raw_events.outerjoin(
        unsettled_events,
        and_(u.received_at == r.received_at, u.event_id == r.event_id),
    )


# The one home of an event's state, from its raw row and ``with_unsettled``
# (migration 0009): on its way while it has a row in unsettled_events; else
# failed or quarantined when its status says so (the rare paths write it); else
# processed.
def effective_status() -> Any:
    return case(
        (unsettled_events.c.event_id.is_not(None), "accepted"),
        (_SETTLED_ELSEWHERE, raw_events.c.status),
        else_="processed",
    )


# --- Finding events (the operator console) -----------------------------------------


class EventSearch(BaseModel):
    """Which stored events to list; every field narrows it. Results are newest
    first, paged by the ``(received_at, event_id)`` of the last row."""

    event_id: UUID | None = None
    correlation_id: SearchText | None = None
    event_type: SearchText | None = None
    user_id: SearchText | None = None
    status: Literal["accepted", "processed", "failed", "quarantined"] | None = None
    since: AwareTime | None = Field(default=None, description="received_at >= since")
    until: AwareTime | None = Field(default=None, description="received_at < until")


class EventRow(BaseModel):
    event_id: UUID
    event_type: str
    user_id: str | None
    status: str
    correlation_id: str | None
    received_at: datetime
    source: str | None


class EventPage(BaseModel):
    items: list[EventRow]
    next: tuple[datetime, UUID] | None = Field(
        description="The keyset of the next page; null on the last page"
    )


def search_query(f: EventSearch, after: tuple[datetime, UUID] | None) -> Any:
    r = raw_events.c
    conds: list[Any] = []
    if f.event_id is not None:
        conds.append(r.event_id == f.event_id)
    if f.correlation_id:
        conds.append(r.correlation_id == f.correlation_id)
    if f.event_type:
        conds.append(r.event_type == f.event_type)
    if f.user_id:
        conds.append(r.user_id == f.user_id)
    if f.status == "accepted":
        conds.append(unsettled_events.c.event_id.is_not(None))
    elif f.status == "processed":
        conds.extend([~_SETTLED_ELSEWHERE, unsettled_events.c.event_id.is_(None)])
    elif f.status:
        conds.extend([r.status == f.status, _SETTLED_ELSEWHERE])
    if f.since:
        conds.append(r.received_at >= f.since)
    if f.until:
        conds.append(r.received_at < f.until)
    if after is not None:
        conds.append(
            tuple_(r.received_at, r.event_id)
            < tuple_(
                literal(after[0], r.received_at.type),
                literal(after[1], r.event_id.type),
            )
        )
    return (
        select(
            r.event_id,
            r.event_type,
            r.user_id,
            effective_status().label("status"),
            r.correlation_id,
            r.received_at,
            r.source,
        )
        .select_from(with_unsettled())
        .where(and_(True, *conds))
        .order_by(r.received_at.desc(), r.event_id.desc())
    )


async def search_events(
    engine: AsyncEngine,
    f: EventSearch,
    limit: int = 50,
    after: tuple[datetime, UUID] | None = None,
) -> EventPage:
    """One page of matching events, read in index order (migration 0008)."""
    async with engine.connect() as conn:
        rows = (
            (await conn.execute(search_query(f, after).limit(limit + 1)))
            .mappings()
            .all()
        )
    items = [EventRow.model_validate(dict(row)) for row in rows[:limit]]
    more = len(rows) > limit
    last = items[-1] if items else None
    return EventPage(
        items=items,
        next=(last.received_at, last.event_id) if more and last else None,
    )


class EventDetail(BaseModel):
    """Everything stored about one event: its body as accepted, where it went."""

    status: str
    raw: dict[str, Any]
    processed: dict[str, Any] | None
    dead_letter: dict[str, Any] | None


async def _copy_of(
    conn: AsyncConnection, table: Table, event_id: UUID, received_at: datetime
) -> Any:
    """The row of ``table`` for the event accepted at ``received_at``."""
    query = select(table).where(
        table.c.event_id == event_id, table.c.received_at == received_at
    )
    return (await conn.execute(query)).mappings().first()


async def event_detail(engine: AsyncEngine, event_id: UUID) -> EventDetail | None:
    """The newest stored copy of ``event_id`` with its processed row or dead
    letter (each read in the partition of its acceptance time)."""
    async with engine.connect() as conn:
        raw = (
            (
                await conn.execute(
                    select(raw_events, effective_status().label("state"))
                    .select_from(with_unsettled())
                    .where(raw_events.c.event_id == event_id)
                    .order_by(raw_events.c.received_at.desc())
                    .limit(1)
                )
            )
            .mappings()
            .first()
        )
        if raw is None:
            return None
        at = raw["received_at"]
        processed = await _copy_of(conn, processed_events, event_id, at)
        failed = await _copy_of(conn, failed_events, event_id, at)
    return EventDetail(
        status=raw["state"],
        raw={k: v for k, v in raw.items() if k != "state"},
        processed=None if processed is None else dict(processed),
        dead_letter=None if failed is None else dict(failed),
    )
