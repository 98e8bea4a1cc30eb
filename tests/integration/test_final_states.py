"""Every stream entry reaches a final state; no input answers 5xx.

Each test reproduces a path where accepted work used to stop moving or a request
used to get a 500, against real PostgreSQL and Redis.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import orjson
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow.config import Settings
from eventflow.metrics import Metrics
from eventflow.pipeline.reconciler import reconcile_once
from eventflow.pipeline.streams import Streams
from eventflow.pipeline.worker import Worker
from eventflow.store.events import (
    FailedRow,
    ProcessedRow,
    event_detail,
    write_results,
)
from eventflow.store.tables import raw_transaction
from tests.integration.helpers import app_client, count, first_stream


def custom(n: int) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "custom",
        "properties": {"n": n},
    }


def foreign(**fields: Any) -> bytes:
    message = {
        "id": str(uuid.uuid4()),
        "type": "custom",
        "user": None,
        "ts": "2026-01-01T00:00:00Z",
        "props": {},
        "recv": "2026-01-01T00:00:00Z",
        "cid": "foreign",
    }
    return orjson.dumps({**message, **fields})


async def test_entries_of_unexpected_shape_are_dead_lettered_alone(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    redis: Redis,
    settings: Settings,
    make_worker: Callable[..., Worker],
) -> None:
    for n in range(50):
        assert (await client.post("/events", json=custom(n))).status_code == 202
    bad = [
        foreign(id=123),
        foreign(type="t" * 500),
        foreign(type=["custom"]),
        foreign(cid="c" * 5000),
        foreign(user={"a": 1}),
        foreign(ts=17),
        foreign(ver="two"),
    ]
    for message in bad:
        await redis.xadd(first_stream(settings), {"e": message})
    for n in range(50, 100):
        assert (await client.post("/events", json=custom(n))).status_code == 202
    await asyncio.wait_for(make_worker().run(until_empty=True), 30)
    assert await count(engine, "processed_events") == 100
    assert await count(engine, "failed_events") == len(bad)
    assert (
        await count(engine, "failed_events", "error_type = 'UndecodableMessage'") == 7
    )
    # Stored whole: the 5,000-character correlation id is in the payload.
    assert await count(engine, "failed_events", "length(payload) > 5000") == 1
    state = await Streams.from_settings(redis, settings).state()
    assert state.pending == 0 and state.lag == 0


async def test_poison_is_dead_lettered_before_it_is_decoded(
    engine: AsyncEngine,
    redis: Redis,
    settings: Settings,
    make_worker: Callable[..., Worker],
) -> None:
    streams = Streams.from_settings(redis, settings)
    await streams.ensure_group()
    await redis.xadd(first_stream(settings), {"e": foreign(type="t" * 500)})
    # Delivered (and never acknowledged) more often than max_deliveries allows.
    for _ in range(settings.max_deliveries + 1):
        await redis.xautoclaim(
            first_stream(settings), settings.consumer_group, "crashy", 0, "0-0"
        ) if _ else await streams.partitions[0].read("crashy", 10, 10)
    await asyncio.wait_for(make_worker().run(until_empty=True), 30)
    assert await count(engine, "failed_events", "error_type = 'PoisonMessage'") == 1


async def test_reconciler_republishes_past_a_stuck_entry(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    redis: Redis,
    settings: Settings,
) -> None:
    streams = Streams.from_settings(redis, settings)
    await streams.ensure_group()
    # An entry from an hour ago, delivered to a consumer that died holding it.
    hour_ago_ms = int(time.time() * 1000) - 3_600_000
    await redis.xadd(first_stream(settings), {"e": b"junk"}, id=f"{hour_ago_ms}-0")
    await streams.partitions[0].read("dead-consumer", 10, 10)
    # An accepted event that Redis then lost.
    body = custom(1)
    assert (await client.post("/events", json=body)).status_code == 202
    entries = await redis.xrange(first_stream(settings))
    await redis.xdel(first_stream(settings), entries[-1][0])
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE raw_events SET published_at = now() - interval '1 minute'")
        )
    stuck_after = timedelta(milliseconds=(settings.max_deliveries + 1) * 200)
    republished = await reconcile_once(
        engine, streams, Metrics(), timedelta(0), stuck_after=stuck_after
    )
    assert republished == 1


async def test_a_worker_whose_loop_dies_exits_non_zero(settings: Settings) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": str(settings.database_dsn),
        "REDIS_URL": "redis://127.0.0.1:9/0",  # nothing listens there
        # It waits two lease periods for Redis at start, then gives up.
        "EVENTFLOW_LEASE_TTL_MS": "1000",
        "EVENTFLOW_RETRY_ATTEMPTS": "2",
        "EVENTFLOW_RETRY_MAX_S": "0.1",
        "EVENTFLOW_WORKER_METRICS_PORT": "0",
    }
    done = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "eventflow", "worker", env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert await asyncio.wait_for(done.wait(), 30) != 0


async def test_until_empty_outlasts_the_shutdown_timeout(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings
) -> None:
    for start in range(0, 3000, 500):
        items = [custom(n) for n in range(start, start + 500)]
        answer = await client.post("/events/batch", json={"events": items})
        assert answer.json()["accepted"] == 500
    env = {
        **os.environ,
        "DATABASE_URL": str(settings.database_dsn),
        "REDIS_URL": str(settings.redis_dsn),
        "EVENTFLOW_STREAM_NAME": settings.stream_name,
        "EVENTFLOW_CONSUMER_GROUP": settings.consumer_group,
        "EVENTFLOW_WORKER_BATCH_SIZE": "50",
        "EVENTFLOW_SHUTDOWN_TIMEOUT_S": "0.1",
        "EVENTFLOW_WORKER_METRICS_PORT": "0",
    }
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "eventflow", "worker", "--until-empty", env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert await asyncio.wait_for(worker.wait(), 60) == 0
    assert await count(engine, "processed_events") == 3000


async def test_processed_and_dead_lettered_at_once_ends_in_one_table(
    client: httpx.AsyncClient, engine: AsyncEngine, make_worker: Callable[..., Worker]
) -> None:
    """Two workers hold copies of one event: one stores it while the other
    dead-letters it (in both orders). It ends in exactly one table."""
    worker = make_worker()
    await worker.registry.ensure_loaded()
    for dead_letter_first in (True, False):
        body = custom(7)
        assert (await client.post("/events", json=body)).status_code == 202
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT event_id, received_at FROM raw_events "
                        "WHERE event_id = :id"
                    ),
                    {"id": body["event_id"]},
                )
            ).one()
        from eventflow.models import Event

        event = Event(
            row.event_id, "custom", None, row.received_at, {"n": 7}, row.received_at,
            "c", "h",
        )  # fmt: skip
        stored = [ProcessedRow(event, {}, 1)]
        dead = [
            FailedRow(
                row.event_id, "custom", "{}", "boom", "Test", 1, None, "",
                row.received_at,
            )
        ]  # fmt: skip
        first, second = (dead, stored) if dead_letter_first else (stored, dead)

        async def write(rows: list[Any], hold: asyncio.Event | None) -> None:
            async with raw_transaction(engine) as conn:
                p = [r for r in rows if isinstance(r, ProcessedRow)]
                f = [r for r in rows if isinstance(r, FailedRow)]
                await write_results(conn, p, f, "w")
                if hold is not None:
                    await hold.wait()  # commit only when told

        release = asyncio.Event()
        one = asyncio.create_task(write(first, release))
        await asyncio.sleep(0.2)
        two = asyncio.create_task(write(second, None))
        await asyncio.sleep(0.3)  # the second waits for the first's lock
        release.set()
        await asyncio.gather(one, two)
        where = f"event_id = '{row.event_id}'"
        assert await count(engine, "processed_events", where) == 1
        assert await count(engine, "failed_events", where) == 0
        # The raw row's status, set to failed by the dead letter, is processed.
        detail = await event_detail(engine, row.event_id)
        assert detail is not None and detail.status == "processed"
        assert detail.raw["status"] in ("accepted", "processed")


def event_body(fields: str) -> tuple[str, str, bytes]:
    return ("POST", "/events", b'{"event_type": "custom", ' + fields.encode() + b"}")


def batch_body(fields: str) -> tuple[str, str, bytes]:
    item = b'{"event_type": "custom", ' + fields.encode() + b"}"
    return ("POST", "/events/batch", b'{"events": [' + item + b"]}")


DEEP = '"properties": ' + '{"a": ' * 300 + "1" + "}" * 300
EARLY = '"timestamp": "0001-01-01T00:00:00+14:00"'
LATE = '"timestamp": "9999-12-31T23:59:59-14:00"'
HOSTILE: list[tuple[str, str, bytes]] = [
    event_body(DEEP),
    event_body('"properties": {"s": "\\ud800"}'),
    event_body('"properties": {"x": NaN}'),
    event_body('"properties": {"x": Infinity}'),
    event_body(EARLY),
    event_body(LATE),
    event_body('"schema_version": 99999999999'),
    batch_body(EARLY),
    batch_body(DEEP),
    batch_body('"properties": {"s": "\\udfff"}'),
    ("POST", "/events", b'{"event_type": "custom", "user_id": "\xff\xfe"}'),
    ("POST", "/events", b"\xff\xfe\x00"),
    ("POST", "/events", b"[]"),
    ("POST", "/events", b"null"),
    event_body('"properties": {"n": 1e309, "m": 1e999999}'),
    ("POST", "/events/batch", b'{"events": [' + b",".join([b"{}"] * 10_000) + b"]}"),
    ("POST", "/events/batch", b'{"events": {"not": "a list"}}'),
    ("POST", "/dead-letters/replay", b'{"filter": {"error": "\\u0000"}}'),
    ("POST", "/schemas/x", b'{"schema": {"type": 12}}'),
    ("GET", "/dead-letters/9223372036854775808", b""),
    ("DELETE", "/dead-letters/99999999999999999999", b""),
    ("GET", "/dead-letters?since=0001-01-01T00:00:00%2B14:00", b""),
    ("GET", "/dead-letters?error=a%00b", b""),
    ("DELETE", "/dead-letters?event_type=%00&dry_run=false", b""),
    ("GET", "/dead-letters?after_id=99999999999999999999", b""),
]


async def test_hostile_requests_get_4xx_and_change_nothing(
    client: httpx.AsyncClient, engine: AsyncEngine, redis: Redis, settings: Settings
) -> None:
    for method, url, body in HOSTILE:
        response = await client.request(
            method, url, content=body, headers={"content-type": "application/json"}
        )
        where = (url, body[:80], response.text)
        if response.status_code == 200 and url == "/events/batch":
            # A well-formed batch is judged per item: this one item is refused.
            assert response.json()["results"][0]["status"] == "invalid", where
        else:
            assert 400 <= response.status_code < 500, where
    assert await count(engine, "raw_events") == 0
    assert await redis.xlen(first_stream(settings)) == 0


async def test_numbers_are_stored_exactly_as_sent(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    literals = ["123456789012345678901234567890", "1e309", "2345.6789123456789", "-0.5"]
    body = (
        '{"event_type": "custom", "properties": {'
        + ", ".join(f'"n{i}": {v}' for i, v in enumerate(literals))
        + "}}"
    )
    for url, content in (
        ("/events", body),
        ("/events/batch", f'{{"events": [{body}]}}'),
    ):
        response = await client.post(
            url, content=content, headers={"content-type": "application/json"}
        )
        assert response.status_code in (200, 202), response.text
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT properties->>'n0', properties->>'n1', properties->>'n2' "
                    "FROM raw_events"
                )
            )
        ).all()
    assert len(rows) == 2
    for row in rows:
        assert row[0] == "123456789012345678901234567890"
        assert row[1].replace("E+", "e").lower() in ("1e309", "1" + "0" * 309)
        assert row[2] == "2345.6789123456789"


async def test_database_down_is_503_with_a_short_reason(settings: Settings) -> None:
    down = settings.model_copy(
        update={"database_url": "postgresql+asyncpg://nobody@127.0.0.1:9/none"}
    )
    async with app_client(down) as c:
        for url in (
            "/dead-letters",
            "/metrics/summary",
            "/events/" + str(uuid.uuid4()),
        ):
            response = await c.get(url)
            assert response.status_code == 503, (url, response.text)
            assert "Retry-After" in response.headers
        posted = await c.post("/events", json=custom(1))
        assert posted.status_code == 503
        health = await c.get("/health")
        assert health.status_code == 503
        assert health.json()["postgres"]["detail"] == "unreachable"
        for answer in (posted, health):
            assert "127.0.0.1" not in answer.text and "Errno" not in answer.text


async def test_an_event_the_database_refuses_fails_alone(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """1e200000 is valid JSON and passes validation, but PostgreSQL's numeric
    cannot hold it: the requests sharing its group commit are still stored."""
    poison = '{"event_type": "custom", "properties": {"x": 1e200000}}'
    headers = {"content-type": "application/json"}
    answers = await asyncio.gather(
        *[client.post("/events", json=custom(n)) for n in range(20)],
        client.post("/events", content=poison, headers=headers),
        *[client.post("/events", json=custom(n)) for n in range(20, 40)],
    )
    codes = [a.status_code for a in answers]
    assert codes.count(202) == 40 and codes[20] == 422, codes
    assert answers[20].json()["detail"][0]["type"] == "refused"
    batch = await client.post(
        "/events/batch",
        content='{"events": [' + f"{orjson.dumps(custom(1)).decode()}, {poison}]}}",
        headers=headers,
    )
    assert [r["status"] for r in batch.json()["results"]] == ["accepted", "invalid"]
    assert await count(engine, "raw_events") == 41


async def test_queue_limit_and_deadline_answer_503_and_store_nothing(
    settings: Settings, engine: AsyncEngine
) -> None:
    tight = settings.model_copy(
        update={"ingest_deadline_s": 0.3, "ingest_queue_limit": 5}
    )
    async with app_client(tight) as c, engine.connect() as blocker:
        # Hold raw_events: the first group commit waits for the lock.
        await blocker.execute(text("LOCK TABLE raw_events IN EXCLUSIVE MODE"))
        first = asyncio.create_task(c.post("/events", json=custom(0)))
        await asyncio.sleep(0.1)
        queued = [
            asyncio.create_task(c.post("/events", json=custom(n))) for n in (1, 2)
        ]
        await asyncio.sleep(0.05)
        full = await c.post(
            "/events/batch", json={"events": [custom(n) for n in range(9)]}
        )
        assert full.status_code == 503 and "Retry-After" in full.headers
        late = await asyncio.gather(*queued)
        assert [a.status_code for a in late] == [503, 503]
        assert all("Retry-After" in a.headers for a in late)
        await blocker.rollback()  # release the lock
        assert (await first).status_code == 202
    assert await count(engine, "raw_events") == 1


REFUSE_MARKED = """
CREATE OR REPLACE FUNCTION eventflow_test_refuse() RETURNS trigger AS $$
BEGIN
    IF NEW.{column}::text LIKE '%quarantine-me%' THEN
        RAISE EXCEPTION 'refused by a test trigger' USING ERRCODE = '23514';
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql
"""


async def test_entry_whose_dead_letter_is_refused_is_quarantined(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    redis: Redis,
    settings: Settings,
    make_worker: Callable[..., Worker],
) -> None:
    triggers = [("processed_events", "properties"), ("failed_events", "payload")]
    async with engine.begin() as conn:
        for table, column in triggers:
            function = f"refuse_{table}"
            await conn.execute(
                text(
                    REFUSE_MARKED.format(column=column).replace(
                        "eventflow_test_refuse", function
                    )
                )
            )
            await conn.execute(
                text(
                    f"CREATE TRIGGER {function} BEFORE INSERT ON {table} "
                    f"FOR EACH ROW EXECUTE FUNCTION {function}()"
                )
            )
    try:
        marked = {**custom(0), "properties": {"tag": "quarantine-me"}}
        for body in (custom(1), marked, custom(2)):
            assert (await client.post("/events", json=body)).status_code == 202
        worker = make_worker()
        await asyncio.wait_for(worker.run(until_empty=True), 30)
    finally:
        async with engine.begin() as conn:
            for table, _ in triggers:
                await conn.execute(text(f"DROP TRIGGER refuse_{table} ON {table}"))
                await conn.execute(text(f"DROP FUNCTION refuse_{table}()"))
    assert await count(engine, "processed_events") == 2
    assert await count(engine, "failed_events") == 0
    streams = Streams.from_settings(redis, settings)
    (kept,) = await streams.quarantined(10)
    assert "quarantine-me" in kept["payload"] and "test trigger" in kept["error"]
    assert worker.metrics.quarantined._value.get() == 1
    state = await streams.state()
    assert state.pending == 0 and state.lag == 0
    env = {
        **os.environ,
        "DATABASE_URL": str(settings.database_dsn),
        "REDIS_URL": str(settings.redis_dsn),
        "EVENTFLOW_STREAM_NAME": settings.stream_name,
    }
    listing = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "eventflow", "dlq", "quarantine", "--json",
        env=env, stdout=subprocess.PIPE,
    )  # fmt: skip
    stdout, _ = await listing.communicate()
    assert listing.returncode == 0
    assert orjson.loads(stdout)[0]["entry"] == kept["entry"]
    await redis.delete(streams.quarantine_key)
