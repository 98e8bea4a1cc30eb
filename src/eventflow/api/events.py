"""Ingestion and status routes."""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Request, status
from redis.exceptions import RedisError
from sqlalchemy import select

from eventflow import jsoncodec
from eventflow.api.context import ApiContext
from eventflow.api.deps import Context, Ingest, Read
from eventflow.api.responses import Json
from eventflow.errors import InvalidEvent, Overloaded, UnknownSchema
from eventflow.models import (
    BatchIn,
    BatchResult,
    Event,
    EventAccepted,
    EventIn,
    EventStatus,
    EventStatusOut,
    parse_event,
    validate_event,
)
from eventflow.pipeline.ingest import Outcome
from eventflow.security.auth import Principal
from eventflow.store.tables import failed_events, processed_events, raw_events

router = APIRouter(tags=["events"])
log = logging.getLogger(__name__)

MESSAGES = {
    Outcome.accepted: "Event accepted for processing",
    Outcome.duplicate: "Event already accepted; not processed again",
}


async def _count_duplicates(ctx: Context, n: int) -> None:
    with contextlib.suppress(RedisError, OSError):  # statistics only
        await ctx.streams.count_duplicates(n)


def _check_backpressure(ctx: Context) -> None:
    limit = ctx.settings.max_consumer_lag
    if limit and ctx.backlog() > limit:
        ctx.metrics.events_rejected.labels("overloaded").inc()
        raise Overloaded(f"consumer backlog {ctx.backlog()} exceeds {limit}")


def _single_event_body() -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": EventIn.model_json_schema()}},
        }
    }


def _parse_body(body: bytes, ctx: Context) -> Any:
    """The JSON body with every number exact, or a 422 saying what is wrong."""
    try:
        return jsoncodec.loads(body, ctx.settings.max_json_depth)
    except jsoncodec.InvalidJson as exc:
        raise InvalidEvent(
            [{"loc": ["body", *exc.path], "msg": str(exc), "type": "json_invalid"}]
        ) from exc


async def _validate(
    item: Any,
    ctx: Context,
    now: datetime,
    correlation_id: str,
    prefix: tuple[str | int, ...],
) -> Event:
    data = parse_event(item, prefix)

    def check() -> Event:
        return validate_event(
            data,
            registry=ctx.registry,
            received_at=now,
            correlation_id=correlation_id,
            max_future_skew=timedelta(seconds=ctx.settings.max_future_skew_s),
            loc_prefix=prefix,
        )

    try:
        return check()
    except UnknownSchema:
        # Registered through another API process a moment ago? Look once more.
        if not await ctx.registry.refresh_after_miss():
            raise
    return check()


@router.post(
    "/events",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=EventAccepted,
    responses={
        200: {"model": EventAccepted, "description": "Duplicate of an accepted event"},
        409: {"description": "event_id already accepted with a different body"},
        422: {
            "description": "Invalid event; `detail` names each bad field, and the "
            "schema and version that refused it"
        },
        429: {"description": "Consumers are behind; retry after `Retry-After`"},
        503: {"description": "PostgreSQL unavailable; nothing was stored"},
    },
    summary="Accept one event",
    openapi_extra=_single_event_body(),
)
async def post_event(request: Request, ctx: Context, principal: Ingest) -> Json:
    """Store the event durably and queue it. ``202`` means it is in PostgreSQL."""
    return await accept_one(
        ctx, await request.body(), request.state.correlation_id, principal
    )


async def accept_one(
    ctx: ApiContext, body: bytes, correlation_id: str, principal: Principal
) -> Json:
    """``POST /events`` once the caller is known: the route above, and the same
    request served without FastAPI's routing (``api.fastpath``)."""
    _check_backpressure(ctx)
    await ctx.registry.ensure_loaded()
    now = datetime.now(UTC)
    event = await _validate(_parse_body(body, ctx), ctx, now, correlation_id, ("body",))
    event.source = principal.name
    (result,) = await ctx.committer.submit([event])
    if result.outcome is Outcome.refused:
        raise InvalidEvent(
            [{"loc": ["body"], "msg": result.error or "refused", "type": "refused"}]
        )
    if result.outcome is Outcome.conflict:
        ctx.metrics.events_rejected.labels("conflict").inc()
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"event_id {event.event_id} was already accepted with a different body",
        )
    if result.outcome is Outcome.duplicate:
        ctx.metrics.duplicates.labels("api").inc()
        await _count_duplicates(ctx, 1)
    log.debug("event %s", result.outcome.value, extra={"event_id": str(event.event_id)})
    return Json(
        {
            "event_id": str(event.event_id),
            "status": result.outcome.value,
            "message": MESSAGES[result.outcome],
            "received_at": result.received_at.isoformat(),
        },
        status_code=202 if result.outcome is Outcome.accepted else 200,
    )


