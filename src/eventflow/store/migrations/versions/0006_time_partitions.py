"""event tables partitioned by acceptance time

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 06:00:00

``raw_events``, ``processed_events`` and ``failed_events`` become natively
partitioned by ``received_at`` (the acceptance time, fixed at the first acceptance
and carried by the event through the stream), so that retention drops whole
partitions. Keys include ``received_at``: a redelivered event has the same
acceptance time and still conflicts with its stored row; a client's re-send is a
new request and is checked against the duplicate-detection window by the API.

Existing installations are converted in place: the old tables are renamed, the
partitioned tables take their names (new events go there at once), and the old
rows move over in batches of ``BATCH`` rows, each batch one statement in its own
transaction (``DELETE ... RETURNING`` into ``INSERT``). A conversion that stops
half way (killed, a server restart) resumes where it was when the migration runs
again: what is left is exactly what the old tables still hold.

``eventflow_create_partitions`` creates partitions ahead; ``time_partitions``
lists them with their bounds (retention reads it).
"""

from __future__ import annotations

import logging
import os
import time

import sqlalchemy as sa
from alembic import context, op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

log = logging.getLogger("eventflow.migrations")

# Rows moved per transaction (EVENTFLOW_MIGRATION_BATCH overrides it).
HISTORY = 60
BATCH = int(os.environ.get("EVENTFLOW_MIGRATION_BATCH", "50000"))
TABLES = ("raw_events", "processed_events", "failed_events")
OLD = "{}_unpartitioned"

CREATE_FUNCTIONS = [
    """
CREATE TABLE IF NOT EXISTS time_partitions (
    parent_table text NOT NULL,
    partition_name text NOT NULL,
    lower_bound timestamptz NOT NULL,
    upper_bound timestamptz NOT NULL,
    PRIMARY KEY (parent_table, partition_name)
)
""",
    """
-- Partitions of ``parent`` covering [since, until), each ``days`` long, aligned
-- on whole days (UTC), continuing from the newest partition that exists. A gap
-- before ``since`` (no maintenance for a while) is not filled: rows of such times
-- are kept by the default partition.
CREATE OR REPLACE FUNCTION eventflow_create_partitions(
    parent text, since timestamptz, until timestamptz, days int
) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    lo timestamptz;
    hi timestamptz;
    made int := 0;
    name text;
    stray boolean;
BEGIN
    PERFORM pg_advisory_xact_lock(815003);
    SELECT max(upper_bound) INTO lo FROM time_partitions
        WHERE parent_table = parent;
    IF lo IS NULL OR lo < since THEN
        lo := greatest(lo, date_bin(make_interval(days => days), since,
                                    timestamptz '2000-01-01 00:00:00+00'));
    END IF;
    WHILE lo < until LOOP
        hi := lo + make_interval(days => days);
        name := parent || '_' || to_char(lo AT TIME ZONE 'UTC', 'YYYYMMDD');
        EXECUTE format(
            'SELECT EXISTS (SELECT 1 FROM %I WHERE received_at >= %L '
            'AND received_at < %L)', parent || '_default', lo, hi) INTO stray;
        IF stray THEN
            -- Rows of this range were stored before it had a partition (in the
            -- default partition): move them into the new partition first.
            EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS)',
                name, parent);
            EXECUTE format(
                'WITH moved AS (DELETE FROM %I WHERE received_at >= %L '
                'AND received_at < %L RETURNING *) INSERT INTO %I '
                'SELECT * FROM moved', parent || '_default', lo, hi, name);
            EXECUTE format(
                'ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                parent, name, lo, hi);
        ELSE
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                name, parent, lo, hi);
        END IF;
        INSERT INTO time_partitions VALUES (parent, name, lo, hi);
        lo := hi;
        made := made + 1;
    END LOOP;
    RETURN made;
END $$
""",
    """
-- Drops the partitions of ``parent`` that end at or before ``before``.
CREATE OR REPLACE FUNCTION eventflow_drop_partitions(
    parent text, before timestamptz
) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    PERFORM pg_advisory_xact_lock(815003);
    FOR r IN SELECT partition_name FROM time_partitions
             WHERE parent_table = parent AND upper_bound <= before
             ORDER BY upper_bound LOOP
        EXECUTE format('DROP TABLE IF EXISTS %I', r.partition_name);
        DELETE FROM time_partitions
            WHERE parent_table = parent AND partition_name = r.partition_name;
        RETURN NEXT r.partition_name;
    END LOOP;
END $$
""",
]

# Keys and indexes of the partitioned tables (each is created on every partition).
INDEXES = {
    "raw_events": [
        "ALTER TABLE raw_events ADD PRIMARY KEY (event_id, received_at)",
        "CREATE INDEX ix_raw_events_unsettled ON raw_events (published_at) "
        "WHERE status = 'accepted'",
        "CREATE INDEX ix_raw_events_received_at ON raw_events (received_at)",
    ],
    "processed_events": [
        "ALTER TABLE processed_events ADD PRIMARY KEY (id, received_at)",
        "ALTER TABLE processed_events ADD CONSTRAINT uq_processed_events_event "
        "UNIQUE (event_id, received_at)",
        "CREATE INDEX ix_processed_events_type_time ON processed_events "
        "(event_type, processed_at)",
        "CREATE INDEX ix_processed_events_processed_at ON processed_events "
        "(processed_at)",
    ],
    "failed_events": [
        "ALTER TABLE failed_events ADD PRIMARY KEY (id, received_at)",
        "ALTER TABLE failed_events ADD CONSTRAINT uq_failed_events_event "
        "UNIQUE (event_id, received_at)",
        "CREATE INDEX ix_failed_events_failed_at ON failed_events (failed_at)",
        "CREATE INDEX ix_failed_events_type ON failed_events (event_type)",
    ],
}


