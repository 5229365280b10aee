package console

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// store holds every SQL statement of the console. Statements are built once
// from the validated schema name; values always travel as parameters. Each
// statement is bounded (LIMIT on an index scan); the comment above each
// names the index it uses.
type store struct {
	pool   *pgxpool.Pool
	schema string

	sqlPartitionCount, sqlPartitions, sqlLeases, sqlInstances, sqlDeadCount, sqlCounters string
	sqlStuck, sqlRetry, sqlDeadLetterNow                                                 string
	sqlDeadList, sqlDeadWindowEnd, sqlDeadOne, sqlDeadMove                               string
	sqlLookupID, sqlScanWindow, sqlLookupWindow, sqlLookupHeads, sqlHeadsBeyond          string
	sqlDeadByKey, sqlDeadByMessage                                                       string
}

func newStore(pool *pgxpool.Pool, schema string) *store {
	id := func(name string) string { return pgx.Identifier{schema, name}.Sanitize() }
	records, partitions, instances, dead, meta := id("records"), id("partitions"), id("instances"), id("dead_letters"), id("meta")
	recordCols := `r.partition, r.id, r.key, r.topic, r.message_id, r.attempts, coalesce(r.last_error, ''),
		r.created_at, r.available_at, coalesce(r.available_at > now(), false), NULL::timestamptz`
	// The columns recordCols reads, for subqueries.
	recordFields := `r.partition, r.id, r.key, r.topic, r.message_id, r.attempts, r.last_error, r.created_at, r.available_at`
	deadCols := `d.partition, d.id, d.key, d.topic, d.message_id, d.attempts, coalesce(d.last_error, ''),
		d.created_at, NULL::timestamptz, false, d.dead_lettered_at`
	// The newest dead letters without their payloads, for a bounded search.
	deadWindow := `SELECT partition, id, key, topic, message_id, attempts, last_error, created_at, dead_lettered_at
		FROM ` + dead + ` ORDER BY id DESC`
	return &store{
		pool:   pool,
		schema: schema,
		// meta primary key.
		sqlPartitionCount: `SELECT value::int FROM ` + meta + ` WHERE key = 'partitions'`,
		// One row per partition (partitions primary key). Per partition:
		// pending counted up to $1 and the head (lowest id) in one walk of
		// the records primary key (partition, id), index-only; the head's
		// age by one probe of the primary key; held counted up to $1
		// (records_held). The walk from the head is what the relay's fetch
		// does too: it steps over the index entries of delivered records
		// not yet vacuumed.
		sqlPartitions: `SELECT p.partition, coalesce(p.owner, ''), p.epoch,
				coalesce(date_part('epoch', p.lease_until - now()), 0),
				c.n, hc.n, coalesce(date_part('epoch', now() - h.created_at), 0)
			FROM ` + partitions + ` p
			CROSS JOIN LATERAL (SELECT count(*) AS n, min(x.id) AS head FROM (SELECT r.id FROM ` + records + ` r
				WHERE r.partition = p.partition ORDER BY r.id LIMIT $1) x) c
			CROSS JOIN LATERAL (SELECT count(*) AS n FROM (SELECT 1 FROM ` + records + ` r
				WHERE r.partition = p.partition AND r.available_at IS NOT NULL ORDER BY r.available_at LIMIT $1) x) hc
			LEFT JOIN ` + records + ` h ON h.partition = p.partition AND h.id = c.head
			ORDER BY p.partition`,
		// The leases alone (partitions primary key order).
		sqlLeases: `SELECT partition, coalesce(owner, ''), epoch, coalesce(date_part('epoch', lease_until - now()), 0)
			FROM ` + partitions + ` ORDER BY partition`,
		// instances primary key order; a handful of rows.
		sqlInstances: `SELECT id, hostname, pid, started_at, date_part('epoch', now() - heartbeat_at)
			FROM ` + instances + ` ORDER BY id LIMIT 1000`,
		// dead_letters primary key, index-only, up to $1.
		sqlDeadCount: `SELECT count(*) FROM (SELECT 1 FROM ` + dead + ` ORDER BY id LIMIT $1) x`,
		// PostgreSQL's cumulative statistics of the two tables (no table
		// access): deletes and updates of records, inserts into
		// dead_letters, and the estimated live rows of records.
		sqlCounters: `SELECT coalesce(sum(n_tup_del) FILTER (WHERE relname = 'records'), 0)::bigint,
				coalesce(sum(n_tup_upd) FILTER (WHERE relname = 'records'), 0)::bigint,
				coalesce(sum(n_tup_ins) FILTER (WHERE relname = 'dead_letters'), 0)::bigint,
				coalesce(sum(n_live_tup) FILTER (WHERE relname = 'records'), 0)::bigint
			FROM pg_stat_user_tables WHERE schemaname = $1 AND relname IN ('records', 'dead_letters')`,
		// Stuck keys: the held records (records_held, at most $1 of them,
		// optionally of one partition $2), the lowest id per key (the key's
		// head, as the relay's fetch sees it), filtered by topic $3 and key
		// $4, the $5 with the most attempts first; then for each of those
		// only, the records of the same key among the next $6 records of its
		// partition (primary key range scan).
		sqlStuck: `WITH held AS (
				SELECT h.partition, h.key, min(h.id) AS id FROM (
					SELECT r.partition, r.key, r.id FROM ` + records + ` r
					WHERE r.available_at IS NOT NULL AND ($2::int < 0 OR r.partition = $2)
					ORDER BY r.partition, r.available_at LIMIT $1
				) h GROUP BY h.partition, h.key
			), top AS MATERIALIZED (
				SELECT r.partition, r.id, r.key, r.topic, r.message_id, r.attempts, r.available_at,
				       date_part('epoch', r.available_at - now()) AS wait_s, coalesce(r.last_error, '') AS last_error
				FROM held JOIN ` + records + ` r ON r.partition = held.partition AND r.id = held.id
				WHERE ($3 = '' OR r.topic = $3) AND ($4 = '' OR r.key = $4)
				ORDER BY r.attempts DESC, r.id
				LIMIT $5
			)
			SELECT top.*, w.n, w.scanned FROM top CROSS JOIN LATERAL (
				SELECT count(*) FILTER (WHERE x.key = top.key) AS n, count(*) AS scanned FROM (
					SELECT r.key FROM ` + records + ` r WHERE r.partition = top.partition AND r.id > top.id
					ORDER BY r.id LIMIT $6) x
			) w
			ORDER BY top.attempts DESC, top.id`,
		// Retry now: the named held records become available at once
		// (primary key probes), and the relays of their partitions are woken.
		sqlRetry: `WITH t AS (SELECT * FROM unnest($1::int[], $2::bigint[]) AS t(partition, id)),
			upd AS (
				UPDATE ` + records + ` r SET available_at = now()
				FROM t WHERE r.partition = t.partition AND r.id = t.id AND r.available_at IS NOT NULL
				RETURNING r.partition
			), woken AS (
				SELECT pg_notify($3, partition::text) FROM (SELECT DISTINCT partition FROM upd) p
			)
			SELECT (SELECT count(*) FROM upd), (SELECT count(*) FROM woken)`,
		// Dead-letter now: the named held records move to dead_letters in
		// one statement (primary key probes), and the relays of their
		// partitions are woken for the records that waited behind them.
		sqlDeadLetterNow: `WITH t AS (SELECT * FROM unnest($1::int[], $2::bigint[]) AS t(partition, id)),
			moved AS (
				DELETE FROM ` + records + ` r USING t
				WHERE r.partition = t.partition AND r.id = t.id AND r.available_at IS NOT NULL
				RETURNING r.id, r.partition, r.key, r.topic, r.message_id, r.payload, r.metadata, r.created_at,
				          r.attempts, coalesce(r.last_error, $4)
			), ins AS (
				INSERT INTO ` + dead + ` (id, partition, key, topic, message_id, payload, metadata, created_at, attempts, last_error)
				SELECT * FROM moved RETURNING partition
			), woken AS (
				SELECT pg_notify($3, partition::text) FROM (SELECT DISTINCT partition FROM ins) p
			)
			SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM woken)`,
		// Dead letters, newest id first: a window of at most $2 rows below
		// the cursor $1 (dead_letters primary key, backwards), filtered by
		// topic $3, key $4 and error text $5, at most $6 of them.
		sqlDeadList: `SELECT d.id, d.partition, d.key, d.topic, d.message_id, octet_length(d.payload), d.attempts,
				coalesce(d.last_error, ''), d.created_at, d.dead_lettered_at, coalesce(d.metadata->>'traceparent', '')
			FROM (SELECT * FROM ` + dead + ` WHERE id < $1 ORDER BY id DESC LIMIT $2) d
			WHERE ($3 = '' OR d.topic = $3) AND ($4 = '' OR d.key = $4)
			  AND ($5 = '' OR strpos(lower(coalesce(d.last_error, '')), lower($5)) > 0)
			ORDER BY d.id DESC LIMIT $6`,
		// The last id of the window above (primary key, index-only).
		sqlDeadWindowEnd: `SELECT id FROM ` + dead + ` WHERE id < $1 ORDER BY id DESC OFFSET $2 - 1 LIMIT 1`,
		// One dead letter (primary key), its payload cut at $2 bytes.
		sqlDeadOne: `SELECT d.id, d.partition, d.key, d.topic, d.message_id, octet_length(d.payload), d.attempts,
				coalesce(d.last_error, ''), d.created_at, d.dead_lettered_at, coalesce(d.metadata->>'traceparent', ''),
				substring(d.payload FROM 1 FOR $2), d.metadata::text
			FROM ` + dead + ` d WHERE d.id = $1`,
		// Requeue ($5) or purge, among the next $8 dead letters above id $1
		// (a window of the dead_letters primary key), at most $6 matching
		// topic $2, key $3 and error text $4. Requeued ones go back into
		// records in id order, attempts reset, and wake the relays of their
		// partitions. It returns how many moved, the last id moved, and the
		// window's size and last id (where the next statement goes on).
		sqlDeadMove: `WITH win AS MATERIALIZED (
				SELECT d.id, d.topic, d.key, d.last_error FROM ` + dead + ` d WHERE d.id > $1 ORDER BY d.id LIMIT $8
			), sel AS (
				SELECT id FROM win d WHERE ($2 = '' OR d.topic = $2) AND ($3 = '' OR d.key = $3)
				  AND ($4 = '' OR strpos(lower(coalesce(d.last_error, '')), lower($4)) > 0)
				ORDER BY d.id LIMIT $6
			), moved AS (
				DELETE FROM ` + dead + ` d USING sel WHERE d.id = sel.id RETURNING d.*
			), ins AS (
				INSERT INTO ` + records + ` (partition, key, topic, message_id, payload, metadata, created_at)
				SELECT partition, key, topic, message_id, payload, metadata, created_at FROM moved
				WHERE $5 ORDER BY id
				RETURNING partition
			), woken AS (
				SELECT pg_notify($7, partition::text) FROM (SELECT DISTINCT partition FROM ins) p
			)
			SELECT (SELECT count(*) FROM moved), coalesce((SELECT max(id) FROM moved), 0), (SELECT count(*) FROM woken),
				(SELECT count(*) FROM win), coalesce((SELECT max(id) FROM win), 0)`,
		// A record id: one probe per partition of the records primary key
		// ($2 lists every partition), and one of dead_letters'.
		sqlLookupID: `SELECT ` + recordCols + ` FROM ` + records + ` r WHERE r.partition = ANY($2::int[]) AND r.id = $1
			UNION ALL
			SELECT ` + deadCols + ` FROM ` + dead + ` d WHERE d.id = $1`,
		// The scan window of one partition: the first $3 records above id
		// $2 (records primary key (partition, id), index-only): how many
		// and the last id.
		sqlScanWindow: `SELECT count(*), coalesce(max(x.id), 0) FROM (SELECT r.id FROM ` + records + ` r
			WHERE r.partition = $1 AND r.id > $2 ORDER BY r.id LIMIT $3) x`,
		// The records of that window (a primary key range) of key $4 or
		// message id $5, at most $6.
		sqlLookupWindow: `SELECT ` + recordCols + ` FROM ` + records + ` r
			WHERE r.partition = $1 AND r.id > $2 AND r.id <= $3
			  AND ($4 = '' OR r.key = $4) AND ($5 = '' OR r.message_id = $5)
			ORDER BY r.id LIMIT $6`,
		// A message id without its key: the first $2 records of every
		// partition (a primary key range per partition) and the first $3
		// held records (records_held), at most $4 matches.
		sqlLookupHeads: `SELECT * FROM (
				SELECT ` + recordCols + ` FROM ` + partitions + ` p CROSS JOIN LATERAL (
					SELECT ` + recordFields + ` FROM ` + records + ` r WHERE r.partition = p.partition ORDER BY r.id LIMIT $2) r
				WHERE r.message_id = $1
				UNION
				SELECT ` + recordCols + ` FROM (SELECT ` + recordFields + ` FROM ` + records + ` r WHERE r.available_at IS NOT NULL
					ORDER BY r.partition, r.available_at LIMIT $3) r
				WHERE r.message_id = $1
			) m ORDER BY 1, 2 LIMIT $4`,
		// How many partitions hold more than $1 records (records primary
		// key, index-only, one probe at offset $1 per partition).
		sqlHeadsBeyond: `SELECT count(*) FROM ` + partitions + ` p WHERE EXISTS (
			SELECT 1 FROM (SELECT r.id FROM ` + records + ` r WHERE r.partition = p.partition ORDER BY r.id OFFSET $1 LIMIT 1) x)`,
		// Dead letters of a key: among the newest $2 (a window of the
		// dead_letters primary key), at most $3.
		sqlDeadByKey: `SELECT ` + deadCols + ` FROM (` + deadWindow + ` LIMIT $2) d WHERE d.key = $1 ORDER BY d.id DESC LIMIT $3`,
		// Dead letters of a message id (dead_letters_message_id), at most $2.
		sqlDeadByMessage: `SELECT ` + deadCols + ` FROM ` + dead + ` d WHERE d.message_id = $1 ORDER BY d.id DESC LIMIT $2`,
	}
}

