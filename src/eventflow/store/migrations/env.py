"""Alembic environment: runs migrations over the async engine."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from eventflow.store.tables import metadata

config = context.config
target_metadata = metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_online() -> None:
    engine = create_async_engine(str(config.get_main_option("sqlalchemy.url")))
    async with engine.connect() as conn:
        # Serialise concurrent `eventflow migrate` runs (several containers).
        await conn.exec_driver_sql("SELECT pg_advisory_lock(815001)")
        # The lock is the session's; Alembic manages its own transactions (a
        # migration may commit in batches: see 0006).
        await conn.commit()
        await conn.run_sync(_run)
        await conn.commit()
    await engine.dispose()


def _in_fresh_loop() -> None:
    """Run the async migration even when the caller is inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(run_online())
        return
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run_online()).result()


if context.is_offline_mode():
    run_offline()
else:
    _in_fresh_loop()
