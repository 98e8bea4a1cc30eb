"""Redis Streams operations: publish, group set-up, read, acknowledge, reclaim.

The queue is split into ``partitions`` streams. An event goes to the partition of
its partition key (``partition_of``); each partition's keys carry a hash tag, so a
partition lives in one Redis Cluster slot and no command ever spans two slots.
``Stream`` is one partition, ``Streams`` all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import NoScriptError, RedisError, ResponseError

from eventflow.config import Settings
from eventflow.errors import LeaseLost
from eventflow.models import Event

FIELD = b"e"

# Appends every message given as an argument: one command for a whole batch, so the
# client packs one request instead of one per event.
_PUBLISH = """
local ids = {}
for i = 1, #ARGV do
    ids[i] = redis.call('XADD', KEYS[1], '*', 'e', ARGV[i])
end
return ids
"""
PUBLISH_CHUNK = 2000

# Acknowledges, then deletes, the entries listed (space-separated) in ARGV[2]: one
# short command per batch instead of two commands with an argument per entry.
_ACK_DELETE = """
local ids = {}
for id in string.gmatch(ARGV[2], "%S+") do
    ids[#ids + 1] = id
end
local acked = 0
for i = 1, #ids, 500 do
    local chunk = {unpack(ids, i, math.min(i + 499, #ids))}
    acked = acked + redis.call('XACK', KEYS[1], ARGV[1], unpack(chunk))
    redis.call('XDEL', KEYS[1], unpack(chunk))
end
return acked
"""

# Reads new entries for ARGV[2] only while it holds the partition's lease (KEYS[2]):
# a worker that lost its lease cannot take entries the new owner must see. {0}:
# the lease is not ours; {1, reply}: the read (reply false when nothing is new).
_READ_OWNED = """
if redis.call('GET', KEYS[2]) ~= ARGV[2] then
    return {0}
end
return {1, redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3],
    'STREAMS', KEYS[1], '>')}
"""


@dataclass(slots=True)
class Entry:
    """One stream entry as read by a consumer."""

    entry_id: str
    data: bytes | None  # None when the entry lacks EventFlow's field
    deliveries: int = 1


@dataclass(frozen=True, slots=True)
class StreamState:
    length: int
    lag: int
    pending: int
    oldest_pending_age_s: float
    consumers: int
    last_delivered_id: str
    oldest_pending_ms: int | None = None


QUARANTINE_MAX = 100_000
MAX_PARTITIONS = 1024


def entry_ms(entry_id: str | bytes) -> int:
    """The creation time (ms since the epoch) encoded in a stream entry id."""
    if isinstance(entry_id, bytes):
        entry_id = entry_id.decode()
    return int(entry_id.split("-", 1)[0])


class PublishIncomplete(RedisError):
    """Some partitions could not be written to (the reconciler publishes their
    events later)."""

    def __init__(self, events: int, all_failed: bool, cause: BaseException) -> None:
        super().__init__(f"{events} events not published: {cause}")
        self.events = events
        self.all_failed = all_failed


def partition_of(key: str, partitions: int) -> int:
    """The partition of a partition key: CRC-32 (zlib, IEEE) of its UTF-8 bytes,
    modulo the number of partitions."""
    return zlib.crc32(key.encode()) % partitions


def partition_key(event: Event) -> str:
    """``partition_key`` when the event has one, else ``user_id``, else its id."""
    return event.partition_key or event.user_id or str(event.event_id)


@functools.cache
def partition_tag(partition: int) -> str:
    """The hash tag of a partition's keys: ``<p>.<n>``, with the smallest ``n`` that
    puts the tag within 16 slots of ``v(p) * 16384``, where ``v`` is the van der
    Corput sequence (0, 1/2, 1/4, 3/4, 1/8, ...). The first P partitions therefore
    spread evenly over the slots, hence over the masters of a cluster, whatever P
    is, and a partition keeps its keys when P is raised."""
    if not 0 <= partition < MAX_PARTITIONS:
        raise ValueError(f"partitions are numbered 0 to {MAX_PARTITIONS - 1}")
    bits = MAX_PARTITIONS.bit_length() - 1
    reversed_ = int(format(partition, f"0{bits}b")[::-1], 2)
    width = REDIS_CLUSTER_HASH_SLOTS // MAX_PARTITIONS
    low = reversed_ * width
    n = 0
    while not low <= key_slot(f"{partition}.{n}".encode()) < low + width:
        n += 1
    return f"{partition}.{n}"


def partition_stream(stream: str, partition: int) -> str:
    """The stream key of a partition, e.g. ``eventflow:events:{3.41}``."""
    return f"{stream}:{{{partition_tag(partition)}}}"


class Stream:
    """One partition: its stream and consumer group."""

    def __init__(
        self, redis: Redis, stream: str, group: str, partition: int = 0
    ) -> None:
        self.redis = redis
        self.stream = stream
        self.group = group
        self.partition = partition
        self._publish = redis.register_script(_PUBLISH)
        self._ack_delete = redis.register_script(_ACK_DELETE)
        self._read_owned = redis.register_script(_READ_OWNED)

    @property
    def lease_key(self) -> str:
        """The key of this partition's lease (in the partition's slot)."""
        return f"{self.stream}:lease"

    async def ensure_group(self) -> None:
        """Create the stream and the group if missing; an existing group is fine."""
        try:
            await self.redis.xgroup_create(
                self.stream, self.group, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def publish_into(self, pipe: Any, events: Sequence[Event]) -> None:
        """Queue the publish of ``events`` (at most PUBLISH_CHUNK) on a pipeline.

        By the script's hash alone: a pipeline that carries a registered script
        asks Redis whether the script exists first, a round trip of its own on
        every publish. The caller loads the script when Redis does not have it
        (``NoScriptError``)."""
        pipe.evalsha(
            self._publish.sha, 1, self.stream, *(e.to_message() for e in events)
        )

    async def load_scripts(self) -> None:
        """Load the publish script (into a Redis that restarted without it)."""
        await self.redis.script_load(_PUBLISH)

    async def publish(self, events: Sequence[Event]) -> list[str]:
        """Append events, one command per chunk; returns their entry ids."""
        ids: list[str] = []
        for start in range(0, len(events), PUBLISH_CHUNK):
            chunk = events[start : start + PUBLISH_CHUNK]
            reply = await self._publish(
                keys=[self.stream], args=[e.to_message() for e in chunk]
            )
            ids += [i.decode() if isinstance(i, bytes) else str(i) for i in reply]
        return ids

    async def read(self, consumer: str, count: int, block_ms: int) -> list[Entry]:
        """New entries for ``consumer`` (``>``), waiting up to ``block_ms``."""
        try:
            reply: Any = await self.redis.xreadgroup(
                self.group, consumer, {self.stream: ">"}, count=count, block=block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # The stream or group vanished (Redis restarted or flushed): recreate.
            await self.ensure_group()
            return []
        return [
            _entry(eid, fields) for _, items in reply or [] for eid, fields in items
        ]

    async def read_owned(self, consumer: str, count: int) -> list[Entry]:
        """New entries for ``consumer``, which must hold the lease; no waiting.
        Raises ``LeaseLost`` when it does not."""
        try:
            reply: Any = await self._read_owned(
                keys=[self.stream, self.lease_key], args=[self.group, consumer, count]
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()
            return []
        if not reply or int(reply[0]) != 1:
            raise LeaseLost(f"partition {self.partition} has another owner")
        if len(reply) < 2 or not reply[1]:
            return []
        return [_entry(eid, _fields(f)) for _, items in reply[1] for eid, f in items]

    async def wait_for_new(self, after: str, block_ms: int) -> None:
        """Wait up to ``block_ms`` for an entry newer than ``after`` (no group,
        nothing is delivered)."""
        await self.redis.xread({self.stream: after}, count=1, block=block_ms)

    async def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
        """Take over entries idle longer than ``min_idle_ms`` from any consumer.

        Delivery counts come from XPENDING so poison entries can be recognised.
        """
        try:
            reply = await self.redis.xautoclaim(
                self.stream, self.group, consumer, min_idle_ms, "0-0", count=count
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()
            return []
        claimed = [(eid, fields) for eid, fields in reply[1] if fields is not None]
        deleted = reply[2] if len(reply) > 2 else []
        if deleted:
            # Entries deleted from the stream but still pending: just acknowledge.
            await self.redis.xack(self.stream, self.group, *deleted)
        if not claimed:
            return []
        first, last = claimed[0][0], claimed[-1][0]
        pending = await self.redis.xpending_range(
            self.stream, self.group, first, last, len(claimed) + 10, consumer
        )
        counts = {p["message_id"]: int(p["times_delivered"]) for p in pending}
        return [_entry(eid, fields, counts.get(eid, 1)) for eid, fields in claimed]

    async def ack(self, entry_ids: Sequence[str]) -> None:
        """Acknowledge and delete handled entries in one round trip.

        Deleting keeps memory bounded; only acknowledged entries are deleted.
        """
        if not entry_ids:
            return
        await self._ack_delete(
            keys=[self.stream], args=[self.group, " ".join(entry_ids)]
        )

    async def state(self) -> StreamState:
        """Length, lag, pending and consumers, for metrics and backpressure."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(self.stream)
            pipe.xinfo_groups(self.stream)
            pipe.xpending(self.stream, self.group)
            try:
                length, groups, pending = await pipe.execute()
            except ResponseError:
                return StreamState(0, 0, 0, 0.0, 0, "0-0")
        group = next((g for g in groups if _s(g.get("name")) == self.group), None)
        if group is None:
            return StreamState(int(length), int(length), 0, 0.0, 0, "0-0")
        lag = group.get("lag")
        oldest = pending.get("min") if pending else None
        age = max(0.0, time.time() - entry_ms(oldest) / 1000) if oldest else 0.0
        return StreamState(
            length=int(length),
            # Without a reported lag, count what is not pending as undelivered.
            lag=int(lag)
            if lag is not None
            else max(0, int(length) - int(group.get("pending", 0))),
            pending=int(group.get("pending", 0)),
            oldest_pending_age_s=age,
            consumers=int(group.get("consumers", 0)),
            last_delivered_id=_s(group.get("last-delivered-id")) or "0-0",
            oldest_pending_ms=entry_ms(oldest) if oldest else None,
        )

    async def oldest_unsettled_ms(
        self, stuck_after_ms: int | None = None
    ) -> int | None:
        """Creation time of the oldest entry still pending or not yet delivered.

        ``None`` means Redis holds no unfinished entry at all. The reconciler uses it
        to tell events that are merely queued from events Redis has lost. Entries
        pending for longer than ``stuck_after_ms`` are left out: one stuck entry
        must not hide every later loss.
        """
        state = await self.state()
        candidates: list[int] = []
        oldest = state.oldest_pending_ms
        if oldest is not None and stuck_after_ms is not None:
            since = int(time.time() * 1000) - stuck_after_ms
            if oldest < since:
                recent: Any = await self.redis.xpending_range(
                    self.stream, self.group, min=f"{since}-0", max="+", count=1
                )
                oldest = entry_ms(_s(recent[0]["message_id"])) if recent else None
        if oldest is not None:
            candidates.append(oldest)
        if state.lag:
            after: Any = await self.redis.xrange(
                self.stream, min="(" + state.last_delivered_id, count=1
            )
            if after:
                candidates.append(entry_ms(after[0][0]))
        return min(candidates) if candidates else None

    async def delete_consumer(self, consumer: str) -> None:
        with contextlib.suppress(ResponseError):
            await self.redis.xgroup_delconsumer(self.stream, self.group, consumer)

    async def consumer_pending(self, consumer: str) -> int:
        try:
            consumers = await self.redis.xinfo_consumers(self.stream, self.group)
        except ResponseError:
            return 0
        for c in consumers:
            if _s(c.get("name")) == consumer:
                return int(c.get("pending", 0))
        return 0

    async def remove_idle_consumers(self, idle_ms: int, keep: str) -> list[str]:
        """Delete consumers with nothing pending that have been idle ``idle_ms``."""
        try:
            consumers = await self.redis.xinfo_consumers(self.stream, self.group)
        except ResponseError:
            return []
        removed = []
        for c in consumers:
            name = _s(c.get("name"))
            idle = int(c.get("idle", 0))
            if (
                name
                and name != keep
                and int(c.get("pending", 0)) == 0
                and idle >= idle_ms
            ):
                await self.delete_consumer(name)
                removed.append(name)
        return removed


class Streams:
    """Every partition of one deployment, and its deployment-wide keys."""

    def __init__(
        self, redis: Redis, name: str, group: str, partitions: int = 1
    ) -> None:
        self.redis = redis
        self.name = name
        self.group = group
        self.partitions = [
            Stream(redis, partition_stream(name, p), group, p)
            for p in range(partitions)
        ]
        # Standalone Redis: one pipelined round trip for every partition.
        self._pipelined = isinstance(redis, Redis)

    @classmethod
    def from_settings(cls, redis: Redis, settings: Settings) -> Streams:
        return cls(
            redis, settings.stream_name, settings.consumer_group, settings.partitions
        )

    def __len__(self) -> int:
        return len(self.partitions)

    def of(self, event: Event) -> Stream:
        return self.partitions[partition_of(partition_key(event), len(self))]

    async def ensure_group(self) -> None:
        await asyncio.gather(*(p.ensure_group() for p in self.partitions))

    def by_partition(self, events: Sequence[Event]) -> dict[int, list[Event]]:
        """Events by partition, each list in the order given."""
        groups: dict[int, list[Event]] = {}
        for event in events:
            groups.setdefault(partition_of(partition_key(event), len(self)), []).append(
                event
            )
        return groups

    async def publish_groups(
        self, groups: dict[int, list[Event]]
    ) -> dict[int, BaseException]:
        """Append each partition's events, in order; the partitions that failed."""
        if not groups:
            return {}
        if self._pipelined and all(len(g) <= PUBLISH_CHUNK for g in groups.values()):
            return await self._publish_pipelined(groups)
        results = await asyncio.gather(
            *(self.partitions[p].publish(g) for p, g in groups.items()),
            return_exceptions=True,
        )
        return {
            p: r
            for p, r in zip(groups, results, strict=True)
            if isinstance(r, BaseException)
        }

    async def _publish_pipelined(
        self, groups: dict[int, list[Event]]
    ) -> dict[int, BaseException]:
        """One pipeline for every partition's publish (one Redis, not a cluster).
        Partitions that Redis refused with ``NOSCRIPT`` (it restarted or was
        flushed) are published again, once, after the script is loaded."""
        failed: dict[int, BaseException] = {}
        for attempt in range(2):
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for p, group in groups.items():
                        self.partitions[p].publish_into(pipe, group)
                    replies = await pipe.execute(raise_on_error=False)
            except (RedisError, OSError) as exc:
                return {**failed, **dict.fromkeys(groups, exc)}
            missing = {}
            for (p, group), reply in zip(groups.items(), replies, strict=True):
                if isinstance(reply, NoScriptError) and attempt == 0:
                    missing[p] = group
                elif isinstance(reply, BaseException):
                    failed[p] = reply
            if not missing:
                break
            try:
                await self.partitions[0].load_scripts()
            except (RedisError, OSError) as exc:
                return {**failed, **dict.fromkeys(missing, exc)}
            groups = missing
        return failed

    async def publish(self, events: Sequence[Event]) -> None:
        """Append events to their partitions, in the order given. Raises
        ``PublishIncomplete`` when some partitions could not be written."""
        if len(self.partitions) == 1:
            await self.partitions[0].publish(events)
            return
        groups = self.by_partition(events)
        failed = await self.publish_groups(groups)
        if failed:
            raise PublishIncomplete(
                sum(len(groups[p]) for p in failed),
                len(failed) == len(groups),
                next(iter(failed.values())),
            )

    async def states(self) -> list[StreamState]:
        return list(await asyncio.gather(*(p.state() for p in self.partitions)))

    async def state(self) -> StreamState:
        """The sum over partitions (the oldest pending entry of all)."""
        return combine(await self.states())

    async def oldest_unsettled_ms(
        self, stuck_after_ms: int | None = None
    ) -> int | None:
        found = await asyncio.gather(
            *(p.oldest_unsettled_ms(stuck_after_ms) for p in self.partitions)
        )
        known = [ms for ms in found if ms is not None]
        return min(known) if known else None

    @property
    def quarantine_key(self) -> str:
        return f"{self.name}:quarantine"

    async def quarantine(self, entry_id: str, payload: str, error: str) -> None:
        """Keep an entry that not even a dead letter could hold (the stream entry
        is acknowledged afterwards); the newest QUARANTINE_MAX are kept."""
        await self.redis.xadd(
            self.quarantine_key,
            {"entry": entry_id, "payload": payload, "error": error},
            maxlen=QUARANTINE_MAX,
            approximate=True,
        )

    async def quarantined(self, count: int) -> list[dict[str, str]]:
        """The newest quarantined entries, newest first."""
        reply: Any = await self.redis.xrevrange(self.quarantine_key, count=count)
        return [
            {"id": _s(entry_id), **{_s(k): _s(v) for k, v in fields.items()}}
            for entry_id, fields in reply
        ]

    @property
    def stats_key(self) -> str:
        return f"{self.name}:stats"

    async def count_duplicates(self, n: int) -> None:
        """Deployment-wide duplicate count (for ``/metrics/summary``)."""
        if n:
            await self.redis.hincrby(self.stats_key, "duplicates", n)

    async def duplicates(self) -> int:
        value = await self.redis.hget(self.stats_key, "duplicates")
        return int(value or 0)


def combine(states: Sequence[StreamState]) -> StreamState:
    if not states:
        return StreamState(0, 0, 0, 0.0, 0, "0-0")
    oldest = [s.oldest_pending_ms for s in states if s.oldest_pending_ms is not None]
    return StreamState(
        length=sum(s.length for s in states),
        lag=sum(s.lag for s in states),
        pending=sum(s.pending for s in states),
        oldest_pending_age_s=max(s.oldest_pending_age_s for s in states),
        consumers=max(s.consumers for s in states),
        last_delivered_id="",
        oldest_pending_ms=min(oldest) if oldest else None,
    )


def _s(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return "" if value is None else str(value)


def _fields(raw: Any) -> dict[bytes, bytes]:
    """Entry fields as a Lua script returns them: a flat list."""
    if isinstance(raw, dict):
        return raw
    return {raw[i]: raw[i + 1] for i in range(0, len(raw) - 1, 2)}


def _entry(
    entry_id: bytes | str, fields: dict[bytes, bytes] | None, deliveries: int = 1
) -> Entry:
    eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return Entry(eid, (fields or {}).get(FIELD), deliveries)
