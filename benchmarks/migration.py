"""Time the in-place conversion of the event tables to time partitions
(migration 0006) on a database holding ``--events`` events.

    python benchmarks/migration.py [--events 1000000] [--database-url URL]

Without ``--database-url`` it starts a local PostgreSQL of its own (as
``eventflow dev`` does). It creates a database at revision 0005, fills
``raw_events`` and ``processed_events`` with ``--events`` rows each (spread over
30 days, 1 % of them also dead letters), runs ``eventflow migrate`` and reports
the time it took, with the machine, as JSON (``--record FILE`` writes it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from measure import emit, machine_info
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from eventflow.local.servers import LocalPostgres
from eventflow.store.migrate import upgrade

FILL = [
    """
    INSERT INTO raw_events (event_id, event_type, user_id, event_timestamp,
        properties, body_hash, correlation_id, received_at, published_at, status,
        settled_at, schema_version)
    SELECT gen_random_uuid(), 'purchase', 'user_' || (g % 5000),
        now() - (g % 30) * interval '1 day',
        jsonb_build_object('amount', (g % 1000) + 0.99, 'currency', 'EUR',
                           'product_id', 'sku-' || (g % 300)),
        md5(g::text), md5((g * 7)::text),
        now() - (g % 30) * interval '1 day' - (g % 86400) * interval '1 second',
        now(), 'processed', now(), 1
    FROM generate_series(1, :n) g
    """,
    """
    INSERT INTO processed_events (event_id, event_type, user_id, event_timestamp,
        properties, enrichment, correlation_id, received_at, processed_by,
        schema_version)
    SELECT event_id, event_type, user_id, event_timestamp, properties,
        '{"amount_category": "standard"}', correlation_id, received_at, 'worker-1', 1
    FROM raw_events
    """,
    """
    INSERT INTO failed_events (event_id, event_type, payload, error, error_type)
    SELECT gen_random_uuid(), 'purchase', '{}', 'amount: must be positive',
        'InvalidEvent'
    FROM generate_series(1, :n / 100)
    """,
]


async def fill(url: str, n: int) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        for statement in FILL:
            await conn.execute(text(statement), {"n": n})
    async with engine.connect() as conn:
        await conn.execute(text("COMMIT"))
        await conn.execute(text("VACUUM ANALYZE"))
    await engine.dispose()


async def create_database(admin_url: str) -> str:
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"migration_bench_{uuid.uuid4().hex[:6]}"
    async with admin.connect() as conn:
        await conn.execute(text(f"CREATE DATABASE {name}"))
    await admin.dispose()
    return admin_url.rsplit("/", 1)[0] + "/" + name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--record", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        pg = None
        admin = args.database_url
        if admin is None:
            pg = LocalPostgres(Path(folder))
            admin = pg.start()
        try:
            url = asyncio.run(create_database(admin))
            upgrade(url, "0005")
            started = time.monotonic()
            asyncio.run(fill(url, args.events))
            filled = time.monotonic() - started
            env = {**os.environ, "DATABASE_URL": url, "EVENTFLOW_LOG_FORMAT": "text"}
            started = time.monotonic()
            subprocess.run(
                [sys.executable, "-m", "eventflow", "migrate"], env=env, check=True
            )
            took = time.monotonic() - started
        finally:
            if pg is not None:
                pg.stop()
    result = {
        "what": "migration 0006: event tables converted to time partitions in place",
        "events": args.events,
        "rows_moved": args.events * 2 + args.events // 100,
        "fill_s": round(filled, 1),
        "migrate_s": round(took, 1),
        "rows_per_s": round((args.events * 2 + args.events // 100) / took),
        "machine": machine_info(),
        "command": "python benchmarks/migration.py --events " + str(args.events),
        "date": datetime.now(UTC).date().isoformat(),
    }
    emit(result, args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
