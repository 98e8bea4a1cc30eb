"""Indexes on the partitioned event tables, built without blocking writes.

An index is first created on the parent only (``ON ONLY``, invalid until
complete), then on each partition with ``CREATE INDEX CONCURRENTLY`` (events keep
being accepted meanwhile), and attached; once every partition's index is attached
the parent's is valid, and partitions created later get theirs automatically.
Interrupted, it resumes: every step is ``IF NOT EXISTS`` or checked first. Offline
(``scripts/init_db.sql``, empty tables) each index is created directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from alembic import context, op


@dataclass(frozen=True)
class PartitionedIndex:
    name: str
    table: str
    columns: str
    suffix: str  # a partition's index is <partition>_<suffix>
    where: str = ""  # a partial index's predicate, with its WHERE

    @property
    def definition(self) -> str:
        return f"{self.table} ({self.columns}){self.where}"


def create_indexes(indexes: list[PartitionedIndex]) -> None:
    if context.is_offline_mode():
        for ix in indexes:
            op.execute(f"CREATE INDEX {ix.name} ON {ix.definition}")
        return
    bind = op.get_bind()
    for ix in indexes:
        op.execute(f"CREATE INDEX IF NOT EXISTS {ix.name} ON ONLY {ix.definition}")
    with context.get_context().autocommit_block():
        for ix in indexes:
            partitions = bind.scalars(
                sa.text(
                    "SELECT c.relname FROM pg_inherits i "
                    "JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = to_regclass(:t) ORDER BY c.relname"
                ),
                {"t": ix.table},
            ).all()
            for partition in partitions:
                index = f"{partition}_{ix.suffix}"
                attached = bind.scalar(
                    sa.text(
                        "SELECT EXISTS (SELECT 1 FROM pg_inherits i "
                        "JOIN pg_class c ON c.oid = i.inhrelid "
                        "WHERE i.inhparent = to_regclass(:parent) "
                        "AND c.relname = :index)"
                    ),
                    {"parent": ix.name, "index": index},
                )
                if attached:
                    continue
                # A concurrent build that was interrupted leaves an invalid index.
                if _invalid(bind, index):
                    bind.execute(sa.text(f"DROP INDEX CONCURRENTLY IF EXISTS {index}"))
                bind.execute(
                    sa.text(
                        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {index} "
                        f"ON {partition} ({ix.columns}){ix.where}"
                    )
                )
                bind.execute(sa.text(f"ALTER INDEX {ix.name} ATTACH PARTITION {index}"))


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
