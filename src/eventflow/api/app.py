"""The application factory. Nothing is built at import time."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import asyncpg
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError
from starlette.middleware import Middleware
from starlette.types import Receive, Scope, Send

from eventflow import __version__
from eventflow.api import (
    audit,
    deadletters,
    events,
    health,
    reprocess,
    schemas,
    summary,
)
from eventflow.api.context import ApiContext
from eventflow.api.fastpath import PATH, IngestFastPath
from eventflow.api.limits import Limits, LimitsMiddleware
from eventflow.api.middleware import CorrelationMiddleware
from eventflow.api.responses import COMMON_RESPONSES, Json
from eventflow.config import Settings
from eventflow.errors import (
    DependencyUnavailable,
    InvalidEvent,
    Overloaded,
    short_reason,
)
from eventflow.metrics import Metrics
from eventflow.pipeline.ingest import GroupCommitter
from eventflow.pipeline.retry import is_transient
from eventflow.pipeline.streams import Streams
from eventflow.procs import freeze_startup_heap
from eventflow.redisconn import connect_redis
from eventflow.schemas.registry import SchemaRegistry
from eventflow.security.keys import KeyCache
from eventflow.security.ratelimit import RateLimiter
from eventflow.store.events import INGEST_WARMUP
from eventflow.store.tables import engine_for, warm_pool

log = logging.getLogger(__name__)

DESCRIPTION = """
Send events with `POST /events` (or up to 1,000 at once with `POST /events/batch`).
An answer of **202** means the event is stored in PostgreSQL and will be processed
exactly once. Follow it with `GET /events/{event_id}`.
"""


def _rejected(request: Request, reason: str) -> None:
    """Count a refused ingestion request (other routes do not carry events)."""
    if request.method == "POST" and request.url.path.startswith("/events"):
        metrics: Metrics = request.app.state.metrics
        metrics.events_rejected.labels(reason).inc()


def _invalid(request: Request, exc: Exception) -> Json:
    assert isinstance(exc, InvalidEvent)
    _rejected(request, "invalid")
    return Json({"detail": exc.errors}, status_code=422)


def _request_invalid(request: Request, exc: Exception) -> Json:
    assert isinstance(exc, RequestValidationError)
    _rejected(request, "invalid")
    detail = [
        {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
        for e in exc.errors()
    ]
    return Json({"detail": detail}, status_code=422)


def _unavailable(request: Request, exc: Exception) -> Json:
    _rejected(request, "unavailable")
    return Json(
        {"detail": f"{exc}; nothing was stored, retry later"},
        status_code=503,
        headers={"Retry-After": "2"},
    )


def _database_error(request: Request, exc: Exception) -> Json:
    """A transient failure of a dependency outside ingestion (a lost or refused
    connection, a deadlock) is a 503 to retry; anything else stays a 500. The
    detail goes to the log only."""
    if is_transient(exc):
        log.warning(
            "dependency failed", extra={"error": f"{type(exc).__name__}: {exc}"[:500]}
        )
        dependency = "redis" if isinstance(exc, RedisError) else "postgres"
        return _unavailable(
            request, DependencyUnavailable(dependency, short_reason(exc))
        )
    log.exception("database error", exc_info=exc)
    return Json({"detail": "internal error"}, status_code=500)


def _overloaded(request: Request, exc: Exception) -> Json:
    return Json(
        {"detail": f"{exc}; retry later"}, status_code=429, headers={"Retry-After": "5"}
    )


def create_app(settings: Settings, metrics: Metrics | None = None) -> EventFlowApi:
    database_url, redis_url = settings.require_urls()
    metrics = metrics or Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = engine_for(settings, database_url, settings.db_pool_size)
        # The group commit's connection and one for other requests.
        await warm_pool(engine, min(2, settings.db_pool_size), INGEST_WARMUP)
        redis = await connect_redis(
            settings, redis_url, settings.redis_socket_timeout_s
        )
        streams = Streams.from_settings(redis, settings)
        registry = SchemaRegistry(
            engine, settings.schema_refresh_s, settings.unknown_event_types
        )
        ctx = ApiContext(
            settings=settings,
            engine=engine,
            redis=redis,
            streams=streams,
            committer=GroupCommitter(
                engine,
                streams,
                metrics,
                settings.ingest_max_batch,
                registry.label,
                publish_backoff_s=settings.publish_backoff_s,
                insert_attempts=settings.ingest_retry_attempts,
                max_queued=settings.ingest_queue_limit,
                deadline_s=settings.ingest_deadline_s,
                duplicate_window=timedelta(days=settings.duplicate_window_days),
            ),
            metrics=metrics,
            registry=registry,
            keys=KeyCache(engine, settings.key_refresh_s),
            limiter=RateLimiter(redis, f"{settings.stream_name}:ratelimit"),
        )
        # PostgreSQL down: requests answer 503 until the schemas can be loaded.
        await ctx.refresh_schemas()
        await ctx.refresh_keys()
        # Redis down: accept anyway, the reconciler publishes once it is back.
        with contextlib.suppress(Exception):
            await streams.ensure_group()
        app.state.ctx = ctx
        ctx.start()
        freeze_startup_heap()
        try:
            yield
        finally:
            await ctx.close()

    # Outermost first: every route has them, and so has the fast path.
    middleware = [
        Middleware(CorrelationMiddleware, metrics=metrics),
        Middleware(
            LimitsMiddleware,
            limits=Limits(
                single_event_bytes=settings.max_event_bytes,
                batch_bytes=settings.max_batch_bytes,
                other_bytes=settings.max_request_bytes,
                body_timeout_s=settings.body_timeout_s,
            ),
        ),
    ]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST", "DELETE"],
                allow_headers=[
                    "authorization",
                    "x-api-key",
                    "content-type",
                    "x-correlation-id",
                ],
                expose_headers=["x-correlation-id", "retry-after"],
                max_age=600,
            )
        )
    app = EventFlowApi(
        title="EventFlow",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        default_response_class=Json,
        responses=COMMON_RESPONSES,
        middleware=middleware,
    )
    app.state.metrics = metrics
    app.add_exception_handler(InvalidEvent, _invalid)
    app.add_exception_handler(RequestValidationError, _request_invalid)
    app.add_exception_handler(DependencyUnavailable, _unavailable)
    app.add_exception_handler(Overloaded, _overloaded)
    app.add_exception_handler(DBAPIError, _database_error)
    # PostgreSQL or Redis refusing connections outside ingestion: 503, not 500.
    app.add_exception_handler(OSError, _database_error)
    app.add_exception_handler(RedisError, _database_error)
    # asyncpg's errors at connect time are not wrapped by SQLAlchemy.
    app.add_exception_handler(asyncpg.PostgresError, _database_error)
    app.add_exception_handler(asyncpg.InterfaceError, _database_error)
    app.include_router(events.router)
    app.include_router(health.router)
    app.include_router(summary.router)
    app.include_router(deadletters.router)
    app.include_router(reprocess.router)
    app.include_router(schemas.router)
    app.include_router(audit.router)
    # The operator console's pages (imported here: it builds on the API's modules).
    from eventflow.console import console_router

    app.include_router(console_router())
    app.fast_path = IngestFastPath(app, _route(events.router, "POST", PATH), middleware)
    return app


class EventFlowApi(FastAPI):
    """FastAPI, with ``POST /events`` served by ``api.fastpath``."""

    fast_path: IngestFastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fast_path is not None and self.fast_path.matches(scope):
            await self.fast_path(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _route(router: APIRouter, method: str, path: str) -> APIRoute:
    for route in router.routes:
        if (
            isinstance(route, APIRoute)
            and route.path == path
            and method in (route.methods or ())
        ):
            return route
    raise LookupError(f"no route {method} {path}")