func (s *store) partitionCount(ctx context.Context) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, s.sqlPartitionCount).Scan(&n)
	return n, err
}

// partitionRow is one partition's lease and backlog.
type partitionRow struct {
	Partition int     `json:"partition"`
	Owner     string  `json:"owner"`
	Epoch     int64   `json:"epoch"`
	LeaseLeft float64 `json:"lease_left_s"`
	Pending   int64   `json:"pending"`
	// PendingCapped says Pending stopped at the cap: there are more.
	PendingCapped bool    `json:"pending_capped"`
	Held          int64   `json:"held"`
	HeldCapped    bool    `json:"held_capped"`
	OldestAge     float64 `json:"oldest_age_s"`
}

// PartitionsParams bounds the partitions query.
type PartitionsParams struct {
	Cap int // count pending and held records up to this many per partition
}

func (s *store) partitions(ctx context.Context, p PartitionsParams) ([]partitionRow, error) {
	rows, err := s.pool.Query(ctx, s.sqlPartitions, p.Cap+1)
	if err != nil {
		return nil, err
	}
	var out []partitionRow
	var r partitionRow
	_, err = pgx.ForEachRow(rows, []any{&r.Partition, &r.Owner, &r.Epoch, &r.LeaseLeft, &r.Pending, &r.Held, &r.OldestAge}, func() error {
		r.LeaseLeft = max(r.LeaseLeft, 0)
		if r.LeaseLeft == 0 {
			r.Owner = "" // an expired lease is free
		}
		r.PendingCapped = r.Pending > int64(p.Cap)
		r.Pending = min(r.Pending, int64(p.Cap))
		r.HeldCapped = r.Held > int64(p.Cap)
		r.Held = min(r.Held, int64(p.Cap))
		out = append(out, r)
		return nil
	})
	return out, err
}

