"""reprocessing runs

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 06:05:00

A run re-processes the stored events of a time range; its row holds its state,
counts, cursor (so that it resumes after a crash) and who started it. Processed
rows say when and by which run they were re-processed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reprocess_runs",
        sa.Column("id", sa.BigInteger(), autoincrement=True, primary_key=True),
        sa.Column("started_by", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("from_ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("to_ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=True),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("rate_limit", sa.Float(), nullable=True),
        sa.Column("state", sa.Text(), nullable=False, server_default="pending"),
        sa.Column("total", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("done", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("changed", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("failed", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("cursor_received_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cursor_event_id", sa.Uuid(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "processed_events",
        sa.Column("reprocessed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "processed_events",
        sa.Column("reprocess_run_id", sa.BigInteger(), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("processed_events", "reprocess_run_id")
    op.drop_column("processed_events", "reprocessed_at")
    op.drop_table("reprocess_runs")
