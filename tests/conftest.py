"""Shared fixtures: real PostgreSQL and Redis for the whole session.

Servers come from DATABASE_URL / REDIS_URL when both are set; otherwise the
session starts its own, the same way ``eventflow dev`` does, in a temporary folder.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow.config import Settings
from eventflow.local.servers import LocalPostgres, LocalRedis
from eventflow.store.migrate import upgrade
from eventflow.store.tables import create_engine


@dataclass
class Services:
    database_url: str
    redis_url: str
    postgres: LocalPostgres | None = None
    redis: LocalRedis | None = None


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    db, rd = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
    if db and rd:
        settings = Settings(database_url=db, redis_url=rd)
        assert settings.database_dsn and settings.redis_dsn
        upgrade(settings.database_dsn)
        yield Services(settings.database_dsn, settings.redis_dsn)
        return
    folder = Path(tmp_path_factory.mktemp("servers"))
    os.chmod(folder, 0o755)
    pg = LocalPostgres(folder)
    redis = LocalRedis(folder)
    database_url = pg.start()
    redis_url = redis.start()
    try:
        upgrade(database_url)
        yield Services(database_url, redis_url, pg, redis)
    finally:
        redis.stop()
        pg.stop()


@pytest.fixture
def partitions() -> int:
    """Stream partitions of the ``settings`` fixture; a module overrides this
    fixture (with params) to run its tests with several partitions."""
    return 1


@pytest.fixture
def settings(services: Services, partitions: int) -> Settings:
    """Settings with a stream and group of their own for each test."""
    tag = uuid.uuid4().hex[:8]
    return Settings(
        database_url=services.database_url,
        redis_url=services.redis_url,
        stream_name=f"test:{tag}:events",
        consumer_group=f"test-{tag}",
        worker_block_ms=50,
        claim_idle_ms=200,
        partitions=partitions,
        lease_ttl_ms=1000,
        reconcile_min_age_s=0,
        retry_initial_s=0.01,
        retry_max_s=0.2,
        worker_metrics_port=0,
        log_format="text",
        # Most tests are about the pipeline; tests/integration/test_security.py
        # covers keys, scopes and limits with authentication on.
        auth_required=False,
    )


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    assert settings.database_dsn
    engine = create_engine(settings.database_dsn, pool_size=4)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "TRUNCATE raw_events, unsettled_events, processed_events, "
                "failed_events, api_keys, audit_log, partition_owners, "
                "reprocess_runs"
            )
        )
        # Back to the schemas the migration installed.
        await conn.execute(
            text(
                "DELETE FROM event_schemas WHERE version > 1 OR event_type NOT IN "
                "('purchase', 'user_signup', 'page_view', 'custom')"
            )
        )
    yield engine
    await engine.dispose()


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    assert settings.redis_dsn
    client = Redis.from_url(settings.redis_dsn)
    yield client
    async for key in client.scan_iter(match=f"{settings.stream_name}*"):
        await client.delete(key)
    await client.aclose()
