"""schema registry: versioned JSON Schemas per event type

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 02:40:00

Installs the four built-in event types as version 1. They hold the original rules
only: a purchase needs a positive numeric ``amount``, a signup needs a ``user_id``;
every other property is free-form. Change them like any other type (``POST
/schemas/{event_type}``); this migration is not re-run.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

DRAFT = "https://json-schema.org/draft/2020-12/schema"


def _event(title: str, description: str, **rules: object) -> dict[str, object]:
    return {
        "$schema": DRAFT,
        "title": title,
        "description": description,
        "type": "object",
        **rules,
    }


BUILTIN = {
    "purchase": _event(
        "purchase",
        "A completed purchase: `properties.amount` is a positive number.",
        required=["properties"],
        properties={
            "properties": {
                "type": "object",
                "required": ["amount"],
                "properties": {
                    "amount": {"type": "number", "exclusiveMinimum": 0},
                },
            }
        },
    ),
    "user_signup": _event(
        "user_signup",
        "A new account: `user_id` is required.",
        required=["user_id"],
        properties={"user_id": {"type": "string", "minLength": 1}},
    ),
    "page_view": _event(
        "page_view",
        "A page view: the page is `properties.url` or `properties.page`.",
    ),
    "custom": _event(
        "custom",
        "Your own event: every property is free-form.",
    ),
}


def upgrade() -> None:
    op.create_table(
        "event_schemas",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("schema", postgresql.JSONB(), nullable=False),
        sa.Column("compatibility", sa.String(length=16), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_type", "version", name="uq_event_schemas_version"),
    )
    for name in ("raw_events", "processed_events", "failed_events"):
        op.add_column(name, sa.Column("schema_version", sa.Integer(), nullable=True))
    # Literal SQL, so that `eventflow migrate --sql` (init_db.sql) has the rows too.
    for event_type, schema in BUILTIN.items():
        document = json.dumps(schema, sort_keys=True).replace("'", "''")
        op.execute(
            "INSERT INTO event_schemas (event_type, version, schema, compatibility) "
            f"VALUES ('{event_type}', 1, '{document}'::jsonb, 'none')"
        )


def downgrade() -> None:
    for name in ("raw_events", "processed_events", "failed_events"):
        op.drop_column(name, "schema_version")
    op.drop_table("event_schemas")
