"""Connections to Redis: one server, or a Redis Cluster through a seed node.

With ``EVENTFLOW_REDIS_CLUSTER=true`` the URL names any node of a cluster and
redis-py's own cluster client (the maintained client EventFlow already uses, with
the same commands and scripts) finds the others, follows slot moves and retries
through a failover. Both clients are used through the standalone client's
interface: every command EventFlow sends names one slot.
"""

from __future__ import annotations

import contextlib
from typing import cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from eventflow.config import Settings


async def connect_redis(settings: Settings, url: str, socket_timeout_s: float) -> Redis:
    """A client for ``url``; ``socket_timeout_s`` bounds every command.

    A cluster client learns the slot map here, before any concurrent use: its first
    commands racing to do that (redis-py 8.1 with uvloop) can fail with closed
    transports. An unreachable cluster is not an error here; the client connects
    on first use."""
    if not settings.redis_cluster:
        return Redis.from_url(
            url,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=settings.redis_connect_timeout_s,
        )
    cluster = RedisCluster.from_url(
        url,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=settings.redis_connect_timeout_s,
        # Through a failover: reconnect, reload the slot map, try again.
        retry=Retry(
            ExponentialWithJitterBackoff(base=0.1, cap=1.0),
            retries=6,
            supported_errors=(RedisConnectionError, RedisTimeoutError),
        ),
        # Blocking reads hold a connection each: one per partition and process.
        max_connections=256,
    )
    with contextlib.suppress(RedisError, OSError):
        await cluster.initialize()
    return cast(Redis, cluster)
