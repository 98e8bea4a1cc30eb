"""The core path against real PostgreSQL and Redis: accept, queue, process, store."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow.config import Settings
from eventflow.metrics import Metrics
from eventflow.pipeline.worker import Worker
from tests.integration.helpers import count, first_stream


def purchase(amount: float = 49.9, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "purchase",
        "user_id": "user-1",
        "properties": {"amount": amount, "currency": "EUR"},
        **extra,
    }


async def test_happy_path_end_to_end(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    make_worker: Callable[..., Worker],
) -> None:
    body = purchase(amount=1490.0)
    response = await client.post(
        "/events", json=body, headers={"X-Correlation-ID": "trace-happy-1"}
    )
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["event_id"] == body["event_id"]
    assert answer["status"] == "accepted"
    assert response.headers["x-correlation-id"] == "trace-happy-1"
    # 202 means durable: the raw row exists before any worker ran.
    assert await count(engine, "raw_events", f"event_id = '{body['event_id']}'") == 1

    status = (await client.get(f"/events/{body['event_id']}")).json()
    assert status["status"] == "accepted"

    report = await make_worker().run(until_empty=True)
    assert report.processed == 1

    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT correlation_id, enrichment, processed_at, processed_by "
                    "FROM processed_events WHERE event_id = :id"
                ),
                {"id": body["event_id"]},
            )
        ).one()
    assert row.correlation_id == "trace-happy-1"
    assert row.enrichment["category"] == "high_value"
    assert row.processed_at.tzinfo is not None
    assert row.processed_by

    status = (await client.get(f"/events/{body['event_id']}")).json()
    assert status["status"] == "processed"
    assert status["processed_at"] is not None
    assert status["correlation_id"] == "trace-happy-1"


async def test_each_event_type_is_processed_and_enriched(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    make_worker: Callable[..., Worker],
) -> None:
    events = [
        purchase(amount=5),
        {
            "event_type": "user_signup",
            "user_id": "u-9",
            "properties": {"email": "a@Example.com"},
        },
        {
            "event_type": "page_view",
            "user_id": "u-9",
            "properties": {"page": "/pricing?x=1", "referrer": "https://search.test/q"},
        },
        {"event_type": "custom", "properties": {"name": "Video.Played", "secs": 3}},
    ]
    ids = []
    for event in events:
        response = await client.post("/events", json=event)
        assert response.status_code == 202, response.text
        ids.append(response.json()["event_id"])
    await make_worker().run(until_empty=True)
    async with engine.connect() as conn:
        rows = {
            r.event_type: r.enrichment
            for r in await conn.execute(
                text("SELECT event_type, enrichment FROM processed_events")
            )
        }
    assert rows["purchase"]["category"] == "standard"
    assert rows["user_signup"]["email_domain"] == "example.com"
    assert rows["page_view"]["session"]["path"] == "/pricing"
    assert rows["page_view"]["session"]["referrer_host"] == "search.test"
    assert rows["page_view"]["session"]["page"] == "/pricing?x=1"
    assert rows["custom"] == {
        **rows["custom"],
        "name": "Video.Played",
        "field_count": 2,
    }


async def test_timestamp_offset_is_converted_to_utc(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    body = purchase(timestamp="2026-01-01T10:00:00+05:30")
    assert (await client.post("/events", json=body)).status_code == 202
    async with engine.connect() as conn:
        ts = await conn.scalar(
            text("SELECT event_timestamp FROM raw_events WHERE event_id = :id"),
            {"id": body["event_id"]},
        )
    assert ts == datetime(2026, 1, 1, 4, 30, tzinfo=UTC)


async def test_duplicate_same_body_is_ok_and_processed_once(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    make_worker: Callable[..., Worker],
) -> None:
    body = purchase()
    first = await client.post("/events", json=body)
    second = await client.post("/events", json=body)
    assert first.status_code == 202
    assert second.status_code == 200
    assert second.json()["status"] == "duplicate"
    assert second.json()["received_at"] == first.json()["received_at"]
    await make_worker().run(until_empty=True)
    third = await client.post("/events", json=body)
    assert third.status_code == 200
    await make_worker().run(until_empty=True)
    assert await count(engine, "processed_events") == 1
    assert await count(engine, "raw_events") == 1


async def test_same_id_different_body_is_409_and_changes_nothing(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    body = purchase(amount=10)
    assert (await client.post("/events", json=body)).status_code == 202
    changed = {**body, "properties": {"amount": 11, "currency": "EUR"}}
    response = await client.post("/events", json=changed)
    assert response.status_code == 409
    assert body["event_id"] in response.json()["detail"]
    async with engine.connect() as conn:
        props = await conn.scalar(
            text("SELECT properties FROM raw_events WHERE event_id = :id"),
            {"id": body["event_id"]},
        )
    assert props["amount"] == 10


async def test_concurrent_duplicates_resolve_to_one_event(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    body = purchase()
    answers = await asyncio.gather(
        *(client.post("/events", json=body) for _ in range(20))
    )
    codes = sorted(a.status_code for a in answers)
    assert codes.count(202) == 1
    assert codes.count(200) == 19
    assert await count(engine, "raw_events") == 1


async def test_batch_with_mixed_items(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    make_worker: Callable[..., Worker],
) -> None:
    existing = purchase(amount=3)
    assert (await client.post("/events", json=existing)).status_code == 202
    good = purchase()
    items = [
        good,
        purchase(amount=-1),  # invalid amount
        {"event_type": "user_signup", "properties": {}},  # missing user_id
        existing,  # duplicate of an accepted event
        {**existing, "properties": {"amount": 4}},  # conflict
        {"event_type": "nope"},  # unknown type
        {**good},  # repeated inside the batch
        {"event_type": "custom", "properties": {"name": "ok"}, "bogus": 1},
    ]
    response = await client.post("/events/batch", json={"events": items})
    assert response.status_code == 200, response.text
    out = response.json()
    statuses = [r["status"] for r in out["results"]]
    assert statuses == [
        "accepted",
        "invalid",
        "invalid",
        "duplicate",
        "conflict",
        "invalid",
        "duplicate",
        "invalid",
    ]
    assert out["accepted"] == 1 and out["duplicates"] == 2 and out["rejected"] == 5
    errors = out["results"][1]["errors"]
    assert errors[0]["loc"] == ["body", "events", 1, "properties", "amount"]
    assert out["results"][2]["errors"][0]["loc"][-1] == "user_id"
    assert out["results"][7]["errors"][0]["loc"][-1] == "bogus"
    await make_worker().run(until_empty=True)
    assert await count(engine, "processed_events") == 2
    assert await count(engine, "raw_events") == 2


async def test_batch_limit(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    many = [purchase() for _ in range(1001)]
    response = await client.post("/events/batch", json={"events": many})
    assert response.status_code == 413
    assert "events" in response.json()["detail"]
    assert await count(engine, "raw_events") == 0
    ok = await client.post("/events/batch", json={"events": many[:1000]})
    assert ok.json()["accepted"] == 1000


BAD_INPUTS: list[tuple[dict[str, Any], str]] = [
    ({"event_type": "purchase", "properties": {"amount": 0}}, "amount"),
    ({"event_type": "purchase", "properties": {"amount": "lots"}}, "amount"),
    ({"event_type": "purchase", "properties": {}}, "amount"),
    ({"event_type": "user_signup", "properties": {}}, "user_id"),
    ({"event_type": "user_signup", "user_id": None}, "user_id"),
    ({"event_type": "custom", "properties": []}, "properties"),
    ({"event_type": "teleport", "properties": {}}, "event_type"),
    ({"properties": {}}, "event_type"),
    ({"event_type": "custom", "properties": {"name": "x"}, "extra": 1}, "extra"),
    ({"event_type": "custom", "event_id": "not-a-uuid"}, "event_id"),
    (
        {
            "event_type": "custom",
            "properties": {"name": "x"},
            "timestamp": (datetime.now(UTC) + timedelta(days=2)).isoformat(),
        },
        "timestamp",
    ),
]


async def test_bad_input_is_422_naming_the_field_and_stores_nothing(
    client: httpx.AsyncClient, engine: AsyncEngine, redis: Redis, settings: Settings
) -> None:
    for body, field in BAD_INPUTS:
        response = await client.post("/events", json=body)
        assert response.status_code == 422, (body, response.text)
        locs = [e["loc"] for e in response.json()["detail"]]
        assert any(loc[-1] == field for loc in locs), (body, locs)
    malformed = await client.post(
        "/events", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 422
    assert await count(engine, "raw_events") == 0
    assert await redis.xlen(first_stream(settings)) == 0


async def test_group_commit_batches_concurrent_requests(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    api_metrics: Metrics,
    make_worker: Callable[..., Worker],
) -> None:
    bodies = [purchase() for _ in range(300)]
    answers = await asyncio.gather(*(client.post("/events", json=b) for b in bodies))
    assert all(a.status_code == 202 for a in answers)
    registry = api_metrics.registry
    commits = registry.get_sample_value("eventflow_ingest_batch_size_events_count")
    events = registry.get_sample_value("eventflow_ingest_batch_size_events_sum")
    assert events == 300
    assert commits is not None and commits < 300 / 2  # requests shared commits
    await make_worker(worker_batch_size=64).run(until_empty=True)
    assert await count(engine, "processed_events") == 300


async def test_status_of_unknown_event_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/events/{uuid.uuid4()}")
    assert response.status_code == 404


async def test_health_reports_dependencies(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json()["postgres"]["status"] == "ok"
    assert response.json()["redis"]["status"] == "ok"
    assert (await client.get("/health/live")).status_code == 200
    assert (await client.get("/health/ready")).status_code == 200
    openapi = (await client.get("/openapi.json")).json()
    assert "/events" in openapi["paths"]
    assert (await client.get("/docs")).status_code == 200


async def test_summary_is_deployment_wide(
    client: httpx.AsyncClient,
    make_worker: Callable[..., Worker],
) -> None:
    body = purchase()
    await client.post("/events", json=body)
    await client.post("/events", json=body)  # duplicate
    await client.post("/events", json=purchase())
    before = (await client.get("/metrics/summary")).json()
    assert before["received"] == 2
    assert before["queue_length"] == 2
    assert before["consumer_lag"] == 2
    assert before["duplicates"] == 1
    await make_worker().run(until_empty=True)
    after = (await client.get("/metrics/summary")).json()
    assert after["processed"] == 2
    assert after["failed"] == 0
    assert after["queue_length"] == 0 and after["pending_messages"] == 0
    assert after["processing_rate_per_second"] > 0
    assert after["p95_processing_time_ms"] is not None
    assert "timestamp" in after


async def test_malformed_batch_bodies_are_422(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    for content in (b"{nope", b"[]", b'{"events": []}', b'{"events": 1}', b'{"x": 1}'):
        response = await client.post(
            "/events/batch",
            content=content,
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 422, content
        assert response.json()["detail"][0]["loc"][0] == "body"
    assert await count(engine, "raw_events") == 0


async def test_refusals_are_counted_and_series_exist_from_the_start(
    client: httpx.AsyncClient, api_metrics: Metrics
) -> None:
    registry = api_metrics.registry

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    # Known label sets exist at zero before anything happened.
    assert value("eventflow_events_received_total", event_type="purchase") == 0
    assert value("eventflow_events_rejected_total", reason="unavailable") == 0
    assert value("eventflow_retries_total", operation="commit") == 0
    await client.post("/events", json={"event_type": "purchase", "properties": {}})
    await client.post(
        "/events", content=b"{", headers={"content-type": "application/json"}
    )
    body = purchase()
    await client.post("/events", json=body)
    await client.post("/events", json={**body, "user_id": "someone-else"})
    assert value("eventflow_events_rejected_total", reason="invalid") == 2
    assert value("eventflow_events_rejected_total", reason="conflict") == 1
    assert value("eventflow_events_received_total", event_type="purchase") == 1


async def test_a_nul_character_is_refused_alone(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    bad = {"event_type": "custom", "properties": {"name": "x", "note": "a\x00b"}}
    single = await client.post("/events", json=bad)
    assert single.status_code == 422
    assert single.json()["detail"][0]["loc"][-1] == "properties"
    good = purchase()
    batch = await client.post("/events/batch", json={"events": [good, bad]})
    assert [r["status"] for r in batch.json()["results"]] == ["accepted", "invalid"]
    assert await count(engine, "raw_events") == 1
