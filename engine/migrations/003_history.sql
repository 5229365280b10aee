-- postrelay schema, version 3: a history of delivered records, for
-- retention and replay.
--
-- Only an engine with Config.Retention > 0 writes here: its completion
-- statement moves each delivered record from records into history, in the
-- same statement that deletes it. The table is partitioned by delivery day
-- (UTC); the engine creates the partitions of the coming days ahead and
-- drops a day's partition whole once all of it is older than the
-- retention, so expiring history costs no per-row work. Without Retention
-- the table stays empty and no partition is ever created.

CREATE TABLE {{schema}}.history (
    id           bigint      NOT NULL,
    partition    int         NOT NULL,
    key          text        NOT NULL,
    topic        text        NOT NULL,
    message_id   text        NOT NULL,
    payload      bytea       NOT NULL,
    metadata     jsonb       NOT NULL,
    created_at   timestamptz NOT NULL,
    attempts     int         NOT NULL,
    delivered_at timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (delivered_at);

-- Replay pages through the selected window in id order, filtering topic
-- and key as it goes: one narrow index on id. An index on (topic, key, id)
-- made completions with Retention cost about 2.5 times the machine CPU
-- per record of completions without it in smoke drains (about 1.8 times
-- with no index at all), so the hot path keeps only this one.
CREATE INDEX history_id ON {{schema}}.history (id);
