"""Settling without rewriting the audit row (migration 0009): an accepted event has
a row in unsettled_events until a worker settles it; its raw_events row is written
once on the way, and every reader derives the same state from the two."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from eventflow.pipeline.worker import Worker
from eventflow.store.events import EventSearch, event_detail, search_events
from eventflow.store.migrate import upgrade_async
from tests.conftest import Services
from tests.integration.helpers import count, database_at


def custom(n: int) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "custom",
        "user_id": f"user-{n % 3}",
        "properties": {"n": n},
    }


async def _raw_versions(engine: AsyncEngine) -> dict[str, tuple[str, str, str]]:
    """Each raw row's (ctid, xmin, xmax): an UPDATE moves the row and changes
    xmin, a row lock sets xmax."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT event_id::text, ctid::text, xmin::text, xmax::text "
                "FROM raw_events"
            )
        )
        return {r[0]: (r[1], r[2], r[3]) for r in rows}


async def test_processing_leaves_the_raw_row_as_it_was_written(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    make_worker: Callable[..., Worker],
) -> None:
    bodies = [custom(i) for i in range(20)]
    for body in bodies:
        assert (await client.post("/events", json=body)).status_code == 202
    assert await count(engine, "unsettled_events") == 20
    written = await _raw_versions(engine)
    assert len(written) == 20

    report = await make_worker().run(until_empty=True)
    assert report.processed == 20

    assert await count(engine, "unsettled_events") == 0
    assert await count(engine, "processed_events") == 20
    after = await _raw_versions(engine)
    assert after == written
    assert {xmax for _, _, xmax in after.values()} == {"0"}
    # Every reader says processed.
    for body in bodies[:3]:
        answer = (await client.get(f"/events/{body['event_id']}")).json()
        assert answer["status"] == "processed"
        detail = await event_detail(engine, uuid.UUID(body["event_id"]))
        assert detail is not None and detail.status == "processed"
    found = await search_events(engine, EventSearch(status="processed"), limit=50)
    assert len(found.items) == 20
    assert {e.status for e in found.items} == {"processed"}
    assert not (await search_events(engine, EventSearch(status="accepted"))).items


