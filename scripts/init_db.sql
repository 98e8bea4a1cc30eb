-- EventFlow schema, generated from the Alembic migrations by
-- `eventflow migrate --sql`. Do not edit: change a migration instead.
BEGIN;

CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL, 
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

-- Running upgrade  -> 0001

CREATE TABLE failed_events (
    id BIGSERIAL NOT NULL, 
    event_id UUID NOT NULL, 
    event_type VARCHAR(64), 
    payload TEXT NOT NULL, 
    error TEXT NOT NULL, 
    error_type VARCHAR(128) NOT NULL, 
    attempts INTEGER DEFAULT 1 NOT NULL, 
    correlation_id VARCHAR(128), 
    stream_entry_id VARCHAR(64), 
    failed_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    replayed_at TIMESTAMP WITH TIME ZONE, 
    replay_count INTEGER DEFAULT 0 NOT NULL, 
    PRIMARY KEY (id), 
    UNIQUE (event_id)
);

CREATE INDEX ix_failed_events_failed_at ON failed_events (failed_at);

CREATE INDEX ix_failed_events_type ON failed_events (event_type);

CREATE TABLE processed_events (
    id BIGSERIAL NOT NULL, 
    event_id UUID NOT NULL, 
    event_type VARCHAR(64) NOT NULL, 
    user_id VARCHAR(255), 
    event_timestamp TIMESTAMP WITH TIME ZONE NOT NULL, 
    properties JSONB NOT NULL, 
    enrichment JSONB NOT NULL, 
    correlation_id VARCHAR(128), 
    received_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    processed_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    processed_by VARCHAR(255) NOT NULL, 
    attempts INTEGER DEFAULT 1 NOT NULL, 
    PRIMARY KEY (id), 
    UNIQUE (event_id)
);

CREATE INDEX ix_processed_events_processed_at ON processed_events (processed_at);

CREATE INDEX ix_processed_events_type_time ON processed_events (event_type, processed_at);

CREATE TABLE raw_events (
    event_id UUID NOT NULL, 
    event_type VARCHAR(64) NOT NULL, 
    user_id VARCHAR(255), 
    event_timestamp TIMESTAMP WITH TIME ZONE NOT NULL, 
    properties JSONB NOT NULL, 
    body_hash VARCHAR(64) NOT NULL, 
    correlation_id VARCHAR(128), 
    received_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    published_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    publish_count INTEGER DEFAULT 1 NOT NULL, 
    status VARCHAR(16) DEFAULT 'accepted' NOT NULL, 
    settled_at TIMESTAMP WITH TIME ZONE, 
    PRIMARY KEY (event_id)
);

CREATE INDEX ix_raw_events_received_at ON raw_events (received_at);

CREATE INDEX ix_raw_events_unsettled ON raw_events (published_at) WHERE status = 'accepted';

INSERT INTO alembic_version (version_num) VALUES ('0001') RETURNING alembic_version.version_num;

-- Running upgrade 0001 -> 0002

CREATE TABLE event_schemas (
    id BIGSERIAL NOT NULL, 
    event_type VARCHAR(64) NOT NULL, 
    version INTEGER NOT NULL, 
    schema JSONB NOT NULL, 
    compatibility VARCHAR(16) NOT NULL, 
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    PRIMARY KEY (id), 
    CONSTRAINT uq_event_schemas_version UNIQUE (event_type, version)
);

ALTER TABLE raw_events ADD COLUMN schema_version INTEGER;

ALTER TABLE processed_events ADD COLUMN schema_version INTEGER;

ALTER TABLE failed_events ADD COLUMN schema_version INTEGER;

INSERT INTO event_schemas (event_type, version, schema, compatibility) VALUES ('purchase', 1, '{"$schema": "https://json-schema.org/draft/2020-12/schema", "description": "A completed purchase: `properties.amount` is a positive number.", "properties": {"properties": {"properties": {"amount": {"exclusiveMinimum": 0, "type": "number"}}, "required": ["amount"], "type": "object"}}, "required": ["properties"], "title": "purchase", "type": "object"}'::jsonb, 'none');

INSERT INTO event_schemas (event_type, version, schema, compatibility) VALUES ('user_signup', 1, '{"$schema": "https://json-schema.org/draft/2020-12/schema", "description": "A new account: `user_id` is required.", "properties": {"user_id": {"minLength": 1, "type": "string"}}, "required": ["user_id"], "title": "user_signup", "type": "object"}'::jsonb, 'none');

INSERT INTO event_schemas (event_type, version, schema, compatibility) VALUES ('page_view', 1, '{"$schema": "https://json-schema.org/draft/2020-12/schema", "description": "A page view: the page is `properties.url` or `properties.page`.", "title": "page_view", "type": "object"}'::jsonb, 'none');

INSERT INTO event_schemas (event_type, version, schema, compatibility) VALUES ('custom', 1, '{"$schema": "https://json-schema.org/draft/2020-12/schema", "description": "Your own event: every property is free-form.", "title": "custom", "type": "object"}'::jsonb, 'none');

