"""Reprocessing runs: start one (admin), follow it (read)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status

from eventflow.api.deps import Admin, Context, Read
from eventflow.pipeline import reprocess as rp
from eventflow.security import audit

router = APIRouter(prefix="/reprocess", tags=["reprocessing"])

RunId = Annotated[int, Path(ge=1, le=2**63 - 1, description="Run id")]


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=rp.RunOut,
    response_model_by_alias=True,
)
async def start(body: rp.ReprocessIn, ctx: Context, who: Admin) -> rp.RunOut:
    """Re-run validation and processing for the events accepted in [from, to)
    (optionally of one type). The run is executed by a worker in bounded batches;
    follow it with ``GET /reprocess/{id}``."""
    run = await rp.create_run(ctx.engine, body, who.actor)
    await audit.record_by(
        ctx.engine,
        who,
        "reprocess.start",
        target=f"reprocess run {run.id}",
        rows=run.total,
        details=body.model_dump(mode="json", by_alias=True, exclude_none=True),
    )
    return run


@router.get("", response_model=list[rp.RunOut], response_model_by_alias=True)
async def runs(
    ctx: Context, _: Read, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> list[rp.RunOut]:
    """The latest runs, newest first."""
    return await rp.list_runs(ctx.engine, limit)


@router.get(
    "/{run_id}",
    response_model=rp.RunOut,
    response_model_by_alias=True,
    responses={404: {"description": "No such run"}},
)
async def run(run_id: RunId, ctx: Context, _: Read) -> rp.RunOut:
    found = await rp.get_run(ctx.engine, run_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "reprocess run not found")
    return found
