"""Following accepted events until they are processed: from PostgreSQL directly,
or through ``GET /events/{id}`` when no database URL is given."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping
from datetime import datetime

import httpx
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from eventflow.tools.report import EndToEndReport, latency_stats

CHUNK = 5000
POLL_S = 0.2
API_CONCURRENCY = 8

_IDS = bindparam("ids", type_=ARRAY(UUID(as_uuid=False)))
_PROCESSED = text(
    "SELECT event_id, processed_at FROM processed_events WHERE event_id = ANY(:ids)"
).bindparams(_IDS)
_DEAD = text(
    "SELECT event_id FROM failed_events WHERE event_id = ANY(:ids)"
).bindparams(_IDS)
_DUPLICATED = text(
    "SELECT event_id, count(*) FROM processed_events WHERE event_id = ANY(:ids) "
    "GROUP BY event_id HAVING count(*) > 1"
).bindparams(_IDS)


def asyncpg_url(url: str) -> str:
    """``postgresql://`` (as in DATABASE_URL) with the asyncpg driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]


class _Progress:
    """Processed times and dead letters found so far, and what is still open."""

    def __init__(self, sent: Mapping[str, float]) -> None:
        self.sent = sent
        self.remaining = set(sent)
        self.processed: dict[str, datetime] = {}
        self.dead: set[str] = set()
        self.duplicated: int | None = None

    def report(self, source: str, waited: float) -> EndToEndReport:
        delays = [
            max(0.0, at.timestamp() - self.sent[event_id])
            for event_id, at in self.processed.items()
        ]
        throughput = None
        if self.processed:
            span = max(at.timestamp() for at in self.processed.values()) - min(
                self.sent.values()
            )
            throughput = round(len(self.processed) / span, 1) if span > 0 else None
        return EndToEndReport(
            source="database" if source == "database" else "api",
            followed=len(self.sent),
            processed=len(self.processed),
            dead_lettered=len(self.dead),
            lost=len(self.remaining),
            duplicated=self.duplicated,
            throughput_per_second=throughput,
            latency=latency_stats(delays),
            waited_s=round(waited, 3),
        )


async def _poll_database(conn: AsyncConnection, state: _Progress) -> None:
    for chunk in _chunks(sorted(state.remaining)):
        rows = await conn.execute(_PROCESSED, {"ids": chunk})
        for event_id, processed_at in rows:
            state.processed[str(event_id)] = processed_at
            state.remaining.discard(str(event_id))
    for chunk in _chunks(sorted(state.remaining)):
        dead = await conn.execute(_DEAD, {"ids": chunk})
        for (event_id,) in dead:
            state.dead.add(str(event_id))
            state.remaining.discard(str(event_id))


async def follow_database(
    database_url: str, sent: Mapping[str, float], wait_s: float
) -> EndToEndReport:
    """Poll ``processed_events`` until every event in ``sent`` (id -> client send
    time, ``time.time()``) is processed or dead-lettered, or ``wait_s`` passes."""
    state = _Progress(sent)
    engine = create_async_engine(asyncpg_url(database_url), pool_size=1)
    began = time.monotonic()
    try:
        async with engine.connect() as conn:
            while True:
                await _poll_database(conn, state)
                await conn.commit()  # end the snapshot; the next poll sees new rows
                if not state.remaining or time.monotonic() - began >= wait_s:
                    break
                await asyncio.sleep(POLL_S)
            state.duplicated = 0
            for chunk in _chunks(sorted(sent)):
                rows = await conn.execute(_DUPLICATED, {"ids": chunk})
                state.duplicated += len(rows.all())
    finally:
        await engine.dispose()
    return state.report("database", time.monotonic() - began)


async def _poll_api(client: httpx.AsyncClient, state: _Progress) -> None:
    slots = asyncio.Semaphore(API_CONCURRENCY)

    async def look(event_id: str) -> None:
        async with slots:
            try:
                response = await client.get(f"/events/{event_id}")
            except httpx.HTTPError:
                return  # still open; asked again next round
        if response.status_code != 200:
            return
        body = response.json()
        if body.get("status") == "processed" and body.get("processed_at"):
            state.processed[event_id] = datetime.fromisoformat(body["processed_at"])
            state.remaining.discard(event_id)
        elif body.get("status") == "failed":
            state.dead.add(event_id)
            state.remaining.discard(event_id)

    await asyncio.gather(*(look(event_id) for event_id in sorted(state.remaining)))


async def follow_api(
    client: httpx.AsyncClient, sent: Mapping[str, float], wait_s: float
) -> EndToEndReport:
    """The same as ``follow_database`` through the API (slower; the API cannot
    show duplicated rows, so ``duplicated`` stays unknown)."""
    state = _Progress(sent)
    began = time.monotonic()
    while True:
        await _poll_api(client, state)
        if not state.remaining or time.monotonic() - began >= wait_s:
            break
        await asyncio.sleep(POLL_S)
    return state.report("api", time.monotonic() - began)
