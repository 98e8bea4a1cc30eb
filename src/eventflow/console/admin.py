"""Console pages for the schema registry (versions and their differences) and
API keys (create, shown once; revoke)."""

from __future__ import annotations

import difflib
from typing import Annotated

import orjson
from fastapi import APIRouter, HTTPException, Path, Query, Request, Response

from eventflow.console.web import (
    PREFIX,
    Actor,
    ConsoleDep,
    ConsoleRoute,
    Posted,
    Reader,
    redirect,
    render,
)
from eventflow.schemas import store as schemas
from eventflow.schemas.compat import incompatibilities
from eventflow.security import audit
from eventflow.security.keys import KeyExists, Scope, create_key, list_keys, revoke_key

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)

EventType = Annotated[
    str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
]


def _pretty(schema: object) -> str:
    return orjson.dumps(
        schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
    ).decode()


@router.get("/schemas")
async def schemas_page(request: Request, c: ConsoleDep, _: Reader) -> Response:
    types = await schemas.list_types(c.ctx.engine)
    return render(request, "schemas.html", {"types": types})


@router.get("/schemas/{event_type}")
async def schema_page(
    event_type: EventType,
    request: Request,
    c: ConsoleDep,
    _: Reader,
    a: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    b: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> Response:
    """The versions of a type; the difference between two (by default the
    latest and the one before), line by line and as compatibility findings."""
    versions = await schemas.list_versions(c.ctx.engine, event_type)
    if not versions:
        raise HTTPException(404, f"{event_type} is not a registered event type.")
    by_number = {v.version: v for v in versions}
    new = by_number.get(b or versions[-1].version)
    old = by_number.get(a or (new.version - 1 if new else 0))
    if new is None or (a is not None and old is None):
        raise HTTPException(404, f"{event_type} has no such version.")
    diff: list[tuple[str, str]] = []
    findings: list[str] = []
    if old is not None and old.version != new.version:
        for line in difflib.unified_diff(
            _pretty(old.schema).splitlines(),
            _pretty(new.schema).splitlines(),
            f"version {old.version}",
            f"version {new.version}",
            lineterm="",
        ):
            if line.startswith(("+++", "---")):
                kind = "hunk"
            else:
                kind = {"+": "add", "-": "del", "@": "hunk"}.get(line[:1], "same")
            diff.append((kind, line))
        findings = incompatibilities(old.schema, new.schema)
    return render(
        request,
        "schema.html",
        {
            "event_type": event_type,
            "versions": versions,
            "old": old,
            "new": new,
            "new_text": _pretty(new.schema),
            "diff": diff,
            "findings": findings,
        },
    )


@router.get("/keys")
async def keys_page(request: Request, c: ConsoleDep, _: Actor) -> Response:
    return render(request, "keys.html", {"keys": await list_keys(c.ctx.engine)})


@router.post("/keys")
async def create(request: Request, c: ConsoleDep, who: Actor, form: Posted) -> Response:
    name = form.text("name")
    error: str | None = None
    try:
        scope = Scope(form.get("scope") or "")
        rate = form.text("rate_limit")
        rate_limit = float(rate) if rate else None
        if rate_limit is not None and rate_limit <= 0:
            raise ValueError("the rate limit must be positive")
    except ValueError as exc:
        error = f"Bad value: {exc}"
    if not name or len(name) > 200:
        error = "A key needs a name (at most 200 characters)."
    if error is None:
        try:
            key, secret = await create_key(c.ctx.engine, name or "", scope, rate_limit)
        except KeyExists as exc:
            error = str(exc)
        else:
            await audit.record_by(
                c.ctx.engine,
                who.principal,
                "key.create",
                target=f"key {key.name}",
                rows=1,
                details={"scope": key.scope.value, "rate_limit": key.rate_limit,
                         "via": "console"},
            )  # fmt: skip
            await c.ctx.keys.refresh(force=True)
            keys = await list_keys(c.ctx.engine)
            return render(
                request, "keys.html", {"keys": keys, "created": key, "secret": secret}
            )
    keys = await list_keys(c.ctx.engine)
    return render(request, "keys.html", {"keys": keys, "error": error}, status=422)


@router.post("/keys/{key_id}/revoke")
async def revoke(
    key_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    c: ConsoleDep,
    who: Actor,
    _: Posted,
) -> Response:
    revoked = await revoke_key(c.ctx.engine, str(key_id))
    if revoked is None:
        raise HTTPException(404, "No such active key.")
    await audit.record_by(
        c.ctx.engine,
        who.principal,
        "key.revoke",
        target=f"key {revoked.name}",
        rows=1,
        details={"via": "console"},
    )
    await c.ctx.keys.refresh(force=True)
    return redirect(f"{PREFIX}/keys")
