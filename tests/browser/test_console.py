"""The operator console in a real browser: log in, find an event, fix and replay
dead letters, check the audit trail; what a read key may not do; CSRF, cookies,
CSP; the phone layout. Screenshots of each page go to docs/console/."""

from __future__ import annotations

import asyncio
import copy
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from playwright.async_api import Browser, expect
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow.config import Settings
from eventflow.models import Event
from eventflow.pipeline.streams import Streams
from eventflow.processors import EventView
from eventflow.schemas import store as schemas
from eventflow.security.keys import Scope, create_key
from eventflow.store.events import insert_raw_events
from tests.browser.conftest import (
    DESKTOP,
    PHONE,
    Watched,
    running_worker,
    serve,
    watch,
)

WAIT_MS = 20_000


def purchase(amount: float, user: str = "user-7") -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "purchase",
        "user_id": user,
        "properties": {"amount": amount, "currency": "EUR", "product_id": "sku-1"},
    }


def _checkout_failed(event: EventView) -> dict[str, Any]:
    raise RuntimeError("currency service unreachable")


async def _inject_invalid(
    engine: AsyncEngine, streams: Streams, amount: float
) -> uuid.UUID:
    """A purchase another producer wrote straight to the stream (it bypassed the
    API's validation): the worker dead-letters it as InvalidEvent."""
    now = datetime.now(UTC)
    event = Event(
        event_id=uuid.uuid4(),
        event_type="purchase",
        user_id="user-9",
        timestamp=now,
        properties={"amount": amount, "currency": "EUR"},
        received_at=now,
        correlation_id="legacy-import-1",
        body_hash="0" * 64,
        schema_version=1,
        source="legacy-importer",
    )
    await insert_raw_events(engine, [event], timedelta(days=7))
    await streams.publish([event])
    return event.event_id


