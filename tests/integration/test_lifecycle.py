"""Time partitions on real PostgreSQL: created ahead and dropped past retention
(with a clock moved forward, not by waiting days), duplicates within the window,
and a conversion of existing tables that is killed and resumed."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from eventflow.config import Settings
from eventflow.pipeline.worker import Worker
from eventflow.store import lifecycle
from tests.conftest import Services
from tests.integration.helpers import count, database_at


async def _partitions(
    engine: AsyncEngine, table: str
) -> list[tuple[datetime, datetime]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT lower_bound, upper_bound FROM time_partitions "
                "WHERE parent_table = :t ORDER BY lower_bound"
            ),
            {"t": table},
        )
        return [(r.lower_bound, r.upper_bound) for r in rows]


async def test_partitions_are_created_ahead(
    settings: Settings, engine: AsyncEngine
) -> None:
    ahead = timedelta(days=settings.partition_ahead_days)
    soon = datetime.now(UTC) + timedelta(days=3)
    report = await lifecycle.maintain(engine, settings, now=soon)
    assert set(report.created.values()) == {3}  # three more days ahead
    for table in lifecycle.TABLES:
        spans = await _partitions(engine, table)
        # Contiguous days, reaching `ahead` days past the clock.
        assert spans[-1][1] >= soon + ahead
        for (_, upper), (lower, _) in itertools.pairwise(spans):
            assert upper == lower
        assert all(hi - lo == timedelta(days=1) for lo, hi in spans)
    # Running again creates nothing new.
    again = await lifecycle.maintain(engine, settings, now=soon)
    assert set(again.created.values()) == {0}
    # After weeks without maintenance the gap is not filled (its rows, if any,
    # would be in the default partition): partitions start again from today.
    later = soon + timedelta(days=40)
    await lifecycle.maintain(engine, settings, now=later)
    spans = await _partitions(engine, "raw_events")
    assert spans[-1][1] >= later + ahead
    assert spans[-(settings.partition_ahead_days + 1)][0] <= later


async def test_whole_partitions_are_dropped_past_retention(
    settings: Settings,
    engine: AsyncEngine,
    client: httpx.AsyncClient,
    make_worker: Callable[..., Worker],
) -> None:
    for n in range(20):
        body = {"event_type": "custom", "user_id": f"u{n}", "properties": {"n": n}}
        assert (await client.post("/events", json=body)).status_code == 202
    await make_worker().run(until_empty=True)
    assert await count(engine, "processed_events") == 20
    keep = settings.model_copy(
        update={"retention_days": 30, "retention_days_processed": 60}
    )
    today = datetime.now(UTC)
    # 10 days on: nothing is old enough.
    report = await lifecycle.maintain(engine, keep, now=today + timedelta(days=10))
    assert not any(report.dropped.values())
    # 45 days on: raw_events and failed_events lose today's partition,
    # processed_events (60 days) keeps it.
    report = await lifecycle.maintain(engine, keep, now=today + timedelta(days=45))
    day = today.strftime("%Y%m%d")
    assert f"raw_events_{day}" in report.dropped["raw_events"]
    assert await count(engine, "raw_events") == 0
    assert await count(engine, "processed_events") == 20
    # 61 days on, processed_events too.
    await lifecycle.maintain(engine, keep, now=today + timedelta(days=61))
    assert await count(engine, "processed_events") == 0
    status = {t.table: t for t in await lifecycle.status(engine, keep)}
    oldest = status["processed_events"].oldest
    assert oldest is not None and oldest > today  # today's partition is gone
    assert status["raw_events"].retention_days == 30
    assert status["processed_events"].retention_days == 60
    assert status["raw_events"].bytes > 0


async def test_retention_zero_keeps_everything(
    settings: Settings, engine: AsyncEngine, client: httpx.AsyncClient
) -> None:
    body = {"event_type": "custom", "properties": {}}
    assert (await client.post("/events", json=body)).status_code == 202
    far = datetime.now(UTC) + timedelta(days=3650)
    report = await lifecycle.maintain(
        engine, settings.model_copy(update={"partition_ahead_days": 1}), now=far
    )
    assert not any(report.dropped.values())
    assert await count(engine, "raw_events") == 1


async def test_duplicates_are_detected_within_the_window(
    settings: Settings, engine: AsyncEngine, client: httpx.AsyncClient
) -> None:
    event_id = str(uuid.uuid4())
    body = {"event_id": event_id, "event_type": "custom", "properties": {"n": 1}}
    assert (await client.post("/events", json=body)).status_code == 202
    again = await client.post("/events", json=body)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    # A first copy accepted 8 days ago (beyond the 7-day window) in another
    # partition: the re-send is a new event.
    old_id = str(uuid.uuid4())
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO raw_events (event_id, event_type, event_timestamp, "
                "properties, body_hash, received_at, published_at, status) "
                "VALUES (:id, 'custom', now(), '{}', 'x', now() - interval '8 days', "
                "now(), 'processed')"
            ),
            {"id": old_id},
        )
    late = {"event_id": old_id, "event_type": "custom", "properties": {}}
    assert (await client.post("/events", json=late)).status_code == 202
    assert await count(engine, "raw_events", f"event_id = '{old_id}'") == 2


@pytest.fixture
async def old_database(services: Services) -> AsyncIterator[str]:
    """A database of its own, at the schema before time partitions (0005)."""
    async with database_at(services.database_url, "0005") as url:
        yield url


async def test_conversion_killed_midway_resumes(old_database: str) -> None:
    engine = create_async_engine(old_database, pool_size=1)
    rows = 30_000
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO raw_events (event_id, event_type, user_id, "
                "event_timestamp, properties, body_hash, received_at, published_at, "
                "status) SELECT gen_random_uuid(), 'custom', 'u' || (g % 50), now(), "
                "jsonb_build_object('n', g), 'h', now() - (g % 5) * interval '1 day', "
                "now(), 'processed' FROM generate_series(1, :n) g"
            ),
            {"n": rows},
        )
        await conn.execute(
            text(
                "INSERT INTO processed_events (event_id, event_type, user_id, "
                "event_timestamp, properties, enrichment, received_at, processed_by) "
                "SELECT event_id, event_type, user_id, event_timestamp, properties, "
                "'{}', received_at, 'w' FROM raw_events"
            )
        )
    env = {
        **os.environ,
        "DATABASE_URL": old_database,
        "EVENTFLOW_MIGRATION_BATCH": "2000",
    }
    migrate = [sys.executable, "-m", "eventflow", "migrate"]
    proc = await asyncio.create_subprocess_exec(
        *migrate, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    # Killed once some batches have moved.
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    async for line in proc.stdout:
        if b"rows moved" in line and b"raw_events: 8000" in line:
            break
        assert time.monotonic() < deadline
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    async with engine.connect() as conn:
        version = await conn.scalar(text("SELECT version_num FROM alembic_version"))
        left = await conn.scalar(text("SELECT count(*) FROM raw_events_unpartitioned"))
    assert version == "0005" and 0 < left < rows
    # Run again: it carries on from where it stopped.
    again = await asyncio.create_subprocess_exec(
        *migrate, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(again.communicate(), 120)
    assert again.returncode == 0, output.decode()
    async with engine.connect() as conn:
        version = await conn.scalar(text("SELECT version_num FROM alembic_version"))
        assert version is not None and version >= "0006"
        for table in ("raw_events", "processed_events"):
            total, distinct = (
                await conn.execute(
                    text(f"SELECT count(*), count(DISTINCT event_id) FROM {table}")
                )
            ).one()
            assert total == distinct == rows, table
        assert (
            await conn.scalar(text("SELECT to_regclass('raw_events_unpartitioned')"))
            is None
        )
        # Rows went to the partition of their day, none to the default one.
        assert await conn.scalar(text("SELECT count(*) FROM raw_events_default")) == 0
    await engine.dispose()
