"""Partition ownership on real Redis and PostgreSQL: leases, rebalancing, fencing,
and per-key order across a handover."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow.config import Settings
from eventflow.errors import FencedOut, LeaseLost
from eventflow.models import decode_message
from eventflow.pipeline.batchwriter import BatchWriter
from eventflow.pipeline.ownership import Ownership
from eventflow.pipeline.streams import Streams
from eventflow.pipeline.worker import Worker
from eventflow.store.events import ProcessedRow, write_results
from eventflow.store.tables import raw_transaction
from tests.integration.helpers import count


@pytest.fixture
def partitions() -> int:
    return 8


async def _until(check: Callable[[], bool], limit_s: float, what: str) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > limit_s:
            raise AssertionError(f"{what}: not within {limit_s} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_workers_share_partitions_and_take_over_within_two_leases(
    settings: Settings, make_worker: Callable[..., Worker]
) -> None:
    lease_s = settings.lease_ttl_ms / 1000
    a, b = make_worker(consumer_name="a"), make_worker(consumer_name="b")
    run_a = asyncio.create_task(a.run())
    await _until(lambda: len(a.ownership.owned) == 8, 2 * lease_s, "a takes all")
    run_b = asyncio.create_task(b.run())
    await _until(
        lambda: len(a.ownership.owned) == 4 and len(b.ownership.owned) == 4,
        2 * lease_s,
        "a and b share",
    )
    assert set(a.ownership.owned).isdisjoint(b.ownership.owned)
    a.stop()
    await run_a
    await _until(lambda: len(b.ownership.owned) == 8, 2 * lease_s, "b takes a's")
    b.stop()
    await run_b


async def test_a_worker_that_lost_its_lease_can_neither_read_nor_commit(
    settings: Settings, engine: AsyncEngine, redis: Redis, client: httpx.AsyncClient
) -> None:
    streams = Streams.from_settings(redis, settings)
    await streams.ensure_group()
    old = Ownership(redis, engine, streams, "old", settings.lease_ttl_ms)
    new = Ownership(redis, engine, streams, "new", settings.lease_ttl_ms)
    # "old" owns everything, reads a batch of partition p, then stalls (GC pause,
    # network partition) past its lease; "new" takes the partition over.
    await old.tick()
    assert len(old.owned) == 8
    event = {"event_type": "custom", "user_id": "u1", "properties": {"name": "x"}}
    assert (await client.post("/events", json=event)).status_code == 202
    stream = streams.of(decode_message((await _first_entry(redis, streams)) or b""))
    p = stream.partition
    stale = old.owned[p]
    (entry,) = await stream.read_owned("old", 10)
    await redis.delete(old.lease_key(p))  # the lease expired
    await new.tick()
    assert p in new.owned and new.owned[p].token == stale.token + 1
    # The stale owner cannot read any more ...
    with pytest.raises(LeaseLost):
        await stream.read_owned("old", 10)
    # ... nor commit what it read before.
    assert entry.data is not None
    row = ProcessedRow(decode_message(entry.data), {}, 1)
    with pytest.raises(FencedOut):
        async with raw_transaction(engine) as conn:
            await write_results(conn, [row], [], "old", stale)
    assert await count(engine, "processed_events") == 0
    # The new owner commits it.
    async with raw_transaction(engine) as conn:
        assert await write_results(conn, [row], [], "new", new.owned[p])
    assert await count(engine, "processed_events") == 1


async def test_batches_of_several_partitions_commit_together_unless_one_is_fenced(
    settings: Settings, engine: AsyncEngine, redis: Redis, client: httpx.AsyncClient
) -> None:
    streams = Streams.from_settings(redis, settings)
    await streams.ensure_group()
    owner = Ownership(redis, engine, streams, "w", settings.lease_ttl_ms)
    await owner.tick()
    events = [
        {"event_type": "custom", "user_id": f"user-{n}", "properties": {"name": "x"}}
        for n in range(40)
    ]
    answer = await client.post("/events/batch", json={"events": events})
    assert answer.json()["accepted"] == 40
    await _until_async(lambda: _length(streams), 40, 5)
    by_partition: dict[int, list[ProcessedRow]] = {}
    for stream in streams.partitions:
        for entry in await stream.read_owned("w", 100):
            assert entry.data is not None
            row = ProcessedRow(decode_message(entry.data), {}, 1)
            by_partition.setdefault(stream.partition, []).append(row)
    assert len(by_partition) >= 3, "40 users should spread over the partitions"
    first, second, third, *_ = sorted(by_partition)
    writer = BatchWriter(engine, "w")
    # Submitted together: one transaction for both partitions.
    results = await asyncio.gather(
        *(writer.write(by_partition[p], [], owner.owned[p]) for p in (first, second))
    )
    assert [len(r) for r in results] == [len(by_partition[first]),
                                         len(by_partition[second])]  # fmt: skip
    async with engine.connect() as conn:
        writes = await conn.scalar(
            text("SELECT count(DISTINCT xmin::text) FROM processed_events")
        )
    assert writes == 1
    # A partition taken over meanwhile: its batch is refused, the other commits.
    stale = owner.owned[third]
    await redis.delete(owner.lease_key(third))
    other = Ownership(redis, engine, streams, "other", settings.lease_ttl_ms)
    await other.tick()
    assert other.owned[third].token == stale.token + 1
    rest = [p for p in by_partition if p not in (first, second, third)]
    outcomes = await asyncio.gather(
        writer.write(by_partition[third], [], stale),
        *(writer.write(by_partition[p], [], owner.owned[p]) for p in rest),
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], FencedOut)
    assert not any(isinstance(o, BaseException) for o in outcomes[1:])
    stored = sum(len(by_partition[p]) for p in by_partition if p != third)
    assert await count(engine, "processed_events") == stored


async def test_publishing_loads_the_script_into_a_redis_that_lost_it(
    settings: Settings, redis: Redis, client: httpx.AsyncClient
) -> None:
    streams = Streams.from_settings(redis, settings)
    events = [
        {"event_type": "custom", "user_id": f"user-{n}", "properties": {"name": "x"}}
        for n in range(20)
    ]
    assert (await client.post("/events/batch", json={"events": events[:10]})).json()[
        "accepted"
    ] == 10
    await _until_async(lambda: _length(streams), 10, 5)
    await redis.script_flush()  # as after a restart without persistence
    assert (await client.post("/events/batch", json={"events": events[10:]})).json()[
        "accepted"
    ] == 10
    await _until_async(lambda: _length(streams), 20, 5)


async def _length(streams: Streams) -> int:
    return (await streams.state()).length


async def _until_async(
    value: Callable[[], Awaitable[int]], expected: int, limit_s: float
) -> None:
    deadline = time.monotonic() + limit_s
    while (got := await value()) != expected:
        assert time.monotonic() < deadline, f"{got}, not {expected}"
        await asyncio.sleep(0.02)


async def _first_entry(redis: Redis, streams: Streams) -> bytes | None:
    for stream in streams.partitions:
        entries = await redis.xrange(stream.stream, count=1)
        if entries:
            data: bytes = entries[0][1][b"e"]
            return data
    return None


async def test_per_key_order_holds_across_handovers(
    settings: Settings,
    engine: AsyncEngine,
    client: httpx.AsyncClient,
    make_worker: Callable[..., Worker],
) -> None:
    users, per_user = 24, 25
    accepted: dict[str, list[str]] = {f"u{n}": [] for n in range(users)}

    async def send(user: str) -> None:
        for seq in range(per_user):
            event_id = str(uuid.uuid4())
            body = {
                "event_id": event_id,
                "event_type": "custom",
                "user_id": user,
                "properties": {"name": "order", "seq": seq},
            }
            answer = await client.post("/events", json=body)
            assert answer.status_code == 202, answer.text
            accepted[user].append(event_id)
            await asyncio.sleep(0.002)

    # Workers come and go while events arrive: every change moves partitions.
    workers = [make_worker(consumer_name="w0", worker_batch_size=7)]
    runs = [asyncio.create_task(workers[0].run())]
    sending = asyncio.gather(*(send(u) for u in accepted))
    for n in range(1, 4):
        await asyncio.sleep(0.4)
        workers.append(make_worker(consumer_name=f"w{n}", worker_batch_size=7))
        runs.append(asyncio.create_task(workers[-1].run()))
        await asyncio.sleep(0.4)
        workers[n - 1].stop()
    await sending
    total = users * per_user
    deadline = time.monotonic() + 30
    while await count(engine, "processed_events") < total:
        assert time.monotonic() < deadline, "events were not all processed"
        await asyncio.sleep(0.1)
    for w in workers:
        w.stop()
    await asyncio.gather(*runs)
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT user_id, event_id::text FROM processed_events ORDER BY id")
            )
        ).all()
    assert len(rows) == total
    stored: dict[str, list[str]] = {u: [] for u in accepted}
    for user, event_id in rows:
        stored[user].append(event_id)
    assert stored == accepted
