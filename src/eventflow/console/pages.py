"""Console pages: log in, the overview, finding events, the audit trail."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import ValidationError

from eventflow.console import overview as ov
from eventflow.console.charts import sparkline
from eventflow.console.session import end_session, start_session
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
from eventflow.errors import errors_text
from eventflow.security import audit
from eventflow.security.auth import active_key
from eventflow.security.keys import Scope
from eventflow.store import events as store

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)

PAGE = 50


def _safe_next(target: str | None) -> str:
    """Only a console path (never another site) after logging in."""
    if target and target.startswith(PREFIX) and not target.startswith("//"):
        return target
    return PREFIX


@router.get("/login")
async def login_page(
    request: Request, c: ConsoleDep, next: str | None = None
) -> Response:
    if not c.auth_on:
        return redirect(_safe_next(next))
    return render(request, "login.html", {"next": _safe_next(next)})


@router.post("/login")
async def login(request: Request, c: ConsoleDep, form: Posted) -> Response:
    target = _safe_next(form.get("next"))
    key = form.text("key")
    found = None if key is None else await active_key(c.ctx.keys, key)
    if found is None or found.scope is Scope.ingest:
        message = (
            "This key may only send events; the console needs a read or admin key."
            if found is not None
            else "That key is not valid."
        )
        return render(
            request, "login.html", {"next": target, "error": message}, status=401
        )
    response = redirect(target)
    start_session(
        response, request, c.signer, found.id, c.ctx.settings.console_session_hours
    )
    return response


@router.post("/logout")
async def logout(_: Posted) -> Response:
    response = redirect(f"{PREFIX}/login")
    end_session(response)
    return response


def _charts(o: ov.Overview) -> list[dict[str, Any]]:
    return [
        {
            "title": "Accepted per minute",
            "svg": sparkline(o.received, "in", kind="bar"),
        },
        {
            "title": "Processed per minute",
            "svg": sparkline(o.processed, "out", kind="bar"),
        },
        {
            "title": "p95 latency (ms)",
            "svg": sparkline(o.latency_p95_ms, "p95 latency", " ms"),
        },
        {"title": "Backlog (lag + pending)", "svg": sparkline(o.backlog, "backlog")},
        {
            "title": "Dead letters per minute",
            "svg": sparkline(o.failed, "dead letters", kind="bar"),
        },
    ]


@router.get("")
async def overview_page(request: Request, c: ConsoleDep, _: Reader) -> Response:
    o = await ov.overview(c.ctx)
    return render(request, "overview.html", {"o": o, "charts": _charts(o)})


@router.get("/overview/live")
async def overview_live(request: Request, c: ConsoleDep, _: Reader) -> Response:
    """The overview's live part, fetched again every few seconds."""
    o = await ov.overview(c.ctx)
    return render(request, "_overview.html", {"o": o, "charts": _charts(o)})


def _blank(value: str | None) -> str | None:
    return value.strip() if value and value.strip() else None


def _parse_after(after: str | None) -> tuple[datetime, UUID] | None:
    if not after:
        return None
    at, _, event_id = after.rpartition("_")
    try:
        return datetime.fromisoformat(at), UUID(event_id)
    except ValueError as exc:
        raise HTTPException(422, "bad page cursor") from exc


