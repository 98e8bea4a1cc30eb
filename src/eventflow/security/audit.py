"""The audit trail: every admin action, when, by which key, on what, how many."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import insert, literal, select
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow.security.auth import Principal
from eventflow.store.tables import audit_log


class AuditEntry(BaseModel):
    id: int
    at: datetime
    key_id: int | None
    actor: str = Field(description="Key name, `cli`, or `unauthenticated`")
    action: str
    target: str | None
    rows: int | None
    details: dict[str, Any] | None


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next_before_id: int | None = Field(
        description="Pass as `before_id` for older entries; null on the last page"
    )


async def record(
    engine: AsyncEngine,
    actor: str,
    action: str,
    *,
    key_id: int | None = None,
    target: str | None = None,
    rows: int | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            insert(audit_log).values(
                actor=actor,
                key_id=key_id,
                action=action,
                target=target,
                rows=rows,
                details=details,
            )
        )


async def record_by(
    engine: AsyncEngine,
    who: Principal,
    action: str,
    *,
    target: str | None = None,
    rows: int | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """``record`` for a request's principal (its key's name and id)."""
    await record(
        engine,
        who.actor,
        action,
        key_id=who.key_id,
        target=target,
        rows=rows,
        details=details,
    )


async def list_entries(
    engine: AsyncEngine, limit: int = 50, before_id: int | None = None
) -> AuditPage:
    """Newest first."""
    query = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(audit_log.c.id < before_id)
    async with engine.connect() as conn:
        items = [
            AuditEntry.model_validate(r._asdict()) for r in await conn.execute(query)
        ]
    return AuditPage(
        items=items, next_before_id=items[-1].id if len(items) == limit else None
    )


async def entries_about_event(
    engine: AsyncEngine, event_id: str, limit: int = 50
) -> list[AuditEntry]:
    """Actions that named this event in ``details.event_ids`` (the console's
    replays and purges), oldest first."""
    query = (
        select(audit_log)
        .where(audit_log.c.details["event_ids"].op("?")(literal(event_id)))
        .order_by(audit_log.c.id)
        .limit(limit)
    )
    async with engine.connect() as conn:
        return [
            AuditEntry.model_validate(r._asdict()) for r in await conn.execute(query)
        ]
