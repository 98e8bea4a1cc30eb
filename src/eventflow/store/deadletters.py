"""Dead-letter operations shared by the API and the CLI: list, show, replay, purge.

A replay puts the event back on the normal path: its ``raw_events`` row returns to
``accepted`` (so the reconciler covers a lost replay too) and it is published
again. When it is processed, the worker removes the dead letter in the same
transaction that writes ``processed_events``: the event still ends as one row.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, Field, field_validator
from sqlalchemy import Select, and_, delete, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow.errors import InvalidEvent, UndecodableMessage
from eventflow.models import Event, decode_message, event_document
from eventflow.pipeline.streams import Streams
from eventflow.schemas.registry import SchemaRegistry
from eventflow.store.events import lock_settling
from eventflow.store.tables import failed_events, raw_events, unsettled_events

# A filter's text cannot hold NUL (PostgreSQL text cannot), nor be unbounded.
FilterText = Annotated[str, Field(max_length=1000, pattern=r"^[^\x00]*$")]
# Ids are PostgreSQL bigints.
DeadLetterId = Annotated[int, Field(ge=1, le=2**63 - 1)]


class DeadLetterFilter(BaseModel):
    """Which dead letters an operation applies to; every field narrows it."""

    event_type: FilterText | None = None
    error_type: FilterText | None = Field(default=None, description="Exact error class")
    error: FilterText | None = Field(default=None, description="Substring of the error")
    since: datetime | None = Field(default=None, description="failed_at >= since")
    until: datetime | None = Field(default=None, description="failed_at < until")
    include_replayed: bool = Field(
        default=False, description="Also match dead letters already replayed"
    )

    @field_validator("since", "until")
    @classmethod
    def _representable(cls, value: datetime | None) -> datetime | None:
        """A time PostgreSQL can compare with: aware, within years 1 to 9999 in
        UTC (a naive time is UTC)."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        try:
            return value.astimezone(UTC)
        except OverflowError as exc:
            raise ValueError("out of range once converted to UTC") from exc


class DeadLetter(BaseModel):
    id: int
    event_id: UUID
    event_type: str | None
    error: str
    error_type: str
    attempts: int
    correlation_id: str | None
    stream_entry_id: str | None
    failed_at: datetime
    replayed_at: datetime | None
    replay_count: int
    payload: str | None = None


class DeadLetterPage(BaseModel):
    items: list[DeadLetter]
    total: int
    next_after_id: int | None = Field(
        description="Pass as `after_id` for the next page; null on the last page"
    )


class ReplayResult(BaseModel):
    matched: int
    replayed: int
    skipped: list[dict[str, Any]] = Field(
        default_factory=list, description="Dead letters that cannot be replayed, why"
    )
    dry_run: bool = False


class NotReplayable(Exception):
    """The stored payload is not an EventFlow event (it was undecodable)."""


def _where(f: DeadLetterFilter) -> list[Any]:
    conds: list[Any] = []
    if f.event_type:
        conds.append(failed_events.c.event_type == f.event_type)
    if f.error_type:
        conds.append(failed_events.c.error_type == f.error_type)
    if f.error:
        conds.append(failed_events.c.error.contains(f.error, autoescape=True))
    if f.since:
        conds.append(failed_events.c.failed_at >= f.since)
    if f.until:
        conds.append(failed_events.c.failed_at < f.until)
    if not f.include_replayed:
        conds.append(failed_events.c.replayed_at.is_(None))
    return conds


def _columns(with_payload: bool) -> Select[Any]:
    cols = [c for c in failed_events.c if with_payload or c.name != "payload"]
    return select(*cols)


async def list_dead_letters(
    engine: AsyncEngine,
    f: DeadLetterFilter,
    limit: int = 50,
    after_id: int | None = None,
) -> DeadLetterPage:
    conds = _where(f)
    query = _columns(False).where(and_(True, *conds)).order_by(failed_events.c.id)
    if after_id is not None:
        query = query.where(failed_events.c.id > after_id)
    async with engine.connect() as conn:
        rows = (await conn.execute(query.limit(limit + 1))).mappings().all()
        total = await conn.scalar(
            select(func.count()).select_from(failed_events).where(and_(True, *conds))
        )
    items = [DeadLetter.model_validate(dict(r)) for r in rows[:limit]]
    more = len(rows) > limit
    return DeadLetterPage(
        items=items, total=int(total or 0), next_after_id=items[-1].id if more else None
    )


async def get_dead_letter(
    engine: AsyncEngine, dead_letter_id: int
) -> DeadLetter | None:
    async with engine.connect() as conn:
        row = (
            (
                await conn.execute(
                    _columns(True).where(failed_events.c.id == dead_letter_id)
                )
            )
            .mappings()
            .first()
        )
    return None if row is None else DeadLetter.model_validate(dict(row))


