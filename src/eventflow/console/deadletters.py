"""Console pages for dead letters: filter, select, confirm, replay (optionally
with corrected properties, checked against the schema first) or purge, and
follow a bulk action's progress."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import ValidationError

from eventflow.console.jobs import BulkAction
from eventflow.console.web import (
    PREFIX,
    Actor,
    ConsoleDep,
    ConsoleRoute,
    Form,
    Posted,
    Reader,
    Refused,
    redirect,
    render,
)
from eventflow.errors import errors_text
from eventflow.store import deadletters as dl

router = APIRouter(
    prefix=f"{PREFIX}/dead-letters", route_class=ConsoleRoute, include_in_schema=False
)
jobs_router = APIRouter(
    prefix=f"{PREFIX}/jobs", route_class=ConsoleRoute, include_in_schema=False
)

PAGE = 50
# Selections up to this size show each dead letter, with its properties to edit.
EDITABLE = 20
FILTER_FIELDS = ("event_type", "error_type", "error", "since", "until")


def _filter(values: dict[str, str | None]) -> dl.DeadLetterFilter:
    try:
        return dl.DeadLetterFilter.model_validate(
            {k: v for k, v in values.items() if v}
        )
    except ValidationError as exc:
        message = errors_text(exc.errors(include_url=False))
        raise Refused(422, f"Bad filter: {message}") from exc


def _form_filter(form: Form) -> tuple[dict[str, str | None], dl.DeadLetterFilter]:
    values = {name: form.text(name) for name in FILTER_FIELDS}
    return values, _filter(values)


@router.get("")
async def list_page(
    request: Request,
    c: ConsoleDep,
    _: Reader,
    event_type: Annotated[str | None, Query(max_length=1000)] = None,
    error_type: Annotated[str | None, Query(max_length=1000)] = None,
    error: Annotated[str | None, Query(max_length=1000)] = None,
    since: Annotated[str | None, Query(max_length=64)] = None,
    until: Annotated[str | None, Query(max_length=64)] = None,
    after_id: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
) -> Response:
    values = {
        "event_type": event_type,
        "error_type": error_type,
        "error": error,
        "since": since,
        "until": until,
    }
    values = {k: (v.strip() if v and v.strip() else None) for k, v in values.items()}
    page = await dl.list_dead_letters(c.ctx.engine, _filter(values), PAGE, after_id)
    query = {k: v for k, v in values.items() if v}
    next_url = (
        f"{PREFIX}/dead-letters?" + urlencode({**query, "after_id": page.next_after_id})
        if page.next_after_id
        else None
    )
    return render(
        request,
        "deadletters.html",
        {"form": values, "page": page, "next_url": next_url},
    )


async def _selection(
    c: ConsoleDep, form: Form
) -> tuple[str, list[int] | None, dict[str, str | None], dl.DeadLetterFilter, int]:
    action = form.get("action")
    if action not in ("replay", "purge"):
        raise Refused(422, "Choose replay or purge.")
    values, f = _form_filter(form)
    ids: list[int] | None = None
    if form.get("scope") == "all":
        count = (await dl.list_dead_letters(c.ctx.engine, f, limit=1)).total
    else:
        try:
            ids = sorted({int(i) for i in form.all("id")})
        except ValueError as exc:
            raise Refused(422, "Bad selection.") from exc
        if not ids:
            raise Refused(422, "Select at least one dead letter, or choose all.")
        count = len(await dl.matching(c.ctx.engine, ids=ids, limit=len(ids)))
    return action, ids, values, f, count


async def _editable(c: ConsoleDep, ids: list[int] | None) -> list[dict[str, Any]]:
    """The selected dead letters with their current properties (to correct)."""
    if ids is None or len(ids) > EDITABLE:
        return []
    out = []
    for dead_letter_id in ids:
        found = await dl.get_dead_letter(c.ctx.engine, dead_letter_id)
        if found is None:
            continue
        try:
            payload = orjson.loads(found.payload or "")
            properties = payload.get("props") if isinstance(payload, dict) else None
        except orjson.JSONDecodeError:
            properties = None
        out.append(
            {
                "dl": found,
                "properties": orjson.dumps(
                    properties, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
                ).decode()
                if isinstance(properties, dict)
                else None,
            }
        )
    return out


def _confirm(
    request: Request,
    action: str,
    ids: list[int] | None,
    values: dict[str, str | None],
    count: int,
    items: list[dict[str, Any]],
    errors: dict[int, str] | None = None,
    status: int = 200,
) -> Response:
    return render(
        request,
        "confirm.html",
        {
            "action": action,
            "ids": ids,
            "filter": values,
            "count": count,
            "items": items,
            "errors": errors or {},
        },
        status=status,
    )


@router.post("/confirm")
async def confirm(request: Request, c: ConsoleDep, _: Actor, form: Posted) -> Response:
    """How many dead letters the action would touch, before it does."""
    action, ids, values, _f, count = await _selection(c, form)
    items = await _editable(c, ids) if action == "replay" else []
    return _confirm(request, action, ids, values, count, items)


@router.post("/run")
async def run(request: Request, c: ConsoleDep, who: Actor, form: Posted) -> Response:
    """Start a confirmed action. Corrected properties are checked against the
    schema first: one that fails changes nothing and shows why."""
    action, ids, values, f, count = await _selection(c, form)
    items = await _editable(c, ids) if action == "replay" else []
    corrections: dict[int, dict[str, Any]] = {}
    errors: dict[int, str] = {}
    for item in items:
        found: dl.DeadLetter = item["dl"]
        sent = form.get(f"props_{found.id}")
        if sent is None or item["properties"] is None:
            continue
        item["edited"] = sent
        try:
            properties = orjson.loads(sent)
        except orjson.JSONDecodeError as exc:
            errors[found.id] = f"Not JSON: {exc}"
            continue
        if not isinstance(properties, dict):
            errors[found.id] = "Properties must be a JSON object."
            continue
        if properties == orjson.loads(item["properties"]):
            continue  # unchanged
        try:
            problems = dl.correction_errors(
                c.ctx.registry, found.payload or "", properties
            )
        except dl.NotReplayable as exc:
            errors[found.id] = str(exc)
            continue
        if problems:
            errors[found.id] = "; ".join(
                f"{p.get('path', '')} {p['msg']}".strip() for p in problems
            )
            continue
        corrections[found.id] = properties
    if errors:
        return _confirm(request, action, ids, values, count, items, errors, 422)
    try:
        expected = int(form.get("expected") or count)
    except ValueError:
        expected = count
    bulk = BulkAction(
        action=action,  # checked by _selection
        ids=ids,
        filter=f,
        corrections=corrections,
        expected=expected,
    )
    job = await c.jobs.start(bulk, who.principal)
    return redirect(f"{PREFIX}/jobs/{job.id}")


@jobs_router.get("/{job_id}")
async def job_page(job_id: str, request: Request, c: ConsoleDep, _: Reader) -> Response:
    job = await c.jobs.get(job_id[:32])
    if job is None:
        raise HTTPException(404, "No such action (they are kept for a day).")
    return render(request, "job.html", {"job": job})


@jobs_router.get("/{job_id}/status")
async def job_status(
    job_id: str, request: Request, c: ConsoleDep, _: Reader
) -> Response:
    job = await c.jobs.get(job_id[:32])
    if job is None:
        raise HTTPException(404, "No such action.")
    return render(request, "_job.html", {"job": job})