UPDATE alembic_version SET version_num='0002' WHERE alembic_version.version_num = '0001';

-- Running upgrade 0002 -> 0003

ALTER TABLE failed_events ALTER COLUMN event_type TYPE TEXT;

ALTER TABLE failed_events ALTER COLUMN error_type TYPE TEXT;

ALTER TABLE failed_events ALTER COLUMN correlation_id TYPE TEXT;

ALTER TABLE failed_events ALTER COLUMN stream_entry_id TYPE TEXT;

UPDATE alembic_version SET version_num='0003' WHERE alembic_version.version_num = '0002';

-- Running upgrade 0003 -> 0004

CREATE TABLE api_keys (
    id BIGSERIAL NOT NULL, 
    name TEXT NOT NULL, 
    prefix TEXT NOT NULL, 
    key_hash TEXT NOT NULL, 
    scope TEXT NOT NULL, 
    rate_limit FLOAT, 
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    revoked_at TIMESTAMP WITH TIME ZONE, 
    PRIMARY KEY (id), 
    CONSTRAINT uq_api_keys_name UNIQUE (name), 
    CONSTRAINT uq_api_keys_prefix UNIQUE (prefix), 
    CONSTRAINT ck_api_keys_scope CHECK (scope IN ('ingest', 'read', 'admin'))
);

CREATE TABLE audit_log (
    id BIGSERIAL NOT NULL, 
    at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    key_id BIGINT, 
    actor TEXT NOT NULL, 
    action TEXT NOT NULL, 
    target TEXT, 
    rows INTEGER, 
    details JSONB, 
    PRIMARY KEY (id)
);

CREATE INDEX ix_audit_log_at ON audit_log (at);

ALTER TABLE raw_events ADD COLUMN source TEXT;

UPDATE alembic_version SET version_num='0004' WHERE alembic_version.version_num = '0003';

-- Running upgrade 0004 -> 0005

ALTER TABLE raw_events ADD COLUMN partition_key TEXT;

CREATE TABLE partition_owners (
    stream TEXT NOT NULL, 
    partition INTEGER NOT NULL, 
    token BIGINT NOT NULL, 
    owner TEXT NOT NULL, 
    acquired_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    committed_at TIMESTAMP WITH TIME ZONE, 
    PRIMARY KEY (stream, partition)
);

UPDATE alembic_version SET version_num='0005' WHERE alembic_version.version_num = '0004';

-- Running upgrade 0005 -> 0006

CREATE TABLE IF NOT EXISTS time_partitions (
    parent_table text NOT NULL,
    partition_name text NOT NULL,
    lower_bound timestamptz NOT NULL,
    upper_bound timestamptz NOT NULL,
    PRIMARY KEY (parent_table, partition_name)
);

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
END $$;

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
END $$;

ALTER TABLE failed_events ADD COLUMN received_at timestamptz;

UPDATE failed_events f SET received_at = coalesce((SELECT r.received_at FROM raw_events r WHERE r.event_id = f.event_id), f.failed_at);

ALTER TABLE failed_events ALTER COLUMN received_at SET NOT NULL;

ALTER TABLE failed_events ALTER COLUMN received_at SET DEFAULT now();

ALTER TABLE raw_events RENAME TO raw_events_unpartitioned;

DROP INDEX IF EXISTS ix_raw_events_unsettled;

DROP INDEX IF EXISTS ix_raw_events_received_at;

ALTER TABLE raw_events_unpartitioned DROP CONSTRAINT IF EXISTS raw_events_pkey;

ALTER TABLE raw_events_unpartitioned DROP CONSTRAINT IF EXISTS raw_events_event_id_key;

CREATE TABLE raw_events (LIKE raw_events_unpartitioned INCLUDING DEFAULTS) PARTITION BY RANGE (received_at);

ALTER TABLE raw_events ADD PRIMARY KEY (event_id, received_at);

CREATE INDEX ix_raw_events_unsettled ON raw_events (published_at) WHERE status = 'accepted';

CREATE INDEX ix_raw_events_received_at ON raw_events (received_at);

CREATE TABLE raw_events_default PARTITION OF raw_events DEFAULT;

ALTER TABLE processed_events RENAME TO processed_events_unpartitioned;

DROP INDEX IF EXISTS ix_processed_events_type_time;

DROP INDEX IF EXISTS ix_processed_events_processed_at;

ALTER TABLE processed_events_unpartitioned DROP CONSTRAINT IF EXISTS processed_events_pkey;

ALTER TABLE processed_events_unpartitioned DROP CONSTRAINT IF EXISTS processed_events_event_id_key;

CREATE TABLE processed_events (LIKE processed_events_unpartitioned INCLUDING DEFAULTS) PARTITION BY RANGE (received_at);

ALTER TABLE processed_events ADD PRIMARY KEY (id, received_at);

ALTER TABLE processed_events ADD CONSTRAINT uq_processed_events_event UNIQUE (event_id, received_at);

CREATE INDEX ix_processed_events_type_time ON processed_events (event_type, processed_at);

