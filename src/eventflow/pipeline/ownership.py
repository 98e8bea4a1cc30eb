"""Which worker consumes which partition.

Each partition has one owner at a time, so that its entries are committed in the
order they were accepted. Ownership is a lease in Redis (a key in the partition's
own slot, renewed every third of its time to live) plus a fencing token in
PostgreSQL: a worker that takes a partition raises the partition's token, and a
batch commits only while the token is still the committer's own (``fence``). A
worker that lost its lease without noticing (paused, partitioned from Redis) can
therefore never commit after the new owner started.

Workers announce themselves in a sorted set (score: last heartbeat). Partition
``p`` belongs to the ``p mod N``-th of the N live workers, by name: every worker
computes the same assignment, gives up the partitions that are no longer its own
and takes the free ones that are. A worker that joins or leaves (or dies, once
its heartbeat and leases expire) changes the assignment within two lease periods.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow.errors import FencedOut
from eventflow.pipeline.streams import Streams
from eventflow.store.tables import Warmup

log = logging.getLogger(__name__)

# Takes a free lease, or renews our own; 1 if we hold it afterwards.
_HOLD = """
local owner = redis.call('GET', KEYS[1])
if owner == false or owner == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

_TAKE_TOKEN = text(
    """
    INSERT INTO partition_owners (stream, partition, token, owner)
    VALUES (:stream, :partition, 1, :owner)
    ON CONFLICT (stream, partition) DO UPDATE SET
        token = partition_owners.token + 1, owner = EXCLUDED.owner,
        acquired_at = now(), committed_at = NULL
    RETURNING token
    """
)
# The first statement of every batch's transaction: it locks the partition's row,
# so commits of one partition are serialised, and it fails once a newer owner
# raised the token.
_CHECK_TOKEN = (
    "UPDATE partition_owners SET committed_at = now() "
    "WHERE stream = $1 AND partition = $2 AND token = $3"
)


@dataclass(frozen=True, slots=True)
class Fence:
    """What a batch of one partition must still hold to commit."""

    stream: str
    partition: int
    token: int

    async def check(self, conn: asyncpg.Connection) -> None:
        status = await conn.execute(
            _CHECK_TOKEN, self.stream, self.partition, self.token
        )
        if _rowcount(status) != 1:
            raise FencedOut(f"partition {self.partition} has a newer owner")


# The same for the batches of several partitions committed together (one
# statement): rows locked in partition order.
_CHECK_TOKENS = """
    WITH mine AS (
        SELECT o.stream, o.partition FROM partition_owners o
        JOIN unnest($1::text[], $2::int[], $3::bigint[])
            AS f(stream, partition, token)
            ON o.stream = f.stream AND o.partition = f.partition
            AND o.token = f.token
        ORDER BY o.stream, o.partition
        FOR UPDATE OF o
    )
    UPDATE partition_owners o SET committed_at = now() FROM mine
    WHERE o.stream = mine.stream AND o.partition = mine.partition
"""


# The fence checks, matching no partition (``tables.warm_pool``).
FENCE_WARMUP: list[Warmup] = [
    (_CHECK_TOKEN, ("", -1, -1)),
    (_CHECK_TOKENS, ([], [], [])),
]


async def check_fences(conn: asyncpg.Connection, fences: Sequence[Fence]) -> None:
    """``Fence.check`` for several partitions in one round trip."""
    if len(fences) == 1:
        await fences[0].check(conn)
        return
    status = await conn.execute(
        _CHECK_TOKENS,
        [f.stream for f in fences],
        [f.partition for f in fences],
        [f.token for f in fences],
    )
    if _rowcount(status) != len(fences):
        raise FencedOut("a partition of the batch has a newer owner")


def _rowcount(status: str) -> int:
    """The row count of a command tag (``UPDATE 3``)."""
    return int(status.rsplit(" ", 1)[-1])


@dataclass(frozen=True, slots=True)
class Assignment:
    """The outcome of one ownership round."""

    taken: dict[int, Fence]
    lost: list[int]
    to_release: list[int]
    members: int
    waiting: bool  # some partition that is ours is still held by another worker


