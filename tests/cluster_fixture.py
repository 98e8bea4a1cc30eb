"""A local Redis Cluster (3 masters, 3 replicas) for the tests that need one.

Import the fixtures into a test module, each as itself (an explicit re-export, so
that ruff reports neither an unused import nor a test parameter of the same name as
a redefinition)::

    from tests.cluster_fixture import redis_cluster as redis_cluster

``redis_cluster`` is the session's cluster, started on first use (one per session,
however many modules import the fixture) and stopped at the end of the session.
``fresh_redis_cluster`` is the same cluster, emptied for the test: nodes stopped by
an earlier test are restarted (an old master comes back as a replica), every
master is flushed, and the cluster is healthy again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import (
    ClusterDownError,
    ConnectionError,
    MasterDownError,
    SlotNotCoveredError,
    TimeoutError,
    TryAgainError,
)

from eventflow.local.cluster import LocalRedisCluster

T = TypeVar("T")

# Errors a cluster client may raise while a master is down and until its replica
# has taken over; retry them (with a pause) for as long as a failover may take.
FAILOVER_ERRORS: tuple[type[Exception], ...] = (
    ConnectionError,
    TimeoutError,
    ClusterDownError,
    SlotNotCoveredError,
    TryAgainError,
    MasterDownError,
)

_session: dict[str, LocalRedisCluster] = {}


def _session_cluster(
    tmp_path_factory: pytest.TempPathFactory, config: pytest.Config
) -> LocalRedisCluster:
    # Each module that imports the fixture gets a fixture definition of its own,
    # so a session-scoped fixture alone could start one cluster per module.
    if "cluster" not in _session:
        cluster = LocalRedisCluster(tmp_path_factory.mktemp("redis-cluster"))
        cluster.start()
        _session["cluster"] = cluster

        def stop() -> None:
            _session.pop("cluster", None)
            cluster.stop()

        config.add_cleanup(stop)
    return _session["cluster"]


@pytest.fixture(scope="session")
def redis_cluster(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[LocalRedisCluster]:
    yield _session_cluster(tmp_path_factory, pytestconfig)


@pytest.fixture
def fresh_redis_cluster(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> LocalRedisCluster:
    cluster = _session_cluster(tmp_path_factory, pytestconfig)
    cluster.revive()
    cluster.flushall()
    cluster.wait_healthy()
    return cluster


def cluster_client(
    cluster: LocalRedisCluster, decode_responses: bool = False
) -> RedisCluster:
    """A cluster client with the options the module docstring of
    :mod:`eventflow.local.cluster` recommends; every node is a startup node."""
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in cluster.addresses],
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=10),
        socket_connect_timeout=1.0,
        socket_timeout=5.0,
        decode_responses=decode_responses,
    )


async def through_failover(
    operation: Callable[[], Awaitable[T]], seconds: float = 30.0
) -> T:
    """``operation()``, tried again after a pause while it fails with one of
    :data:`FAILOVER_ERRORS`, for up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await operation()
        except FAILOVER_ERRORS:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
