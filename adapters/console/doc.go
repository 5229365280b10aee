// Package console is postrelay's operator console: a small web page and a
// JSON API that show what the relays are doing and fix what is stuck.
//
//	c, err := console.New(pool, console.Config{Schema: "postrelay", Token: token})
//	go c.Run(ctx)                                  // optional: rate history while nobody watches
//	http.Handle("/outbox/", http.StripPrefix("/outbox", c))
//
// `postrelay console` serves it alone (no relay needed) and `postrelay run
// --http ADDR` beside a relay.
//
// # What it shows
//
// The overview lists the relay instances (heartbeat age, partitions owned),
// the backlog and the age of the oldest pending record, the dead letters,
// and delivered/s and failures/s with a chart of the last hour. The rates
// come from PostgreSQL's cumulative table statistics (pg_stat_user_tables),
// sampled every Config.SampleInterval into a ring in the console's memory:
// delivered = records deleted from records minus rows inserted into
// dead_letters; failures = records updated (a failed attempt that will be
// retried updates its record once); dead-lettered = rows inserted into
// dead_letters. The statistics reach PostgreSQL's shared counters about
// once a second per session (up to ten seconds for an idle one), so the
// chart is a smoothed view, not an event count, and it starts when the
// console starts.
//
// The partitions view is the lease map (owner, epoch, lease left) with each
// partition's pending records (counted up to PendingBudget / partitions,
// at most 1000), held records and the age of its oldest one; this backlog
// is read at most every 5 s, whatever the number of viewers (a change made
// from the console forgets it), the leases on every request. A stuck key is a key whose head record — its
// lowest-id record held back, as the relay's fetch sees it — is failing
// (retry backoff) or delayed; the records of the key behind it wait. The
// console can retry a head now (available_at = now() and a wake-up) or move
// it to the dead letters at once, which lets the key's next record go.
// Dead letters can be filtered (topic, key, error text), inspected (payload
// as indented JSON or a hex dump, metadata, trace id from traceparent),
// requeued or purged one by one, by a list of ids, or all matching a filter
// (which needs a confirmation field). Records can be looked up by record
// id, message id or key.
//
// # Cost
//
// Every statement reads a bounded number of rows through an index (see
// store.go, which names the index of each; TestConsoleQueriesUseIndexes
// checks that no plan falls back to a sequential scan of records or
// dead_letters). The records table has no index on key or message_id — it
// is the relays' hot table, and every application write would pay for
// one — so a lookup reads at most 5,000 pending records: with a key (alone
// or with a message id), the first 5,000 of the key's partition in id
// order, and the answer's next_after continues the scan; with a message id
// alone, the first 5,000 / partitions records of every partition, and
// besides up to 5,000 held records (records_held). The answer's complete
// and searched fields say what was read. Dead letters are found by message
// id through their own index (schema version 4), by key among the newest
// 10,000. A filter-wide requeue or purge reads the dead letters 10,000 at a
// time. Every request's queries are bounded by Config.QueryTimeout as well.
//
// # Security
//
// GET never changes state. Every mutating call is a POST with a JSON body
// (at most MaxBodyBytes) and needs Authorization: Bearer <Config.Token>:
// without one it is answered 401, with another 403, and a ReadOnly console
// answers 403 to all of them. The pages keep the token in the tab's
// sessionStorage and send it only in that header (no cookie, so no
// cross-site request can carry it). HidePayloads keeps payloads and
// metadata values out of every answer. Database errors are answered with
// PostgreSQL's message only, never a connection string. Answers carry a
// strict Content-Security-Policy; the assets are embedded and load nothing
// from elsewhere.
package console