@router.get("/events")
async def events_page(
    request: Request,
    c: ConsoleDep,
    _: Reader,
    q: Annotated[str | None, Query(max_length=255)] = None,
    correlation_id: Annotated[str | None, Query(max_length=255)] = None,
    event_type: Annotated[str | None, Query(max_length=255)] = None,
    user_id: Annotated[str | None, Query(max_length=255)] = None,
    status: Annotated[str | None, Query(max_length=32)] = None,
    since: Annotated[str | None, Query(max_length=64)] = None,
    until: Annotated[str | None, Query(max_length=64)] = None,
    after: Annotated[str | None, Query(max_length=128)] = None,
) -> Response:
    """Search; ``q`` is an event id. An exact id opens the event."""
    raw = {
        "q": _blank(q),
        "correlation_id": _blank(correlation_id),
        "event_type": _blank(event_type),
        "user_id": _blank(user_id),
        "status": _blank(status),
        "since": _blank(since),
        "until": _blank(until),
    }
    error: str | None = None
    page: store.EventPage | None = None
    try:
        search = store.EventSearch(
            event_id=raw["q"],
            correlation_id=raw["correlation_id"],
            event_type=raw["event_type"],
            user_id=raw["user_id"],
            status=raw["status"],
            since=raw["since"],
            until=raw["until"],
        )
    except ValidationError as exc:
        error = errors_text(exc.errors(include_url=False))
    else:
        page = await store.search_events(
            c.ctx.engine, search, PAGE, _parse_after(after)
        )
        if search.event_id is not None and len(page.items) == 1 and after is None:
            return redirect(f"{PREFIX}/events/{search.event_id}")
    query = {k: v for k, v in raw.items() if v}
    next_url = None
    if page is not None and page.next is not None:
        at, event_id = page.next
        cursor = f"{at.isoformat()}_{event_id}"
        next_url = f"{PREFIX}/events?" + urlencode({**query, "after": cursor})
    return render(
        request,
        "events.html",
        {
            "form": raw,
            "page": page,
            "error": error,
            "next_url": next_url,
            "first_url": (f"{PREFIX}/events?" + urlencode(query)) if after else None,
            "statuses": ["accepted", "processed", "failed", "quarantined"],
        },
    )


@router.get("/events/{event_id}")
async def event_page(
    event_id: UUID, request: Request, c: ConsoleDep, _: Reader
) -> Response:
    found = await store.event_detail(c.ctx.engine, event_id)
    if found is None:
        raise HTTPException(404, f"No event {event_id} is stored.")
    actions = await audit.entries_about_event(c.ctx.engine, str(event_id))
    raw, done, dead = found.raw, found.processed, found.dead_letter
    timeline: list[tuple[datetime, str, str]] = [
        (raw["received_at"], "accepted", f"by {raw['source'] or 'a local client'}"),
        (
            raw["published_at"],
            "published",
            f"{raw['publish_count']} time(s) to the stream",
        ),
    ]
    if dead is not None:
        timeline.append((dead["failed_at"], "dead-lettered", f"{dead['error_type']}"))
        if dead["replayed_at"] is not None:
            timeline.append(
                (dead["replayed_at"], "replayed", f"{dead['replay_count']} time(s)")
            )
    for entry in actions:
        timeline.append(_action(entry))
    if done is not None:
        timeline.append(
            (done["processed_at"], "processed", f"by {done['processed_by']}")
        )
        if done["reprocessed_at"] is not None:
            timeline.append((done["reprocessed_at"], "reprocessed", ""))
    timeline.sort(key=lambda t: t[0])
    return render(
        request,
        "event.html",
        {
            "event_id": event_id,
            "status": found.status,
            "raw": raw,
            "processed": done,
            "dead": dead,
            "timeline": timeline,
        },
    )


ACTIONS = {
    "dead_letter.replay_many": "replayed from the dead letters",
    "dead_letter.purge_many": "dead letter purged",
}


def _action(entry: audit.AuditEntry) -> tuple[datetime, str, str]:
    """A console action that named the event, at the time it started (the audit
    entry is written when it ends)."""
    details = entry.details or {}
    at = entry.at
    with contextlib.suppress(KeyError, TypeError, ValueError):
        at = datetime.fromisoformat(details["started_at"])
    corrected = details.get("corrected") or []
    detail = f"by {entry.actor}"
    if corrected and details.get("ids") is not None:
        detail += " (with corrected properties, for some)"
    return at, ACTIONS.get(entry.action, entry.action), detail


@router.get("/audit")
async def audit_page(
    request: Request,
    c: ConsoleDep,
    _: Actor,
    before_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> Response:
    page = await audit.list_entries(c.ctx.engine, PAGE, before_id)
    return render(request, "audit.html", {"page": page})