// leases reads every partition's lease (owner, epoch, lease left) without
// its backlog.
func (s *store) leases(ctx context.Context) ([]partitionRow, error) {
	rows, err := s.pool.Query(ctx, s.sqlLeases)
	if err != nil {
		return nil, err
	}
	var out []partitionRow
	var r partitionRow
	_, err = pgx.ForEachRow(rows, []any{&r.Partition, &r.Owner, &r.Epoch, &r.LeaseLeft}, func() error {
		r.LeaseLeft = max(r.LeaseLeft, 0)
		if r.LeaseLeft == 0 {
			r.Owner = ""
		}
		out = append(out, r)
		return nil
	})
	return out, err
}

// instanceRow is one relay instance.
type instanceRow struct {
	ID           string    `json:"id"`
	Hostname     string    `json:"hostname"`
	PID          int       `json:"pid"`
	StartedAt    time.Time `json:"started_at"`
	HeartbeatAge float64   `json:"heartbeat_age_s"`
	Live         bool      `json:"live"`
	Partitions   int       `json:"partitions"`
}

func (s *store) instances(ctx context.Context) ([]instanceRow, error) {
	rows, err := s.pool.Query(ctx, s.sqlInstances)
	if err != nil {
		return nil, err
	}
	var out []instanceRow
	var r instanceRow
	_, err = pgx.ForEachRow(rows, []any{&r.ID, &r.Hostname, &r.PID, &r.StartedAt, &r.HeartbeatAge}, func() error {
		out = append(out, r)
		return nil
	})
	return out, err
}

