"""Time every page of the operator console on a database of ``--events`` events.

    python benchmarks/console.py [--events 1000000] [--requests 30] [--record FILE]

It starts its own PostgreSQL and Redis (as ``eventflow dev`` does), creates the
schema up to revision 0005, fills it with SQL (``generate_series``): ``--events``
accepted events over 30 days (four types, 5,000 users, 1 % dead-lettered, 0.5 %
still on their way, the rest processed), then applies the later migrations the
way an existing installation would (0006 converts the tables to time partitions,
0008 builds the console's indexes; each is timed). It then starts the API
(``eventflow api``, authentication on), logs in to the console with an admin key
and requests each page ``--requests`` times after a warm-up, and reports the
median and p95 time of each, with the machine, as JSON (``--record FILE``
writes it). The goal: every page under 200 ms.

It also measures what the console's indexes cost the pipeline's writes: the same
batches of 1,000 events are inserted into ``raw_events`` and then settled (their
status set to ``processed``, as a worker does) on a database at revision 0007, one
at 0008, and one at 0007 plus each index of 0008 alone, in turn, and the time per
event of each is compared with 0007's.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from measure import emit, machine_info
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from eventflow.local.servers import LocalPostgres, LocalRedis, free_port
from eventflow.security.keys import Scope, create_key
from eventflow.store.migrate import MIGRATIONS_DIR, upgrade

GOAL_MS = 200.0
MIGRATIONS = MIGRATIONS_DIR / "versions"

FILL = [
    """
    INSERT INTO raw_events (event_id, event_type, user_id, event_timestamp,
        properties, body_hash, correlation_id, received_at, published_at, status,
        settled_at, schema_version, source)
    SELECT gen_random_uuid(),
        (ARRAY['purchase', 'page_view', 'user_signup', 'custom'])[1 + g % 4],
        'user-' || (g % 5000), t, jsonb_build_object('amount', (g % 1000) + 0.99,
            'currency', 'EUR', 'product_id', 'sku-' || (g % 300)),
        md5(g::text), 'order-' || (g % 200000), t, t,
        CASE WHEN g % 100 = 7 THEN 'failed' WHEN g % 200 = 3 THEN 'accepted'
             ELSE 'processed' END,
        t, 1, 'web-shop'
    FROM (SELECT g, now() - (g % 30) * interval '1 day'
                 - (g % 86400) * interval '1 second' AS t
          FROM generate_series(1, :n) g) AS s
    """,
    """
    INSERT INTO processed_events (event_id, event_type, user_id, event_timestamp,
        properties, enrichment, correlation_id, received_at, processed_at,
        processed_by, schema_version)
    SELECT event_id, event_type, user_id, event_timestamp, properties,
        '{"amount_category": "standard"}', correlation_id, received_at,
        received_at + interval '40 milliseconds', 'worker-1', 1
    FROM raw_events WHERE status = 'processed'
    """,
    """
    INSERT INTO failed_events (event_id, event_type, payload, error, error_type,
        failed_at)
    SELECT event_id, event_type,
        json_build_object('id', event_id, 'type', event_type, 'ver', 1,
            'user', user_id, 'ts', event_timestamp, 'props', properties,
            'recv', received_at, 'cid', correlation_id, 'hash', body_hash)::text,
        'properties.amount: must be positive',
        CASE WHEN correlation_id LIKE '%7' THEN 'RuntimeError'
             ELSE 'InvalidEvent' END,
        received_at + interval '50 milliseconds'
    FROM raw_events WHERE status = 'failed'
    """,
]


async def _fill(url: str, n: int) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        for statement in FILL:
            await conn.execute(text(statement), {"n": n})
    await engine.dispose()


async def _analyze(url: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text("VACUUM ANALYZE"))
    await engine.dispose()


async def _setup(url: str) -> tuple[str, dict[str, str]]:
    """An admin key, and values to search for (an event, a user, a cursor)."""
    engine: AsyncEngine = create_async_engine(url)
    _, key = await create_key(engine, "bench", Scope.admin)
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT event_id, user_id, correlation_id FROM raw_events "
                    "WHERE status = 'failed' ORDER BY received_at DESC LIMIT 1"
                )
            )
        ).one()
    await engine.dispose()
    return key, {
        "event_id": str(row.event_id),
        "user_id": row.user_id,
        "correlation_id": row.correlation_id,
    }


def _pages(found: dict[str, str], next_page: str) -> dict[str, str]:
    return {
        "overview": "/console",
        "overview (live part)": "/console/overview/live",
        "events (newest)": "/console/events",
        "events (next page)": next_page,
        "events by type": "/console/events?event_type=purchase",
        "events by user": f"/console/events?user_id={found['user_id']}",
        "events by status failed": "/console/events?status=failed",
        "events by correlation id": (
            f"/console/events?correlation_id={found['correlation_id']}"
        ),
        "events by time range": (
            "/console/events?since=2026-01-01T00:00:00&until=2099-01-01T00:00:00"
        ),
        "event page": f"/console/events/{found['event_id']}",
        "dead letters": "/console/dead-letters",
        "dead letters by error type": "/console/dead-letters?error_type=RuntimeError",
        "schemas": "/console/schemas",
        "schema versions": "/console/schemas/purchase",
        "keys": "/console/keys",
        "audit": "/console/audit",
    }


WRITE_BATCH = 1000
_INSERT = text(
    """
    INSERT INTO raw_events (event_id, event_type, user_id, event_timestamp,
        properties, body_hash, correlation_id, received_at, published_at, source)
    SELECT gen_random_uuid(),
        (ARRAY['purchase', 'page_view', 'user_signup', 'custom'])[1 + g % 4],
        'user-' || (g % 5000), now(), '{"amount": 12.5, "currency": "EUR"}',
        md5(g::text), md5((g + :b)::text), now(), now(), 'web-shop'
    FROM generate_series(1, :n) g
    RETURNING event_id, received_at
    """
)
_SETTLE = text(
    """
    UPDATE raw_events r SET status = 'processed', settled_at = now()
    FROM unnest(CAST(:ids AS uuid[]), CAST(:at AS timestamptz[])) AS k(id, at)
    WHERE r.event_id = k.id AND r.received_at = k.at
    """
)


async def _write_cost(urls: dict[str, str], batches: int) -> dict[str, Any]:
    """Insert and settle the same batches on each database, alternately."""
    engines = {name: create_async_engine(url) for name, url in urls.items()}
    took: dict[str, dict[str, float]] = {n: {"insert": 0, "settle": 0} for n in urls}
    for b in range(batches):
        for name, engine in engines.items():
            async with engine.begin() as conn:
                start = time.perf_counter()
                rows = (await conn.execute(_INSERT, {"n": WRITE_BATCH, "b": b})).all()
                took[name]["insert"] += time.perf_counter() - start
            async with engine.begin() as conn:
                start = time.perf_counter()
                await conn.execute(
                    _SETTLE,
                    {"ids": [r[0] for r in rows], "at": [r[1] for r in rows]},
                )
                took[name]["settle"] += time.perf_counter() - start
    for engine in engines.values():
        await engine.dispose()
    events = batches * WRITE_BATCH
    out: dict[str, Any] = {"events": events, "batch": WRITE_BATCH}
    for name, t in took.items():
        out[name] = {
            "insert_us_per_event": round(t["insert"] / events * 1e6, 1),
            "settle_us_per_event": round(t["settle"] / events * 1e6, 1),
        }
    base = out["0007"]
    out["extra_us_per_event"] = {
        name: round(
            out[name]["insert_us_per_event"]
            + out[name]["settle_us_per_event"]
            - base["insert_us_per_event"]
            - base["settle_us_per_event"],
            1,
        )
        for name in urls
        if name != "0007"
    }
    return out


def _console_indexes() -> dict[str, str]:
    """Each index of migration 0008, as a statement for a database at 0007."""
    path = MIGRATIONS / "0008_console_indexes.py"
    spec = importlib.util.spec_from_file_location("console_indexes", path)
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    return {
        ix.name: f"CREATE INDEX {ix.name} ON {ix.definition}"
        for ix in migration.INDEXES
    }


async def _with_index(url: str, statement: str) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text(statement))
    await engine.dispose()


def _write_databases(admin_url: str) -> dict[str, str]:
    """At 0007, at 0008, and at 0007 with each index of 0008 alone."""
    urls = {}
    for revision in ("0007", "0008"):
        urls[revision] = asyncio.run(_database(admin_url, f"writes_{revision}"))
        upgrade(urls[revision], revision)
    for n, (name, statement) in enumerate(_console_indexes().items()):
        url = asyncio.run(_database(admin_url, f"writes_index_{n}"))
        upgrade(url, "0007")
        asyncio.run(_with_index(url, statement))
        urls[f"0007 + {name}"] = url
    return urls


async def _database(admin_url: str, name: str) -> str:
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f"CREATE DATABASE {name}"))
    await admin.dispose()
    return admin_url.rsplit("/", 1)[0] + "/" + name


def _time(client: httpx.Client, request: Any, n: int) -> dict[str, float]:
    for _ in range(3):
        request()
    took = []
    for _ in range(n):
        start = time.perf_counter()
        answer = request()
        took.append((time.perf_counter() - start) * 1000)
        assert answer.status_code in (200, 303), answer.status_code
    took.sort()
    return {
        "median_ms": round(statistics.median(took), 1),
        "p95_ms": round(took[max(0, int(len(took) * 0.95) - 1)], 1),
        "max_ms": round(took[-1], 1),
    }


def _measure(base: str, key: str, found: dict[str, str], n: int) -> dict[str, Any]:
    with httpx.Client(base_url=base, timeout=30) as client:
        login = client.get("/console/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', login.text)
        assert csrf
        answer = client.post("/console/login", data={"csrf": csrf.group(1), "key": key})
        assert answer.status_code == 303, answer.text
        first = client.get("/console/events")
        cursor = re.search(
            r'href="(/console/events\?after=[^"]+)" rel="next"', first.text
        )
        assert cursor, "no next page"
        next_page = cursor.group(1).replace("&amp;", "&")
        pages: dict[str, Any] = {}
        for name, path in _pages(found, next_page).items():
            pages[name] = _time(client, lambda path=path: client.get(path), n)
            assert client.get(path).status_code == 200, path
        form = {
            "csrf": csrf.group(1),
            "action": "replay",
            "scope": "all",
            "error_type": "InvalidEvent",
        }
        pages["confirm replay of every InvalidEvent (count)"] = _time(
            client,
            lambda: client.post("/console/dead-letters/confirm", data=form),
            n,
        )
    return pages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--record", type=Path, default=None)
    parser.add_argument(
        "--write-batches", type=int, default=200, help="for the write cost (0: skip)"
    )
    args = parser.parse_args()
    timings: dict[str, float] = {}
    writes: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        pg, redis = LocalPostgres(Path(folder)), LocalRedis(Path(folder))
        url, redis_url = pg.start(), redis.start()
        api: subprocess.Popen[bytes] | None = None
        try:
            upgrade(url, "0005")
            started = time.monotonic()
            asyncio.run(_fill(url, args.events))
            timings["fill_s"] = round(time.monotonic() - started, 1)
            started = time.monotonic()
            upgrade(url, "0007")
            timings["migrations_0006_0007_s"] = round(time.monotonic() - started, 1)
            started = time.monotonic()
            upgrade(url, "0008")
            timings["migration_0008_console_indexes_s"] = round(
                time.monotonic() - started, 1
            )
            started = time.monotonic()
            upgrade(url, "head")  # 0009: unsettled_events from the accepted rows
            timings["migration_0009_unsettled_s"] = round(time.monotonic() - started, 1)
            asyncio.run(_analyze(url))
            key, found = asyncio.run(_setup(url))
            port = free_port()
            env = {
                **{
                    k: v for k, v in os.environ.items() if not k.startswith("EVENTFLOW")
                },
                "DATABASE_URL": url,
                "REDIS_URL": redis_url,
                "EVENTFLOW_LOG_LEVEL": "WARNING",
                "EVENTFLOW_STREAM_NAME": "bench:events",
            }
            api = subprocess.Popen(
                [sys.executable, "-m", "eventflow", "api", "--host", "127.0.0.1",
                 "--port", str(port)],
                env=env,
            )  # fmt: skip
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(base + "/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the API did not start"
                time.sleep(0.2)
            pages = _measure(base, key, found, args.requests)
            api.terminate()
            api.wait(30)
            api = None
            if args.write_batches:
                urls = _write_databases(url)
                writes = asyncio.run(_write_cost(urls, args.write_batches))
        finally:
            if api is not None:
                api.terminate()
                api.wait(30)
            redis.stop()
            pg.stop()
    slowest = max(p["p95_ms"] for p in pages.values())
    result = {
        "what": "operator console: time to answer each page, client side over "
        "HTTP on the same machine, logged in with an admin key",
        "events": args.events,
        "dead_letters": args.events // 100,
        "requests_per_page": args.requests,
        "goal_ms": GOAL_MS,
        "every_page_p95_under_goal": slowest < GOAL_MS,
        "slowest_p95_ms": slowest,
        "pages": pages,
        **timings,
        "write_cost_of_the_console_indexes": writes,
        "machine": machine_info(),
        "command": f"python benchmarks/console.py --events {args.events} "
        f"--requests {args.requests} --write-batches {args.write_batches}",
        "date": datetime.now(UTC).date().isoformat(),
    }
    emit(result, args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
