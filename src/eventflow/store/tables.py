"""Tables (SQLAlchemy Core) and the engine factory. Alembic owns the schema."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import asyncpg
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from eventflow.config import Settings

metadata = MetaData()

# The three event tables are partitioned by received_at, the acceptance time
# (migration 0006): keys include it, and each partition is a range of days.
raw_events = Table(
    "raw_events",
    metadata,
    Column("event_id", UUID(as_uuid=True), primary_key=True),
    Column("event_type", String(64), nullable=False),
    Column("user_id", String(255)),
    Column("event_timestamp", DateTime(timezone=True), nullable=False),
    Column("properties", JSONB, nullable=False),
    Column("body_hash", String(64), nullable=False),
    Column("correlation_id", String(128)),
    Column(
        "received_at",
        DateTime(timezone=True),
        primary_key=True,
        server_default=func.now(),
    ),
    # Last time the event was written to the stream (the reconciler moves it on).
    Column("published_at", DateTime(timezone=True), nullable=False),
    Column("publish_count", Integer, nullable=False, server_default=text("1")),
    # Written on the rare paths only (migration 0009): failed, quarantined, a
    # dead letter replayed (back to accepted), a reprocessing run (processed).
    # What an event's state is: ``store.events.effective_status``.
    Column("status", String(16), nullable=False, server_default="accepted"),
    Column("settled_at", DateTime(timezone=True)),
    Column("schema_version", Integer),
    # Who sent it: an API key's name, "anonymous", or null (authentication off).
    Column("source", Text),
    Column("partition_key", Text),
    # Time order, and the console's keyset searches, newest first (migration 0008).
    Index("ix_raw_events_time_id", "received_at", "event_id"),
    Index("ix_raw_events_type_time", "event_type", "received_at", "event_id"),
    Index("ix_raw_events_user_time", "user_id", "received_at", "event_id"),
    Index("ix_raw_events_correlation", "correlation_id", "received_at", "event_id"),
    Index(
        "ix_raw_events_failed_time",
        "received_at",
        "event_id",
        postgresql_where=text("status IN ('failed', 'quarantined')"),
    ),
)

# One narrow row per accepted event that no worker has settled yet: written with
# the event by the API, deleted by the worker that settles it (migration 0009).
unsettled_events = Table(
    "unsettled_events",
    metadata,
    Column("received_at", DateTime(timezone=True), primary_key=True),
    Column("event_id", UUID(as_uuid=True), primary_key=True),
)

processed_events = Table(
    "processed_events",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("event_id", UUID(as_uuid=True), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("user_id", String(255)),
    Column("event_timestamp", DateTime(timezone=True), nullable=False),
    Column("properties", JSONB, nullable=False),
    Column("enrichment", JSONB, nullable=False),
    Column("correlation_id", String(128)),
    Column("received_at", DateTime(timezone=True), primary_key=True),
    Column(
        "processed_at",
        DateTime(timezone=True),
        nullable=False,
        server_default=func.now(),
    ),
    Column("processed_by", String(255), nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("1")),
    Column("schema_version", Integer),
    # Set by a reprocessing run (migration 0007).
    Column("reprocessed_at", DateTime(timezone=True)),
    Column("reprocess_run_id", BigInteger),
    UniqueConstraint("event_id", "received_at", name="uq_processed_events_event"),
    Index("ix_processed_events_type_time", "event_type", "processed_at"),
    Index("ix_processed_events_processed_at", "processed_at"),
)

failed_events = Table(
    "failed_events",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("event_id", UUID(as_uuid=True), nullable=False),
    # Text: a dead letter stores whatever the entry held (migration 0003).
    Column("event_type", Text),
    Column("payload", Text, nullable=False),
    Column("error", Text, nullable=False),
    Column("error_type", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("1")),
    Column("correlation_id", Text),
    Column("stream_entry_id", Text),
    Column(
        "failed_at", DateTime(timezone=True), nullable=False, server_default=func.now()
    ),
    Column("replayed_at", DateTime(timezone=True)),
    Column("replay_count", Integer, nullable=False, server_default=text("0")),
    Column("schema_version", Integer),
    # The event's acceptance time; for an entry that held no event, its failure.
    Column(
        "received_at",
        DateTime(timezone=True),
        primary_key=True,
        server_default=func.now(),
    ),
    UniqueConstraint("event_id", "received_at", name="uq_failed_events_event"),
    Index("ix_failed_events_failed_at", "failed_at"),
    Index("ix_failed_events_type_id", "event_type", "id"),
    Index("ix_failed_events_error_type_id", "error_type", "id"),
)

# One row per stream partition: its fencing token and who holds it (migration 0005).
partition_owners = Table(
    "partition_owners",
    metadata,
    Column("stream", Text, primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("token", BigInteger, nullable=False),
    Column("owner", Text, nullable=False),
    Column(
        "acquired_at",
        DateTime(timezone=True),
        nullable=False,
        server_default=func.now(),
    ),
    Column("committed_at", DateTime(timezone=True)),
)

# The partitions of the event tables and their bounds (migration 0006).
time_partitions = Table(
    "time_partitions",
    metadata,
    Column("parent_table", Text, primary_key=True),
    Column("partition_name", Text, primary_key=True),
    Column("lower_bound", DateTime(timezone=True), nullable=False),
    Column("upper_bound", DateTime(timezone=True), nullable=False),
)

# One row per version of an event type's JSON Schema (see eventflow.schemas).
event_schemas = Table(
    "event_schemas",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("event_type", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("schema", JSONB, nullable=False),
    Column("compatibility", String(16), nullable=False),
    Column(
        "created_at", DateTime(timezone=True), nullable=False, server_default=func.now()
    ),
    UniqueConstraint("event_type", "version", name="uq_event_schemas_version"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("name", Text, nullable=False, unique=True),
    Column("prefix", Text, nullable=False, unique=True),
    Column("key_hash", Text, nullable=False),
    Column("scope", Text, nullable=False),
    Column("rate_limit", Float),
    Column(
        "created_at", DateTime(timezone=True), nullable=False, server_default=func.now()
    ),
    Column(
        "updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()
    ),
    Column("revoked_at", DateTime(timezone=True)),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("key_id", BigInteger),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("target", Text),
    Column("rows", Integer),
    Column("details", JSONB),
    Index("ix_audit_log_at", "at"),
)


def create_engine(
    url: str,
    pool_size: int = 10,
    connect_timeout_s: float = 5.0,
    command_timeout_s: float = 60.0,
    generic_plans: bool = False,
) -> AsyncEngine:
    """An asyncpg-backed engine; one per process, built by the entry point.

    Statement parameters (event data) never appear in SQLAlchemy's errors or logs.

    Every statement is prepared once per connection. Left to choose, PostgreSQL
    plans a prepared statement over the partitioned tables afresh at each
    execution: a plan made for the parameters prunes partitions when it is made,
    which the reusable plan cannot (it prunes them when it starts), so the
    reusable plan always looks costlier. With ``generic_plans`` (the worker's
    engine) the reusable plan is kept: the worker's statements are the same for
    every batch, and planning them each time was about a third of PostgreSQL's
    CPU per event under a light flow. Not for the API: its insert judges the
    duplicates of a batch of up to 1,000 events by plans that need the batch's
    size (with the reusable plan, PostgreSQL's CPU per event in batches tripled).
    """
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=False,
        pool_recycle=1800,
        hide_parameters=True,
        connect_args={
            "server_settings": {
                "application_name": "eventflow",
                # Naive timestamps in messages are UTC, as the API treats them.
                "timezone": "UTC",
                **({"plan_cache_mode": "force_generic_plan"} if generic_plans else {}),
            },
            "timeout": connect_timeout_s,
            "command_timeout": command_timeout_s,
        },
    )


def engine_for(
    settings: Settings, url: str, pool_size: int, generic_plans: bool = False
) -> AsyncEngine:
    """The engine with the settings' timeouts."""
    return create_engine(
        url,
        pool_size,
        settings.db_connect_timeout_s,
        settings.db_command_timeout_s,
        generic_plans,
    )


# A statement to run once on each new connection: SQL and its arguments.
Warmup = tuple[str, tuple[object, ...]]


async def warm_pool(
    engine: AsyncEngine, connections: int, statements: Sequence[Warmup] = ()
) -> None:
    """Open ``connections`` pooled connections now, together, and run the hot
    path's ``statements`` on each (with empty arrays, in a transaction rolled
    back). Otherwise the first requests or batches pay for it, one connection
    at a time: a new PostgreSQL backend, its first look at the tables and
    partitions, the preparing and planning of each statement. Skipped quietly
    when PostgreSQL is not reachable yet; the pool then connects on demand."""
    opened = await asyncio.gather(
        *(engine.connect().start() for _ in range(connections)),
        return_exceptions=True,
    )
    for conn in opened:
        if isinstance(conn, BaseException):
            continue
        with contextlib.suppress(Exception):
            if statements:
                await _prepare(conn, statements)
        with contextlib.suppress(Exception):
            await conn.close()


async def _prepare(sa_conn: AsyncConnection, statements: Sequence[Warmup]) -> None:
    raw = await sa_conn.get_raw_connection()
    conn: asyncpg.Connection = raw.driver_connection
    transaction = conn.transaction()
    await transaction.start()
    try:
        for sql, args in statements:
            await conn.fetch(sql, *args)
    finally:
        await transaction.rollback()


@contextlib.asynccontextmanager
async def raw_transaction(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """A transaction on a pooled connection, in asyncpg itself: for the statements
    run for every group of requests or batch of entries (prepared once per
    connection; no statement compilation or greenlet switch per round trip). A
    connection that failed is not put back into the pool."""
    async with engine.connect() as sa_conn:
        raw = await sa_conn.get_raw_connection()
        conn: asyncpg.Connection = raw.driver_connection
        try:
            async with conn.transaction():
                yield conn
        except (OSError, asyncpg.InterfaceError):
            await sa_conn.invalidate()
            raise
