"""Fault tests: real API and worker processes, real servers, real kills.

Each test sends a known set of events, injects a fault, and checks that every
accepted event ends in processed_events or failed_events exactly once.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time

import httpx
import orjson
import pytest
from redis.asyncio import Redis
from redis.exceptions import BusyLoadingError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow.config import Settings
from eventflow.pipeline.streams import Streams
from tests.conftest import Services
from tests.faults.harness import (
    RECOVERY_TIMES,
    SendLog,
    Stack,
    assert_exactly_once,
    custom_event,
    send_events,
    wait_settled,
)
from tests.integration.helpers import first_stream

pytestmark = pytest.mark.faults


def report(what: str, seconds: float) -> None:
    RECOVERY_TIMES[what] = seconds


def streams_of(redis: Redis, settings: Settings) -> list[str]:
    return [s.stream for s in Streams.from_settings(redis, settings).partitions]


async def pending_of(redis: Redis, settings: Settings, consumer: str = "") -> int:
    """Entries pending in the group, or under one consumer, in every partition."""
    group, total = settings.consumer_group, 0
    for stream in streams_of(redis, settings):
        if not consumer:
            total += int((await redis.xpending(stream, group))["pending"])
            continue
        for c in await redis.xinfo_consumers(stream, group):
            if c["name"].decode() == consumer:
                total += int(c["pending"])
    return total


async def length_of(redis: Redis, settings: Settings) -> int:
    return (await Streams.from_settings(redis, settings).state()).length


async def count_processed(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(text("SELECT count(*) FROM processed_events")))


async def consumers_of(redis: Redis, settings: Settings) -> list[str]:
    names = []
    for stream in streams_of(redis, settings):
        for c in await redis.xinfo_consumers(stream, settings.consumer_group):
            names.append(c["name"].decode())
    return names


async def holding_entries(
    redis: Redis, settings: Settings, worker: subprocess.Popen[bytes]
) -> str:
    """Freeze ``worker`` at a moment it holds unacknowledged entries; its name."""
    group = settings.consumer_group
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        worker.send_signal(signal.SIGSTOP)
        for stream in streams_of(redis, settings):
            for c in await redis.xinfo_consumers(stream, group):
                name = c["name"].decode()
                if f"-{worker.pid}-" in name and int(c["pending"]) > 0:
                    return name
        worker.send_signal(signal.SIGCONT)
        await asyncio.sleep(0.01)
    raise AssertionError("the worker never held a batch")


async def test_worker_killed_mid_batch_repeatedly(
    stack: Stack, engine: AsyncEngine, redis: Redis, settings: Settings
) -> None:
    await stack.start_api()
    stack.start_worker()
    stack.start_worker()
    log = SendLog()
    sending = asyncio.create_task(
        send_events(stack.url, 3000, log, concurrency=4, batch=50, pause=0.05)
    )
    for _ in range(3):
        await asyncio.sleep(0.7)
        victim = stack.workers.pop(0)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        stack.start_worker()
    # One more crash, caught holding a batch, timed until its entries are recovered.
    more = asyncio.create_task(
        send_events(stack.url, 2000, log, concurrency=2, batch=50, pause=0.01)
    )
    victim = stack.workers.pop(0)
    name = await holding_entries(redis, settings, victim)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = time.monotonic()
    await asyncio.gather(sending, more)
    assert len(log.accepted) == 5000, log.codes
    while True:  # polling Redis: nothing to wait on locally
        if not await pending_of(redis, settings, name):
            break
        await asyncio.sleep(0.02)
    recovery = time.monotonic() - killed_at
    report("worker kill -9", recovery)
    # The lease expires, another worker takes the partitions over and finishes
    # what the dead one held first.
    assert recovery < 2 * stack.lease_s + 1
    await wait_settled(engine, log.accepted, limit_s=60)
    await assert_exactly_once(engine, log)


async def test_api_killed_under_load(stack: Stack, engine: AsyncEngine) -> None:
    await stack.start_api()
    stack.start_worker()
    log = SendLog()
    sending = asyncio.create_task(
        send_events(stack.url, 1500, log, concurrency=8, pause=0.002)
    )
    await asyncio.sleep(1.0)
    stack.kill_api(signal.SIGKILL)
    killed_at = time.monotonic()
    await stack.start_api()
    await sending
    assert log.failed, "the kill should have cost some requests"
    assert log.accepted
    recovery = await wait_settled(engine, log.accepted, limit_s=60)
    report("api kill -9", time.monotonic() - killed_at)
    assert recovery < 30
    await assert_exactly_once(engine, log)


async def test_redis_restarted_and_flushed(
    stack: Stack,
    engine: AsyncEngine,
    redis: Redis,
    local_servers: Services,
) -> None:
    assert local_servers.redis is not None
    await stack.start_api()
    stack.start_worker()
    log = SendLog()
    await send_events(stack.url, 300, log, concurrency=4, batch=20)
    # Redis down: the API still accepts, the events are in PostgreSQL.
    local_servers.redis.stop()
    down = SendLog()
    await send_events(stack.url, 40, down, concurrency=4)
    assert len(down.accepted) == 40, down.codes
    async with httpx.AsyncClient() as client:
        health = await client.get(stack.url + "/health")
        assert health.status_code == 503
        assert health.json()["redis"]["status"] == "down"
    local_servers.redis.start()
    restarted_at = time.monotonic()
    during = asyncio.create_task(
        send_events(stack.url, 600, log, concurrency=4, batch=20, pause=0.02)
    )
    await asyncio.sleep(0.5)
    # Redis loses everything mid-run (once it has loaded its data again).
    deadline = time.monotonic() + 15
    while True:
        try:
            await redis.flushall()
            break
        except BusyLoadingError:
            assert time.monotonic() < deadline, "Redis still loading after 15 s"
            await asyncio.sleep(0.1)
    await during
    log.accepted |= down.accepted
    await wait_settled(engine, log.accepted, limit_s=60)
    report("redis restart + flushall", time.monotonic() - restarted_at)
    await assert_exactly_once(engine, log)


async def test_postgres_restarted(
    stack: Stack,
    engine: AsyncEngine,
    redis: Redis,
    settings: Settings,
    local_servers: Services,
) -> None:
    assert local_servers.postgres is not None
    await stack.start_api()
    worker = stack.start_worker()
    log = SendLog()
    await send_events(stack.url, 300, log, concurrency=4, batch=20)
    # The worker still holds part of this burst when the database goes away.
    await send_events(stack.url, 2000, log, concurrency=4, batch=200)
    local_servers.postgres.stop()
    held = await pending_of(redis, settings) + await length_of(redis, settings)
    async with httpx.AsyncClient() as client:
        refused = await client.post(stack.url + "/events", json=custom_event(1))
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) > 0
        health = await client.get(stack.url + "/health")
        assert health.status_code == 503
        assert health.json()["postgres"]["status"] == "down"
    # Longer than max_deliveries reclaim rounds: entries must not turn into
    # poison while the database is down.
    await asyncio.sleep(6 * stack.claim_idle_s)
    local_servers.postgres.start()
    restarted_at = time.monotonic()
    await engine.dispose()  # the test's own pool holds connections to the old server
    await send_events(stack.url, 300, log, concurrency=4, batch=20)
    await wait_settled(engine, log.accepted, limit_s=60)
    report("postgres restart", time.monotonic() - restarted_at)
    assert worker.poll() is None, "the worker should ride out the outage"
    await assert_exactly_once(engine, log)
    assert held > 0, "the outage should have caught entries in Redis"
    async with engine.connect() as conn:
        dead = await conn.scalar(text("SELECT count(*) FROM failed_events"))
    assert dead == 0, "valid events were dead-lettered during the outage"


async def test_sigterm_drains_every_worker(
    stack: Stack, engine: AsyncEngine, redis: Redis, settings: Settings
) -> None:
    await stack.start_api()
    workers = [stack.start_worker(), stack.start_worker()]
    log = SendLog()
    # Events keep coming while both workers join, work, and are signalled, so
    # each has entries in hand at SIGTERM however fast the machine drains.
    stop = asyncio.Event()
    sending = asyncio.create_task(
        send_events(stack.url, 100_000, log, 2, pause=0.02, batch=50, stop=stop)
    )
    members = f"{settings.stream_name}:workers"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if await redis.zcard(members) == 2 and await count_processed(engine) > 0:
            break
        await asyncio.sleep(0.05)
    assert await redis.zcard(members) == 2
    assert not sending.done(), "the producer finished before the workers started"
    for w in workers:
        w.send_signal(signal.SIGTERM)
    codes = [await asyncio.to_thread(w.wait, 15) for w in workers]
    stack.workers.clear()
    assert codes == [0, 0]
    await asyncio.sleep(0.5)  # some events arrive after the workers left
    stop.set()
    await sending
    undelivered = (await Streams.from_settings(redis, settings).state()).lag
    assert undelivered > 0, "nothing was left for a restarted worker"
    assert await pending_of(redis, settings) == 0  # nothing left to redeliver
    assert await consumers_of(redis, settings) == []
    assert await redis.zcard(members) == 0  # both left the group
    stack.start_worker()
    started = time.monotonic()
    await wait_settled(engine, log.accepted, limit_s=60)
    report("sigterm + restart", time.monotonic() - started)
    await assert_exactly_once(engine, log)


async def test_poison_and_undecodable_entries(
    stack: Stack, engine: AsyncEngine, redis: Redis, settings: Settings
) -> None:
    await stack.start_api()
    log = SendLog()
    await send_events(stack.url, 10, log)
    stream, group = first_stream(settings), settings.consumer_group
    await redis.xadd(stream, {"e": b"\x00\x01 garbage"})
    poison = custom_event(99)
    message = orjson.dumps(
        {
            "id": poison["event_id"],
            "type": "custom",
            "user": None,
            "ts": "2026-01-01T00:00:00+00:00",
            "props": poison["properties"],
            "recv": "2026-01-01T00:00:00+00:00",
            "cid": "poison",
        }
    )
    entry_id = (await redis.xadd(stream, {"e": message})).decode()
    # A consumer that keeps crashing on it: read, never acknowledged, many times.
    await redis.xreadgroup(group, "crashing", {stream: ">"}, count=100)
    for _ in range(6):
        await redis.xclaim(stream, group, "crashing", 0, [entry_id])
    worker = stack.start_worker()
    log.sent.add(poison["event_id"])
    await send_events(stack.url, 10, log)
    await wait_settled(engine, log.accepted | {poison["event_id"]}, limit_s=30)
    async with httpx.AsyncClient() as client:
        page = (await client.get(stack.url + "/dead-letters")).json()
    kinds = sorted(item["error_type"] for item in page["items"])
    assert kinds == ["PoisonMessage", "UndecodableMessage"]
    assert worker.poll() is None, "bad entries must not crash the worker"
    log.failed.add(poison["event_id"])
    stored_undecodable = [
        i for i in page["items"] if i["error_type"] == "UndecodableMessage"
    ]
    log.failed.add(stored_undecodable[0]["event_id"])
    await assert_exactly_once(engine, log)


async def test_api_sigterm_flushes_and_exits_cleanly(
    stack: Stack, engine: AsyncEngine
) -> None:
    await stack.start_api()
    stack.start_worker()
    log = SendLog()
    sending = asyncio.create_task(
        send_events(stack.url, 3000, log, concurrency=8, pause=0.001)
    )
    await asyncio.sleep(1.0)
    assert stack.api is not None
    stack.api.send_signal(signal.SIGTERM)
    assert stack.api.wait(20) == 0
    await sending
    assert log.accepted and log.failed  # it stopped accepting part-way
    await wait_settled(engine, log.accepted, limit_s=60)
    await assert_exactly_once(engine, log)
