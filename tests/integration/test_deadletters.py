"""Dead letters: poison, undecodable and failing events; replay and purge."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow.api import create_app
from eventflow.config import Settings
from eventflow.metrics import Metrics
from eventflow.pipeline.worker import Worker
from eventflow.processors import EventView
from tests.integration.helpers import count, first_stream


def page_view(page: str = "/home") -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "page_view",
        "user_id": "u1",
        "properties": {"page": page},
    }


def _broken_page_view(event: EventView) -> dict[str, Any]:
    raise RuntimeError("geo lookup failed")


async def test_failed_event_is_listed_fixed_and_replayed_once(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    make_worker: Callable[..., Worker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ok, bad = page_view(), page_view("/broken")
    for body in (ok, bad):
        assert (await client.post("/events", json=body)).status_code == 202
    # A bug in one enrichment: the event is dead-lettered, the worker carries on.
    worker = make_worker()
    fixed = worker.processors["page_view"]
    worker.processors["page_view"] = _broken_page_view
    await worker.run(until_empty=True)
    assert await count(engine, "failed_events") == 2
    status = (await client.get(f"/events/{bad['event_id']}")).json()
    assert status["status"] == "failed"
    assert "geo lookup failed" in status["error"]

    listed = (
        await client.get("/dead-letters", params={"error_type": "RuntimeError"})
    ).json()
    assert listed["total"] == 2
    first = listed["items"][0]
    shown = (await client.get(f"/dead-letters/{first['id']}")).json()
    assert shown["payload"] and shown["error"] == "geo lookup failed"
    paged = (await client.get("/dead-letters", params={"limit": 1})).json()
    assert (
        len(paged["items"]) == 1 and paged["next_after_id"] == paged["items"][0]["id"]
    )

    worker.processors["page_view"] = fixed  # the fix
    dry = await client.post(
        "/dead-letters/replay",
        json={"filter": {"event_type": "page_view"}, "dry_run": True},
    )
    assert dry.json()["matched"] == 2 and dry.json()["replayed"] == 0
    assert await count(engine, "failed_events", "replayed_at IS NULL") == 2
    done = await client.post(
        "/dead-letters/replay",
        json={"filter": {"event_type": "page_view"}, "dry_run": False},
    )
    assert done.json()["replayed"] == 2
    # Replaying twice before a worker runs still yields one row per event.
    assert (await client.post(f"/dead-letters/{first['id']}/replay")).status_code == 200
    await make_worker().run(until_empty=True)
    assert await count(engine, "processed_events") == 2
    assert await count(engine, "failed_events") == 0
    assert (await client.get(f"/events/{bad['event_id']}")).json()["status"] == (
        "processed"
    )


async def test_invalid_stream_entry_is_fixed_by_replaying_new_properties(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    redis: Redis,
    settings: Settings,
    make_worker: Callable[..., Worker],
) -> None:
    # Written straight into the stream by some other producer, bypassing the API.
    event_id = str(uuid.uuid4())
    message = orjson.dumps(
        {
            "id": event_id,
            "type": "purchase",
            "user": "u",
            "ts": "2026-01-01T00:00:00Z",
            "props": {"amount": -3},
            "recv": "2026-01-01T00:00:00Z",
            "cid": "c1",
        }
    )
    await redis.xadd(first_stream(settings), {"e": message})
    await make_worker().run(until_empty=True)
    page = (await client.get("/dead-letters", params={"event_type": "purchase"})).json()
    (item,) = page["items"]
    assert item["error_type"] == "InvalidEvent"
    assert "amount" in item["error"]
    # A correction that still breaks the schema is refused, naming the field,
    # and changes nothing.
    wrong = await client.post(
        f"/dead-letters/{item['id']}/replay", json={"properties": {"amount": -1}}
    )
    assert wrong.status_code == 422, wrong.text
    assert "amount" in wrong.text
    again = (await client.get(f"/dead-letters/{item['id']}")).json()
    assert again["replay_count"] == 0 and again["replayed_at"] is None
    fixed = await client.post(
        f"/dead-letters/{item['id']}/replay", json={"properties": {"amount": 3}}
    )
    assert fixed.status_code == 200, fixed.text
    await make_worker().run(until_empty=True)
    assert await count(engine, "processed_events", f"event_id = '{event_id}'") == 1
    assert await count(engine, "failed_events") == 0


async def test_undecodable_entries_are_dead_lettered_not_fatal(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    redis: Redis,
    settings: Settings,
    make_worker: Callable[..., Worker],
) -> None:
    await redis.xadd(first_stream(settings), {"e": b"\xff\x00 not json"})
    await redis.xadd(first_stream(settings), {"unrelated": "field"})
    good = page_view()
    assert (await client.post("/events", json=good)).status_code == 202
    report = await make_worker().run(until_empty=True)
    assert report.failed == 2 and report.processed == 1
    # Redelivery of the same bad entry does not create a second dead letter.
    assert (
        await count(engine, "failed_events", "error_type = 'UndecodableMessage'") == 2
    )
    page = (await client.get("/dead-letters")).json()
    first = page["items"][0]["id"]
    refused = await client.post(f"/dead-letters/{first}/replay")
    assert refused.status_code == 422
    assert (await client.delete(f"/dead-letters/{first}")).status_code == 204
    assert (await client.delete(f"/dead-letters/{first}")).status_code == 404
    dry = (await client.delete("/dead-letters")).json()
    assert dry == {"purged": 1, "dry_run": True}
    assert (await client.delete("/dead-letters", params={"dry_run": False})).json()[
        "purged"
    ] == 1
    assert await count(engine, "failed_events") == 0
    assert await redis.xlen(first_stream(settings)) == 0


async def test_poison_entry_is_dead_lettered_after_max_deliveries(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    redis: Redis,
    settings: Settings,
    make_worker: Callable[..., Worker],
) -> None:
    body = page_view()
    assert (await client.post("/events", json=body)).status_code == 202
    worker = make_worker(max_deliveries=3)
    await worker.streams.ensure_group()
    # Consumers that take the entry and die before acknowledging it, repeatedly.
    entries = await worker.streams.partitions[0].read("crashy", 10, 10)
    (entry,) = entries
    for _ in range(3):
        await redis.xclaim(
            first_stream(settings),
            settings.consumer_group,
            "crashy",
            0,
            [entry.entry_id],
        )
    await worker.run(until_empty=True)
    assert await count(engine, "processed_events") == 0
    page = (await client.get("/dead-letters")).json()
    (item,) = page["items"]
    assert item["error_type"] == "PoisonMessage"
    assert item["attempts"] >= 4
    assert item["stream_entry_id"] == entry.entry_id
    # After investigation it is replayed and processed normally, once.
    assert (await client.post(f"/dead-letters/{item['id']}/replay")).status_code == 200
    await make_worker().run(until_empty=True)
    assert await count(engine, "processed_events") == 1
    assert await count(engine, "failed_events") == 0


async def test_backpressure_answers_429_with_retry_after(
    settings: Settings, engine: AsyncEngine
) -> None:
    limited = settings.model_copy(update={"max_consumer_lag": 5})
    app = create_app(limited, Metrics())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            for _ in range(6):
                assert (await c.post("/events", json=page_view())).status_code == 202
            await app.state.ctx.refresh_stream_state()
            refused = await c.post("/events", json=page_view())
            assert refused.status_code == 429
            assert int(refused.headers["retry-after"]) > 0
            batch = await c.post("/events/batch", json={"events": [page_view()]})
            assert batch.status_code == 429
    assert await count(engine, "raw_events") == 6


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": str(settings.database_dsn),
        "REDIS_URL": str(settings.redis_dsn),
        "EVENTFLOW_STREAM_NAME": settings.stream_name,
        "EVENTFLOW_CONSUMER_GROUP": settings.consumer_group,
    }
    return subprocess.run(
        [sys.executable, "-m", "eventflow", "dlq", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_dlq_command_line(
    engine: AsyncEngine,
    redis: Redis,
    settings: Settings,
    make_worker: Callable[..., Worker],
) -> None:
    event_id = str(uuid.uuid4())
    message = orjson.dumps(
        {
            "id": event_id,
            "type": "purchase",
            "user": None,
            "ts": "2026-01-01T00:00:00Z",
            "props": {"amount": -1},
            "recv": "2026-01-01T00:00:00Z",
            "cid": "cli",
        }
    )
    await redis.xadd(first_stream(settings), {"e": message})
    await redis.xadd(first_stream(settings), {"e": b"junk"})
    await make_worker().run(until_empty=True)

    listed = _cli(settings, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    page = orjson.loads(listed.stdout)
    assert page["total"] == 2
    invalid = next(i for i in page["items"] if i["error_type"] == "InvalidEvent")
    shown = _cli(settings, "show", str(invalid["id"]))
    assert orjson.loads(shown.stdout)["payload"]["id"] == event_id
    table = _cli(settings, "list", "--type", "purchase")
    assert "InvalidEvent" in table.stdout

    dry = _cli(settings, "replay", "--all", "--dry-run")
    assert "would replay 1 of 2" in dry.stdout
    assert "not an EventFlow event" in dry.stdout
    assert _cli(settings, "replay").returncode == 2  # says what to give
    done = _cli(settings, "replay", str(invalid["id"]))
    assert "replayed 1 of 1" in done.stdout
    assert await count(engine, "failed_events", "replayed_at IS NOT NULL") == 1

    assert "would purge 2" in _cli(settings, "purge", "--all", "--dry-run").stdout
    # --error-type is exact: a partial name matches nothing.
    assert "purged 0" in _cli(settings, "purge", "--error-type", "Undecodable").stdout
    assert (
        await count(engine, "failed_events", "error_type = 'UndecodableMessage'") == 1
    )
    assert (
        "purged 1"
        in _cli(settings, "purge", "--error-type", "UndecodableMessage").stdout
    )
