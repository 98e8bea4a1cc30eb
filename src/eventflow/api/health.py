"""Health for people and for orchestrators, and Prometheus metrics."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from eventflow import __version__
from eventflow.api.deps import Context, Read
from eventflow.api.responses import Json
from eventflow.models import DependencyState, HealthOut, ServiceInfo, ServicesOut

router = APIRouter(tags=["operations"])


def _dep(error: str | None) -> DependencyState:
    return (
        DependencyState(status="ok")
        if error is None
        else DependencyState(status="down", detail=error)
    )


@router.get(
    "/health",
    response_model=HealthOut,
    responses={503: {"model": HealthOut, "description": "A dependency is down"}},
)
async def health(ctx: Context) -> Json:
    """Checks PostgreSQL and Redis now; ``503`` when either is down."""
    pg, rd = await asyncio.gather(ctx.check_postgres(), ctx.check_redis())
    body = HealthOut(
        status="healthy" if pg is None and rd is None else "unhealthy",
        timestamp=datetime.now(UTC),
        version=__version__,
        services=ServicesOut(
            database="healthy" if pg is None else "unhealthy",
            redis="healthy" if rd is None else "unhealthy",
        ),
        postgres=_dep(pg),
        redis=_dep(rd),
    )
    return Json(
        body.model_dump(mode="json", exclude_none=True),
        status_code=200 if body.status == "healthy" else 503,
    )


@router.get("/", response_model=ServiceInfo, summary="What this service is")
async def root() -> ServiceInfo:
    """The service's name and version, and where its documentation is."""
    return ServiceInfo(
        service="EventFlow API", version=__version__, status="running", docs="/docs"
    )


@router.get("/health/live")
async def live() -> dict[str, str]:
    """The process is up and serving (no dependency checks)."""
    return {"status": "ok"}


@router.get("/health/ready", responses={503: {"description": "Cannot accept events"}})
async def ready(ctx: Context) -> Json:
    """Ready to accept events: PostgreSQL answers (Redis may be down: events are
    stored and republished when it returns)."""
    pg = ctx.postgres_error
    return Json(
        {"status": "ok" if pg is None else "unavailable", "postgres": _dep(pg).status},
        status_code=200 if pg is None else 503,
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(ctx: Context, _: Read) -> Response:
    """Needs a ``read`` key; ``EVENTFLOW_API_METRICS_PORT`` serves the same
    metrics without one on a port of their own (for Prometheus)."""
    return Response(
        generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
