"""``POST /events`` is served below FastAPI's routing (``api.fastpath``): every
answer must be the one the FastAPI route gives, errors included."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import Receive, Scope, Send

from eventflow.api import create_app
from eventflow.api.app import EventFlowApi
from eventflow.config import Settings
from eventflow.metrics import Metrics
from eventflow.security.keys import Scope as KeyScope
from eventflow.security.keys import create_key
from tests.integration.helpers import count

# Headers whose values differ between two requests by nature.
VARYING = {"x-correlation-id", "date", "content-length"}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture
async def app(settings: Settings, engine: AsyncEngine) -> AsyncIterator[EventFlowApi]:
    application = create_app(settings.model_copy(update={"auth_required": True}))
    async with application.router.lifespan_context(application):
        yield application


def _event(event_id: str, amount: float = 10.0) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_type": "purchase",
        "user_id": "u1",
        "timestamp": "2026-11-27T10:00:00Z",
        "properties": {"amount": amount, "currency": "EUR", "order_id": "o-1"},
    }


def _shape(response: httpx.Response) -> tuple[int, dict[str, str], Any]:
    headers = {k: v for k, v in response.headers.items() if k not in VARYING}
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    if isinstance(body, dict):
        # Ids and times differ between the two runs; everything else must not.
        body = {k: v for k, v in body.items() if k not in ("event_id", "received_at")}
        if isinstance(body.get("detail"), str):
            body["detail"] = UUID.sub("<id>", body["detail"])
    return response.status_code, headers, body


async def _requests(
    client: httpx.AsyncClient, key: str, read_key: str
) -> list[httpx.Response]:
    ok = str(uuid.uuid4())
    bearer = {"authorization": f"Bearer {key}"}
    answers = [
        await client.post("/events", json=_event(ok), headers=bearer),  # 202
        await client.post("/events", json=_event(ok), headers=bearer),  # duplicate
        await client.post("/events", json=_event(ok, 11.0), headers=bearer),  # 409
        await client.post("/events", json={"event_type": "purchase"}, headers=bearer),
        await client.post(
            "/events",
            content=b"{not json",
            headers={**bearer, "content-type": "application/json"},
        ),
        await client.post(
            "/events", content=b"x", headers={**bearer, "content-type": "text/plain"}
        ),
        await client.post(
            "/events",
            content=b"[" + b"1," * 200_000 + b"1]",
            headers={**bearer, "content-type": "application/json"},
        ),
        await client.post("/events", json=_event(str(uuid.uuid4()))),  # 401
        await client.post(
            "/events",
            json=_event(str(uuid.uuid4())),
            headers={"authorization": "Bearer nope"},
        ),
        await client.post(
            "/events",
            json=_event(str(uuid.uuid4())),
            headers={"x-api-key": read_key},  # 403: read may not ingest
        ),
    ]
    return answers


async def test_post_event_answers_as_the_route_does(
    app: EventFlowApi, engine: AsyncEngine, settings: Settings
) -> None:
    tag = uuid.uuid4().hex[:8]
    _, key = await create_key(engine, f"fast-{tag}", KeyScope.ingest)
    _, read_key = await create_key(engine, f"reader-{tag}", KeyScope.read)
    await app.state.ctx.refresh_keys()
    assert app.fast_path is not None
    served = 0
    stack = app.fast_path.stack

    async def counting(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal served
        served += 1
        await stack(scope, receive, send)

    app.fast_path.stack = counting
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ef") as client:
        fast = await _requests(client, key, read_key)
        assert served == len(fast)
        app.fast_path = None  # FastAPI's route, as documented in OpenAPI
        routed = await _requests(client, key, read_key)
        assert served == len(fast)
    statuses = [r.status_code for r in fast]
    assert statuses == [202, 200, 409, 422, 422, 415, 413, 401, 401, 403]
    for a, b in zip(fast, routed, strict=True):
        assert _shape(a) == _shape(b), (a.text, b.text)
        assert a.headers["x-correlation-id"]
    # One event accepted by each path; nothing of the refused requests.
    assert await count(engine, "raw_events") == 2
    metrics: Metrics = app.state.metrics
    sample = metrics.http_requests.labels("POST", "/events", "202")
    assert sample._value.get() == 2  # labelled by the route's path, both ways