// DeadCountParams bounds the dead-letter count.
type DeadCountParams struct {
	Cap int
}

func (s *store) deadCount(ctx context.Context, p DeadCountParams) (n int64, capped bool, err error) {
	err = s.pool.QueryRow(ctx, s.sqlDeadCount, p.Cap+1).Scan(&n)
	return min(n, int64(p.Cap)), n > int64(p.Cap), err
}

// counters are PostgreSQL's cumulative statistics of the tables.
type counters struct {
	recordsDeleted, recordsUpdated, deadInserted, recordsLive int64
}

func (s *store) counters(ctx context.Context) (counters, error) {
	var c counters
	err := s.pool.QueryRow(ctx, s.sqlCounters, s.schema).Scan(&c.recordsDeleted, &c.recordsUpdated, &c.deadInserted, &c.recordsLive)
	return c, err
}

// stuckRow is a key whose head record is held back.
type stuckRow struct {
	Partition     int        `json:"partition"`
	RecordID      int64      `json:"record_id"`
	Key           string     `json:"key"`
	Topic         string     `json:"topic"`
	MessageID     string     `json:"message_id"`
	Attempts      int        `json:"attempts"`
	NextAttemptAt *time.Time `json:"next_attempt_at"`
	NextAttemptIn float64    `json:"next_attempt_in_s"`
	LastError     string     `json:"last_error"`
	// State is "failing" (attempts made) or "delayed" (a delivery delay,
	// no attempt yet).
	State string `json:"state"`
	// Waiting counts the records of the key behind the head among the
	// next WaitingWindow records of its partition; WaitingCapped says the
	// window was full, so there may be more.
	Waiting       int64 `json:"waiting"`
	WaitingCapped bool  `json:"waiting_capped"`
}

