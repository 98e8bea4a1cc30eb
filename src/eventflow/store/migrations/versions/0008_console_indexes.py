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

# name -> (table, columns, suffix); a partition's index is <partition>_<suffix>.
INDEXES: dict[str, tuple[str, str, str]] = {
    "ix_raw_events_time_id": ("raw_events", "received_at, event_id", "tid"),
    "ix_raw_events_type_time": (
        "raw_events",
        "event_type, received_at, event_id",
        "ttid",
    ),
    "ix_raw_events_user_time": ("raw_events", "user_id, received_at, event_id", "utid"),
    "ix_raw_events_unprocessed_time": (
        "raw_events",
        "received_at, event_id",
        "uptid",
    ),
    "ix_raw_events_correlation": (
        "raw_events",
        "correlation_id, received_at, event_id",
        "ctid",
    ),
    "ix_failed_events_type_id": ("failed_events", "event_type, id", "typid"),
    "ix_failed_events_error_type_id": ("failed_events", "error_type, id", "errid"),
}


# Partial indexes: their predicate.
WHERE = {"ix_raw_events_unprocessed_time": " WHERE status <> 'processed'"}

# Served as well by the new (received_at, event_id) and (event_type, id).
REPLACED = {
    "ix_raw_events_received_at": ("raw_events", "received_at"),
    "ix_failed_events_type": ("failed_events", "event_type"),
}


def upgrade() -> None:
    if context.is_offline_mode():
        for name, (table, columns, _) in INDEXES.items():
            op.execute(f"CREATE INDEX {name} ON {table} ({columns}){_where(name)}")
        _drop_replaced()
        return
    bind = op.get_bind()
    for name, (table, columns, _) in INDEXES.items():
        op.execute(
            f"CREATE INDEX IF NOT EXISTS {name} ON ONLY {table} ({columns})"
            + _where(name)
        )
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
                        f"ON {partition} ({columns}){_where(name)}"
                    )
                )
                bind.execute(sa.text(f"ALTER INDEX {name} ATTACH PARTITION {index}"))
    _drop_replaced()


def _where(name: str) -> str:
    return WHERE.get(name, "")


def _drop_replaced() -> None:
    for name in REPLACED:
        op.execute(f"DROP INDEX IF EXISTS {name}")


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
    for name, (table, columns) in REPLACED.items():
        op.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({columns})")
    for name in INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")
