"""Per-key order and exactly-once storage with real processes: workers killed and
frozen, on standalone Redis and on a real Redis Cluster losing a master."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow.config import Settings
from eventflow.local.cluster import LocalRedisCluster
from tests.cluster_fixture import fresh_redis_cluster as fresh_redis_cluster
from tests.cluster_fixture import redis_cluster as redis_cluster
from tests.faults.harness import (
    REPORTS,
    SendLog,
    Stack,
    assert_exactly_once,
    check_order,
    send_ordered,
    wait_settled,
)

pytestmark = pytest.mark.faults


@pytest.fixture
def partitions() -> int:
    return 8


async def test_order_survives_a_killed_and_a_frozen_worker(
    stack: Stack, engine: AsyncEngine, redis: Redis, settings: Settings
) -> None:
    await stack.start_api()
    for _ in range(3):
        stack.start_worker()
    log = SendLog()
    sending = asyncio.create_task(
        send_ordered(stack.url, users=100, per_user=40, log=log, batch=4)
    )
    await asyncio.sleep(1.0)
    # kill -9: its partitions move once its leases expire.
    victim = stack.workers.pop(0)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    await asyncio.sleep(0.5)
    # Frozen mid-flow for longer than its lease: its partitions move, and when it
    # wakes up its reads and commits are refused (fencing) until it rejoins.
    frozen = stack.workers[0]
    frozen.send_signal(signal.SIGSTOP)
    await asyncio.sleep(3 * stack.lease_s)
    frozen.send_signal(signal.SIGCONT)
    stack.start_worker()
    accepted = await sending
    await wait_settled(engine, log.accepted, limit_s=60)
    await assert_exactly_once(engine, log)
    republished, _ = await check_order(engine, accepted)
    # Redis lost nothing: no event was republished, so the order holds for all.
    assert republished == 0
    assert frozen.poll() is None, "the frozen worker should carry on"


@pytest.mark.parametrize("partitions", [16])
async def test_cluster_master_and_worker_killed_under_load(
    fresh_redis_cluster: LocalRedisCluster,
    settings: Settings,
    engine: AsyncEngine,
    tmp_path: Path,
) -> None:
    """The issue's acceptance run: 16 partitions on a 3-master cluster, 1 API and
    3 workers, 20,000 events of 200 users; a worker is killed with kill -9 and a
    Redis master is killed while events arrive."""
    cluster = fresh_redis_cluster
    clustered = settings.model_copy(
        update={"redis_url": cluster.url, "redis_cluster": True}
    )
    stack = Stack(clustered, tmp_path)
    try:
        await stack.start_api()
        for _ in range(3):
            stack.start_worker()
        log = SendLog()
        started = time.monotonic()
        sending = asyncio.create_task(
            send_ordered(stack.url, users=200, per_user=100, log=log, batch=10)
        )
        await asyncio.sleep(3)
        victim = stack.workers.pop(0)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        await asyncio.sleep(2)
        killed = cluster.kill_master(index=1)
        accepted = await sending
        sent_s = time.monotonic() - started
        try:
            await wait_settled(engine, log.accepted, limit_s=120)
        except AssertionError as exc:
            async with httpx.AsyncClient() as client:
                summary = (await client.get(stack.url + "/metrics/summary")).json()
            stuck = [p for p in summary["partitions"] if p["length"] or p["pending"]]
            raise AssertionError(f"{exc}; partitions not drained: {stuck}") from exc
        total_s = time.monotonic() - started
        await assert_exactly_once(engine, log)
        assert len(log.accepted) == 20_000
        republished, users = await check_order(engine, accepted)
        REPORTS["cluster run: events accepted"] = f"{len(log.accepted)}"
        REPORTS["cluster run: sent, settled (s)"] = f"{sent_s:.1f}, {total_s:.1f}"
        REPORTS["cluster run: republished after failover"] = (
            f"{republished} events of {users} users (left out of the order check)"
        )
        REPORTS["cluster run: killed master"] = f"port {killed.port}"
        for worker in stack.workers:
            assert worker.poll() is None, "a worker died"
    finally:
        stack.stop()
        cluster.revive()
