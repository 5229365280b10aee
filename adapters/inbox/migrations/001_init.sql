-- postrelay inbox schema, version 1.
-- {{schema}} is the quoted schema name. Run through inbox.Migrate or
-- `postrelay inbox migrate`, or render with `postrelay inbox migrate --print`
-- for other migration tools.

-- One row per consumer name: registered by inbox.New, read by purges (each
-- consumer's own retention).
CREATE TABLE {{schema}}.consumers (
    name          text        PRIMARY KEY CHECK (name <> ''),
    retention     interval    NOT NULL CHECK (retention > interval '0'),
    registered_at timestamptz NOT NULL DEFAULT now(),
    purged_at     timestamptz
);

-- One row per message a consumer applied. The primary key is the claim: a
-- second INSERT of the same (consumer, message_id) waits for the first
-- transaction and, if it committed, inserts nothing.
CREATE TABLE {{schema}}.processed (
    consumer     text        NOT NULL,
    message_id   text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

-- Purges walk this index from the oldest row and delete in bounded batches.
CREATE INDEX processed_consumer_processed_at ON {{schema}}.processed (consumer, processed_at);
