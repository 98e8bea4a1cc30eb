"""partition keys and partition owners

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 05:30:00

``raw_events.partition_key`` keeps the key an event was routed by, so that the
reconciler republishes it to the same partition. ``partition_owners`` holds each
partition's fencing token: a worker takes a partition by raising the token and
commits a batch only while the token is still its own.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("raw_events", sa.Column("partition_key", sa.Text(), nullable=True))
    op.create_table(
        "partition_owners",
        sa.Column("stream", sa.Text(), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column(
            "acquired_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("committed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("stream", "partition"),
    )


def downgrade() -> None:
    op.drop_table("partition_owners")
    op.drop_column("raw_events", "partition_key")