@router.post(
    "/events/batch",
    response_model=BatchResult,
    summary="Accept up to 1,000 events",
    responses={
        413: {"description": "More events than EVENTFLOW_MAX_BATCH_REQUEST"},
        422: {"description": 'The body is not {"events": [...]}'},
        503: {"description": "PostgreSQL unavailable; nothing was stored"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": BatchIn.model_json_schema()}},
        }
    },
)
async def post_batch(request: Request, ctx: Context, principal: Ingest) -> Json:
    """Each item is judged alone: valid items are accepted even when others are not.
    The answer is ``200`` when the request itself was well formed; read
    ``results[i].status`` (accepted, duplicate, conflict or invalid)."""
    body = await request.body()
    items = _batch_items(_parse_body(body, ctx))
    limit = ctx.settings.max_batch_request
    if len(items) > limit:
        ctx.metrics.events_rejected.labels("too_large").inc(len(items))
        raise HTTPException(
            413, f"events: at most {limit} events per batch, got {len(items)}"
        )
    _check_backpressure(ctx)
    await ctx.registry.ensure_loaded()
    now = datetime.now(UTC)
    cid: str = request.state.correlation_id
    results: list[dict[str, Any]] = [{} for _ in items]
    valid: list[tuple[int, Event]] = []
    per_event = ctx.settings.max_event_bytes
    # Only a body larger than one event's limit can hold an event over it.
    measure = len(body) > per_event
    for index, item in enumerate(items):
        try:
            if measure and len(jsoncodec.dumps(item)) > per_event:
                raise InvalidEvent(
                    [
                        {
                            "loc": ["body", "events", index],
                            "msg": f"the event is larger than {per_event} bytes "
                            "(EVENTFLOW_MAX_EVENT_BYTES)",
                            "type": "too_large",
                        }
                    ]
                )
            event = await _validate(item, ctx, now, cid, ("body", "events", index))
            event.source = principal.name
        except InvalidEvent as exc:
            results[index] = {"index": index, "status": "invalid", "errors": exc.errors}
            continue
        valid.append((index, event))
    if valid:
        outcomes = await ctx.committer.submit([e for _, e in valid])
        for (index, event), outcome in zip(valid, outcomes, strict=True):
            if outcome.outcome is Outcome.refused:
                results[index] = {
                    "index": index,
                    "status": "invalid",
                    "errors": [
                        {
                            "loc": ["body", "events", index],
                            "msg": outcome.error or "refused",
                            "type": "refused",
                        }
                    ],
                }
                continue
            results[index] = {
                "index": index,
                "status": outcome.outcome.value,
                "event_id": str(event.event_id),
            }
    accepted = sum(r["status"] == "accepted" for r in results)
    duplicates = sum(r["status"] == "duplicate" for r in results)
    if duplicates:
        ctx.metrics.duplicates.labels("api").inc(duplicates)
        await _count_duplicates(ctx, duplicates)
    rejected = len(results) - accepted - duplicates
    if rejected:
        conflicts = sum(r["status"] == "conflict" for r in results)
        ctx.metrics.events_rejected.labels("conflict").inc(conflicts)
        ctx.metrics.events_rejected.labels("invalid").inc(rejected - conflicts)
    return Json(
        {
            "accepted": accepted,
            "duplicates": duplicates,
            "rejected": rejected,
            "received_at": now.isoformat(),
            "results": results,
        }
    )


def _batch_items(data: Any) -> list[Any]:
    """The ``events`` list of a batch body, or a 422 saying what is wrong."""
    if not isinstance(data, dict) or set(data) != {"events"}:
        raise InvalidEvent(
            [
                {
                    "loc": ["body", "events"],
                    "msg": 'expected an object with one field, "events"',
                    "type": "missing",
                }
            ]
        )
    events = data["events"]
    if not isinstance(events, list) or not events:
        raise InvalidEvent(
            [
                {
                    "loc": ["body", "events"],
                    "msg": "events must be a non-empty list",
                    "type": "list_type",
                }
            ]
        )
    return events


@router.get(
    "/events/{event_id}",
    response_model=EventStatusOut,
    summary="Where an event is",
    responses={404: {"description": "No event with this id was accepted"}},
)
async def get_event(event_id: UUID, ctx: Context, _: Read) -> EventStatusOut:
    """``accepted`` (queued), ``processed`` or ``failed``, with times and errors."""
    query = (
        select(
            raw_events.c.event_type,
            raw_events.c.schema_version,
            raw_events.c.correlation_id,
            raw_events.c.received_at,
            raw_events.c.publish_count,
            raw_events.c.status.label("raw_status"),
            processed_events.c.processed_at,
            processed_events.c.attempts,
            processed_events.c.enrichment,
            failed_events.c.failed_at,
            failed_events.c.attempts.label("failed_attempts"),
            failed_events.c.error,
        )
        .select_from(raw_events)
        .outerjoin(
            processed_events, processed_events.c.event_id == raw_events.c.event_id
        )
        .outerjoin(failed_events, failed_events.c.event_id == raw_events.c.event_id)
        .where(raw_events.c.event_id == event_id)
    )
    async with ctx.engine.connect() as conn:
        row = (await conn.execute(query)).first()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"event {event_id} not found")
    if row.processed_at is not None:
        state, attempts = EventStatus.processed, row.attempts
    elif row.failed_at is not None:
        state, attempts = EventStatus.failed, row.failed_attempts
    elif row.raw_status == EventStatus.quarantined:
        state, attempts = EventStatus.quarantined, 0
    else:
        state, attempts = EventStatus.accepted, 0
    return EventStatusOut(
        event_id=event_id,
        event_type=row.event_type,
        schema_version=row.schema_version,
        status=state,
        correlation_id=row.correlation_id,
        received_at=row.received_at,
        processed_at=row.processed_at,
        failed_at=row.failed_at,
        attempts=attempts or 0,
        error=row.error,
        enrichment=row.enrichment,
    )
