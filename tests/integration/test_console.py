"""The console over HTTP (no browser): its searches read indexes in order, its
session and CSRF rules, and bulk actions with progress and an audit entry. The
browser tests (tests/browser) drive the pages themselves."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import httpx
import orjson
import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow.api import create_app
from eventflow.config import Settings
from eventflow.console.session import SESSION_COOKIE, Signer
from eventflow.metrics import Metrics
from eventflow.security.keys import Scope, create_key, revoke_key
from eventflow.store.events import EventSearch, search_query
from tests.integration.helpers import count

SECRET = "integration-secret"


@pytest.fixture
def secured(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "auth_required": True,
            "key_refresh_s": 0.5,
            "console_secret": SecretStr(SECRET),
        }
    )


@asynccontextmanager
async def console(
    settings: Settings, base_url: str = "http://eventflow"
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, Metrics())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as c:
            yield c


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text[:500]
    return found.group(1)


async def log_in(c: httpx.AsyncClient, key: str) -> httpx.Response:
    page = await c.get("/console/login")
    return await c.post(
        "/console/login",
        data={"csrf": csrf_of(page), "key": key, "next": "/console"},
    )


# --- Keyset searches read an index in order --------------------------------------


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    out = [plan]
    for child in plan.get("Plans", []):
        out.extend(_nodes(child))
    return out


async def _explain(engine: AsyncEngine, search: EventSearch, after: Any) -> list[Any]:
    statement = search_query(search, after).limit(51)
    compiled = statement.compile(dialect=engine.dialect)
    async with engine.connect() as conn:
        # With every other way out closed (a sort still appears when nothing
        # else can give the order, at a prohibitive cost), the plan shows whether
        # an index delivers the listing's order. On a large table the planner
        # picks these plans by itself; on this one it may rather sort a few rows.
        for setting in ("enable_sort", "enable_seqscan", "enable_bitmapscan"):
            await conn.exec_driver_sql(f"SET {setting} = off")
        # The statement exactly as the console sends it, with its parameters.
        positional = tuple(compiled.params[name] for name in compiled.positiontup or [])
        raw = await conn.exec_driver_sql(
            "EXPLAIN (FORMAT JSON) " + str(compiled), positional
        )
        document = raw.scalar_one()
    plan = (orjson.loads(document) if isinstance(document, str) else document)[0]
    return _nodes(plan["Plan"])


async def _parents(engine: AsyncEngine, indexes: set[str]) -> set[str]:
    """The partitioned indexes these partitions' indexes belong to."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT DISTINCT i.inhparent::regclass::text FROM pg_inherits i "
                "JOIN pg_class c ON c.oid = i.inhrelid WHERE c.relname = ANY(:names)"
            ),
            {"names": sorted(indexes)},
        )
        return {r[0] for r in rows}