// StuckKeysParams selects stuck keys.
type StuckKeysParams struct {
	HeldScan      int    // held records read at most
	Partition     int    // only this partition; -1 for all
	Topic, Key    string // "" for any
	Limit         int    // keys returned at most
	WaitingWindow int    // records after the head searched for the key
}

func (s *store) stuckKeys(ctx context.Context, p StuckKeysParams) ([]stuckRow, error) {
	rows, err := s.pool.Query(ctx, s.sqlStuck, p.HeldScan, p.Partition, p.Topic, p.Key, p.Limit, p.WaitingWindow)
	if err != nil {
		return nil, err
	}
	out := []stuckRow{}
	var r stuckRow
	var at *time.Time
	var scanned int64
	_, err = pgx.ForEachRow(rows, []any{&r.Partition, &r.RecordID, &r.Key, &r.Topic, &r.MessageID, &r.Attempts,
		&at, &r.NextAttemptIn, &r.LastError, &r.Waiting, &scanned}, func() error {
		r.NextAttemptAt = at
		r.State = "failing"
		if r.Attempts == 0 {
			r.State = "delayed"
		}
		r.WaitingCapped = scanned >= int64(p.WaitingWindow)
		out = append(out, r)
		return nil
	})
	return out, err
}

// RecordRefs names records by primary key.
type RecordRefs struct {
	Partitions []int32
	IDs        []int64
	Channel    string // the relays' notification channel
	Reason     string // last_error for a record dead-lettered before any failure
}

