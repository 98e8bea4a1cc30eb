"""The schema registry against real PostgreSQL: versions, evolution, refresh."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow.config import Settings
from eventflow.pipeline.worker import Worker
from tests.integration.helpers import app_client, count

CHECKOUT_V1: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["user_id"],
    "properties": {
        "properties": {
            "type": "object",
            "required": ["total"],
            "properties": {"total": {"type": "number", "minimum": 0}},
        }
    },
}


def with_property(
    schema: dict[str, Any], name: str, rule: dict[str, Any], required: bool = False
) -> dict[str, Any]:
    inner = schema["properties"]["properties"]
    return {
        **schema,
        "properties": {
            "properties": {
                **inner,
                "properties": {**inner.get("properties", {}), name: rule},
                "required": [*inner.get("required", []), *([name] if required else [])],
            }
        },
    }


def event(event_type: str, **props: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "user_id": "user_1",
        "properties": props,
    }


async def test_builtin_types_are_listed_as_version_1(client: httpx.AsyncClient) -> None:
    listed = (await client.get("/schemas")).json()
    assert {(t["event_type"], t["latest_version"]) for t in listed} == {
        ("purchase", 1),
        ("user_signup", 1),
        ("page_view", 1),
        ("custom", 1),
    }
    versions = (await client.get("/schemas/purchase")).json()
    assert [v["version"] for v in versions["versions"]] == [1]
    one = (await client.get("/schemas/purchase/1")).json()
    assert one["schema"]["properties"]["properties"]["required"] == ["amount"]
    assert (await client.get("/schemas/purchase/latest")).json() == one
    assert (await client.get("/schemas/purchase/2")).status_code == 404
    assert (await client.get("/schemas/nope")).status_code == 404
    assert (await client.get("/schemas/bad%20name")).status_code == 422


async def test_new_type_versions_and_evolution(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    make_worker: Callable[..., Worker],
) -> None:
    refused = await client.post("/events", json=event("checkout", total=5))
    assert refused.status_code == 422
    assert "checkout" in refused.text and "purchase" in refused.text

    created = await client.post("/schemas/checkout", json={"schema": CHECKOUT_V1})
    assert created.status_code == 201, created.text
    assert created.json()["version"] == 1
    again = await client.post("/schemas/checkout", json={"schema": CHECKOUT_V1})
    assert again.status_code == 200 and again.json()["version"] == 1

    ok = event("checkout", total=5)
    assert (await client.post("/events", json=ok)).status_code == 202
    bad = await client.post("/events", json=event("checkout", total=-1))
    assert bad.status_code == 422
    (error,) = bad.json()["detail"]
    assert error["schema"] == "checkout" and error["schema_version"] == 1
    assert error["path"] == "$.properties.total"
    assert error["loc"] == ["body", "properties", "total"]

    # A required property is not backward compatible: refused, with the reason.
    v2_bad = with_property(CHECKOUT_V1, "coupon", {"type": "string"}, required=True)
    conflict = await client.post("/schemas/checkout", json={"schema": v2_bad})
    assert conflict.status_code == 409
    assert (
        "$.properties.coupon: becomes required" in conflict.json()["incompatibilities"]
    )
    assert "coupon" in conflict.json()["detail"]
    checked = (
        await client.post("/schemas/checkout/check", json={"schema": v2_bad})
    ).json()
    assert checked["compatible"] is False and checked["next_version"] == 2
    assert [
        v["version"] for v in (await client.get("/schemas/checkout")).json()["versions"]
    ] == [1]

    v2 = with_property(CHECKOUT_V1, "coupon", {"type": "string", "maxLength": 8})
    registered = await client.post("/schemas/checkout", json={"schema": v2})
    assert registered.status_code == 201 and registered.json()["version"] == 2
    long_coupon = await client.post(
        "/events", json=event("checkout", total=1, coupon="x" * 20)
    )
    assert long_coupon.status_code == 422
    assert long_coupon.json()["detail"][0]["schema_version"] == 2
    # An event may still name the older version.
    old = {**event("checkout", total=1, coupon="x" * 20), "schema_version": 1}
    assert (await client.post("/events", json=old)).status_code == 202

    forced = await client.post(
        "/schemas/checkout", json={"schema": v2_bad, "compatibility": "none"}
    )
    assert forced.status_code == 201 and forced.json()["version"] == 3

    await make_worker().run(until_empty=True)
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT p.schema_version, r.schema_version AS raw_version "
                    "FROM processed_events p JOIN raw_events r USING (event_id) "
                    "ORDER BY p.schema_version"
                )
            )
        ).all()
    assert [(r.schema_version, r.raw_version) for r in rows] == [(1, 1), (1, 1)]
    assert await count(engine, "failed_events") == 0


async def test_invalid_schemas_are_422(client: httpx.AsyncClient) -> None:
    for body in (
        {"schema": {"type": "nothing"}},
        {"schema": {"required": "amount"}},
        {"schema": 5},
        {"schema": {}, "compatibility": "sometimes"},
        {},
    ):
        response = await client.post("/schemas/custom", json=body)
        assert response.status_code == 422, (body, response.text)
    listed = (await client.get("/schemas/custom")).json()
    assert [v["version"] for v in listed["versions"]] == [1]


async def test_another_process_sees_a_new_version_within_5_s(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    """Two apps with registries of their own, as two API processes would be."""
    async with app_client(settings) as b:
        body = event("page_view", url="/a")
        assert (await b.post("/events", json=body)).status_code == 202
        strict = {
            "type": "object",
            "properties": {"properties": {"required": ["url"]}},
        }
        response = await client.post(
            "/schemas/page_view", json={"schema": strict, "compatibility": "none"}
        )
        assert response.status_code == 201
        start = time.monotonic()
        while time.monotonic() - start < 5:
            answer = await b.post("/events", json=event("page_view", page="/"))
            if answer.status_code == 422:
                break
            await asyncio.sleep(0.2)
        assert answer.status_code == 422, "the new version was not seen in 5 s"
        assert answer.json()["detail"][0]["schema_version"] == 2


async def test_unknown_types_accepted_when_configured(
    settings: Settings, engine: AsyncEngine, make_worker: Callable[..., Worker]
) -> None:
    accepting = settings.model_copy(update={"unknown_event_types": "accept"})
    async with app_client(accepting) as c:
        body = event("teleport", to="mars")
        assert (await c.post("/events", json=body)).status_code == 202
    await make_worker(unknown_event_types="accept").run(until_empty=True)
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT schema_version, enrichment FROM processed_events")
            )
        ).one()
    assert row.schema_version is None
    assert set(row.enrichment) == {"ingest_latency_ms"}
