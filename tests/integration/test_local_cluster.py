"""The local Redis Cluster launcher: formation, streams and scripts across masters,
and a master crash that its replica takes over without losing acknowledged data."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from eventflow.local.cluster import SLOTS, LocalRedisCluster, call
from tests.cluster_fixture import cluster_client, through_failover
from tests.cluster_fixture import fresh_redis_cluster as fresh_redis_cluster
from tests.cluster_fixture import redis_cluster as redis_cluster

# Appends one entry to the stream KEYS[1] and returns the stream's length.
APPEND = """
redis.call('XADD', KEYS[1], '*', 'n', ARGV[1])
return redis.call('XLEN', KEYS[1])
"""


def tags_per_master(cluster: LocalRedisCluster) -> dict[int, str]:
    """One hash tag ``{pN}`` per master, by the index of the master's node."""
    tags: dict[int, str] = {}
    for n in range(100):
        tag = f"{{p{n}}}"
        tags.setdefault(cluster.master_for_key(tag).index, tag)
    assert len(tags) == cluster.masters
    return tags


def test_forms_three_masters_with_one_replica_each(
    redis_cluster: LocalRedisCluster,
) -> None:
    cluster = redis_cluster
    cluster.wait_healthy()
    assert cluster.url.startswith("redis://127.0.0.1:") and cluster.url.endswith("/0")
    assert len(cluster.nodes) == 6 and len(set(cluster.urls)) == 6
    roles = {node.index: cluster.role(node) for node in cluster.nodes}
    assert sorted(roles.values()) == ["master"] * 3 + ["slave"] * 3
    masters = cluster.current_masters()
    assert len(masters) == 3
    assert cluster.master_for(0) is masters[0]
    assert cluster.master_for(SLOTS - 1) is masters[-1]
    for master in masters:
        assert roles[master.index] == "master"
        assert len(cluster.replicas_of(master)) == 1
    covered: set[int] = set()
    reply = call(cluster.nodes[0].port, "CLUSTER", "SLOTS")
    assert isinstance(reply, list)
    for entry in reply:
        assert isinstance(entry, list)
        first, last = entry[0], entry[1]
        assert isinstance(first, int) and isinstance(last, int)
        covered.update(range(first, last + 1))
    assert covered == set(range(SLOTS))
    for node in cluster.nodes:
        assert node.alive and node.pidfile.exists()
        assert (node.dir / "nodes.conf").exists()


async def test_streams_on_every_master(fresh_redis_cluster: LocalRedisCluster) -> None:
    cluster = fresh_redis_cluster
    client = cluster_client(cluster, decode_responses=True)
    try:
        for index, tag in tags_per_master(cluster).items():
            stream = f"{tag}:events"
            await client.xgroup_create(stream, "workers", id="0", mkstream=True)
            entry = await client.xadd(stream, {"master": str(index)})
            got = await client.xreadgroup(
                "workers", "w1", {stream: ">"}, count=10, block=100
            )
            assert got == [[stream, [(entry, {"master": str(index)})]]]
            assert await client.xack(stream, "workers", entry) == 1
            # The entry is on the master the launcher names for the tag.
            master = cluster.master_for_key(stream)
            assert call(master.port, "XLEN", stream) == 1
    finally:
        await client.aclose()


async def test_registered_script_on_every_master(
    fresh_redis_cluster: LocalRedisCluster,
) -> None:
    client = cluster_client(fresh_redis_cluster)
    try:
        append = client.register_script(APPEND)
        for tag in tags_per_master(fresh_redis_cluster).values():
            assert await append(keys=[f"{tag}:s"], args=["1"]) == 1
            assert await append(keys=[f"{tag}:s"], args=["2"]) == 2
    finally:
        await client.aclose()


@pytest.mark.faults
async def test_replica_takes_over_a_killed_master(
    fresh_redis_cluster: LocalRedisCluster,
) -> None:
    cluster = fresh_redis_cluster
    client = cluster_client(cluster, decode_responses=True)
    stream = "{p0}:events"
    try:
        await client.xgroup_create(stream, "workers", id="0", mkstream=True)
        for n in range(100):
            await client.xadd(stream, {"n": str(n)})
        read: Any = await client.xreadgroup("workers", "w1", {stream: ">"}, count=10)
        assert len(read[0][1]) == 10  # pending, not acknowledged
        master = cluster.master_for_key(stream)
        (replica,) = cluster.replicas_of(master)
        # WAIT counts the writes of its own connection: write the marker and wait
        # on one connection to the master.
        direct = Redis(
            host="127.0.0.1",
            port=master.port,
            single_connection_client=True,
            decode_responses=True,
        )
        try:
            marker = await direct.xadd(stream, {"marker": "1"})
            assert await direct.wait(1, 5000) >= 1
        finally:
            await direct.aclose()

        killed_at = time.monotonic()
        assert cluster.kill_master(key=stream) is master
        assert not master.alive
        await through_failover(lambda: client.xadd(stream, {"after": "1"}))
        failover_s = time.monotonic() - killed_at
        assert failover_s < 20, failover_s
        cluster.wait_healthy()
        assert cluster.master_for_key(stream) is replica
        assert cluster.role(replica) == "master"

        entries: Any = await client.xrange(stream)
        assert [fields.get("n") for _id, fields in entries[:100]] == [
            str(n) for n in range(100)
        ]
        assert entries[100][0] == marker and entries[101][1] == {"after": "1"}
        pending: Any = await client.xpending(stream, "workers")
        assert pending["pending"] == 10
        # A registered script runs on the new master (redis-py loads it there if
        # that node does not have it).
        append = client.register_script(APPEND)
        assert await append(keys=[stream], args=["x"]) == 103

        cluster.restart_node(master)
        assert master.alive and cluster.role(master) == "slave"
        # Every node learns of the new replica by gossip: give it a moment.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if cluster.replicas_of(replica) == [master]:
                break
            await asyncio.sleep(0.1)
        assert cluster.replicas_of(replica) == [master]
        assert await client.xlen(stream) == 103
        print(f"failover: first write {failover_s:.1f} s after the kill")
    finally:
        await client.aclose()
        cluster.revive()


def test_start_wipes_and_replaces_a_crashed_run(tmp_path: Path) -> None:
    first = LocalRedisCluster(tmp_path, masters=1, replicas_per_master=1)
    started = time.monotonic()
    first.start()
    elapsed = time.monotonic() - started
    old_ids = {node.node_id for node in first.nodes}
    call(first.master_for(0).port, "SET", "k", "v")
    old_procs = [node.proc for node in first.nodes]
    # Another launcher on the same folder, as after a crash of the first one's
    # parent: it kills the servers its pidfiles name and forms a new cluster.
    second = LocalRedisCluster(tmp_path, masters=1, replicas_per_master=1)
    try:
        second.start()
        for proc in old_procs:
            assert proc is not None and proc.wait(10) == -signal.SIGKILL
        assert old_ids.isdisjoint(node.node_id for node in second.nodes)
        assert call(second.master_for(0).port, "GET", "k") is None
        assert second.role(second.nodes[1]) == "slave"
        second.wait_healthy()
    finally:
        first.stop()
        second.stop()
    assert not any(node.alive for node in second.nodes)
    print(f"2-node cluster formed in {elapsed:.1f} s")