func (s *store) retryNow(ctx context.Context, p RecordRefs) (int, error) {
	var n, woken int
	err := s.pool.QueryRow(ctx, s.sqlRetry, p.Partitions, p.IDs, p.Channel).Scan(&n, &woken)
	return n, err
}

func (s *store) deadLetterNow(ctx context.Context, p RecordRefs) (int, error) {
	var n, woken int
	err := s.pool.QueryRow(ctx, s.sqlDeadLetterNow, p.Partitions, p.IDs, p.Channel, p.Reason).Scan(&n, &woken)
	return n, err
}

// deadRow is a dead letter without its payload.
type deadRow struct {
	ID             int64     `json:"id"`
	Partition      int       `json:"partition"`
	Key            string    `json:"key"`
	Topic          string    `json:"topic"`
	MessageID      string    `json:"message_id"`
	PayloadBytes   int       `json:"payload_bytes"`
	Attempts       int       `json:"attempts"`
	LastError      string    `json:"last_error"`
	CreatedAt      time.Time `json:"created_at"`
	DeadLetteredAt time.Time `json:"dead_lettered_at"`
	TraceID        string    `json:"trace_id"`
	traceparent    string
}

// DeadFilter selects dead letters; "" matches anything.
type DeadFilter struct {
	Topic string `json:"topic"`
	Key   string `json:"key"`
	Error string `json:"error"` // a case-insensitive substring of last_error
}

// DeadListParams pages through dead letters, newest id first.
type DeadListParams struct {
	Before int64 // only ids below this
	Window int   // read at most this many rows below Before
	Filter DeadFilter
	Limit  int
}

func (s *store) deadList(ctx context.Context, p DeadListParams) ([]deadRow, error) {
	rows, err := s.pool.Query(ctx, s.sqlDeadList, p.Before, p.Window, p.Filter.Topic, p.Filter.Key, p.Filter.Error, p.Limit)
	if err != nil {
		return nil, err
	}
	out := []deadRow{}
	var d deadRow
	_, err = pgx.ForEachRow(rows, []any{&d.ID, &d.Partition, &d.Key, &d.Topic, &d.MessageID, &d.PayloadBytes, &d.Attempts,
		&d.LastError, &d.CreatedAt, &d.DeadLetteredAt, &d.traceparent}, func() error {
		d.TraceID = traceID(d.traceparent)
		out = append(out, d)
		return nil
	})
	return out, err
}

