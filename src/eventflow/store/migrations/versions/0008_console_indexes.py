"""indexes for the operator console's searches

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 08:30:00

The console lists events newest first, ``(received_at, event_id)`` descending,
and pages with a keyset (the last row's pair), optionally narrowed to a type, a
user, a correlation id or a status; dead letters are listed by id, optionally of
one type or one error type. Each search has an index whose order is the listing's
order, so a page reads its rows from the index and stops (no sort of the table).

Every index on ``raw_events`` costs each accepted event an index entry (and each
settled one too: settling changes ``status``, so it is never a HOT update). So:
``(received_at, event_id)`` replaces ``(received_at)``, which it serves as well;
statuses other than ``processed`` (the few events still on their way, failed or
quarantined) have a partial index, and ``processed`` is most rows, read in time
order; ``(event_type, id)`` replaces ``failed_events (event_type)``.

The event tables are partitioned (0006): each index is built partition by
partition without blocking writes (``eventflow.store.migrations.partitioned``).
"""

from __future__ import annotations

from alembic import op

from eventflow.store.migrations.partitioned import PartitionedIndex, create_indexes

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

INDEXES = [
    PartitionedIndex(
        "ix_raw_events_time_id", "raw_events", "received_at, event_id", "tid"
    ),
    PartitionedIndex(
        "ix_raw_events_type_time",
        "raw_events",
        "event_type, received_at, event_id",
        "ttid",
    ),
    PartitionedIndex(
        "ix_raw_events_user_time",
        "raw_events",
        "user_id, received_at, event_id",
        "utid",
    ),
    PartitionedIndex(
        "ix_raw_events_unprocessed_time",
        "raw_events",
        "received_at, event_id",
        "uptid",
        " WHERE status <> 'processed'",
    ),
    PartitionedIndex(
        "ix_raw_events_correlation",
        "raw_events",
        "correlation_id, received_at, event_id",
        "ctid",
    ),
    PartitionedIndex(
        "ix_failed_events_type_id", "failed_events", "event_type, id", "typid"
    ),
    PartitionedIndex(
        "ix_failed_events_error_type_id", "failed_events", "error_type, id", "errid"
    ),
]

# Served as well by the new (received_at, event_id) and (event_type, id).
REPLACED = {
    "ix_raw_events_received_at": ("raw_events", "received_at"),
    "ix_failed_events_type": ("failed_events", "event_type"),
}


def upgrade() -> None:
    create_indexes(INDEXES)
    for name in REPLACED:
        op.execute(f"DROP INDEX IF EXISTS {name}")


def downgrade() -> None:
    for name, (table, columns) in REPLACED.items():
        op.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({columns})")
    for ix in INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {ix.name}")