CREATE INDEX ix_processed_events_processed_at ON processed_events (processed_at);

CREATE TABLE processed_events_default PARTITION OF processed_events DEFAULT;

ALTER SEQUENCE processed_events_id_seq OWNED BY processed_events.id;

ALTER TABLE failed_events RENAME TO failed_events_unpartitioned;

DROP INDEX IF EXISTS ix_failed_events_failed_at;

DROP INDEX IF EXISTS ix_failed_events_type;

ALTER TABLE failed_events_unpartitioned DROP CONSTRAINT IF EXISTS failed_events_pkey;

ALTER TABLE failed_events_unpartitioned DROP CONSTRAINT IF EXISTS failed_events_event_id_key;

CREATE TABLE failed_events (LIKE failed_events_unpartitioned INCLUDING DEFAULTS) PARTITION BY RANGE (received_at);

ALTER TABLE failed_events ADD PRIMARY KEY (id, received_at);

ALTER TABLE failed_events ADD CONSTRAINT uq_failed_events_event UNIQUE (event_id, received_at);

CREATE INDEX ix_failed_events_failed_at ON failed_events (failed_at);

CREATE INDEX ix_failed_events_type ON failed_events (event_type);

CREATE TABLE failed_events_default PARTITION OF failed_events DEFAULT;

ALTER SEQUENCE failed_events_id_seq OWNED BY failed_events.id;

SELECT eventflow_create_partitions('raw_events', now(), now() + interval '7 days', 1);

SELECT eventflow_create_partitions('processed_events', now(), now() + interval '7 days', 1);

SELECT eventflow_create_partitions('failed_events', now(), now() + interval '7 days', 1);

DROP TABLE raw_events_unpartitioned;

DROP TABLE processed_events_unpartitioned;

DROP TABLE failed_events_unpartitioned;

UPDATE alembic_version SET version_num='0006' WHERE alembic_version.version_num = '0005';

-- Running upgrade 0006 -> 0007

CREATE TABLE reprocess_runs (
    id BIGSERIAL NOT NULL, 
    started_by TEXT NOT NULL, 
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    from_ts TIMESTAMP WITH TIME ZONE NOT NULL, 
    to_ts TIMESTAMP WITH TIME ZONE NOT NULL, 
    event_type TEXT, 
    dry_run BOOLEAN NOT NULL, 
    rate_limit FLOAT, 
    state TEXT DEFAULT 'pending' NOT NULL, 
    total BIGINT DEFAULT '0' NOT NULL, 
    done BIGINT DEFAULT '0' NOT NULL, 
    changed BIGINT DEFAULT '0' NOT NULL, 
    failed BIGINT DEFAULT '0' NOT NULL, 
    cursor_received_at TIMESTAMP WITH TIME ZONE, 
    cursor_event_id UUID, 
    last_error TEXT, 
    updated_at TIMESTAMP WITH TIME ZONE, 
    finished_at TIMESTAMP WITH TIME ZONE, 
    PRIMARY KEY (id)
);

ALTER TABLE processed_events ADD COLUMN reprocessed_at TIMESTAMP WITH TIME ZONE;

ALTER TABLE processed_events ADD COLUMN reprocess_run_id BIGINT;

UPDATE alembic_version SET version_num='0007' WHERE alembic_version.version_num = '0006';

-- Running upgrade 0007 -> 0008

CREATE INDEX ix_raw_events_time_id ON raw_events (received_at, event_id);

CREATE INDEX ix_raw_events_type_time ON raw_events (event_type, received_at, event_id);

CREATE INDEX ix_raw_events_user_time ON raw_events (user_id, received_at, event_id);

CREATE INDEX ix_raw_events_unprocessed_time ON raw_events (received_at, event_id) WHERE status <> 'processed';

CREATE INDEX ix_raw_events_correlation ON raw_events (correlation_id, received_at, event_id);

CREATE INDEX ix_failed_events_type_id ON failed_events (event_type, id);

CREATE INDEX ix_failed_events_error_type_id ON failed_events (error_type, id);

DROP INDEX IF EXISTS ix_raw_events_received_at;

DROP INDEX IF EXISTS ix_failed_events_type;

UPDATE alembic_version SET version_num='0008' WHERE alembic_version.version_num = '0007';

-- Running upgrade 0008 -> 0009

CREATE TABLE IF NOT EXISTS unsettled_events (
            received_at timestamptz NOT NULL,
            event_id uuid NOT NULL,
            PRIMARY KEY (received_at, event_id)
        );

INSERT INTO unsettled_events (received_at, event_id)
        SELECT received_at, event_id FROM raw_events
        WHERE status = 'accepted'
        ON CONFLICT DO NOTHING;

CREATE INDEX ix_raw_events_failed_time ON raw_events (received_at, event_id) WHERE status IN ('failed', 'quarantined');

DROP INDEX IF EXISTS ix_raw_events_unsettled;

DROP INDEX IF EXISTS ix_raw_events_unprocessed_time;

UPDATE alembic_version SET version_num='0009' WHERE alembic_version.version_num = '0008';

COMMIT;

