"""indexes for the operator console's searches

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 08:30:00

The console lists events newest first, ``(received_at, event_id)`` descending,
and pages with a keyset (the last row's pair), optionally narrowed to a type, a
user, a status or a correlation id; dead letters are listed by id, optionally of
one type or one error type. Each search has an index whose order is the listing's
order, so a page reads its rows from the index and stops (no sort of the table).

The event tables are partitioned (0006). On an existing database each index is
first created on the parent only (``ON ONLY``, invalid until complete), then on
each partition with ``CREATE INDEX CONCURRENTLY`` (events keep being accepted
meanwhile), and attached; once every partition's index is attached the parent's
is valid, and partitions created later get theirs automatically. Interrupted, it
resumes: every step is ``IF NOT EXISTS`` or checked first. A new database
(``scripts/init_db.sql``) has empty tables and creates them directly.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# name -> (table, columns); a partition's index is named <partition>_<suffix>.
INDEXES: dict[str, tuple[str, str, str]] = {
    "ix_raw_events_time_id": ("raw_events", "received_at, event_id", "tid"),
    "ix_raw_events_type_time": (
        "raw_events",
        "event_type, received_at, event_id",
        "ttid",
    ),
    "ix_raw_events_user_time": ("raw_events", "user_id, received_at, event_id", "utid"),
    "ix_raw_events_status_time": (
        "raw_events",
        "status, received_at, event_id",
        "stid",
    ),
    "ix_raw_events_correlation": (
        "raw_events",
        "correlation_id, received_at, event_id",
        "ctid",
    ),
    "ix_failed_events_type_id": ("failed_events", "event_type, id", "typid"),
    "ix_failed_events_error_type_id": ("failed_events", "error_type, id", "errid"),
}


def upgrade() -> None:
    if context.is_offline_mode():
        for name, (table, columns, _) in INDEXES.items():
            op.execute(f"CREATE INDEX {name} ON {table} ({columns})")
        return
    bind = op.get_bind()
    for name, (table, columns, _) in INDEXES.items():
        op.execute(f"CREATE INDEX IF NOT EXISTS {name} ON ONLY {table} ({columns})")
    with context.get_context().autocommit_block():
        for name, (table, columns, suffix) in INDEXES.items():
            partitions = bind.scalars(
                sa.text(
                    "SELECT c.relname FROM pg_inherits i "
                    "JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = to_regclass(:t) ORDER BY c.relname"
                ),
                {"t": table},
            ).all()
            for partition in partitions:
                index = f"{partition}_{suffix}"
                attached = bind.scalar(
                    sa.text(
                        "SELECT EXISTS (SELECT 1 FROM pg_inherits i "
                        "JOIN pg_class c ON c.oid = i.inhrelid "
                        "WHERE i.inhparent = to_regclass(:parent) "
                        "AND c.relname = :index)"
                    ),
                    {"parent": name, "index": index},
                )
                if attached:
                    continue
                # A concurrent build that was interrupted leaves an invalid index.
                bind.execute(
                    sa.text(
                        f"DROP INDEX CONCURRENTLY IF EXISTS {index}"
                        if _invalid(bind, index)
                        else "SELECT 1"
                    )
                )
                bind.execute(
                    sa.text(
                        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {index} "
                        f"ON {partition} ({columns})"
                    )
                )
                bind.execute(sa.text(f"ALTER INDEX {name} ATTACH PARTITION {index}"))


def _invalid(bind: sa.Connection, index: str) -> bool:
    return bool(
        bind.scalar(
            sa.text(
                "SELECT NOT indisvalid FROM pg_index "
                "WHERE indexrelid = to_regclass(:index)"
            ),
            {"index": index},
        )
    )


def downgrade() -> None:
    for name in INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")
