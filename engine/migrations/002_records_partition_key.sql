-- postrelay schema, version 2: records are keyed by (partition, id).
--
-- Version 1 had a primary key on id alone plus an index on (partition, id).
-- Every insert went to the rightmost leaf of the id index, so concurrent
-- writers queued on that one page; keyed by (partition, id) they spread
-- over the partitions, and each insert maintains one index instead of two.
-- Every statement of the relay names the partition of the records it
-- touches. The table is locked while the new key is built (it holds only
-- pending records, so this is short).

ALTER TABLE {{schema}}.records DROP CONSTRAINT records_pkey;
DROP INDEX {{schema}}.records_partition_id;
ALTER TABLE {{schema}}.records ADD CONSTRAINT records_pkey PRIMARY KEY (partition, id);
