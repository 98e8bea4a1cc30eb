"""dead letters hold whatever a stream entry carried

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 03:10:00

A dead letter records an entry that could not be processed, which may come from
any producer: its fields are stored whole, so none of them can make the insert
fail (a failed dead-letter insert would leave the entry pending for ever).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = {
    "event_type": sa.String(length=64),
    "error_type": sa.String(length=128),
    "correlation_id": sa.String(length=128),
    "stream_entry_id": sa.String(length=64),
}


def upgrade() -> None:
    for name, old in COLUMNS.items():
        op.alter_column("failed_events", name, type_=sa.Text(), existing_type=old)


def downgrade() -> None:
    for name, old in COLUMNS.items():
        op.alter_column(
            "failed_events",
            name,
            type_=old,
            existing_type=sa.Text(),
            postgresql_using=f"left({name}, {old.length})",
        )
