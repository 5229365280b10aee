-- postrelay schema, version 5: history keeps one row per completion
-- statement (a batch of delivered records) instead of one per record.
--
-- In version 3 every delivered record was written a second time as its own
-- history row, with an index entry: about 310 bytes of WAL and two WAL
-- records per record on top of the delete's 54, and drains with Retention
-- ran about a third slower than without. Now the completion statement
-- inserts one row per statement holding the delivered records as aligned
-- arrays (TOASTed, lz4-compressed where the server has lz4): one heap row,
-- one index entry and a few TOAST chunks per batch. Replay unnests them.
--
-- Existing history rows move into the new table (one row per delivery day
-- and 1,000 ids) with their day partitions, and the version 3 table is
-- dropped. The table is locked meanwhile; a large history makes this
-- migration correspondingly long.

ALTER TABLE {{schema}}.history RENAME TO history_v3;
ALTER INDEX {{schema}}.history_id RENAME TO history_v3_id;
DO $$
DECLARE
    p record;
BEGIN
    FOR p IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = '{{schema}}.history_v3'::regclass
    LOOP
        EXECUTE format('ALTER TABLE {{schema}}.%I RENAME TO %I', p.relname, 'v3_' || p.relname);
    END LOOP;
END
$$;

-- One row per completion statement that delivered records. The arrays are
-- aligned: element i of each describes the same record. first_id/last_id
-- and min_created_at/max_created_at bound the batch for Replay, n counts
-- its records. Delivery attempts are not kept (replay does not use them).
CREATE TABLE {{schema}}.history (
    delivered_at   timestamptz   NOT NULL DEFAULT now(),
    first_id       bigint        NOT NULL,
    last_id        bigint        NOT NULL,
    n              int           NOT NULL,
    min_created_at timestamptz   NOT NULL,
    max_created_at timestamptz   NOT NULL,
    ids            bigint[]      NOT NULL,
    partitions     int[]         NOT NULL,
    keys           text[]        NOT NULL,
    topics         text[]        NOT NULL,
    message_ids    text[]        NOT NULL,
    payloads       bytea[]       NOT NULL,
    metadata       jsonb[]       NOT NULL,
    created_at     timestamptz[] NOT NULL
) PARTITION BY RANGE (delivered_at);

-- lz4 where the server was built with it (PostgreSQL 14 or later); else
-- the default compression.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE {{schema}}.history
        ALTER ids SET COMPRESSION lz4, ALTER partitions SET COMPRESSION lz4,
        ALTER keys SET COMPRESSION lz4, ALTER topics SET COMPRESSION lz4,
        ALTER message_ids SET COMPRESSION lz4, ALTER payloads SET COMPRESSION lz4,
        ALTER metadata SET COMPRESSION lz4, ALTER created_at SET COMPRESSION lz4';
EXCEPTION WHEN feature_not_supported OR syntax_error THEN
    RAISE NOTICE 'postrelay: history keeps the default compression (no lz4 here): %', SQLERRM;
END
$$;

-- Replay pages through batches in first_id order: one entry per batch.
CREATE INDEX history_first_id ON {{schema}}.history (first_id);

-- The version 3 rows: a partition per day they hold, then one batch per
-- day and 1,000 ids.
DO $$
DECLARE
    d date;
BEGIN
    FOR d IN SELECT DISTINCT (delivered_at AT TIME ZONE 'UTC')::date FROM {{schema}}.history_v3
    LOOP
        EXECUTE format('CREATE TABLE {{schema}}.%I PARTITION OF {{schema}}.history FOR VALUES FROM (%L) TO (%L)',
            'history_p' || to_char(d, 'YYYYMMDD'), d::text || 'T00:00:00Z', (d + 1)::text || 'T00:00:00Z');
    END LOOP;
END
$$;

INSERT INTO {{schema}}.history (delivered_at, first_id, last_id, n, min_created_at, max_created_at,
    ids, partitions, keys, topics, message_ids, payloads, metadata, created_at)
SELECT max(delivered_at), min(id), max(id), count(*), min(created_at), max(created_at),
       array_agg(id ORDER BY id), array_agg(partition ORDER BY id), array_agg(key ORDER BY id),
       array_agg(topic ORDER BY id), array_agg(message_id ORDER BY id), array_agg(payload ORDER BY id),
       array_agg(metadata ORDER BY id), array_agg(created_at ORDER BY id)
FROM {{schema}}.history_v3
GROUP BY (delivered_at AT TIME ZONE 'UTC')::date, id / 1000;

DROP TABLE {{schema}}.history_v3;
