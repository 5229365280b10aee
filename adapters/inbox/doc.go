// Package inbox is the consumer half of postrelay: a transactional inbox
// that gives Watermill consumers on any broker exactly-once effects in
// PostgreSQL.
//
// postrelay delivers at least once: a relay killed between a publish and
// its completion publishes the record again, a consumer killed between its
// commit and its ack gets the message again. The inbox records, in the
// same transaction as the message's effects, that the consumer applied the
// message; a redelivery finds that row and is acked without being applied.
//
//	if err := inbox.Migrate(ctx, pool, ""); err != nil { … } // schema "postrelay_inbox"
//	ib, err := inbox.New(ctx, pool, inbox.Config{Consumer: "billing"})
//	if err != nil { … }
//	go ib.Run(ctx) // purges expired ids every minute
//	router.AddConsumerHandler("bill", "orders", sub,
//		ib.Handler(func(msg *message.Message, tx pgx.Tx) error {
//			// business writes through tx; outgoing messages through the outbox in tx:
//			//   adapters.NewTxPublisher(tx, writer).Publish("invoices", out)
//			_, err := tx.Exec(msg.Context(), "INSERT INTO invoices …")
//			return err
//		}))
//
// # The model
//
// For each message, in ONE PostgreSQL transaction:
//
//  1. claim: INSERT INTO processed (consumer, message_id) … ON CONFLICT DO
//     NOTHING, sent with the BEGIN in one round trip (a pgx.Batch), so the
//     claim adds a statement but no round trip to the handler's
//     transaction. The key is the message UUID (postrelay sets it to the
//     record's message id, stable across redeliveries) or the metadata
//     value Config.KeyMetadata names;
//  2. if the row already existed (committed), the message is a duplicate:
//     the transaction commits nothing, the handler returns nil, the router
//     acks. The duplicates counter is incremented and the current span of
//     the message's context gets postrelay.inbox.duplicate=true;
//  3. otherwise the user's handler runs with the transaction; it returns
//     nil → COMMIT, then the router acks. An error or a panic → ROLLBACK
//     (the claim goes with it), the handler returns an error and the
//     router nacks: the redelivery is applied once.
//
// Concurrency. Two consumers (or two instances of one) that receive the
// same message at once both INSERT the same primary key. PostgreSQL makes
// the second INSERT wait for the first transaction: if it commits, the
// second finds a conflict and the message is acked as a duplicate; if it
// rolls back, the second INSERT succeeds and that consumer applies it.
// Nothing is applied twice, and nothing is lost: the second consumer does
// not ack until the first's outcome is known.
//
// Crash between commit and ack: the broker redelivers, the claim finds the
// committed row, the message is acked. Crash before commit: nothing was
// written, the redelivery applies it.
//
// With a watermill-sql subscriber built with BeginnerFromPgx, the claim and
// the handler run under a savepoint of the subscriber's own transaction
// (consume, claim, effects and the offset commit together, as
// adapters.TxHandler).
//
// # Guarantees and limits
//
//   - Effects written through the transaction, in the same PostgreSQL
//     database as the inbox tables, happen exactly once per consumer name
//     for redeliveries within Retention (default 7 days). A redelivery
//     after the window is applied again.
//   - Effects outside the transaction (HTTP calls, e-mails, writes to
//     another database) are not covered: they run once per delivery
//     attempt that reaches them.
//   - Messages the router publishes from a Middleware handler's return
//     value are sent after the commit, at least once. Produce through the
//     outbox in the transaction (adapters.NewTxPublisher or engine.Writer)
//     instead: then the follow-up record exists iff the effects committed.
//   - A message without its key is never applied (MissingKey): it is nacked
//     (MissingKeyNack: redelivered, or dead-lettered by the router's
//     PoisonQueue middleware) or acked and dropped (MissingKeyDrop).
//
// # Retention
//
// processed has the primary key (consumer, message_id) and an index on
// (consumer, processed_at). The hot path is one INSERT (two index entries);
// it never deletes. Purge (and Run, every PurgeInterval, and `postrelay
// inbox purge`) deletes expired rows in batches of PurgeBatch, oldest
// first through the index, each batch its own short transaction holding
// row locks on the rows it deletes only: claims of new messages never wait
// for its locks (sampled during a purge, their only lock waits were
// relation extensions) but share CPU and WAL with it: on a 2-core machine
// the handlers' rate fell by 11–59 % during a purge of 200,000 ids, see
// bench/README.md. A transaction-scoped advisory lock keeps two
// purgers of one consumer from deleting the same rows.
//
// The schema is created by Migrate (embedded, versioned, idempotent,
// advisory-locked) or `postrelay inbox migrate`; `--print` shows the SQL
// for other migration tools. Using an inbox on a schema that was not
// migrated fails with ErrNotMigrated naming the schema and the table.
//
// # Metrics
//
// Counters through the OpenTelemetry metric API (Config.MeterProvider),
// each with the one attribute consumer:
//
//	postrelay.inbox.processed               messages applied and committed
//	postrelay.inbox.duplicates_suppressed   redeliveries acked without applying
//	postrelay.inbox.purged                  ids deleted after the retention window
//	postrelay.inbox.rejected                messages without a key dropped (MissingKeyDrop)
package inbox
