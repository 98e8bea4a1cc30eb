"""Small helpers for integration tests."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


async def count(engine: AsyncEngine, table: str, where: str = "true") -> int:
    async with engine.connect() as conn:
        value = await conn.scalar(text(f"SELECT count(*) FROM {table} WHERE {where}"))
    return int(value or 0)
