"""Health for people and for orchestrators, and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from eventflow.api.deps import Context
from eventflow.api.responses import Json
from eventflow.models import DependencyState, HealthOut

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
        status="ok" if pg is None and rd is None else "degraded",
        postgres=_dep(pg),
        redis=_dep(rd),
    )
    return Json(
        body.model_dump(exclude_none=True),
        status_code=200 if body.status == "ok" else 503,
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
async def metrics(ctx: Context) -> Response:
    return Response(
        generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