async def test_event_searches_are_index_ordered(engine: AsyncEngine) -> None:
    """On a table of many days and partitions, each search of the console reads
    an index in the listing's order and stops after a page: no Sort node, no
    sequential scan, whatever the table's size (EXPLAIN, with statistics)."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                """
                INSERT INTO raw_events (event_id, event_type, user_id,
                    event_timestamp, properties, body_hash, correlation_id,
                    received_at, published_at, status)
                SELECT gen_random_uuid(), (ARRAY['purchase', 'page_view',
                        'user_signup', 'custom'])[1 + g % 4],
                    'user-' || (g % 2000), now(), '{}', 'h', 'cid-' || (g % 5000),
                    now() - interval '2 days' + (g % 345600) * interval '1 second',
                    now(), (ARRAY['processed', 'processed', 'processed', 'failed',
                        'accepted'])[1 + g % 5]
                FROM generate_series(1, 60000) g
                """
            )
        )
        await conn.execute(
            text(
                "INSERT INTO unsettled_events (received_at, event_id) "
                "SELECT received_at, event_id FROM raw_events "
                "WHERE status = 'accepted'"
            )
        )
        await conn.execute(text("ANALYZE raw_events"))
        await conn.execute(text("ANALYZE unsettled_events"))
    async with engine.connect() as known:
        sample = (
            await known.execute(
                text("SELECT event_id, received_at FROM raw_events LIMIT 1 OFFSET 777")
            )
        ).one()
    now = datetime.now(UTC)
    after = (now, uuid4())
    # Each search and the index (migration 0008) it reads on every partition.
    searches = {
        # Events on their way and processed ones: in time order, each row's
        # unsettled_events row looked up by its key.
        "ix_raw_events_time_id": [
            EventSearch(),
            EventSearch(since=now - timedelta(days=1), until=now),
            EventSearch(status="accepted"),
            EventSearch(status="processed"),
        ],
        "ix_raw_events_type_time": [
            EventSearch(event_type="purchase"),
            EventSearch(event_type="custom", since=now - timedelta(hours=30)),
        ],
        "ix_raw_events_user_time": [EventSearch(user_id="user-42")],
        "ix_raw_events_failed_time": [
            EventSearch(status="failed"),
            EventSearch(status="quarantined"),
        ],
        "ix_raw_events_correlation": [EventSearch(correlation_id="cid-17")],
        "raw_events_pkey": [EventSearch(event_id=sample.event_id)],
    }
    for index, cases in searches.items():
        for search in cases:
            for cursor in (None, after):
                nodes = await _explain(engine, search, cursor)
                kinds = {n["Node Type"] for n in nodes}
                where = (search, cursor, kinds)
                assert not kinds & {"Sort", "Incremental Sort", "Seq Scan"}, where
                used = {n["Index Name"] for n in nodes if "Index Name" in n}
                # (An empty partition may be read through another index.)
                assert index in await _parents(engine, used), where
    # With statistics alone, the unfiltered listing already reads in index order.
    async with engine.connect() as conn:
        plain = search_query(EventSearch(), None).limit(51)
        compiled = plain.compile(dialect=engine.dialect)
        document = (
            await conn.exec_driver_sql(
                "EXPLAIN (FORMAT JSON) " + str(compiled),
                tuple(compiled.params[n] for n in compiled.positiontup or []),
            )
        ).scalar_one()
    plan = (orjson.loads(document) if isinstance(document, str) else document)[0]
    kinds = {n["Node Type"] for n in _nodes(plan["Plan"])}
    assert "Sort" not in kinds and "Seq Scan" not in kinds, kinds


# --- Sessions and CSRF -----------------------------------------------------------


async def test_session_cookie_over_tls_and_its_checks(
    secured: Settings, engine: AsyncEngine
) -> None:
    key_row, admin = await create_key(engine, "ops", Scope.admin)
    async with console(secured, "https://eventflow") as c:
        # No session: the login page (also for the pages that act).
        first = await c.get("/console/dead-letters")
        assert first.status_code == 303
        assert first.headers["location"].startswith("/console/login?next=")
        # Wrong key, ingest key: refused with a message, no session.
        _, ingest = await create_key(engine, "shop", Scope.ingest)
        for key in (admin + "x", ingest):
            refused = await log_in(c, key)
            assert refused.status_code == 401
            assert SESSION_COOKIE not in refused.headers.get("set-cookie", "")
        answer = await log_in(c, admin)
        assert answer.status_code == 303 and answer.headers["location"] == "/console"
        cookie = next(
            v for v in answer.headers.get_list("set-cookie") if SESSION_COOKIE in v
        )
        flags = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "secure", "samesite=strict", "path=/console"} <= flags
        assert admin not in cookie and "efk_" not in cookie
        page = await c.get("/console")
        assert page.status_code == 200
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"

        # A forged or expired session is no session.
        value = c.cookies[SESSION_COOKIE]
        c.cookies.set(SESSION_COOKIE, value[:-2] + "AA", path="/console")
        assert (await c.get("/console")).status_code == 303
        signer = Signer(SECRET.encode())
        expired = signer.sign({"k": key_row.id, "e": int(time.time()) - 1})
        c.cookies.set(SESSION_COOKIE, expired, path="/console")
        assert (await c.get("/console")).status_code == 303
        c.cookies.set(SESSION_COOKIE, value, path="/console")
        assert (await c.get("/console")).status_code == 200

        # Revoking the key ends its session at the next request.
        await revoke_key(engine, "ops")
        await asyncio.sleep(secured.key_refresh_s + 0.1)
        assert (await c.get("/console")).status_code == 303


async def test_forms_are_accepted_by_the_console_only(
    secured: Settings, engine: AsyncEngine
) -> None:
    _, admin = await create_key(engine, "ops", Scope.admin)
    async with console(secured) as c:
        await log_in(c, admin)
        # The API's own routes still refuse anything but JSON.
        form = await c.post(
            "/dead-letters/replay",
            data={"dry_run": "false"},
            headers={"authorization": f"Bearer {admin}"},
        )
        assert form.status_code == 415
        # A console form without the CSRF token, or with another one: refused.
        for token in (None, "forged"):
            data = {"action": "purge", "scope": "all"}
            if token:
                data["csrf"] = token
            refused = await c.post("/console/dead-letters/confirm", data=data)
            assert refused.status_code == 403 and "CSRF" in refused.text


# --- Bulk actions ----------------------------------------------------------------


async def _dead_letters(engine: AsyncEngine, n: int, error_type: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO failed_events (event_id, event_type, payload, error, "
                "error_type) SELECT gen_random_uuid(), 'custom', 'not json', "
                "'cannot decode', :et FROM generate_series(1, :n)"
            ),
            {"n": n, "et": error_type},
        )


async def test_bulk_purge_by_filter_with_progress_and_audit(
    secured: Settings, engine: AsyncEngine
) -> None:
    _, admin = await create_key(engine, "ops", Scope.admin)
    await _dead_letters(engine, 1_234, "UndecodableMessage")
    await _dead_letters(engine, 3, "InvalidEvent")
    async with console(secured) as c:
        await log_in(c, admin)
        listing = await c.get(
            "/console/dead-letters", params={"error_type": "UndecodableMessage"}
        )
        assert 'id="dl-total">1,234<' in listing.text
        form = {
            "csrf": csrf_of(listing),
            "action": "purge",
            "scope": "all",
            "error_type": "UndecodableMessage",
        }
        confirm = await c.post("/console/dead-letters/confirm", data=form)
        assert confirm.status_code == 200
        assert "<b>1,234</b>" in confirm.text
        assert await count(engine, "failed_events") == 1_237  # nothing yet

        # Replaying what cannot be decoded is reported, not done.
        replay = await c.post(
            "/console/dead-letters/run",
            data={**form, "action": "replay", "expected": "1234"},
        )
        job_url = replay.headers["location"]
        state = await _finished(c, job_url)
        assert "0 of 1234 replayed" in state and "1234 skipped" in state

        run = await c.post(
            "/console/dead-letters/run", data={**form, "expected": "1234"}
        )
        assert run.status_code == 303
        state = await _finished(c, run.headers["location"])
        assert "1234 of 1234 purged" in state
        assert await count(engine, "failed_events") == 3
        audit = await c.get("/console/audit")
        assert "dead_letter.purge_many" in audit.text
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT actor, rows, details FROM audit_log "
                    "WHERE action = 'dead_letter.purge_many'"
                )
            )
        ).one()
    assert row.actor == "ops" and row.rows == 1234
    assert row.details["filter"] == {
        "error_type": "UndecodableMessage",
        "include_replayed": False,
    }
    assert len(row.details["event_ids"]) == 1000  # listed up to a thousand


async def _finished(c: httpx.AsyncClient, job_url: str) -> str:
    deadline = time.monotonic() + 30
    while True:
        status = await c.get(job_url + "/status")
        assert status.status_code == 200
        if 'data-state="running"' not in status.text:
            assert 'data-state="finished"' in status.text, status.text
            return re.sub(r"<[^>]+>", "", status.text)
        assert time.monotonic() < deadline, status.text
        await asyncio.sleep(0.05)


async def test_every_page_answers_in_local_mode(
    settings: Settings, engine: AsyncEngine
) -> None:
    """With authentication off the console opens directly, every page."""
    async with console(settings) as c:
        for path in (
            "/console",
            "/console/overview/live",
            "/console/events",
            "/console/events?event_type=purchase&status=processed",
            "/console/dead-letters",
            "/console/schemas",
            "/console/schemas/purchase",
            "/console/keys",
            "/console/audit",
            "/console/login",
        ):
            answer = await c.get(path, follow_redirects=True)
            assert answer.status_code == 200, path
            assert "local mode" in answer.text or path.endswith("/live"), path
        # What events carry is shown as text, never as markup.
        hostile = "<img src=x onerror=alert(1)>"
        sent = await c.post(
            "/events",
            json={"event_type": "custom", "user_id": hostile, "properties": {}},
        )
        assert sent.status_code == 202
        listed = await c.get("/console/events", params={"event_type": "custom"})
        assert hostile not in listed.text and "&lt;img src=x" in listed.text
        missing = await c.get(f"/console/events/{uuid4()}")
        assert missing.status_code == 404 and "No event" in missing.text
        bad = await c.get("/console/events", params={"q": "not-an-id"})
        assert bad.status_code == 200 and "event_id" in bad.text
        for name in ("console.css", "console.js", "favicon.svg"):
            asset = await c.get(f"/console/static/{name}")
            assert asset.status_code == 200 and asset.content
        assert (await c.get("/console/static/../app.py")).status_code == 404
