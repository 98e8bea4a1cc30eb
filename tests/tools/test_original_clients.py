"""The original EventFlow clients, unchanged, against a live API and worker.

Every event shape they send (``tests/fixtures/original_clients.json``: each row of
the client contract, with and without a timestamp, naive and with offsets) is sent
as they send it (one at a time, no key) and must end processed, stored as sent,
with the original enrichment. Their scripts' command lines must work too.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from tests.tools.helpers import Live, run_tool

FIXTURE = Path(__file__).parents[1] / "fixtures" / "original_clients.json"


def _fixture() -> list[tuple[bytes, dict[str, Any]]]:
    """Each event as the bytes to send (full-precision literals kept) and parsed."""
    raw = FIXTURE.read_text()
    parsed: list[dict[str, Any]] = json.loads(raw)
    lines = [line.strip().rstrip(",") for line in raw.splitlines()]
    bodies = [line.encode() for line in lines if line.startswith("{")]
    assert len(bodies) == len(parsed)
    return list(zip(bodies, parsed, strict=True))


def _expected_time(event: dict[str, Any]) -> datetime | None:
    if "timestamp" not in event:
        return None
    ts = datetime.fromisoformat(event["timestamp"])
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


async def _settled(live: Live, n: int, within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        async with live.engine.connect() as conn:
            done = await conn.scalar(
                text(
                    "SELECT (SELECT count(*) FROM raw_events) "
                    "- (SELECT count(*) FROM unsettled_events)"
                )
            )
        if done == n:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"only {done} of {n} events settled in {within_s} s")


async def test_every_original_shape_is_accepted_processed_and_stored_as_sent(
    live: Live,
) -> None:
    events = _fixture()
    sent_at = datetime.now(UTC)
    async with httpx.AsyncClient(base_url=live.url) as client:
        for body, event in events:
            response = await client.post(
                "/events", content=body, headers={"content-type": "application/json"}
            )
            assert response.status_code == 202, (event, response.text)
            answer = response.json()
            assert set(answer) >= {"event_id", "status", "message", "received_at"}
            assert answer["event_id"] == event["event_id"]
    await _settled(live, len(events))

    async with live.engine.connect() as conn:
        rows = {
            str(r.event_id): r
            for r in await conn.execute(
                text(
                    "SELECT event_id, event_type, user_id, event_timestamp, "
                    "properties::text AS props_text, properties, enrichment, "
                    "processed_at, processed_by, schema_version, received_at "
                    "FROM processed_events"
                )
            )
        }
        failed = await conn.scalar(text("SELECT count(*) FROM failed_events"))
    assert failed == 0 and len(rows) == len(events)
    for body, event in events:
        row = rows[event["event_id"]]
        assert row.event_type == event["event_type"]
        assert row.user_id == event["user_id"]
        assert row.schema_version == 1
        assert row.processed_by and row.processed_at >= row.received_at
        expected = _expected_time(event)
        if expected is None:
            assert abs(row.event_timestamp - row.received_at) < timedelta(seconds=1)
            assert row.received_at >= sent_at - timedelta(seconds=1)
        else:
            assert row.event_timestamp == expected, event
        assert row.properties == event["properties"]
        enrichment = row.enrichment
        if event["event_type"] == "purchase":
            # Stored digit for digit, not rounded to a double.
            literal = body.split(b'"amount": ')[1].split(b",")[0].decode()
            assert f'"amount": {literal}' in row.props_text
            amount = event["properties"]["amount"]
            assert enrichment["category"] == (
                "high_value" if amount > 1000 else "standard"
            )
        elif event["event_type"] == "page_view":
            session = enrichment["session"]
            assert session["page"] == event["properties"]["url"]
            assert session["referrer"] == event["properties"]["referrer"]
            assert datetime.fromisoformat(session["start"]) == row.event_timestamp
        elif event["event_type"] == "user_signup":
            assert enrichment["email_domain"] == "example.com"
        else:
            assert enrichment["name"] == event["properties"]["action"]


async def test_answers_the_original_clients_read(live: Live) -> None:
    async with httpx.AsyncClient(base_url=live.url) as client:
        health = await client.get("/health")
        root = await client.get("/")
        summary = await client.get("/metrics/summary")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "healthy"
    assert body["services"] == {"database": "healthy", "redis": "healthy"}
    assert body["version"] and datetime.fromisoformat(body["timestamp"])
    assert body["postgres"]["status"] == "ok"  # EventFlow's own detail, kept
    assert root.json() == {
        "service": "EventFlow API",
        "version": body["version"],
        "status": "running",
        "docs": "/docs",
    }
    assert {"queue_length", "pending_messages", "timestamp"} <= set(summary.json())


async def test_the_original_command_lines_work(live: Live) -> None:
    produced = await run_tool(
        "scripts/producer.py", "--api-url", live.url, "--count", "8", "--rate", "50",
        "--type", "purchase",
    )  # fmt: skip
    assert produced.returncode == 0, produced.stderr
    loaded = await run_tool(
        "scripts/load_test.py", "--api-url", live.url, "--events", "40", "--rate",
        "100",
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr + loaded.stdout
    monitored = await run_tool(
        "scripts/monitor.py", "--api-url", live.url, "--interval", "0.5", "--once"
    )
    assert monitored.returncode == 0, monitored.stderr
    assert "Queue length" in monitored.stdout
    await _settled(live, 48)
