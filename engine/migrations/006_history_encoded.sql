-- postrelay schema, version 6: a history row is one partition's share of a
-- completion statement, its records encoded by the relay into one bytea.
--
-- In version 5 the completion statement returned every delivered row from
-- its DELETE and aggregated the rows into eight arrays: per record a
-- RETURNING projection, a tuplestore row and eight array elements, and
-- arrays growing to the whole statement's records (drains complete several
-- thousand records per statement). That cost about 2 µs of backend CPU per
-- record at 1,000 records per statement and more for larger ones. Now the
-- relay, which holds the records it published, encodes each partition's
-- delivered records (engine/history_format.go) and the statement inserts
-- the values it is given, joined to the lease check: a partition's history
-- row is written if and only if its fence held, in the statement that
-- deletes its records.
--
-- Existing version 5 batches are re-encoded in SQL, one row per batch and
-- partition, into partitions of the same days; the version 5 table is
-- dropped. The table is locked meanwhile.

ALTER TABLE {{schema}}.history RENAME TO history_v5;
ALTER INDEX {{schema}}.history_first_id RENAME TO history_v5_first_id;
DO $$
DECLARE
    p record;
BEGIN
    FOR p IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = '{{schema}}.history_v5'::regclass
    LOOP
        EXECUTE format('ALTER TABLE {{schema}}.%I RENAME TO %I', p.relname, 'v5_' || p.relname);
    END LOOP;
END
$$;

-- One row per partition and completion statement. records is the batch
-- (format 1: a version byte, then per record id int8, partition int4,
-- created_at as int8 microseconds since the Unix epoch, and the key, topic,
-- message id, metadata JSON text and payload each as an int4 length and
-- its bytes, all integers big-endian); first_id/last_id and
-- min_created_at/max_created_at bound it for Replay, n counts its records.
CREATE TABLE {{schema}}.history (
    delivered_at   timestamptz NOT NULL DEFAULT now(),
    partition      int         NOT NULL,
    first_id       bigint      NOT NULL,
    last_id        bigint      NOT NULL,
    n              int         NOT NULL,
    min_created_at timestamptz NOT NULL,
    max_created_at timestamptz NOT NULL,
    records        bytea       NOT NULL
) PARTITION BY RANGE (delivered_at);

DO $$
BEGIN
    EXECUTE 'ALTER TABLE {{schema}}.history ALTER records SET COMPRESSION lz4';
EXCEPTION WHEN feature_not_supported OR syntax_error THEN
    RAISE NOTICE 'postrelay: history keeps the default compression (no lz4 here): %', SQLERRM;
END
$$;

CREATE INDEX history_first_id ON {{schema}}.history (first_id);

-- history_records(batch) reads a batch's records, for queries by hand:
--   SELECT r.* FROM history h, history_records(h.records) r WHERE r.key = 'acct-42';
CREATE FUNCTION {{schema}}.history_records(batch bytea)
RETURNS TABLE (id bigint, partition int, created_at timestamptz, key text, topic text,
               message_id text, metadata jsonb, payload bytea)
LANGUAGE plpgsql IMMUTABLE STRICT AS $fn$
DECLARE
    off int := 2; -- 1-based; byte 1 is the format
    len int;
    fields text[];
    i int;
BEGIN
    IF length(batch) = 0 OR get_byte(batch, 0) <> 1 THEN
        RAISE EXCEPTION 'postrelay: history batch: unknown format';
    END IF;
    WHILE off <= length(batch) LOOP
        id := ('x' || encode(substring(batch FROM off FOR 8), 'hex'))::bit(64)::bigint;
        partition := ('x' || encode(substring(batch FROM off + 8 FOR 4), 'hex'))::bit(32)::int;
        created_at := to_timestamp(0) + ('x' || encode(substring(batch FROM off + 12 FOR 8), 'hex'))::bit(64)::bigint
                      * interval '1 microsecond';
        off := off + 20;
        fields := '{}';
        FOR i IN 1..4 LOOP
            len := ('x' || encode(substring(batch FROM off FOR 4), 'hex'))::bit(32)::int;
            fields := fields || convert_from(substring(batch FROM off + 4 FOR len), 'UTF8');
            off := off + 4 + len;
        END LOOP;
        key := fields[1]; topic := fields[2]; message_id := fields[3]; metadata := fields[4]::jsonb;
        len := ('x' || encode(substring(batch FROM off FOR 4), 'hex'))::bit(32)::int;
        payload := substring(batch FROM off + 4 FOR len);
        off := off + 4 + len;
        RETURN NEXT;
    END LOOP;
END
$fn$;

-- The version 5 rows: a partition per day they hold, then one batch per
-- version 5 batch and partition.
DO $$
DECLARE
    d date;
BEGIN
    FOR d IN SELECT DISTINCT (delivered_at AT TIME ZONE 'UTC')::date FROM {{schema}}.history_v5
    LOOP
        EXECUTE format('CREATE TABLE {{schema}}.%I PARTITION OF {{schema}}.history FOR VALUES FROM (%L) TO (%L)',
            'history_p' || to_char(d, 'YYYYMMDD'), d::text || 'T00:00:00Z', (d + 1)::text || 'T00:00:00Z');
    END LOOP;
END
$$;

INSERT INTO {{schema}}.history (delivered_at, partition, first_id, last_id, n, min_created_at, max_created_at, records)
SELECT b.delivered_at, r.partition, min(r.id), max(r.id), count(*), min(r.created_at), max(r.created_at),
       '\x01'::bytea || string_agg(
           int8send(r.id) || int4send(r.partition)
           || int8send((extract(epoch FROM r.created_at) * 1000000)::bigint)
           || int4send(octet_length(convert_to(r.key, 'UTF8'))) || convert_to(r.key, 'UTF8')
           || int4send(octet_length(convert_to(r.topic, 'UTF8'))) || convert_to(r.topic, 'UTF8')
           || int4send(octet_length(convert_to(r.message_id, 'UTF8'))) || convert_to(r.message_id, 'UTF8')
           || int4send(octet_length(convert_to(r.metadata::text, 'UTF8'))) || convert_to(r.metadata::text, 'UTF8')
           || int4send(length(r.payload)) || r.payload,
           ''::bytea ORDER BY r.id)
FROM {{schema}}.history_v5 b
CROSS JOIN LATERAL unnest(b.ids, b.partitions, b.keys, b.topics, b.message_ids, b.payloads, b.metadata, b.created_at)
    AS r(id, partition, key, topic, message_id, payload, metadata, created_at)
GROUP BY b.tableoid, b.ctid, b.delivered_at, r.partition;

DROP TABLE {{schema}}.history_v5;
