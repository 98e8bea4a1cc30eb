"""Reprocessing stored events on real PostgreSQL and Redis: results, dry runs,
repeats, the API, and a worker killed mid-run that resumes without redoing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow.config import Settings
from eventflow.pipeline import reprocess as rp
from eventflow.pipeline.worker import Worker
from eventflow.processors import EventView
from tests.integration.helpers import count


def _range() -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "from": (now - timedelta(hours=1)).isoformat(),
        "to": (now + timedelta(hours=1)).isoformat(),
    }


async def _send(client: httpx.AsyncClient, n: int, kind: str = "custom") -> None:
    events = [
        {"event_type": kind, "user_id": f"u{i}", "properties": {"name": "x", "i": i}}
        for i in range(n)
    ]
    for start in range(0, n, 500):
        answer = await client.post(
            "/events/batch", json={"events": events[start : start + 500]}
        )
        assert answer.status_code == 200


def _tagging(processors: Mapping[str, Any]) -> dict[str, Any]:
    """The processors, with ``custom`` now adding a field (a processor change)."""

    def custom_v2(event: EventView) -> dict[str, Any]:
        return {"tagged": f"v2-{event.properties.get('i')}"}

    return {**processors, "custom": custom_v2}


async def _finish(worker: Worker, run_id: int) -> rp.RunOut:
    while await worker.reprocessor.step(run_id):
        pass
    run = await rp.get_run(worker.engine, run_id)
    assert run is not None
    return run


async def test_reprocessing_applies_a_changed_processor(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    make_worker: Callable[..., Worker],
) -> None:
    await _send(client, 120)
    await _send(client, 30, kind="page_view")
    await make_worker().run(until_empty=True)
    worker = make_worker()
    worker.reprocessor.processors = _tagging(worker.processors)
    await worker.registry.ensure_loaded()
    # A dry run counts and changes nothing.
    dry = await client.post(
        "/reprocess", json={**_range(), "event_type": "custom", "dry_run": True}
    )
    assert dry.status_code == 202, dry.text
    assert dry.json()["total"] == 120 and dry.json()["state"] == "pending"
    run = await _finish(worker, dry.json()["id"])
    assert (run.state, run.done, run.changed) == ("done", 120, 120)
    assert await count(engine, "processed_events", "reprocessed_at IS NOT NULL") == 0
    # The real run rewrites the enrichment of the custom events only.
    real = await client.post("/reprocess", json={**_range(), "event_type": "custom"})
    run = await _finish(worker, real.json()["id"])
    assert (run.done, run.changed, run.failed) == (120, 120, 0)
    assert (
        await count(
            engine,
            "processed_events",
            f"enrichment ? 'tagged' AND reprocess_run_id = {run.id}",
        )
        == 120
    )
    assert await count(engine, "processed_events", "event_type = 'page_view' "
                       "AND reprocessed_at IS NULL") == 30  # fmt: skip
    # Repeated: the same rows again, nothing added, nothing changed.
    again = await client.post("/reprocess", json={**_range(), "event_type": "custom"})
    run = await _finish(worker, again.json()["id"])
    assert (run.done, run.changed) == (120, 0)
    assert await count(engine, "processed_events") == 150
    listed = (await client.get("/reprocess")).json()
    assert [r["id"] for r in listed][:3] == [
        run.id,
        real.json()["id"],
        dry.json()["id"],
    ]
    assert listed[0]["from"] and listed[0]["started_by"]


async def test_bad_requests_change_nothing(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    now = datetime.now(UTC).isoformat()
    for body in (
        {"from": now, "to": now},
        {"from": "2026-01-02T00:00:00", "to": "2026-01-03T00:00:00Z"},
        {"from": now},
        {"from": now, "to": now, "rate_limit": -1},
    ):
        answer = await client.post("/reprocess", json=body)
        assert answer.status_code == 422, answer.text
    assert (await client.get("/reprocess/999999")).status_code == 404
    assert await count(engine, "reprocess_runs") == 0


async def test_a_killed_worker_resumes_a_run_without_redoing_it(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    settings: Settings,
    make_worker: Callable[..., Worker],
) -> None:
    total = 6000
    await _send(client, total)
    await make_worker().run(until_empty=True)
    # 1,500 events/s: four seconds of work, killed after about one.
    started = await client.post("/reprocess", json={**_range(), "rate_limit": 1500})
    run_id = started.json()["id"]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("EVENTFLOW_")},
        "DATABASE_URL": str(settings.database_dsn),
        "REDIS_URL": str(settings.redis_dsn),
        "EVENTFLOW_STREAM_NAME": settings.stream_name,
        "EVENTFLOW_CONSUMER_GROUP": settings.consumer_group,
        "EVENTFLOW_PARTITIONS": str(settings.partitions),
        "EVENTFLOW_LEASE_TTL_MS": "1000",
        "EVENTFLOW_WORKER_METRICS_PORT": "0",
        "EVENTFLOW_AUTH_REQUIRED": "false",
    }
    worker = [sys.executable, "-m", "eventflow", "worker"]
    first = subprocess.Popen(  # noqa: ASYNC220 (killed below, never awaited)
        worker, env=env, stdout=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while (run := await rp.get_run(engine, run_id)) is not None and run.done < 1000:
        assert time.monotonic() < deadline, "the run did not start"
        await asyncio.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    run = await rp.get_run(engine, run_id)
    assert run is not None and 0 < run.done < total
    async with engine.connect() as conn:
        before = dict(
            (
                await conn.execute(
                    text(
                        "SELECT event_id, reprocessed_at FROM processed_events "
                        "WHERE reprocess_run_id = :r"
                    ),
                    {"r": run_id},
                )
            ).all()
        )
    assert len(before) == run.done  # the committed batches, and only them
    second = subprocess.Popen(  # noqa: ASYNC220
        worker, env=env, stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while (run := await rp.get_run(engine, run_id)) is not None and run.state != (
            "done"
        ):
            assert time.monotonic() < deadline, "the run did not finish"
            await asyncio.sleep(0.1)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    assert run.done == total
    async with engine.connect() as conn:
        after = dict(
            (
                await conn.execute(
                    text(
                        "SELECT event_id, reprocessed_at FROM processed_events "
                        "WHERE reprocess_run_id = :r"
                    ),
                    {"r": run_id},
                )
            ).all()
        )
    assert len(after) == total
    # What was done before the kill was not done again.
    assert all(after[event_id] == at for event_id, at in before.items())
