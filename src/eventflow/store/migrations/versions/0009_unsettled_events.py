"""events on their way in a narrow table of their own; raw_events written once

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08 01:00:00

Until now a worker settled each event by updating its ``raw_events`` row
(``status``, ``settled_at``) after locking it (``FOR UPDATE``). ``status`` is in
partial indexes' predicates, so that update was never a HOT update: every
processed event wrote its whole audit row a second time, with an entry in each
index of the table, and a row lock before that.

From this revision ``unsettled_events`` holds one narrow row per accepted event
that no worker has settled yet, written by the API in the transaction that
stores the event and deleted by the worker in the transaction that settles it
(processed, dead-lettered or quarantined). The reconciler, the unsettled counts
and the console's search for events on their way read it. ``raw_events`` is
written once on the hot path: its ``status`` changes only on the rare paths
(``failed``, ``quarantined``, a dead letter replayed, a reprocessing run), and an
event whose status is ``accepted`` with no ``unsettled_events`` row is
processed (``eventflow.store.events.effective_status``, the one home of that
rule). Neither index of ``raw_events`` that named ``status = 'accepted'`` or
``status <> 'processed'`` stays useful, so both are dropped; the console's
search for failed and quarantined events gets a partial index of those rows
only.

Upgrade with the processes of the earlier version stopped: an earlier API
would store events without their ``unsettled_events`` row.
"""

from __future__ import annotations

from alembic import op

from eventflow.store.migrations.partitioned import PartitionedIndex, create_indexes

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

FAILED_TIME = PartitionedIndex(
    "ix_raw_events_failed_time",
    "raw_events",
    "received_at, event_id",
    "ftid",
    " WHERE status IN ('failed', 'quarantined')",
)


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE IF NOT EXISTS unsettled_events (
            received_at timestamptz NOT NULL,
            event_id uuid NOT NULL,
            PRIMARY KEY (received_at, event_id)
        )
        """
    )
    op.execute(
        """
        INSERT INTO unsettled_events (received_at, event_id)
        SELECT received_at, event_id FROM raw_events
        WHERE status = 'accepted'
        ON CONFLICT DO NOTHING
        """
    )
    create_indexes([FAILED_TIME])
    op.execute("DROP INDEX IF EXISTS ix_raw_events_unsettled")
    op.execute("DROP INDEX IF EXISTS ix_raw_events_unprocessed_time")


def downgrade() -> None:
    op.execute(
        """
        UPDATE raw_events r SET status = 'processed', settled_at = now()
        WHERE r.status = 'accepted' AND NOT EXISTS (
            SELECT 1 FROM unsettled_events u
            WHERE u.received_at = r.received_at AND u.event_id = r.event_id)
        """
    )
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_raw_events_unsettled ON raw_events "
        "(published_at) WHERE status = 'accepted'"
    )
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_raw_events_unprocessed_time ON raw_events "
        "(received_at, event_id) WHERE status <> 'processed'"
    )
    op.execute(f"DROP INDEX IF EXISTS {FAILED_TIME.name}")
    op.execute("DROP TABLE IF EXISTS unsettled_events")