// DeadWindowEndParams finds the last id of a list window.
type DeadWindowEndParams struct {
	Before int64
	Window int
}

// deadWindowEnd returns the Window-th id below Before, or 0 if there are
// fewer.
func (s *store) deadWindowEnd(ctx context.Context, p DeadWindowEndParams) (int64, error) {
	var id int64
	err := s.pool.QueryRow(ctx, s.sqlDeadWindowEnd, p.Before, p.Window).Scan(&id)
	if err == pgx.ErrNoRows {
		return 0, nil
	}
	return id, err
}

// DeadOneParams reads one dead letter.
type DeadOneParams struct {
	ID           int64
	PayloadBytes int // cut the payload here
}

func (s *store) deadOne(ctx context.Context, p DeadOneParams) (d deadRow, payload []byte, metadata string, found bool, err error) {
	err = s.pool.QueryRow(ctx, s.sqlDeadOne, p.ID, p.PayloadBytes).Scan(&d.ID, &d.Partition, &d.Key, &d.Topic, &d.MessageID,
		&d.PayloadBytes, &d.Attempts, &d.LastError, &d.CreatedAt, &d.DeadLetteredAt, &d.traceparent, &payload, &metadata)
	if err == pgx.ErrNoRows {
		return d, nil, "", false, nil
	}
	d.TraceID = traceID(d.traceparent)
	return d, payload, metadata, err == nil, err
}

// DeadMoveParams requeues or purges one batch of dead letters matching a
// filter.
type DeadMoveParams struct {
	After   int64 // only ids above this
	Filter  DeadFilter
	Requeue bool // false: purge
	Batch   int  // moved at most
	Window  int  // dead letters read at most
	Channel string
}

// deadMove moves one batch and returns how many and where the next batch
// starts (after), and whether the dead letters above After ended within
// the window (done).
func (s *store) deadMove(ctx context.Context, p DeadMoveParams) (n int, after int64, done bool, err error) {
	var woken, win int
	var last, winLast int64
	err = s.pool.QueryRow(ctx, s.sqlDeadMove, p.After, p.Filter.Topic, p.Filter.Key, p.Filter.Error, p.Requeue, p.Batch, p.Channel, p.Window).
		Scan(&n, &last, &woken, &win, &winLast)
	switch {
	case err != nil:
		return n, 0, false, err
	case n == p.Batch:
		// The batch filled up: the window may hold more matches after it.
		return n, last, false, nil
	default:
		return n, winLast, win < p.Window, nil
	}
}

// recordRow is a record found by a lookup, pending, held or dead-lettered.
type recordRow struct {
	// State is "pending" (deliverable now, or waiting behind its key's
	// head), "held" (available_at in the future: retry backoff or delivery
	// delay) or "dead_lettered".
	State          string     `json:"state"`
	Partition      int        `json:"partition"`
	ID             int64      `json:"id"`
	Key            string     `json:"key"`
	Topic          string     `json:"topic"`
	MessageID      string     `json:"message_id"`
	Attempts       int        `json:"attempts"`
	LastError      string     `json:"last_error"`
	CreatedAt      time.Time  `json:"created_at"`
	AvailableAt    *time.Time `json:"available_at"`
	DeadLetteredAt *time.Time `json:"dead_lettered_at"`
}

// LookupParams finds records by exactly one of ID, MessageID (optionally
// narrowed to Key's partition) or Key.
type LookupParams struct {
	ID         int64
	MessageID  string
	Key        string
	Partition  int     // Key's partition, or -1
	Partitions []int32 // every partition, for ID
	After      int64   // with Partition: scan the records above this id
	Scan       int     // records read at most (with Partition: of that partition; else over all partitions)
	HeldScan   int     // without Partition: held records read at most
	DeadWindow int     // newest dead letters searched for Key
	SkipDead   bool    // records only (a continued scan)
	Limit      int
}

