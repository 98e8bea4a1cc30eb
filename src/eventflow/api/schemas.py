"""The schema registry over HTTP: list, read, check and register versions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, status
from pydantic import BaseModel, ConfigDict, Field

from eventflow.api.deps import Admin, Context, Read
from eventflow.api.responses import Json
from eventflow.schemas import store
from eventflow.security import audit

router = APIRouter(prefix="/schemas", tags=["schemas"])

EventType = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Event type: letters, digits and `_ . : -`, at most 64.",
    ),
]
Version = Annotated[int, Path(ge=1, le=2**31 - 1)]


class SchemaIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: dict[str, Any] | bool = Field(
        alias="schema", description="A JSON Schema (draft 2020-12) of the whole event"
    )
    compatibility: Literal["backward", "none"] = Field(
        default="backward",
        description="`backward`: refuse a version that would refuse events the "
        "latest version accepted; `none`: register anyway.",
    )


class TypeOut(BaseModel):
    event_type: str
    latest_version: int
    versions: int
    updated_at: datetime


class VersionOut(BaseModel):
    event_type: str
    version: int
    compatibility: str
    created_at: datetime


class VersionsOut(BaseModel):
    event_type: str
    latest_version: int
    versions: list[VersionOut]


class SchemaOut(VersionOut):
    schema_: Any = Field(serialization_alias="schema")


class CheckOut(BaseModel):
    event_type: str
    compatible: bool
    unchanged: bool
    latest_version: int | None
    next_version: int
    compatibility: str
    incompatibilities: list[str]


def _version(v: store.StoredVersion) -> dict[str, Any]:
    return {
        "event_type": v.event_type,
        "version": v.version,
        "compatibility": v.compatibility,
        "created_at": v.created_at.isoformat(),
    }


def _full(v: store.StoredVersion) -> dict[str, Any]:
    return {**_version(v), "schema": v.schema}


def _not_found(event_type: str, version: int | None = None) -> HTTPException:
    what = f"{event_type} version {version}" if version else f"event type {event_type}"
    return HTTPException(status.HTTP_404_NOT_FOUND, f"{what} is not registered")


@router.get("", response_model=list[TypeOut], summary="Registered event types")
async def list_types(ctx: Context, _: Read) -> Json:
    rows = await store.list_types(ctx.engine)
    return Json([{**r, "updated_at": r["updated_at"].isoformat()} for r in rows])


@router.get(
    "/{event_type}",
    response_model=VersionsOut,
    summary="Versions of an event type",
    responses={404: {"description": "No such event type"}},
)
async def list_versions(event_type: EventType, ctx: Context, _: Read) -> Json:
    versions = await store.list_versions(ctx.engine, event_type)
    if not versions:
        raise _not_found(event_type)
    return Json(
        {
            "event_type": event_type,
            "latest_version": versions[-1].version,
            "versions": [_version(v) for v in versions],
        }
    )


@router.get(
    "/{event_type}/latest",
    response_model=SchemaOut,
    summary="The latest version of an event type's schema",
    responses={404: {"description": "No such event type"}},
)
async def get_latest(event_type: EventType, ctx: Context, _: Read) -> Json:
    found = await store.get_version(ctx.engine, event_type)
    if found is None:
        raise _not_found(event_type)
    return Json(_full(found))


@router.get(
    "/{event_type}/{version}",
    response_model=SchemaOut,
    summary="One version of an event type's schema",
    responses={404: {"description": "No such event type or version"}},
)
async def get_version(
    event_type: EventType, version: Version, ctx: Context, _: Read
) -> Json:
    found = await store.get_version(ctx.engine, event_type, version)
    if found is None:
        raise _not_found(event_type, version)
    return Json(_full(found))


def _invalid_schema(exc: store.InvalidSchema) -> HTTPException:
    return HTTPException(
        422,
        [{"loc": ["body", "schema"], "msg": str(exc), "type": "json_schema"}],
    )


def _check_out(check: store.Check) -> dict[str, Any]:
    return {
        "event_type": check.event_type,
        "compatible": check.compatible,
        "unchanged": check.unchanged,
        "latest_version": check.latest_version,
        "next_version": check.next_version,
        "compatibility": check.compatibility,
        "incompatibilities": check.incompatibilities,
    }


@router.post(
    "/{event_type}",
    status_code=status.HTTP_201_CREATED,
    response_model=SchemaOut,
    summary="Register the next version of an event type's schema",
    responses={
        200: {"model": SchemaOut, "description": "Same as the latest: unchanged"},
        409: {
            "model": CheckOut,
            "description": "Not backward compatible; `incompatibilities` says why",
        },
        422: {"description": "Not a valid JSON Schema (draft 2020-12)"},
    },
)
async def register(
    event_type: EventType, body: SchemaIn, ctx: Context, who: Admin
) -> Json:
    """A new type starts at version 1. A new version of a known type must accept
    every event the latest accepted, unless ``compatibility`` is ``none``. Running
    APIs and workers use it within ``EVENTFLOW_SCHEMA_REFRESH_S`` seconds."""
    try:
        stored, created = await store.register(
            ctx.engine, event_type, body.schema_, body.compatibility
        )
    except store.InvalidSchema as exc:
        raise _invalid_schema(exc) from exc
    except store.Incompatible as exc:
        detail = _check_out(exc.check)
        reasons = "; ".join(exc.check.incompatibilities)
        detail["detail"] = (
            f"version {exc.check.next_version} of {event_type} is not backward "
            f"compatible with version {exc.check.latest_version}: {reasons}"
        )
        return Json(detail, status_code=status.HTTP_409_CONFLICT)
    if created:
        await ctx.refresh_schemas(force=True)
        await audit.record_by(
            ctx.engine,
            who,
            "schema.register",
            target=f"{event_type} version {stored.version}",
            rows=1,
            details={"compatibility": body.compatibility},
        )
    return Json(_full(stored), status_code=201 if created else 200)


@router.post(
    "/{event_type}/check",
    response_model=CheckOut,
    summary="Would this schema be accepted as the next version, and why not",
    responses={422: {"description": "Not a valid JSON Schema (draft 2020-12)"}},
)
async def check(event_type: EventType, body: SchemaIn, ctx: Context, _: Read) -> Json:
    try:
        verdict = await store.check(
            ctx.engine, event_type, body.schema_, body.compatibility
        )
    except store.InvalidSchema as exc:
        raise _invalid_schema(exc) from exc
    return Json(_check_out(verdict))
