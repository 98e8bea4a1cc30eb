"""The partition function and the partitions' keys."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from redis.crc import key_slot

from eventflow.models import Event
from eventflow.pipeline.streams import (
    partition_key,
    partition_of,
    partition_stream,
)


def _event(user: str | None = None, key: str | None = None) -> Event:
    now = datetime.now(UTC)
    return Event(
        event_id=uuid.UUID("0b8f3c2e-7d4a-4c1e-9f57-3a2b1c0d9e8f"),
        event_type="custom",
        user_id=user,
        timestamp=now,
        properties={},
        received_at=now,
        correlation_id="",
        body_hash="",
        partition_key=key,
    )


def test_the_partition_key_is_the_key_then_the_user_then_the_id() -> None:
    assert partition_key(_event("u1", "order-7")) == "order-7"
    assert partition_key(_event("u1")) == "u1"
    assert partition_key(_event()) == "0b8f3c2e-7d4a-4c1e-9f57-3a2b1c0d9e8f"


def test_the_partition_function_is_the_documented_crc32() -> None:
    # docs/scaling.md: zlib.crc32(key.encode("utf-8")) % partitions. Fixed
    # values, so that a change of the function cannot go unnoticed.
    assert [partition_of("user_42", p) for p in (1, 8, 16)] == [0, 5, 13]
    assert partition_of("ü", 1000) == 1675192789 % 1000


def test_partitions_spread_over_the_slots_of_three_masters() -> None:
    def master(p: int) -> int:
        return key_slot(partition_stream("eventflow:events", p).encode()) * 3 // 16384

    # Powers of two spread within one partition; other counts within a few.
    for partitions, spread in ((8, 1), (16, 1), (32, 1), (64, 1), (12, 2), (24, 2)):
        counts = [0, 0, 0]
        for p in range(partitions):
            counts[master(p)] += 1
        assert max(counts) - min(counts) <= spread, (partitions, counts)


def test_raising_the_partition_count_keeps_every_key() -> None:
    # A partition's stream name does not depend on how many partitions there
    # are: raising P adds streams, it does not move existing ones.
    assert partition_stream("s", 3) == partition_stream("s", 3)
    names = [partition_stream("s", p) for p in range(32)]
    assert len(set(names)) == 32
    for name in names:
        tag = name[name.index("{") + 1 : name.index("}")]
        # Every key of a partition shares its slot: lease, stream.
        assert key_slot(f"{name}:lease".encode()) == key_slot(name.encode())
        assert tag.split(".")[0] == str(names.index(name))