class Ownership:
    """The partitions one worker owns, kept up to date by ``tick``."""

    def __init__(
        self,
        redis: Redis,
        engine: AsyncEngine,
        streams: Streams,
        consumer: str,
        ttl_ms: int,
    ) -> None:
        self.redis = redis
        self.engine = engine
        self.streams = streams
        self.consumer = consumer
        self.ttl_ms = ttl_ms
        self.owned: dict[int, Fence] = {}
        self._hold = redis.register_script(_HOLD)
        self._release = redis.register_script(_RELEASE)

    @property
    def members_key(self) -> str:
        return f"{self.streams.name}:workers"

    def lease_key(self, partition: int) -> str:
        return lease_key(self.streams, partition)

    async def members(self) -> list[str]:
        """Live workers, by name."""
        now = int(time.time() * 1000)
        names = await self.redis.zrangebyscore(
            self.members_key, now - self.ttl_ms, "+inf"
        )
        return sorted(n.decode() if isinstance(n, bytes) else str(n) for n in names)

    def desired(self, members: list[str]) -> set[int]:
        if self.consumer not in members:
            return set()
        index, n = members.index(self.consumer), len(members)
        return {p for p in range(len(self.streams)) if p % n == index}

    async def tick(self) -> Assignment:
        """Heartbeat, renew what we own, take what is ours and free.

        Returns the partitions newly taken (with their fences), those whose lease
        was lost, and those to hand over (the caller releases them with
        ``release`` once their in-flight batches are done)."""
        now = int(time.time() * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self.members_key, {self.consumer: now})
            pipe.zremrangebyscore(self.members_key, "-inf", now - 10 * self.ttl_ms)
            await pipe.execute()
        members = await self.members()
        desired = self.desired(members)
        lost: list[int] = []
        for p in list(self.owned):
            if not await self._hold(
                keys=[self.lease_key(p)], args=[self.consumer, self.ttl_ms]
            ):
                lost.append(p)
                del self.owned[p]
        taken: dict[int, Fence] = {}
        for p in sorted(desired - set(self.owned)):
            if await self._hold(
                keys=[self.lease_key(p)], args=[self.consumer, self.ttl_ms]
            ):
                fence = await self._take_token(p)
                self.owned[p] = fence
                taken[p] = fence
        to_release = sorted(set(self.owned) - desired)
        if taken or lost:
            log.info(
                "partition ownership changed",
                extra={
                    "consumer": self.consumer,
                    "taken": sorted(taken),
                    "lost": lost,
                    "owned": sorted(self.owned),
                    "workers": len(members),
                },
            )
        waiting = bool(desired - set(self.owned))
        return Assignment(taken, lost, to_release, len(members), waiting)

    async def _take_token(self, partition: int) -> Fence:
        async with self.engine.begin() as conn:
            token = await conn.scalar(
                _TAKE_TOKEN,
                {
                    "stream": self.streams.name,
                    "partition": partition,
                    "owner": self.consumer,
                },
            )
        return Fence(self.streams.name, partition, int(token))

    async def forget(self, partition: int) -> None:
        """Stop owning a partition whose token turned out stale; the next round
        takes it again with a new token (and finishes its pending entries)."""
        self.owned.pop(partition, None)
        await self._release(keys=[self.lease_key(partition)], args=[self.consumer])

    async def release(self, partition: int) -> None:
        """Give a partition up (its batches are finished)."""
        self.owned.pop(partition, None)
        await self._release(keys=[self.lease_key(partition)], args=[self.consumer])
        log.info(
            "partition released",
            extra={"consumer": self.consumer, "partition": partition},
        )

    async def leave(self) -> None:
        """On a clean exit: release everything and leave the member set."""
        for p in list(self.owned):
            await self.release(p)
        await self.redis.zrem(self.members_key, self.consumer)


def lease_key(streams: Streams, partition: int) -> str:
    return streams.partitions[partition].lease_key


async def partition_owners(redis: Redis, streams: Streams) -> list[str | None]:
    """The current owner of every partition (None: no owner)."""
    async with redis.pipeline(transaction=False) as pipe:
        for p in range(len(streams)):
            pipe.get(lease_key(streams, p))
        values = await pipe.execute()
    return [v.decode() if isinstance(v, bytes) else v for v in values]