def _event_of(payload: str, properties: dict[str, Any] | None) -> Event:
    try:
        event = decode_message(payload.encode())
    except UndecodableMessage as exc:
        raise NotReplayable(
            "the stored payload is not an EventFlow event; purge it instead"
        ) from exc
    # A replay is validated against the latest version of its type's schema: the
    # fix that makes it pass may be a new version.
    if properties is None:
        return dataclasses.replace(event, schema_version=None)
    return dataclasses.replace(event, properties=properties, schema_version=None)


def correction_errors(
    registry: SchemaRegistry, payload: str, properties: dict[str, Any]
) -> list[dict[str, Any]]:
    """What is still wrong with a dead letter's event once its properties are
    replaced by ``properties``, checked against the latest version of its type's
    schema (what a replay is validated against): empty when it would pass."""
    event = _event_of(payload, properties)
    document = event_document(
        event.event_type, event.user_id, event.timestamp, event.properties
    )
    try:
        registry.validate(event.event_type, None, document, loc_prefix=())
    except InvalidEvent as exc:
        return exc.errors
    return []


async def matching(
    engine: AsyncEngine,
    f: DeadLetterFilter | None = None,
    ids: list[int] | None = None,
    after_id: int | None = None,
    limit: int = 500,
) -> list[tuple[int, UUID]]:
    """The ids and event ids of the next ``limit`` dead letters matching ``f`` (or
    among ``ids``) after ``after_id``, in id order: a bulk action's next chunk."""
    conds = _where(f or DeadLetterFilter())
    if ids is not None:
        conds = [failed_events.c.id.in_(ids)]
    if after_id is not None:
        conds.append(failed_events.c.id > after_id)
    query = (
        select(failed_events.c.id, failed_events.c.event_id)
        .where(and_(True, *conds))
        .order_by(failed_events.c.id)
        .limit(limit)
    )
    async with engine.connect() as conn:
        return [(r.id, r.event_id) for r in await conn.execute(query)]


async def replay(
    engine: AsyncEngine,
    streams: Streams,
    f: DeadLetterFilter | None = None,
    ids: list[int] | None = None,
    properties: dict[str, Any] | None = None,
    dry_run: bool = False,
    limit: int = 10_000,
) -> ReplayResult:
    """Replay the dead letters matching ``f`` (or with ``ids``).

    ``properties`` replaces the event's properties (to fix what failed validation);
    only allowed for a single id.
    """
    conds = _where(f or DeadLetterFilter())
    if ids is not None:
        conds = [failed_events.c.id.in_(ids)]
    query = (
        select(failed_events.c.id, failed_events.c.event_id, failed_events.c.payload)
        .where(and_(True, *conds))
        .order_by(failed_events.c.id)
        .limit(limit)
    )
    result = ReplayResult(matched=0, replayed=0, dry_run=dry_run)
    async with engine.begin() as conn:
        rows = (await conn.execute(query.with_for_update(skip_locked=True))).all()
        result.matched = len(rows)
        events: list[Event] = []
        replay_ids: list[int] = []
        for row in rows:
            try:
                events.append(_event_of(row.payload, properties))
                replay_ids.append(row.id)
            except NotReplayable as exc:
                result.skipped.append({"id": row.id, "reason": str(exc)})
        if dry_run or not events:
            return result
        # Before the rows change: a worker holding a copy of one of these events
        # commits first, and one reading the replayed entry waits for this commit
        # (the entry is published inside it) and then sees the unsettled row.
        await lock_settling(conn, events)
        await conn.execute(
            update(failed_events)
            .where(failed_events.c.id.in_(replay_ids))
            .values(
                replayed_at=func.now(), replay_count=failed_events.c.replay_count + 1
            )
        )
        await conn.execute(
            update(raw_events)
            .where(
                tuple_(raw_events.c.event_id, raw_events.c.received_at).in_(
                    [(e.event_id, e.received_at) for e in events]
                )
            )
            .values(status="accepted", settled_at=None, published_at=func.now())
        )
        await conn.execute(
            pg_insert(unsettled_events)
            .values(
                [{"received_at": e.received_at, "event_id": e.event_id} for e in events]
            )
            .on_conflict_do_nothing()
        )
        # Publish inside the transaction: if Redis fails, nothing changes.
        await streams.publish(events)
    result.replayed = len(events)
    return result


async def purge(
    engine: AsyncEngine,
    f: DeadLetterFilter | None = None,
    ids: list[int] | None = None,
    dry_run: bool = False,
) -> int:
    """Delete dead letters for good (the audit row in ``raw_events`` stays)."""
    conds = _where(f or DeadLetterFilter(include_replayed=True))
    if ids is not None:
        conds = [failed_events.c.id.in_(ids)]
    async with engine.begin() as conn:
        if dry_run:
            count = await conn.scalar(
                select(func.count())
                .select_from(failed_events)
                .where(and_(True, *conds))
            )
            return int(count or 0)
        result = await conn.execute(delete(failed_events).where(and_(True, *conds)))
    return int(result.rowcount or 0)