async def test_events_on_their_way_are_accepted_everywhere(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    body = custom(1)
    assert (await client.post("/events", json=body)).status_code == 202
    event_id = uuid.UUID(body["event_id"])
    assert (await client.get(f"/events/{event_id}")).json()["status"] == "accepted"
    detail = await event_detail(engine, event_id)
    assert detail is not None and detail.status == "accepted"
    found = await search_events(engine, EventSearch(status="accepted"))
    assert [e.event_id for e in found.items] == [event_id]
    assert found.items[0].status == "accepted"
    assert not (await search_events(engine, EventSearch(status="processed"))).items
    summary = (await client.get("/metrics/summary")).json()
    assert summary["unsettled"] == 1


async def test_upgrade_keeps_every_state(services: Services) -> None:
    """Events stored before 0009, in each state, are in the same state after."""
    async with database_at(services.database_url, "0008") as url:
        await _upgrade_keeps_every_state(url)


async def _upgrade_keeps_every_state(url: str) -> None:
    engine = create_async_engine(url, pool_size=1)
    states = ["accepted"] * 3 + ["processed"] * 4 + ["failed"] * 2 + ["quarantined"]
    async with engine.begin() as conn:
        for i, state in enumerate(states):
            event_id = uuid.uuid4()
            await conn.execute(
                text(
                    "INSERT INTO raw_events (event_id, event_type, user_id, "
                    "event_timestamp, properties, body_hash, received_at, "
                    "published_at, status) VALUES (:id, 'custom', 'u', now(), "
                    "'{}', 'h', now() - :i * interval '1 second', now(), :state)"
                ),
                {"id": event_id, "i": i, "state": state},
            )
            if state == "processed":
                await conn.execute(
                    text(
                        "INSERT INTO processed_events (event_id, event_type, "
                        "event_timestamp, properties, enrichment, received_at, "
                        "processed_by) SELECT event_id, event_type, event_timestamp, "
                        "properties, '{}', received_at, 'w' FROM raw_events "
                        "WHERE event_id = :id"
                    ),
                    {"id": event_id},
                )
    await upgrade_async(url, "head")
    assert await count(engine, "unsettled_events") == 3
    for state in ("accepted", "processed", "failed", "quarantined"):
        found = await search_events(engine, EventSearch(status=state))
        assert len(found.items) == states.count(state), state
        assert {e.status for e in found.items} == {state}
    async with engine.connect() as conn:
        indexes = set(
            await conn.scalars(
                text("SELECT indexname FROM pg_indexes WHERE tablename = 'raw_events'")
            )
        )
    assert "ix_raw_events_failed_time" in indexes
    assert not indexes & {"ix_raw_events_unsettled", "ix_raw_events_unprocessed_time"}
    await engine.dispose()


# --- The hot path's statements look rows up by key, whatever the statistics ------

_FILL = [
    "INSERT INTO raw_events (event_id, event_type, user_id, event_timestamp, "
    "properties, body_hash, received_at, published_at) SELECT gen_random_uuid(), "
    "'custom', 'u', now(), '{}', 'h', now(), now() FROM generate_series(1, 5000)",
    "INSERT INTO unsettled_events SELECT received_at, event_id "
    "FROM raw_events ON CONFLICT DO NOTHING",
    "INSERT INTO processed_events (event_id, event_type, event_timestamp, "
    "properties, enrichment, received_at, processed_by) SELECT event_id, "
    "event_type, event_timestamp, '{}', '{}', received_at, 'w' FROM raw_events",
    "INSERT INTO failed_events (event_id, event_type, payload, error, error_type, "
    "received_at) SELECT gen_random_uuid(), 'custom', '{}', 'e', 'E', now() "
    "FROM generate_series(1, 5000)",
]
NOW = "ARRAY[now(), now()]"
IDS = "ARRAY[gen_random_uuid(), gen_random_uuid()]"
TWO = "ARRAY['a', 'b']"
HOUR = "now() - interval '1 hour', now()"
STATEMENTS = {
    "_INSERT_RAW": (
        "uuid[], text[], text[], timestamptz[], text[], text[], text[], "
        "timestamptz[], int[], text[], text[], timestamptz",
        f"{IDS}, {TWO}, {TWO}, {NOW}, ARRAY['{{}}', '{{}}'], {TWO}, {TWO}, {NOW}, "
        "ARRAY[1, 1], ARRAY[NULL, NULL]::text[], ARRAY[NULL, NULL]::text[], "
        "now() - interval '7 days'",
    ),
    "_INSERT_PROCESSED": (
        "uuid[], text[], text[], timestamptz[], text[], text[], text[], "
        "timestamptz[], int[], int[], text, timestamptz, timestamptz",
        f"{IDS}, {TWO}, {TWO}, {NOW}, ARRAY['{{}}', '{{}}'], ARRAY['{{}}', '{{}}'], "
        f"{TWO}, {NOW}, ARRAY[1, 1], ARRAY[1, 1], 'w', now() - interval '1 hour', "
        "now()",
    ),
    "_INSERT_FAILED": (
        "uuid[], text[], text[], text[], text[], int[], text[], text[], "
        "timestamptz[], timestamptz, timestamptz",
        f"{IDS}, {TWO}, {TWO}, {TWO}, {TWO}, ARRAY[1, 1], {TWO}, {TWO}, {NOW}, {HOUR}",
    ),
    "_REVIVE": (
        "uuid[], timestamptz[], timestamptz, timestamptz",
        f"{IDS}, {NOW}, {HOUR}",
    ),
}


def _rows_read(plan: dict[str, Any]) -> int:
    """The most rows any node of the plan produced over all its loops."""
    here = int(plan.get("Actual Rows", 0)) * int(plan.get("Actual Loops", 1))
    return max([here, *(_rows_read(p) for p in plan.get("Plans", []))])


@pytest.mark.parametrize("name", sorted(STATEMENTS))
async def test_reusable_plan_made_on_empty_tables_reads_by_key(
    engine: AsyncEngine, name: str
) -> None:
    """A reusable plan made while the tables were empty (a new day's partition,
    a table emptied) still reads a few rows per event once they hold thousands:
    no scan of a whole partition or time range for every group or batch."""
    from eventflow.store import events

    types, args = STATEMENTS[name]
    async with engine.connect() as conn:
        await conn.execute(text("SET plan_cache_mode = force_generic_plan"))
        # As the hot path's transactions set it (the lock statement).
        await conn.execute(text("SET enable_seqscan = off"))
        await conn.exec_driver_sql(f"PREPARE hot ({types}) AS {getattr(events, name)}")
        await conn.exec_driver_sql(f"EXECUTE hot ({args})")
        for statement in _FILL:
            await conn.execute(text(statement))
        document = (
            await conn.exec_driver_sql(
                f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE hot ({args})"
            )
        ).scalar_one()
        await conn.rollback()
    plan = (orjson.loads(document) if isinstance(document, str) else document)[0]
    assert _rows_read(plan["Plan"]) <= 20, plan
