// Package engine is postrelay's transactional outbox: the Writer that stores
// records in the caller's transaction, and the Engine that relays committed
// records to any Watermill message.Publisher, at least once, in order per
// key, across any number of relay instances.
//
// # Model
//
// Records live in <schema>.records, spread over a fixed number of partitions
// (default 64, fixed at Migrate) by MurmurHash3 x86_32 of the key:
// (murmur3(key) & 0x7fffffff) % partitions. The same function exists in SQL
// as <schema>.partition_for, and <schema>.enqueue writes a record from any
// SQL client or trigger with the same partitioning.
//
// Each Engine runs a coordinator actor and one partition actor per partition
// it owns, each in its own supervised goroutine (package actors). The
// coordinator heartbeats into <schema>.instances, computes which partitions
// are its own by rendezvous hashing over the live instances, and holds a
// lease on each. A partition actor fetches available records in id order,
// skipping records whose key has an earlier record held back (delivery delay
// or retry backoff), publishes each through the publisher, and completes the
// batch in one statement fenced by its lease: delivered rows are deleted,
// failed ones get attempts+1 and a backoff, exhausted ones (and those whose
// Publish error wraps ErrPermanent, see Permanent) move to
// <schema>.dead_letters. With Config.Retention the actor also encodes its
// delivered records into one batch (history_format.go), which the
// completion inserts as the partition's row of <schema>.history (one row
// per partition and statement, written only if the lease held),
// partitioned by day and dropped a day at a time (retention.go); Replay
// decodes the batches to re-publish their records. Records
// are found by a tail poll (listener.go): while records arrive it runs
// every TailInterval (2 ms; after a poll that took more than a quarter of
// that, three times as long as it took, at most TailInterval, goes by
// before the next), and in one statement probes the end of each
// waiting partition's key range above the highest id it saw (less
// tailLookback, for transactions that committed after that of a higher
// id) and fetches, for every partition
// with new records whose actor waits for work, that partition's oldest
// available records; each actor gets its batch through its handoff
// (handoff.go: a generation-fenced claim, so a partition is never fetched
// by the tail and its actor at once). An actor that delivered every record
// of a handed batch leaves its completion to the next tail poll and waits:
// that poll's statement deletes the batch's records under the lease fence
// (the same fence a completion has) before it fetches, so at steady load
// one statement per poll both completes and fetches (handoff.go, tailDone).
// A second without new records spaces
// the polls out to 20 a second. An actor fetches on its own at start, in a
// backlog (its last batch was full), and when its timer fires (a held
// record due, PollInterval). The Writer NOTIFYs on commit at most once per
// NotifyInterval (250 ms), not for every record: a notifying commit holds
// PostgreSQL's notification lock until it is durable, which serialized the
// application's commits when writes notified every 2 ms. A notification
// wakes the tail poll and puts it back to TailInterval, for the first
// record after a quiet spell.
//
// The actors' database work goes through a batcher, as concurrent commits
// go through PostgreSQL's group commit: fetches (and completions) requested
// while statements of their kind are running go out together in the next
// one, one LATERAL branch (one fenced lease check) per partition. There is
// no worker goroutine: the caller that finds a free slot leads, running the
// statement on its own goroutine for everyone queued, then hands the slot
// to the next waiter. A lone request costs what a direct query costs; under
// load one round trip serves many partitions, and at most two statements
// of each kind run at a time, so the engine's connections stay bounded
// whatever the partition count. When completions start within two
// milliseconds of each other, a leader first waits one millisecond for the
// actors about to complete (as commit_delay does for commits); the batches
// one tail poll handed over that complete on their own (a retry, a dead
// letter, a full batch, Retention; the rest ride the next poll) form a
// cohort, whose first completion waits (up to that millisecond) for the
// rest, so that they complete in one statement. The fetch also
// reports when the partition's next held record becomes available, so an
// idle actor sleeps exactly until then.
//
// These delivery statements (and the tail poll) run on the engine's own
// pool of Config.DeliveryConns (five) connections, built from the given
// pool's configuration, opened and prepared when Run starts. Its sessions use generic plans (the
// statements take array parameters that change every call, and PostgreSQL
// would otherwise plan them anew on every execution), plan them on the
// indexes alone (enable_seqscan and enable_bitmapscan off: a generic plan
// built on an empty table otherwise scanned the whole table on every fetch
// once a backlog grew), and commit with synchronous_commit off: a
// completion does not wait for its WAL flush. A crash of PostgreSQL itself
// can therefore forget the last completions (about three wal_writer_delay,
// 600 ms by default); their records are still pending and are published
// again — duplicates, never loss, and no lease decision rests on an
// unflushed completion, since the synchronous commit of a takeover flushes
// the WAL before it.
//
// # Leases and fencing
//
// A lease is the row <schema>.partitions(partition, owner, epoch,
// lease_until). All times are the database's now().
//
//	           acquire: owner=me, epoch=epoch+1, lease_until=now()+TTL
//	           (only if owner IS NULL, or lease_until <= now(), or owner=me)
//	┌──────┐ ───────────────────────────────────────────────▶ ┌──────┐
//	│ free │                                                    │ held │──┐ renew every heartbeat:
//	└──────┘ ◀─────────────────────────────────────────────── └──────┘◀─┘ lease_until=now()+TTL
//	    ▲      release (rebalance, shutdown): owner=NULL          │        WHERE owner=me AND epoch=e
//	    │      WHERE owner=me AND epoch=e                         │
//	    └──────────── lease_until passes without renewal ─────────┘
//	                  (crash, pause, partition): "expired", which
//	                  acquire treats as free
//
// The fencing rules:
//
//  1. Every acquisition increments epoch. An actor is bound to the epoch it
//     was started with.
//  2. Completing a batch is one statement that first locks the partition row
//     (FOR SHARE) WHERE owner=me AND epoch=e AND lease_until > now(). If that
//     finds no row, the statement writes nothing for that partition and its
//     actor stops with ErrLeaseLost. The row lock serializes completion with
//     a takeover, so a stale owner (paused past its lease, or cut off) can
//     never commit progress after another instance acquired the partition.
//     When one statement completes several partitions' batches, each row
//     change is joined to its own partition's lease, so each batch is
//     fenced on its own; rows are locked in partition order (as acquire and
//     renew lock theirs), so concurrent statements cannot deadlock.
//  3. An actor publishes only while its local lease deadline — the local
//     time the last successful renewal was sent plus LeaseTTL — lies in the
//     future. Since the database set lease_until from a later now(), an
//     owner stops publishing before another instance can acquire the lease
//     (barring clock-rate drift larger than the TTL), so two live instances
//     do not publish one partition at the same time.
//  4. A graceful stop finishes and completes the batch in flight, then
//     releases the leases at once: other instances take over on their next
//     heartbeat instead of after the TTL.
//
// A publish whose completion is fenced off (or never committed, as when the
// process is killed, or not yet flushed when PostgreSQL crashed) is
// published again by the next owner: delivery is at least once, never
// exactly once. Consumers deduplicate by message UUID,
// which is the record's message id, stable across attempts.
//
// # Actors
//
// Run opens the store (schema version check, partition count, delivery
// pool), builds the batcher and each actor's dependencies, and starts a
// supervision tree (package actors):
//
//	root supervisor ─┬─ listener      LISTEN, wakes the tail poll
//	                 ├─ tail poll     completes the batches left to it, fetches new records for the waiting partition actors
//	                 └─ coordinator   heartbeats, leases ── partition actors, one per owned partition
//
// Every actor gets what it uses in its own deps struct (partitionDeps,
// coordinatorDeps, listenerDeps, tailDeps), and a restart builds a new
// actor from them. The coordinator supervises its partition actors, talks to
// each through a typed reference (renewed until, lost) and learns of each
// exit as a message in its own mailbox (actors.Watch).
//
// # Events
//
// A partition actor's state — its lease (epoch, held, local deadline), the
// retry its last batch scheduled, the estimate of the broker's round trip —
// changes only in apply, by events whose fact is already in PostgreSQL: the
// lease read from the partitions row when the actor starts, renewals and a
// loss found by the coordinator's renewal statement, a loss found by a
// fenced completion, and a batch's outcomes once its completion committed.
// Every start, the first and every restart after a failure, builds a new
// actor that reads its lease from the database before it fetches anything,
// so a restarted actor whose lease was taken over meanwhile publishes
// nothing.
//
// The outcome events a partition actor applies (batch fetched, delivered,
// failed, dead-lettered) are the ones Engine.Events and the Observer
// (metrics, package tracing) receive. The lease events they receive
// (acquired, released, lost) are the coordinator's, emitted when its
// statement committed or when a partition actor exited on a fenced
// completion; each lease ends with exactly one of released or lost.
package engine
