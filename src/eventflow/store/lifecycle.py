"""Time partitions of the event tables: created ahead, dropped past retention.

The three event tables are partitioned by ``received_at`` (migration 0006). One
worker at a time (the owner of stream partition 0) runs ``maintain`` every
``EVENTFLOW_MAINTENANCE_INTERVAL_S``: it creates the partitions of the next
``EVENTFLOW_PARTITION_AHEAD_DAYS`` and drops whole partitions older than the
table's retention, never rows one by one. The SQL functions it calls also take an
advisory lock, so a second caller (``eventflow retention run``) waits its turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow.config import Settings

TABLES = ("raw_events", "processed_events", "failed_events")

_CREATE = text("SELECT eventflow_create_partitions(:table, :since, :until, :days)")
_DROP = text("SELECT eventflow_drop_partitions(:table, :before)")
# The unsettled rows of events whose raw partition was dropped.
_ORPHANS = text(
    "DELETE FROM unsettled_events u WHERE u.received_at < :before AND NOT EXISTS "
    "(SELECT 1 FROM raw_events r WHERE r.received_at = u.received_at "
    "AND r.event_id = u.event_id)"
)
_STATUS = text(
    """
    SELECT t.parent, count(p.partition_name) AS partitions,
        min(p.lower_bound) AS oldest, max(p.upper_bound) AS newest,
        (SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0)
         FROM pg_inherits i WHERE i.inhparent = to_regclass(t.parent)) AS bytes
    FROM unnest(CAST(:tables AS text[])) AS t(parent)
    LEFT JOIN time_partitions p ON p.parent_table = t.parent
    GROUP BY t.parent
    """
)


def retention_days(settings: Settings, table: str) -> int:
    """Days a table keeps its rows; 0 keeps them for ever."""
    own = {
        "raw_events": settings.retention_days_raw,
        "processed_events": settings.retention_days_processed,
        "failed_events": settings.retention_days_failed,
    }[table]
    return settings.retention_days if own is None else own


@dataclass
class MaintenanceReport:
    created: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, list[str]] = field(default_factory=dict)


async def maintain(
    engine: AsyncEngine, settings: Settings, now: datetime | None = None
) -> MaintenanceReport:
    """Create the partitions ahead and drop those past retention, as of ``now``
    (the clock, unless a test gives another time)."""
    now = now or datetime.now(UTC)
    report = MaintenanceReport()
    for table in TABLES:
        async with engine.begin() as conn:
            report.created[table] = int(
                await conn.scalar(
                    _CREATE,
                    {
                        "table": table,
                        "since": now,
                        "until": now + timedelta(days=settings.partition_ahead_days),
                        "days": settings.partition_interval_days,
                    },
                )
                or 0
            )
        days = retention_days(settings, table)
        if days:
            async with engine.begin() as conn:
                dropped = await conn.scalars(
                    _DROP, {"table": table, "before": now - timedelta(days=days)}
                )
                report.dropped[table] = list(dropped)
                if table == "raw_events" and report.dropped[table]:
                    await conn.execute(_ORPHANS, {"before": now - timedelta(days=days)})
    return report


class TableStatus(BaseModel):
    table: str
    partitions: int
    oldest: datetime | None
    newest: datetime | None
    bytes: int
    retention_days: int


async def status(engine: AsyncEngine, settings: Settings) -> list[TableStatus]:
    """Partitions, their span and size, per event table."""
    async with engine.connect() as conn:
        rows = (await conn.execute(_STATUS, {"tables": list(TABLES)})).all()
    by_table = {r.parent: r for r in rows}
    return [
        TableStatus(
            table=table,
            partitions=by_table[table].partitions,
            oldest=by_table[table].oldest,
            newest=by_table[table].newest,
            bytes=int(by_table[table].bytes),
            retention_days=retention_days(settings, table),
        )
        for table in TABLES
    ]