// lookupResult is a lookup's records and what it searched.
type lookupResult struct {
	rows []recordRow
	// pendingComplete says every pending record that could match was read
	// (ScanEnd is then 0); else ScanEnd is the last id read of Partition,
	// or, without one, headsBeyond partitions held more than perPartition.
	pendingComplete bool
	scanned         int64
	scanEnd         int64
	perPartition    int
	headsBeyond     int64
	// deadComplete says every dead letter that could match was read.
	deadComplete bool
}

func (s *store) lookup(ctx context.Context, p LookupParams) (lookupResult, error) {
	res := lookupResult{rows: []recordRow{}, pendingComplete: true, deadComplete: true}
	var err error
	switch {
	case p.ID > 0:
		err = s.collectRecords(ctx, &res, s.sqlLookupID, p.ID, p.Partitions)
		return res, err
	case p.Partition >= 0:
		// One partition's window: its bounds first, then its rows.
		var last int64
		if err = s.pool.QueryRow(ctx, s.sqlScanWindow, p.Partition, p.After, p.Scan).Scan(&res.scanned, &last); err != nil {
			return res, err
		}
		if res.scanned >= int64(p.Scan) {
			res.pendingComplete, res.scanEnd = false, last
		}
		if res.scanned > 0 {
			err = s.collectRecords(ctx, &res, s.sqlLookupWindow, p.Partition, p.After, last, p.Key, p.MessageID, p.Limit)
		}
	default:
		res.perPartition = max(p.Scan/len(p.Partitions), 1)
		if err = s.collectRecords(ctx, &res, s.sqlLookupHeads, p.MessageID, res.perPartition, p.HeldScan, p.Limit); err != nil {
			return res, err
		}
		err = s.pool.QueryRow(ctx, s.sqlHeadsBeyond, res.perPartition).Scan(&res.headsBeyond)
		res.pendingComplete = res.headsBeyond == 0
	}
	if err != nil || p.SkipDead {
		return res, err
	}
	if p.MessageID != "" {
		return res, s.collectRecords(ctx, &res, s.sqlDeadByMessage, p.MessageID, p.Limit)
	}
	if err = s.collectRecords(ctx, &res, s.sqlDeadByKey, p.Key, p.DeadWindow, p.Limit); err != nil {
		return res, err
	}
	// More dead letters than the window: the key's older ones were not read.
	var beyond int64
	if err = s.pool.QueryRow(ctx, s.sqlDeadWindowEnd, int64(math.MaxInt64), p.DeadWindow+1).Scan(&beyond); err != nil && err != pgx.ErrNoRows {
		return res, err
	}
	res.deadComplete = beyond == 0
	return res, nil
}

// collectRecords appends the records or dead letters a lookup statement
// returns.
func (s *store) collectRecords(ctx context.Context, res *lookupResult, sql string, args ...any) error {
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	var r recordRow
	var held bool
	var avail, dead *time.Time
	_, err = pgx.ForEachRow(rows, []any{&r.Partition, &r.ID, &r.Key, &r.Topic, &r.MessageID, &r.Attempts, &r.LastError,
		&r.CreatedAt, &avail, &held, &dead}, func() error {
		r.AvailableAt, r.DeadLetteredAt = avail, dead
		switch {
		case dead != nil:
			r.State = "dead_lettered"
		case held:
			r.State = "held"
		default:
			r.State = "pending"
		}
		res.rows = append(res.rows, r)
		return nil
	})
	return err
}

// traceID returns the trace id of a W3C traceparent, or "".
func traceID(tp string) string {
	if len(tp) < 55 || tp[2] != '-' || tp[35] != '-' {
		return ""
	}
	id := tp[3:35]
	for _, c := range id {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return ""
		}
	}
	if id == "00000000000000000000000000000000" {
		return ""
	}
	return id
}

func wrapQuery(what string, err error) error {
	return fmt.Errorf("console: %s: %w", what, err)
}
