"""Delivery guarantees against real servers: no loss, no duplicate rows."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow.config import Settings
from eventflow.metrics import Metrics
from eventflow.pipeline.reconciler import reconcile_once
from eventflow.pipeline.streams import Streams
from eventflow.pipeline.worker import Worker
from eventflow.store.migrate import render_sql
from tests.integration.helpers import app_client, count, first_stream


def custom(n: int) -> dict[str, object]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "custom",
        "properties": {"name": "guarantee", "n": n},
    }


async def send(client: httpx.AsyncClient, n: int) -> list[str]:
    ids = []
    for batch_start in range(0, n, 100):
        items = [custom(i) for i in range(batch_start, min(n, batch_start + 100))]
        response = await client.post("/events/batch", json={"events": items})
        assert response.json()["accepted"] == len(items)
        ids += [str(i["event_id"]) for i in items]
    return ids


class CrashAfterCommit(RuntimeError):
    """Stands for a worker dying after COMMIT and before XACK."""


PARTITIONED = pytest.mark.parametrize("partitions", [1, 8])


@PARTITIONED
async def test_crash_between_commit_and_ack_creates_no_duplicate(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    redis: Redis,
    settings: Settings,
    make_worker: Callable[..., Worker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await send(client, 250)
    doomed = make_worker(consumer_name="doomed")

    async def crash(entry_ids: object) -> None:
        raise CrashAfterCommit

    for stream in doomed.streams.partitions:
        monkeypatch.setattr(stream, "ack", crash)
    with pytest.raises(CrashAfterCommit):
        await doomed.run(until_empty=True)
    # The batch committed, but its entries are still pending under the dead name.
    assert await count(engine, "processed_events") > 0
    streams = Streams.from_settings(redis, settings)
    assert (await streams.state()).pending > 0

    rescuer = make_worker(consumer_name="rescuer")
    report = await rescuer.run(until_empty=True)
    assert report.duplicates > 0  # redelivered entries were recognised
    assert await count(engine, "processed_events") == 250
    state = await streams.state()
    assert state.pending == 0
    assert state.length == 0  # acknowledged = deleted


@PARTITIONED
async def test_redis_losing_the_stream_loses_no_event(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    redis: Redis,
    settings: Settings,
    make_worker: Callable[..., Worker],
) -> None:
    ids = await send(client, 300)
    # About half of them are processed, then Redis forgets everything it held.
    worker = make_worker()
    streams = Streams.from_settings(redis, settings)
    quota = 150 // len(streams)
    for stream in streams.partitions:
        entries = await stream.read("early", quota, 10)
        await worker.handle(entries, stream=stream)
    processed = await count(engine, "processed_events")
    assert 0 < processed <= 150
    for stream in streams.partitions:
        await redis.delete(stream.stream)

    republished = await reconcile_once(engine, streams, Metrics(), timedelta(0))
    assert republished == 300 - processed
    await make_worker().run(until_empty=True)
    assert await count(engine, "processed_events") == len(ids)
    assert await count(engine, "unsettled_events") == 0


@PARTITIONED
async def test_reconciler_leaves_queued_events_alone(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    redis: Redis,
    settings: Settings,
) -> None:
    await send(client, 50)
    streams = Streams.from_settings(redis, settings)
    # Everything is still in the stream, waiting: nothing to republish.
    assert await reconcile_once(engine, streams, Metrics(), timedelta(0)) == 0
    assert (await streams.state()).length == 50


@PARTITIONED
async def test_accepted_while_redis_unreachable_then_republished(
    settings: Settings,
    engine: AsyncEngine,
    make_worker: Callable[..., Worker],
) -> None:
    # An API whose Redis is unreachable still stores events and answers 202.
    offline = settings.model_copy(update={"redis_url": "redis://127.0.0.1:9/0"})
    async with app_client(offline) as c:
        answers = [await c.post("/events", json=custom(i)) for i in range(5)]
    assert [a.status_code for a in answers] == [202] * 5
    assert await count(engine, "unsettled_events") == 5
    # A worker with a working Redis republishes and processes them.
    await make_worker().run(until_empty=True)
    assert await count(engine, "processed_events") == 5


def test_consumer_names_are_unique_per_process(services: object) -> None:
    code = (
        "from eventflow.config import Settings; "
        "print(Settings().resolved_consumer_name())"
    )
    names = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(3)
    }
    assert len(names) == 3


async def test_two_workers_register_two_consumers(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    redis: Redis,
    settings: Settings,
    make_worker: Callable[..., Worker],
) -> None:
    await send(client, 20)
    a, b = make_worker(worker_batch_size=5), make_worker(worker_batch_size=5)
    assert a.consumer != b.consumer
    await a.handle(await a.streams.partitions[0].read(a.consumer, 5, 10))
    await b.handle(await b.streams.partitions[0].read(b.consumer, 5, 10))
    consumers = await redis.xinfo_consumers(
        first_stream(settings), settings.consumer_group
    )
    assert {c["name"].decode() for c in consumers} == {a.consumer, b.consumer}


def test_init_db_sql_is_generated_from_the_migrations() -> None:
    committed = Path(__file__).parents[2] / "scripts" / "init_db.sql"
    assert committed.read_text() == render_sql(), (
        "scripts/init_db.sql is stale: run `make sql`"
    )


async def test_dead_consumers_are_removed_from_the_group(
    client: httpx.AsyncClient,
    redis: Redis,
    settings: Settings,
    make_worker: Callable[..., Worker],
) -> None:
    await send(client, 10)
    worker = make_worker()
    await worker.streams.ensure_group()
    # A consumer that died holding entries, and one that died holding none.
    await worker.streams.partitions[0].read("dead-busy", 5, 10)
    await redis.xgroup_createconsumer(
        first_stream(settings), settings.consumer_group, "dead-idle"
    )
    removed = await worker.streams.partitions[0].remove_idle_consumers(
        0, keep=worker.consumer
    )
    assert removed == ["dead-idle"]  # never drop a consumer that holds entries
    await worker.run(until_empty=True)  # reclaims from dead-busy
    removed = await worker.streams.partitions[0].remove_idle_consumers(
        0, keep=worker.consumer
    )
    assert "dead-busy" in removed