def upgrade() -> None:
    for statement in CREATE_FUNCTIONS:
        op.execute(statement)
    if context.is_offline_mode():
        # A new database (scripts/init_db.sql): the tables are empty.
        _swap_tables()
        _create_partitions("now()")
        for table in TABLES:
            op.execute(f"DROP TABLE {OLD.format(table)}")
        return
    bind = op.get_bind()
    partitioned = bind.scalar(
        sa.text(
            "SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass('raw_events')"
        )
    )
    if not partitioned:
        _swap_tables()
        oldest = bind.scalar(
            sa.text(
                "SELECT min(t) FROM ("
                + " UNION ALL ".join(
                    f"SELECT min(received_at) AS t FROM {OLD.format(table)}"
                    for table in TABLES
                )
                + ") AS oldest"
            )
        )
        if oldest is not None:
            # Old rows: at most HISTORY partitions per table (a transaction can
            # only lock so many tables), each as many days long as that takes.
            days = max(1, -(-(time.time() - oldest.timestamp()) // 86400 // HISTORY))
            for table in TABLES:
                op.execute(
                    f"SELECT eventflow_create_partitions('{table}', "
                    f"'{oldest.isoformat()}', now(), {int(days)})"
                )
        _create_partitions("now()")
    # New events already go to the partitioned tables; move the old rows over.
    with context.get_context().autocommit_block():
        for table in TABLES:
            _move_rows(bind, table)
    for table in TABLES:
        op.execute(f"DROP TABLE IF EXISTS {OLD.format(table)}")


def _swap_tables() -> None:
    """Rename the old tables and create the partitioned ones in their place."""
    # failed_events gains the acceptance time of its event (or its failure time
    # when the entry held no event).
    op.execute("ALTER TABLE failed_events ADD COLUMN received_at timestamptz")
    op.execute(
        "UPDATE failed_events f SET received_at = coalesce("
        "(SELECT r.received_at FROM raw_events r WHERE r.event_id = f.event_id), "
        "f.failed_at)"
    )
    op.execute("ALTER TABLE failed_events ALTER COLUMN received_at SET NOT NULL")
    op.execute("ALTER TABLE failed_events ALTER COLUMN received_at SET DEFAULT now()")
    for table in TABLES:
        old = OLD.format(table)
        op.execute(f"ALTER TABLE {table} RENAME TO {old}")
        # Free the names of keys and indexes for the new table.
        for name in _index_names(table):
            op.execute(f"DROP INDEX IF EXISTS {name}")
        for constraint in (f"{table}_pkey", f"{table}_event_id_key"):
            op.execute(f"ALTER TABLE {old} DROP CONSTRAINT IF EXISTS {constraint}")
        op.execute(
            f"CREATE TABLE {table} (LIKE {old} INCLUDING DEFAULTS) "
            "PARTITION BY RANGE (received_at)"
        )
        for statement in INDEXES[table]:
            op.execute(statement)
        # Rows outside every range (a foreign stream entry's odd acceptance time)
        # are kept here rather than refused.
        op.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
        # The id sequences belong to the new tables (the old ones are dropped).
        if table != "raw_events":
            op.execute(f"ALTER SEQUENCE {table}_id_seq OWNED BY {table}.id")


def _index_names(table: str) -> list[str]:
    names = []
    for statement in INDEXES[table]:
        if statement.startswith("CREATE INDEX "):
            names.append(statement.split()[2])
    return names


def _create_partitions(since: str) -> None:
    for table in TABLES:
        op.execute(
            f"SELECT eventflow_create_partitions('{table}', {since}, "
            "now() + interval '7 days', 1)"
        )


def _move_rows(bind: sa.Connection, table: str) -> None:
    old = OLD.format(table)
    exists = bind.scalar(sa.text("SELECT to_regclass(:t) IS NOT NULL"), {"t": old})
    if not exists:
        return
    left = bind.scalar(sa.text(f"SELECT count(*) FROM {old}")) or 0
    if not left:
        return
    log.info("moving %d rows of %s into the partitioned table", left, table)
    moved, start = 0, time.monotonic()
    move = sa.text(
        f"WITH batch AS (DELETE FROM {old} WHERE ctid = ANY(ARRAY("
        f"SELECT ctid FROM {old} LIMIT :n)) RETURNING *) "
        f"INSERT INTO {table} SELECT * FROM batch ON CONFLICT DO NOTHING"
    )
    while True:
        result = bind.execute(move, {"n": BATCH})
        done = result.rowcount or 0
        if done == 0 and not bind.scalar(
            sa.text(f"SELECT EXISTS (SELECT 1 FROM {old})")
        ):
            break
        moved += done
        log.info(
            "%s: %d of %d rows moved (%.0f rows/s)",
            table,
            moved,
            left,
            moved / max(time.monotonic() - start, 1e-6),
        )


def downgrade() -> None:
    raise NotImplementedError(
        "partitioned tables are not converted back; restore a backup instead"
    )
