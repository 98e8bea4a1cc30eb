"""Keys, scopes and the audit trail, with authentication on (the default)."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow.config import Settings
from eventflow.security.keys import Scope, create_key, revoke_key
from tests.integration.helpers import app_client, count


def custom(n: int = 0) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "custom",
        "properties": {"n": n},
    }


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_authentication_is_on_by_default() -> None:
    assert Settings().auth_required is True
    assert Settings().anonymous_ingest is False


@pytest.fixture
def secured(settings: Settings) -> Settings:
    return settings.model_copy(update={"auth_required": True, "key_refresh_s": 0.5})


async def test_scopes(secured: Settings, engine: AsyncEngine) -> None:
    _, ingest = await create_key(engine, "writer", Scope.ingest)
    _, read = await create_key(engine, "reader", Scope.read)
    _, admin = await create_key(engine, "root", Scope.admin)
    async with app_client(secured) as c:
        # Open: health and the service description.
        assert (await c.get("/health")).status_code == 200
        assert (await c.get("/health/live")).status_code == 200
        # No key, or a wrong one: 401, and the same answer either way.
        anonymous = await c.post("/events", json=custom())
        forged = await c.post(
            "/events", json=custom(), headers=bearer(ingest[:-4] + "AAAA")
        )
        unknown = await c.post("/events", json=custom(), headers=bearer("efk_0_x"))
        assert {r.status_code for r in (anonymous, forged, unknown)} == {401}
        assert anonymous.json() == forged.json() == unknown.json()
        assert "Bearer" in anonymous.headers["www-authenticate"]
        for path in ("/metrics", "/metrics/summary", "/dead-letters", "/schemas"):
            assert (await c.get(path)).status_code == 401, path

        # ingest: send events (three ways to present the key), nothing else.
        basic = base64.b64encode(f"{ingest}:".encode()).decode()
        for headers in (
            bearer(ingest),
            {"x-api-key": ingest},
            {"authorization": f"Basic {basic}"},
        ):
            answer = await c.post("/events", json=custom(), headers=headers)
            assert answer.status_code == 202, answer.text
        batch = await c.post(
            "/events/batch", json={"events": [custom()]}, headers=bearer(ingest)
        )
        assert batch.json()["accepted"] == 1
        for method, path in (
            ("GET", "/dead-letters"),
            ("DELETE", "/dead-letters?dry_run=false"),
            ("GET", f"/events/{uuid.uuid4()}"),
            ("GET", "/metrics/summary"),
            ("POST", "/dead-letters/1/replay"),
        ):
            answer = await c.request(method, path, headers=bearer(ingest))
            assert answer.status_code == 403, (method, path, answer.text)

        # read: read, but neither send nor change.
        for path in ("/dead-letters", "/metrics/summary", "/schemas", "/metrics"):
            assert (await c.get(path, headers=bearer(read))).status_code == 200, path
        assert (
            await c.post("/events", json=custom(), headers=bearer(read))
        ).status_code == 403
        schema = {"schema": {"type": "object"}}
        assert (
            await c.post("/schemas/thing", json=schema, headers=bearer(read))
        ).status_code == 403
        assert (
            await c.delete("/dead-letters?dry_run=false", headers=bearer(read))
        ).status_code == 403

        # Reprocessing: admin starts a run, read sees runs, ingest neither.
        window = {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}
        for key, code in ((None, 401), (ingest, 403), (read, 403)):
            headers = bearer(key) if key else {}
            answer = await c.post("/reprocess", json=window, headers=headers)
            assert answer.status_code == code, (key, answer.text)
        assert (await c.get("/reprocess")).status_code == 401
        assert (await c.get("/reprocess", headers=bearer(ingest))).status_code == 403
        assert (await c.get("/reprocess", headers=bearer(read))).status_code == 200

        # admin: everything.
        assert (
            await c.post("/schemas/thing", json=schema, headers=bearer(admin))
        ).status_code == 201
        assert (
            await c.post("/events", json=custom(), headers=bearer(admin))
        ).status_code == 202
        purge = await c.delete("/dead-letters?dry_run=false", headers=bearer(admin))
        assert purge.status_code == 200
        run = await c.post("/reprocess", json=window, headers=bearer(admin))
        assert run.status_code == 202, run.text
        assert run.json()["started_by"] == "root"
        trail = (await c.get("/audit", headers=bearer(admin))).json()["items"]
        assert [(e["action"], e["actor"]) for e in trail] == [
            ("reprocess.start", "root"),
            ("dead_letter.purge_many", "root"),
            ("schema.register", "root"),
        ]
        assert (await c.get("/audit", headers=bearer(read))).status_code == 403
    sources = await count(engine, "raw_events", "source = 'writer'")
    assert sources == 4 and await count(engine, "raw_events", "source = 'root'") == 1


async def test_a_revoked_key_stops_working_within_5_s(
    secured: Settings, engine: AsyncEngine
) -> None:
    _, key = await create_key(engine, "short-lived", Scope.ingest)
    async with app_client(secured) as c:
        assert (
            await c.post("/events", json=custom(), headers=bearer(key))
        ).status_code == 202
        await revoke_key(engine, "short-lived")
        start = time.monotonic()
        while time.monotonic() - start < 5:
            answer = await c.post("/events", json=custom(), headers=bearer(key))
            if answer.status_code == 401:
                break
            await asyncio.sleep(0.2)
        assert answer.status_code == 401, "still accepted 5 s after revocation"


async def test_anonymous_ingest_is_a_separate_choice(
    secured: Settings, engine: AsyncEngine
) -> None:
    public = secured.model_copy(update={"anonymous_ingest": True})
    async with app_client(public) as c:
        assert (await c.post("/events", json=custom())).status_code == 202
        assert (await c.get("/dead-letters")).status_code == 401
        assert (await c.get(f"/events/{uuid.uuid4()}")).status_code == 401
    assert await count(engine, "raw_events", "source = 'anonymous'") == 1


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": str(settings.database_dsn)}
    return subprocess.run(
        [sys.executable, "-m", "eventflow", *args],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


async def test_keys_command_line(secured: Settings, engine: AsyncEngine) -> None:
    made = await asyncio.to_thread(
        _cli, secured, "keys", "create", "--name", "ops", "--scope", "admin",
        "--rate-limit", "50/s",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("efk_") and len(key) > 40
    listed = await asyncio.to_thread(_cli, secured, "keys", "list")
    assert "ops" in listed.stdout and key not in listed.stdout
    async with engine.connect() as conn:
        stored = await conn.scalar(text("SELECT key_hash FROM api_keys"))
    assert stored and key not in stored
    async with app_client(secured) as c:
        assert (await c.get("/audit", headers=bearer(key))).status_code == 200
    again = await asyncio.to_thread(
        _cli, secured, "keys", "create", "--name", "ops", "--scope", "read"
    )
    assert again.returncode == 1
    revoked = await asyncio.to_thread(_cli, secured, "keys", "revoke", "ops")
    assert revoked.returncode == 0, revoked.stderr
    trail = await asyncio.to_thread(_cli, secured, "audit", "--json")
    actions = [e["action"] for e in orjson.loads(trail.stdout)["items"]]
    assert actions == ["key.revoke", "key.create"]


async def _start_of_a_second() -> None:
    await asyncio.sleep(1 - time.time() % 1 + 0.01)


async def test_rate_limit_is_shared_by_api_processes(
    secured: Settings, engine: AsyncEngine
) -> None:
    _, key = await create_key(engine, "limited", Scope.ingest, rate_limit=5)
    async with app_client(secured) as a, app_client(secured) as b:
        await _start_of_a_second()
        # (window the request was sent in, window its answer came in, status)
        answers: list[tuple[int, int, int]] = []
        responses: list[httpx.Response] = []
        for n in range(40):
            client = a if n % 2 else b
            sent = int(time.time())
            r = await client.post("/events", json=custom(n), headers=bearer(key))
            answers.append((sent, int(time.time()), r.status_code))
            responses.append(r)
            await asyncio.sleep(0.01)
    assert {status for _, _, status in answers} <= {202, 429}
    # The limit was checked within the window when the answer came in the window
    # the request was sent in. Per such window, two processes synced every 50 ms
    # let through at most a little over the limit.
    per_window: dict[int, list[int]] = {}
    for sent, answered, status in answers:
        if sent == answered:
            per_window.setdefault(sent, []).append(status)
    for window, statuses in per_window.items():
        assert statuses.count(202) <= 8, (window, statuses)
    first = per_window[answers[0][0]]
    assert len(first) >= 8, "too few requests answered within the first second"
    assert first.count(202) >= 5, first
    refused = [r for r in responses if r.status_code == 429]
    assert refused, "40 requests at a limit of 5/s were all accepted"
    assert int(refused[0].headers["retry-after"]) >= 1
    assert refused[0].headers["ratelimit-limit"] == "5"
    assert refused[0].headers["ratelimit-remaining"] == "0"
    accepted = [r for r in responses if r.status_code == 202]
    assert await count(engine, "raw_events") == len(accepted)


async def test_without_redis_ingestion_fails_open_and_the_rest_closed(
    secured: Settings, engine: AsyncEngine
) -> None:
    _, ingest = await create_key(engine, "w", Scope.ingest, rate_limit=100)
    _, read = await create_key(engine, "r", Scope.read, rate_limit=100)
    offline = secured.model_copy(update={"redis_url": "redis://127.0.0.1:9/0"})
    async with app_client(offline) as c:
        await c.post("/events", json=custom(), headers=bearer(ingest))
        await asyncio.sleep(0.3)  # the limiter has tried Redis by now
        sent = await c.post("/events", json=custom(), headers=bearer(ingest))
        assert sent.status_code == 202
        listed = await c.get("/dead-letters", headers=bearer(read))
        assert listed.status_code == 503 and "Retry-After" in listed.headers


async def test_browsers_need_an_allowed_origin(
    secured: Settings, engine: AsyncEngine
) -> None:
    _, key = await create_key(engine, "web", Scope.ingest)
    web = secured.model_copy(update={"cors_origins": ["https://shop.example"]})
    preflight = {
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    }
    async with app_client(web) as c:
        allowed = await c.options(
            "/events", headers={"origin": "https://shop.example", **preflight}
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
        other = await c.options(
            "/events", headers={"origin": "https://evil.example", **preflight}
        )
        assert "access-control-allow-origin" not in other.headers
        sent = await c.post(
            "/events",
            json=custom(),
            headers={"origin": "https://shop.example", **bearer(key)},
        )
        assert sent.status_code == 202
        assert sent.headers["access-control-allow-origin"] == "https://shop.example"
    async with app_client(secured) as c:  # no origin allowed by default
        closed = await c.options(
            "/events", headers={"origin": "https://shop.example", **preflight}
        )
        assert "access-control-allow-origin" not in closed.headers


async def test_a_new_key_works_at_once_even_for_concurrent_requests(
    secured: Settings, engine: AsyncEngine
) -> None:
    async with app_client(secured) as c:
        for name in ("first", "second"):
            _, key = await create_key(engine, name, Scope.ingest)
            answers = await asyncio.gather(
                *[
                    c.post("/events", json=custom(), headers=bearer(key))
                    for _ in range(8)
                ]
            )
            assert [a.status_code for a in answers] == [202] * 8, name
