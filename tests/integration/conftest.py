from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow.api import create_app
from eventflow.config import Settings
from eventflow.metrics import Metrics
from eventflow.pipeline.worker import Worker


@pytest.fixture
def api_metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def client(
    settings: Settings, engine: AsyncEngine, api_metrics: Metrics
) -> AsyncIterator[httpx.AsyncClient]:
    """The real app (lifespan included) over real PostgreSQL and Redis."""
    app = create_app(settings, api_metrics)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://eventflow"
        ) as c:
            yield c


@pytest.fixture
def make_worker(settings: Settings, engine: AsyncEngine, redis: Redis):  # type: ignore[no-untyped-def]
    def make(**overrides: object) -> Worker:
        s = settings.model_copy(update=overrides) if overrides else settings
        return Worker(s, engine, redis)

    return make
