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
// at most 1000), held records and
// the age of its oldest one. A stuck key is a key whose head record — its
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
// Every query is bounded by a LIMIT on an index scan (see store.go, which
// names each index), except a lookup by message id without a key, which
// reads the records table (there is no index on message_id).
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
