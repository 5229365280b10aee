-- postrelay schema, version 1.
-- {{schema}} is the quoted schema name, {{partitions}} the partition count
-- fixed at creation. Run through engine.Migrate or `postrelay migrate`, or
-- render with `postrelay migrate --print` for other migration tools.

CREATE TABLE {{schema}}.meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

INSERT INTO {{schema}}.meta (key, value) VALUES ('partitions', '{{partitions}}');

-- Pending records. Delivered rows are deleted by the relay in bulk.
-- available_at is NULL for a record that may be delivered at once, and set for
-- one held back by a delivery delay or a retry backoff (a small partial index).
CREATE TABLE {{schema}}.records (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    partition    int         NOT NULL CHECK (partition >= 0 AND partition < {{partitions}}),
    key          text        NOT NULL,
    topic        text        NOT NULL CHECK (topic <> ''),
    message_id   text        NOT NULL,
    payload      bytea       NOT NULL,
    metadata     jsonb       NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    available_at timestamptz,
    attempts     int         NOT NULL DEFAULT 0,
    last_error   text
);

CREATE INDEX records_partition_id ON {{schema}}.records (partition, id);
CREATE INDEX records_held ON {{schema}}.records (partition, available_at) WHERE available_at IS NOT NULL;

CREATE TABLE {{schema}}.partitions (
    partition   int PRIMARY KEY,
    owner       text,
    epoch       bigint      NOT NULL DEFAULT 0,
    lease_until timestamptz
);

INSERT INTO {{schema}}.partitions (partition)
SELECT p FROM generate_series(0, {{partitions}} - 1) AS p;

CREATE TABLE {{schema}}.instances (
    id           text PRIMARY KEY,
    hostname     text        NOT NULL,
    pid          int         NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE {{schema}}.dead_letters (
    id               bigint PRIMARY KEY,
    partition        int         NOT NULL,
    key              text        NOT NULL,
    topic            text        NOT NULL,
    message_id       text        NOT NULL,
    payload          bytea       NOT NULL,
    metadata         jsonb       NOT NULL,
    created_at       timestamptz NOT NULL,
    attempts         int         NOT NULL,
    last_error       text,
    dead_lettered_at timestamptz NOT NULL DEFAULT now()
);

-- MurmurHash3 x86_32 with seed 0 over the UTF-8 bytes of key, the same
-- function as the Go writer (engine.Partition); arithmetic is done on bigint
-- and masked to 32 bits.
CREATE FUNCTION {{schema}}.murmur3_32(key text) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    data   bytea  := convert_to(key, 'UTF8');
    len    int    := length(data);
    nblock int    := len / 4;
    h      bigint := 0;
    k      bigint;
    i      int;
    tail   int;
    c1     constant bigint := 3432918353; -- 0xcc9e2d51
    c2     constant bigint := 461845907;  -- 0x1b873593
    m32    constant bigint := 4294967295;
BEGIN
    FOR i IN 0 .. nblock - 1 LOOP
        k := get_byte(data, i*4)::bigint
           | (get_byte(data, i*4 + 1)::bigint << 8)
           | (get_byte(data, i*4 + 2)::bigint << 16)
           | (get_byte(data, i*4 + 3)::bigint << 24);
        k := ((k * (c1 & 65535)) + (((k * (c1 >> 16)) & 65535) << 16)) & m32;
        k := ((k << 15) | (k >> 17)) & m32;
        k := ((k * (c2 & 65535)) + (((k * (c2 >> 16)) & 65535) << 16)) & m32;
        h := h # k;
        h := ((h << 13) | (h >> 19)) & m32;
        h := (h * 5 + 3864292196) & m32; -- 0xe6546b64
    END LOOP;
    tail := len & 3;
    IF tail > 0 THEN
        k := 0;
        IF tail >= 3 THEN k := k # (get_byte(data, nblock*4 + 2)::bigint << 16); END IF;
        IF tail >= 2 THEN k := k # (get_byte(data, nblock*4 + 1)::bigint << 8); END IF;
        k := k # get_byte(data, nblock*4)::bigint;
        k := ((k * (c1 & 65535)) + (((k * (c1 >> 16)) & 65535) << 16)) & m32;
        k := ((k << 15) | (k >> 17)) & m32;
        k := ((k * (c2 & 65535)) + (((k * (c2 >> 16)) & 65535) << 16)) & m32;
        h := h # k;
    END IF;
    h := h # len;
    h := h # (h >> 16);
    h := ((h * (2246822507 & 65535)) + (((h * (2246822507 >> 16)) & 65535) << 16)) & m32; -- 0x85ebca6b
    h := h # (h >> 13);
    h := ((h * (3266489909 & 65535)) + (((h * (3266489909 >> 16)) & 65535) << 16)) & m32; -- 0xc2b2ae35
    h := h # (h >> 16);
    RETURN h;
END;
$$;

-- partition_for maps a key to its partition: (murmur3_32(key) & 0x7fffffff) % partitions.
CREATE FUNCTION {{schema}}.partition_for(key text) RETURNS int
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT (({{schema}}.murmur3_32(key) & 2147483647) % {{partitions}})::int
$$;

-- enqueue writes one record from any SQL client or trigger, with the same
-- partitioning as the Go writer, and wakes the relay when the transaction
-- commits. An empty or NULL key means "no ordering": the message id is used.
CREATE FUNCTION {{schema}}.enqueue(
    topic         text,
    key           text,
    payload       bytea,
    metadata      jsonb       DEFAULT '{}',
    deliver_after timestamptz DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    msg_id text := gen_random_uuid()::text;
    k      text := coalesce(nullif(key, ''), msg_id);
    p      int;
    rid    bigint;
BEGIN
    IF topic IS NULL OR topic = '' THEN
        RAISE EXCEPTION 'postrelay.enqueue: topic must not be empty';
    END IF;
    IF payload IS NULL THEN
        RAISE EXCEPTION 'postrelay.enqueue: payload must not be NULL';
    END IF;
    p := {{schema}}.partition_for(k);
    INSERT INTO {{schema}}.records (partition, key, topic, message_id, payload, metadata, available_at)
    VALUES (p, k, topic, msg_id, payload, coalesce(metadata, '{}'),
            CASE WHEN deliver_after > now() THEN deliver_after END)
    RETURNING id INTO rid;
    PERFORM pg_notify('{{channel}}', p::text);
    RETURN rid;
END;
$$;