async def _dead_letter_ids(engine: AsyncEngine) -> dict[uuid.UUID, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT event_id, id FROM failed_events"))
        return {r.event_id: r.id for r in rows}


async def _wait_for(engine: AsyncEngine, sql: str, expected: int) -> None:
    deadline = time.monotonic() + WAIT_MS / 1000
    while True:
        async with engine.connect() as conn:
            found = int(await conn.scalar(text(sql)) or 0)
        if found == expected:
            return
        assert time.monotonic() < deadline, f"{sql}: {found}, not {expected}"
        await asyncio.sleep(0.1)


async def _log_in(w: Watched, key: str) -> None:
    await w.page.goto("/console")
    await w.page.wait_for_url("**/console/login?next=*")
    await w.page.fill("input[name=key]", key)
    await w.page.click("form[action='/console/login'] button[type=submit]")
    await w.page.wait_for_url("**/console")


async def _newer_purchase_schema(engine: AsyncEngine) -> None:
    """Version 2 of purchase: an optional coupon (the schema page's diff)."""
    v1 = await schemas.get_version(engine, "purchase", 1)
    assert v1 is not None
    v2 = copy.deepcopy(v1.schema)
    v2["properties"]["properties"]["properties"]["coupon"] = {
        "type": "string",
        "maxLength": 32,
    }
    await schemas.register(engine, "purchase", v2, "backward")


async def test_operator_fixes_and_replays_dead_letters(
    browser: Browser,
    console_settings: Settings,
    engine: AsyncEngine,
    redis: Redis,
) -> None:
    _, admin = await create_key(engine, "ops", Scope.admin)
    _, ingest = await create_key(engine, "web-shop", Scope.ingest)
    await _newer_purchase_schema(engine)
    streams = Streams.from_settings(redis, console_settings)
    async with (
        serve(console_settings) as served,
        running_worker(console_settings, engine, redis) as worker,
    ):
        # Traffic: purchases and page views from the shop, while the purchase
        # processor is broken (a bug), plus two invalid purchases written straight
        # to the stream by an old importer.
        fixed = worker.processors["purchase"]
        headers = {"authorization": f"Bearer {ingest}"}
        async with httpx.AsyncClient(base_url=served.url, headers=headers) as api:
            views = [
                {
                    "event_type": "page_view",
                    "user_id": f"user-{i % 5}",
                    "properties": {"page": f"/p/{i}"},
                }
                for i in range(120)
            ]
            answer = await api.post("/events/batch", json={"events": views})
            assert answer.json()["accepted"] == 120
            await _wait_for(
                engine, "SELECT count(*) FROM processed_events", expected=120
            )
            worker.processors["purchase"] = _checkout_failed
            bug = purchase(49.9)
            assert (await api.post("/events", json=bug)).status_code == 202
        negative = await _inject_invalid(engine, streams, -5)
        await _inject_invalid(engine, streams, 0)
        await _wait_for(engine, "SELECT count(*) FROM failed_events", expected=3)
        dead = await _dead_letter_ids(engine)
        bug_id = uuid.UUID(bug["event_id"])
        worker.processors["purchase"] = fixed  # the bug is fixed

        w = await watch(browser, served.url, DESKTOP)
        page = w.page

        # Log in (a wrong key first).
        await page.goto("/console")
        await page.wait_for_url("**/console/login?next=*")
        await w.screenshot("login", full_page=False)
        await page.fill("input[name=key]", admin[:-3] + "xyz")
        with w.expect(401):
            await page.click("form[action='/console/login'] button[type=submit]")
            await expect(page.locator(".error")).to_contain_text("not valid")
        await page.fill("input[name=key]", admin)
        await page.click("form[action='/console/login'] button[type=submit]")
        await page.wait_for_url("**/console")
        await expect(page.locator(".tile").first).to_be_visible()
        await expect(page.locator(".who")).to_contain_text("ops")
        await w.screenshot("overview")

        # Find an event by id, open it.
        await page.click("nav >> text=Events")
        await page.fill("input[name=event_type]", "page_view")
        await page.click("form.filters button[type=submit]")
        await expect(page.locator("#events tbody tr")).to_have_count(50)
        await expect(page.locator("a[rel=next]")).to_be_visible()
        await w.screenshot("events", full_page=False)
        await page.fill("input[name=event_type]", "")
        await page.fill("input[name=q]", str(negative))
        await page.click("form.filters button[type=submit]")
        await page.wait_for_url(f"**/console/events/{negative}")
        await expect(page.locator("#event-status")).to_have_text("failed")
        await expect(page.locator("main")).to_contain_text("legacy-importer")
        await expect(page.locator("main")).to_contain_text("less than or equal to")

        # Dead letters: filter to purchases, select the two to fix.
        await page.click("nav >> text=Dead letters")
        await expect(page.locator("#dl-total")).to_have_text("3")
        await page.fill("input[name=error_type]", "InvalidEvent")
        await page.click("form.filters button[type=submit]")
        await expect(page.locator("#dl-total")).to_have_text("2")
        await page.fill("input[name=event_type]", "purchase")
        await page.fill("input[name=error_type]", "")
        await page.click("form.filters button[type=submit]")
        await page.wait_for_url("**/console/dead-letters?event_type=purchase*")
        await expect(page.locator("#dead-letters tbody tr")).to_have_count(3)
        await page.check(f"input[name=id][value='{dead[bug_id]}']")
        await page.check(f"input[name=id][value='{dead[negative]}']")
        await w.screenshot("dead-letters", full_page=False)
        await page.click("#replay-selected")
        await page.wait_for_url("**/console/dead-letters/confirm")
        await expect(page.locator("#confirm-count")).to_contain_text("2 selected")

        # A bad correction is refused with the schema's reason; nothing changes.
        area = f"textarea[name=props_{dead[negative]}]"
        await page.fill(area, orjson.dumps({"amount": -1, "currency": "EUR"}).decode())
        with w.expect(422):
            await page.click("#confirm")
            await expect(
                page.locator(f"#item-{dead[negative]} .error")
            ).to_contain_text("amount")
        assert await _replayed(engine) == 0
        await page.fill(area, orjson.dumps({"amount": 5.0, "currency": "EUR"}).decode())
        await w.screenshot("confirm")
        await page.click("#confirm")
        await page.wait_for_url("**/console/jobs/*")
        await expect(page.locator("#job-state[data-state=finished]")).to_be_visible(
            timeout=WAIT_MS
        )
        await expect(page.locator("#job-state")).to_contain_text("2 of 2 replayed")
        await w.screenshot("job", full_page=False)

        # Both are processed, the corrected one with its corrected amount.
        for event_id in (bug_id, negative):
            await page.goto(f"/console/events/{event_id}")
            for _ in range(100):
                if await page.locator("#event-status").inner_text() == "processed":
                    break
                await page.wait_for_timeout(200)
                await page.reload()
            await expect(page.locator("#event-status")).to_have_text("processed")
            await expect(page.locator(".timeline")).to_contain_text(
                "replayed from the dead letters"
            )
        await expect(page.locator("#processed-properties")).to_contain_text("5.0")
        await w.screenshot("event")
        await _wait_for(engine, "SELECT count(*) FROM failed_events", expected=1)

        # The audit trail has the action, by this key, with its count.
        await page.click("nav >> text=Audit")
        row = page.locator("#audit tbody tr").first
        await expect(row).to_contain_text("dead_letter.replay_many")
        await expect(row).to_contain_text("ops")
        await expect(row.locator("td").nth(5)).to_have_text("2")
        await w.screenshot("audit", full_page=False)

        # Schemas and the difference between versions; keys, shown once.
        await page.click("nav >> text=Schemas")
        await page.click("text=purchase")
        await expect(page.locator(".diff .add", has_text="coupon")).to_have_count(1)
        await expect(page.locator("main")).to_contain_text("Backward compatible")
        await w.screenshot("schema")
        await page.click("nav >> text=Keys")
        await page.fill("input[name=name]", "analytics")
        await page.select_option("select[name=scope]", "read")
        await page.click("form[action='/console/keys'] button[type=submit]")
        await expect(page.locator("#secret")).to_contain_text("efk_")
        await w.screenshot("keys", full_page=False)
        await page.goto("/console/keys")
        await expect(page.locator("#secret")).to_have_count(0)
        await expect(page.locator("main")).to_contain_text("analytics")
        w.check()
        await w.context.close()


async def _replayed(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(
            await conn.scalar(
                text("SELECT count(*) FROM failed_events WHERE replayed_at IS NOT NULL")
            )
            or 0
        )


async def test_read_key_sees_but_cannot_act(
    browser: Browser, console_settings: Settings, engine: AsyncEngine
) -> None:
    _, reader = await create_key(engine, "viewer", Scope.read)
    _, admin = await create_key(engine, "root", Scope.admin)
    async with serve(console_settings) as served:
        w = await watch(browser, served.url, DESKTOP)
        await _log_in(w, reader)
        # Cookies: HttpOnly, SameSite=Strict, not Secure over plain HTTP.
        cookies = {c["name"]: c for c in await w.context.cookies()}
        session = cookies["eventflow_session"]
        assert session["httpOnly"] and session["sameSite"] == "Strict"
        assert not session["secure"] and session["path"] == "/console"
        assert "ops" not in session["value"] and reader not in session["value"]

        await w.page.goto("/console/dead-letters")
        await expect(w.page.locator("#dead-letters")).to_be_visible()
        await expect(w.page.locator("#replay-selected")).to_have_count(0)
        await expect(w.page.locator("nav >> text=Keys")).to_have_count(0)
        with w.expect(403):
            await w.page.goto("/console/keys")
            await expect(w.page.locator(".error")).to_contain_text("admin key")
        csrf = await w.page.locator("input[name=csrf]").first.get_attribute("value")
        # The read key may not act, even with a valid CSRF token.
        refused = await w.page.request.post(
            "/console/dead-letters/confirm",
            form={"csrf": csrf or "", "action": "replay", "scope": "all"},
        )
        assert refused.status == 403
        # Every console answer has the strict CSP.
        answer = await w.page.request.get("/console")
        csp = answer.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "style-src 'self'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        w.check()
        await w.context.close()

        # An admin session without the CSRF token is refused too.
        w = await watch(browser, served.url, DESKTOP)
        await _log_in(w, admin)
        missing = await w.page.request.post(
            "/console/dead-letters/confirm", form={"action": "replay", "scope": "all"}
        )
        assert missing.status == 403
        assert "CSRF" in await missing.text()
        w.check()
        await w.context.close()


async def test_local_mode_opens_directly_on_a_phone(
    browser: Browser, settings: Settings, engine: AsyncEngine
) -> None:
    assert settings.auth_required is False
    async with serve(settings) as served:
        # Events accepted while no worker runs: a backlog on the overview.
        async with httpx.AsyncClient(base_url=served.url) as api:
            batch = [purchase(10.0 + i, f"user-{i % 3}") for i in range(40)]
            answer = await api.post("/events/batch", json={"events": batch})
            assert answer.json()["accepted"] == 40
        w = await watch(browser, served.url, PHONE)
        await w.page.goto("/console")
        await expect(w.page.locator(".who")).to_contain_text("local mode")
        await expect(w.page.locator(".tile").first).to_be_visible()
        await expect(w.page.locator(".tile", has_text="Backlog")).to_contain_text("40")
        # Nothing is wider than the phone's screen but the tables' own scroll.
        width = await w.page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"]
        await w.screenshot("overview-phone", full_page=False)
        # The live part refreshes in place.
        async with w.page.expect_response("**/console/overview/live") as live:
            pass
        assert (await live.value).status == 200
        w.check()
        await w.context.close()
