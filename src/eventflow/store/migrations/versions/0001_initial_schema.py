"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-26 09:39:35.834693
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "failed_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("error_type", sa.String(length=128), nullable=False),
        sa.Column(
            "attempts", sa.Integer(), server_default=sa.text("1"), nullable=False
        ),
        sa.Column("correlation_id", sa.String(length=128), nullable=True),
        sa.Column("stream_entry_id", sa.String(length=64), nullable=True),
        sa.Column(
            "failed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "replay_count", sa.Integer(), server_default=sa.text("0"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
    )
    op.create_index(
        "ix_failed_events_failed_at", "failed_events", ["failed_at"], unique=False
    )
    op.create_index(
        "ix_failed_events_type", "failed_events", ["event_type"], unique=False
    )
    op.create_table(
        "processed_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=True),
        sa.Column("event_timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "properties", postgresql.JSONB(astext_type=sa.Text()), nullable=False
        ),
        sa.Column(
            "enrichment", postgresql.JSONB(astext_type=sa.Text()), nullable=False
        ),
        sa.Column("correlation_id", sa.String(length=128), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "processed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("processed_by", sa.String(length=255), nullable=False),
        sa.Column(
            "attempts", sa.Integer(), server_default=sa.text("1"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
    )
    op.create_index(
        "ix_processed_events_processed_at",
        "processed_events",
        ["processed_at"],
        unique=False,
    )
    op.create_index(
        "ix_processed_events_type_time",
        "processed_events",
        ["event_type", "processed_at"],
        unique=False,
    )
    op.create_table(
        "raw_events",
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=True),
        sa.Column("event_timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "properties", postgresql.JSONB(astext_type=sa.Text()), nullable=False
        ),
        sa.Column("body_hash", sa.String(length=64), nullable=False),
        sa.Column("correlation_id", sa.String(length=128), nullable=True),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "publish_count", sa.Integer(), server_default=sa.text("1"), nullable=False
        ),
        sa.Column(
            "status", sa.String(length=16), server_default="accepted", nullable=False
        ),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_index(
        "ix_raw_events_received_at", "raw_events", ["received_at"], unique=False
    )
    op.create_index(
        "ix_raw_events_unsettled",
        "raw_events",
        ["published_at"],
        unique=False,
        postgresql_where=sa.text("status = 'accepted'"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_raw_events_unsettled",
        table_name="raw_events",
        postgresql_where=sa.text("status = 'accepted'"),
    )
    op.drop_index("ix_raw_events_received_at", table_name="raw_events")
    op.drop_table("raw_events")
    op.drop_index("ix_processed_events_type_time", table_name="processed_events")
    op.drop_index("ix_processed_events_processed_at", table_name="processed_events")
    op.drop_table("processed_events")
    op.drop_index("ix_failed_events_type", table_name="failed_events")
    op.drop_index("ix_failed_events_failed_at", table_name="failed_events")
    op.drop_table("failed_events")
