"""Small helpers for integration tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from eventflow.api import create_app
from eventflow.config import Settings
from eventflow.metrics import Metrics
from eventflow.pipeline.streams import partition_stream
from eventflow.store.migrate import upgrade_async


async def count(engine: AsyncEngine, table: str, where: str = "true") -> int:
    async with engine.connect() as conn:
        value = await conn.scalar(text(f"SELECT count(*) FROM {table} WHERE {where}"))
    return int(value or 0)


@asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of one more API (lifespan included), as a separate process would
    be: its own pools, its own schema registry."""
    app = create_app(settings, Metrics())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c


def first_stream(settings: Settings) -> str:
    """The stream key of partition 0 (the only one when ``partitions`` is 1)."""
    return partition_stream(settings.stream_name, 0)


@asynccontextmanager
async def database_at(server_url: str, revision: str) -> AsyncIterator[str]:
    """A database of its own on the server of ``server_url``, migrated to
    ``revision``; dropped afterwards."""
    admin = create_async_engine(server_url, isolation_level="AUTOCOMMIT", pool_size=1)
    name = f"rev{revision}_{uuid.uuid4().hex[:8]}"
    async with admin.connect() as conn:
        await conn.execute(text(f"CREATE DATABASE {name}"))
    url = server_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        await upgrade_async(url, revision)
        yield url
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
        await admin.dispose()
