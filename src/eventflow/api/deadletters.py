"""Dead-letter management: find, inspect, replay and purge failed events."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Path, Query, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError

from eventflow.api.deps import Admin, Context, Read
from eventflow.errors import InvalidEvent
from eventflow.security import audit
from eventflow.store import deadletters as dl

router = APIRouter(prefix="/dead-letters", tags=["dead letters"])


def _filter(
    event_type: str | None = None,
    error_type: str | None = None,
    error: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    include_replayed: bool = False,
) -> dl.DeadLetterFilter:
    """The filter from query parameters, or a 422 naming the bad one."""
    try:
        return dl.DeadLetterFilter(
            event_type=event_type,
            error_type=error_type,
            error=error,
            since=since,
            until=until,
            include_replayed=include_replayed,
        )
    except ValidationError as exc:
        raise RequestValidationError(
            [
                {**e, "loc": ("query", *e["loc"])}
                for e in exc.errors(include_url=False, include_context=False)
            ]
        ) from exc


Id = Annotated[int, Path(ge=1, le=2**63 - 1, description="Dead letter id")]


class ReplayOne(BaseModel):
    properties: dict[str, Any] | None = Field(
        default=None,
        description="Replace the event's properties (fix what failed) before replay",
    )


class BulkReplay(BaseModel):
    filter: dl.DeadLetterFilter = Field(default_factory=dl.DeadLetterFilter)
    dry_run: bool = Field(default=True, description="Only count what would replay")
    limit: int = Field(default=10_000, ge=1, le=100_000)


@router.get("", response_model=dl.DeadLetterPage, summary="List dead letters")
async def list_dead_letters(
    ctx: Context,
    _: Read,
    event_type: str | None = None,
    error_type: Annotated[str | None, Query(description="Exact error class")] = None,
    error: Annotated[str | None, Query(description="Substring of the error")] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    include_replayed: bool = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    after_id: Annotated[
        int | None, Query(ge=0, le=2**63 - 1, description="From `next_after_id`")
    ] = None,
) -> dl.DeadLetterPage:
    """Oldest first, paged by id."""
    f = _filter(event_type, error_type, error, since, until, include_replayed)
    return await dl.list_dead_letters(ctx.engine, f, limit, after_id)


@router.get(
    "/{dead_letter_id}",
    response_model=dl.DeadLetter,
    responses={404: {"description": "No such dead letter"}},
)
async def show_dead_letter(dead_letter_id: Id, ctx: Context, _: Read) -> dl.DeadLetter:
    """One dead letter with its payload."""
    found = await dl.get_dead_letter(ctx.engine, dead_letter_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "dead letter not found")
    return found


@router.post(
    "/{dead_letter_id}/replay",
    response_model=dl.ReplayResult,
    responses={404: {"description": "No such dead letter"}, 422: {}},
)
async def replay_one(
    dead_letter_id: Id,
    ctx: Context,
    who: Admin,
    body: Annotated[ReplayOne | None, Body()] = None,
) -> dl.ReplayResult:
    """Send the event through normal processing again (optionally with fixed
    properties). It still ends as exactly one row."""
    dead = await dl.get_dead_letter(ctx.engine, dead_letter_id)
    if dead is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "dead letter not found")
    if body is not None and body.properties is not None and dead.payload:
        # A correction is checked before anything changes, as the worker will
        # check it (an undecodable payload is refused by the replay itself).
        with contextlib.suppress(dl.NotReplayable):
            await ctx.registry.ensure_loaded()
            errors = dl.correction_errors(ctx.registry, dead.payload, body.properties)
            if errors:
                raise InvalidEvent(
                    [{**e, "loc": ["body", *e.get("loc", [])]} for e in errors]
                )
    result = await dl.replay(
        ctx.engine,
        ctx.streams,
        ids=[dead_letter_id],
        properties=body.properties if body else None,
    )
    if result.skipped:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, result.skipped[0]["reason"]
        )
    await audit.record_by(
        ctx.engine,
        who,
        "dead_letter.replay",
        target=f"dead-letter {dead_letter_id}",
        rows=result.replayed,
        details={"fixed_properties": bool(body and body.properties is not None)},
    )
    return result


@router.post("/replay", response_model=dl.ReplayResult, summary="Replay by filter")
async def replay_many(body: BulkReplay, ctx: Context, who: Admin) -> dl.ReplayResult:
    """Replay every dead letter matching the filter. ``dry_run`` (the default)
    only reports how many would be replayed."""
    result = await dl.replay(
        ctx.engine, ctx.streams, f=body.filter, dry_run=body.dry_run, limit=body.limit
    )
    if not body.dry_run:
        await audit.record_by(
            ctx.engine,
            who,
            "dead_letter.replay_many",
            target="dead letters matching a filter",
            rows=result.replayed,
            details={"filter": body.filter.model_dump(mode="json", exclude_none=True)},
        )
    return result


@router.delete("/{dead_letter_id}", status_code=204, responses={404: {}})
async def purge_one(dead_letter_id: Id, ctx: Context, who: Admin) -> None:
    """Delete one dead letter for good (the raw event stays in the audit trail)."""
    if not await dl.purge(ctx.engine, ids=[dead_letter_id]):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "dead letter not found")
    await audit.record_by(
        ctx.engine,
        who,
        "dead_letter.purge",
        target=f"dead-letter {dead_letter_id}",
        rows=1,
    )


class PurgeResult(BaseModel):
    purged: int
    dry_run: bool


@router.delete("", response_model=PurgeResult, summary="Purge by filter")
async def purge_many(
    ctx: Context,
    who: Admin,
    event_type: str | None = None,
    error_type: str | None = None,
    error: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    dry_run: bool = True,
) -> PurgeResult:
    """Delete the matching dead letters; ``dry_run`` (the default) only counts."""
    f = _filter(event_type, error_type, error, since, until, include_replayed=True)
    purged = await dl.purge(ctx.engine, f, dry_run=dry_run)
    if not dry_run:
        await audit.record_by(
            ctx.engine,
            who,
            "dead_letter.purge_many",
            target="dead letters matching a filter",
            rows=purged,
            details={"filter": f.model_dump(mode="json", exclude_none=True)},
        )
    return PurgeResult(purged=purged, dry_run=dry_run)
