"""``GET /audit``: the record of admin actions (admin keys only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from eventflow.api.deps import Admin, Context
from eventflow.security.audit import AuditPage, list_entries

router = APIRouter(tags=["operations"])


@router.get("/audit", response_model=AuditPage, summary="Admin actions, newest first")
async def audit(
    ctx: Context,
    _: Admin,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    before_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> AuditPage:
    """Replays, purges, schema changes and key changes: when, which key, what,
    how many rows."""
    return await list_entries(ctx.engine, limit, before_id)
