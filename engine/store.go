package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The engine's SQL lives in the store files, one per concern, each built
// once from the validated schema name, values always as parameters:
//
//   - store.go: the relay's statements — membership, leases, fetch,
//     completion, tail — and the delivery pool they run on;
//   - store_schema.go: around the migrations (migrations/*.sql), the
//     version check and the partition count (read there only);
//   - store_admin.go: Admin's status and dead-letter statements.
//
// The Writer builds its INSERT, COPY and NOTIFY statements itself
// (writer.go): their text depends on the row count and is cached there.

// store holds the relay's statements (see above).
type store struct {
	pool *pgxpool.Pool
	// hot runs the statements of the delivery path (fetch, completion,
	// tail) when set: the engine's own small pool whose sessions use
	// generic plans (see openHotPool). Unset, they run on pool.
	hot *pgxpool.Pool
	cfg Config
	// partitions is the schema's partition count, read by openStore.
	partitions int
	// retention: sqlComplete is retainedCompleteSQL's, which takes the
	// history rows as $13 to $19.
	retention bool

	sqlHeartbeat, sqlLiveInstances, sqlDeleteInstance, sqlReapInstances string
	sqlAcquire, sqlRenew, sqlRelease, sqlReleaseAll, sqlReadLease       string
	sqlFetch, sqlComplete, sqlTailFetch, sqlTailComplete, sqlMaxID      string
}

func newStore(pool *pgxpool.Pool, cfg Config) *store {
	records, partitions, instances, dead := cfg.ident("records"), cfg.ident("partitions"), cfg.ident("instances"), cfg.ident("dead_letters")
	return &store{
		pool: pool,
		cfg:  cfg,
		sqlHeartbeat: `INSERT INTO ` + instances + ` (id, hostname, pid) VALUES ($1, $2, $3)
			ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()`,
		sqlLiveInstances: `SELECT id FROM ` + instances + `
			WHERE heartbeat_at > now() - $1::bigint * interval '1 microsecond' ORDER BY id`,
		sqlDeleteInstance: `DELETE FROM ` + instances + ` WHERE id = $1`,
		sqlReapInstances: `DELETE FROM ` + instances + `
			WHERE heartbeat_at < now() - $1::bigint * interval '1 microsecond'`,
		// Acquire and renew lock their rows in partition order first (see
		// sqlComplete).
		sqlAcquire: `UPDATE ` + partitions + ` AS p
			SET owner = $1, epoch = p.epoch + 1, lease_until = now() + $2::bigint * interval '1 microsecond'
			FROM (SELECT partition FROM ` + partitions + ` WHERE partition = ANY($3::int[])
			      ORDER BY partition FOR UPDATE) AS o
			WHERE p.partition = o.partition
			  AND (p.owner IS NULL OR p.owner = $1 OR p.lease_until IS NULL OR p.lease_until <= now())
			RETURNING p.partition, p.epoch`,
		sqlRenew: `UPDATE ` + partitions + ` AS p
			SET lease_until = now() + $2::bigint * interval '1 microsecond'
			FROM unnest($3::int[], $4::bigint[]) AS h(partition, epoch),
			     (SELECT partition FROM ` + partitions + ` WHERE partition = ANY($3::int[])
			      ORDER BY partition FOR UPDATE) AS o
			WHERE p.partition = h.partition AND o.partition = h.partition AND p.epoch = h.epoch AND p.owner = $1
			RETURNING p.partition`,
		sqlRelease: `UPDATE ` + partitions + ` SET owner = NULL, lease_until = NULL
			WHERE partition = $1 AND owner = $2 AND epoch = $3`,
		sqlReleaseAll: `UPDATE ` + partitions + ` SET owner = NULL, lease_until = NULL WHERE owner = $1`,
		sqlReadLease: `SELECT coalesce(owner, ''), epoch, coalesce(extract(epoch FROM lease_until - now()), 0)::float8
			FROM ` + partitions + ` WHERE partition = $1`,
		// Fetch the oldest available records of each requested partition
		// (see fetchSQL).
		sqlFetch: fetchSQL(records, `SELECT * FROM unnest($1::int[], $2::int[]) AS q(partition, lim)`),
		// The tail poll's statement, and the same completing the
		// delivered batches the waiting actors left to it (see
		// tailFetchSQL).
		sqlTailFetch:    tailFetchSQL(records, partitions, false),
		sqlTailComplete: tailFetchSQL(records, partitions, true),
		// The newest record id (where a tail poll starts): one probe at the
		// end of each partition's key range (there is no index on id alone).
		sqlMaxID: `SELECT coalesce(max(x.max_id), 0) FROM ` + partitions + ` p
			CROSS JOIN LATERAL (SELECT max(r.id) AS max_id FROM ` + records + ` r WHERE r.partition = p.partition) x`,
		// Complete the batches of several partitions in one statement,
		// each fenced by its lease: a partition's rows change only if it is
		// still leased to this instance with the batch's epoch and the lease
		// has not expired. The row locks on the partitions serialize the
		// statement with a takeover (FOR SHARE re-checks a row a concurrent
		// takeover updated); they are taken in partition order, as the
		// coordinator's acquire and renew take theirs, so the two cannot
		// deadlock. The result lists the partitions whose fence held; the
		// data-modifying parts need no reference from it, since PostgreSQL
		// runs every data-modifying WITH part to completion.
		sqlComplete: `WITH ` + fencedDeleteSQL(records, partitions, "$1", "$2", "$3", "$4", "$5") + `retry AS (
				UPDATE ` + records + ` r
				SET attempts = r.attempts + 1, last_error = f.err,
				    available_at = now() + f.delay_us * interval '1 microsecond'
				FROM unnest($6::int[], $7::bigint[], $8::text[], $9::bigint[]) AS f(partition, id, err, delay_us)
				     JOIN lease ON lease.partition = f.partition
				WHERE r.partition = f.partition AND r.id = f.id
			), dead AS (
				DELETE FROM ` + records + ` r
				USING unnest($10::int[], $11::bigint[], $12::text[]) AS d(partition, id, err) JOIN lease ON lease.partition = d.partition
				WHERE r.partition = d.partition AND r.id = d.id
				RETURNING r.id, r.partition, r.key, r.topic, r.message_id, r.payload, r.metadata, r.created_at,
				          r.attempts + 1 AS attempts, d.err
			), moved AS (
				INSERT INTO ` + dead + ` (id, partition, key, topic, message_id, payload, metadata, created_at, attempts, last_error)
				SELECT * FROM dead
			)
			SELECT coalesce((SELECT array_agg(partition) FROM lease), '{}'::int[])`,
	}
}

// fetchSQL is the fetch statement over records for the partitions and
// limits the req query returns (columns partition, lim): the oldest
// available records of each (one LATERAL branch per partition, each with
// its own limit), skipping every record whose key has an earlier record
// still held back (delivery delay or retry backoff): per-key order. Each
// requested partition with held records also gets one summary row (id 0)
// whose last column is the seconds until its next held record becomes
// available, so an idle actor knows when to look again without another
// query.
func fetchSQL(records, req string) string { return fetchSQLExcluding(records, req, "") }

// fetchSQLExcluding is fetchSQL whose main fetch also applies the predicate
// exclude (on r), for records a statement deletes itself and must not
// return.
func fetchSQLExcluding(records, req, exclude string) string {
	return `WITH req AS (
				` + req + `
			), held AS MATERIALIZED (
				SELECT req.partition, h.key, min(h.id) AS first_id, min(h.available_at) AS next_at
				FROM req CROSS JOIN LATERAL (
					SELECT r.key, r.id, r.available_at FROM ` + records + ` r
					WHERE r.partition = req.partition AND r.available_at IS NOT NULL AND r.available_at > now()
					OFFSET 0
				) h
				GROUP BY req.partition, h.key
			)
			SELECT x.* FROM req CROSS JOIN LATERAL (
				SELECT r.partition, r.id, r.key, r.topic, r.message_id, r.payload, r.metadata::text, r.attempts, r.created_at,
				       date_part('epoch', now() - r.created_at)
				FROM ` + records + ` r
				WHERE r.partition = req.partition AND (r.available_at IS NULL OR r.available_at <= now())
				  AND NOT EXISTS (SELECT 1 FROM held h WHERE h.partition = r.partition AND h.key = r.key AND h.first_id < r.id)` + exclude + `
				ORDER BY r.id
				LIMIT req.lim
			) x
			UNION ALL
			SELECT h.partition, 0, '', '', '', ''::bytea, '{}', 0, now(), date_part('epoch', min(h.next_at) - now())
			FROM held h GROUP BY h.partition`
}

// fencedDeleteSQL is the fence every completing statement starts with, as
// WITH parts (ending in ", "): lease locks the partitions rows (FOR SHARE,
// in partition order, see sqlComplete) of the partitions in parts with
// the epochs in epochs that owner still holds, unexpired; done deletes the
// delivered records (doneParts, doneIDs) of those partitions only. The
// arguments are the statement's parameter references.
func fencedDeleteSQL(records, partitions, owner, parts, epochs, doneParts, doneIDs string) string {
	return `lease AS (
				SELECT p.partition FROM ` + partitions + ` p
				JOIN unnest(` + parts + `::int[], ` + epochs + `::bigint[]) AS l(partition, epoch) ON p.partition = l.partition
				WHERE p.epoch = l.epoch AND p.owner = ` + owner + ` AND p.lease_until > now()
				ORDER BY p.partition
				FOR SHARE OF p
			), done AS (
				DELETE FROM ` + records + ` r
				USING unnest(` + doneParts + `::int[], ` + doneIDs + `::bigint[]) AS d(partition, id) JOIN lease ON lease.partition = d.partition
				WHERE r.partition = d.partition AND r.id = d.id
			), `
}

// tailFetchSQL is the tail poll's statement (see tail.poll): of the
// partitions in $2 (those whose actors wait for work), the ones with
// records above $1 (one probe at the end of each partition's key range,
// which reads only what lies above $1) are fetched as sqlFetch does, at
// most $3 records each. One more row (partition -1) carries the highest id
// the probes saw, from which the next poll starts.
//
// With complete, the statement first completes the delivered batches the
// waiting actors left to the poll, fenced by their leases as sqlComplete
// is, and a row of partition -2 names each partition whose fence held. Its
// probes and fetch read the snapshot the statement started with, in which
// the records it deletes are still there: they skip those ids.
func tailFetchSQL(records, partitions string, complete bool) string {
	head, exclude := "WITH ", ""
	if complete {
		head += fencedDeleteSQL(records, partitions, "$6", "$4", "$5", "$7", "$8")
		exclude = ` AND r.id <> ALL($8::bigint[])`
	}
	sql := head + `probe AS MATERIALIZED (
				SELECT q.partition, $3::int AS lim, x.max_id FROM unnest($2::int[]) AS q(partition)
				CROSS JOIN LATERAL (SELECT max(r.id) AS max_id FROM ` + records + ` r
				                    WHERE r.partition = q.partition AND r.id > $1` + exclude + `) x
				WHERE x.max_id IS NOT NULL
			), ` + fetchSQLExcluding(records, `SELECT probe.partition, probe.lim FROM probe`, exclude)[len("WITH "):] + `
			UNION ALL
			SELECT -1, coalesce(max(probe.max_id), 0), '', '', '', ''::bytea, '{}', 0, now(), 0 FROM probe`
	if complete {
		sql += `
			UNION ALL
			SELECT -2, lease.partition, '', '', '', ''::bytea, '{}', 0, now(), 0 FROM lease`
	}
	return sql
}

// openStore checks that the schema is migrated to this binary's version,
// reads its partition count and opens the delivery pool (openDeliveryPool,
// with Config.DeliveryConns and Config.Pooler): the store an Engine runs
// on. While PostgreSQL refuses connections for lack of room it retries
// (retryConnect). close releases the delivery pool.
func openStore(ctx context.Context, pool *pgxpool.Pool, cfg Config) (*store, error) {
	var n int
	err := retryConnect(ctx, cfg, func() error {
		if err := checkVersion(ctx, pool, cfg); err != nil {
			return err
		}
		var err error
		n, err = readPartitions(ctx, pool, cfg)
		return err
	})
	if err != nil {
		return nil, err
	}
	s := newStore(pool, cfg)
	s.partitions = n
	if cfg.Retention > 0 { // see retention.go
		s.retention = true
		if s.sqlComplete, err = retainedCompleteSQL(s.sqlComplete, cfg); err != nil {
			return nil, err
		}
		if _, err := MaintainHistory(ctx, pool, cfg, time.Time{}); err != nil {
			return nil, err
		}
	}
	s.hot, err = openDeliveryPool(ctx, pool, deliveryPoolOptions{
		conns: cfg.DeliveryConns, transaction: cfg.Pooler == PoolerTransaction, logger: cfg.Logger,
	}, s.sqlFetch, s.sqlComplete, s.sqlTailFetch, s.sqlTailComplete, s.sqlMaxID)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// close closes the delivery pool, if open.
func (s *store) close() {
	if s.hot != nil {
		s.hot.Close()
	}
}

func micros(d time.Duration) int64 { return d.Microseconds() }

func (s *store) hotPool() *pgxpool.Pool {
	if s.hot != nil {
		return s.hot
	}
	return s.pool
}

// hotConns is the size of the engine's own pool: the batcher's fetch and
// completion slots and the tail poll.
const hotConns = 2*batcherSlots + 1

// openHotPool returns the engine's own pool for the delivery path: the
// user's pool configuration (credentials, TLS, hooks) with hotConns
// connections, all opened before it returns, each with the statements in
// prepare already prepared (a new connection's first completion is slow,
// and the first records after a start waited for it: bench/README.md, "Warm
// delivery pool"). Its sessions set
//
//   - plan_cache_mode = force_generic_plan. The delivery statements take
//     array parameters whose values change every call; left to itself
//     PostgreSQL re-plans them on every execution, which cost CPU and
//     latency (bench/README.md, "Generic plans").
//   - enable_seqscan = off and enable_bitmapscan = off. Only the engine's
//     own statements run here, and each is right only on its indexes; a
//     session keeps the generic plan it built first, usually on an empty
//     table, where PostgreSQL otherwise chose a sequential scan of the
//     whole records table for every fetch (see
//     TestDeliveryPlansStayIndexedWhenPlannedOnAnEmptyTable).
//   - jit = off. The statements are small; and with enable_seqscan off, a
//     plan that must scan a relation sequentially (a sequence, say) is
//     costed above jit_above_cost, and JIT compilation then took 0.4-0.9 s
//     per execution (measured on the tail probe with a sequence read).
//   - synchronous_commit = off. A completion then returns once its commit
//     record is in the WAL buffers, not on disk: the actor does not wait
//     for a flush per batch, and its flushes stop competing with the
//     application's commits. Other sessions see the completion at once, as
//     with any commit, and a later synchronous commit (a lease takeover,
//     the application's own) flushes it first, so no lease decision rests
//     on it unflushed. What a crash of PostgreSQL itself may take is the
//     last completions (at most about three wal_writer_delay, 600 ms by
//     default): their records are still pending afterwards and are
//     published again — duplicates, which at-least-once delivery allows and
//     consumers drop by message UUID — never lost.
func openHotPool(ctx context.Context, pool *pgxpool.Pool, prepare ...string) (*pgxpool.Pool, error) {
	return openDeliveryPool(ctx, pool, deliveryPoolOptions{conns: hotConns}, prepare...)
}

// deliveryPoolOptions shape the delivery pool (Config.DeliveryConns,
// Config.Pooler).
type deliveryPoolOptions struct {
	conns       int
	transaction bool // behind a pooler in transaction mode
	logger      *slog.Logger
}

// sessionSettings are the delivery sessions' settings (see openHotPool),
// set once per connection; localSettings is the same set for one
// transaction, for poolers in transaction mode (plan_cache_mode does not
// apply there: no statement is prepared).
const (
	sessionSettings = `SELECT set_config('plan_cache_mode', 'force_generic_plan', false),
		set_config('enable_seqscan', 'off', false), set_config('enable_bitmapscan', 'off', false),
		set_config('synchronous_commit', 'off', false), set_config('jit', 'off', false)`
	localSettings = `SELECT set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true),
		set_config('synchronous_commit', 'off', true), set_config('jit', 'off', true)`
)

// openDeliveryPool is openHotPool with o.conns connections. The settings
// are sent by a statement after connecting rather than as startup
// parameters, which PgBouncer refuses ("unsupported startup parameter").
// With o.transaction it prepares nothing, sets nothing on the session and
// runs statements unprepared (QueryExecModeExec); the store then sets the
// settings per transaction (hotQuery). Opening the connections up front is
// best effort: when PostgreSQL refuses some (too many clients, a role's
// CONNECTION LIMIT) the pool logs it and opens them when they are needed,
// and the statements that find none are retried by their actors.
func openDeliveryPool(ctx context.Context, pool *pgxpool.Pool, o deliveryPoolOptions, prepare ...string) (*pgxpool.Pool, error) {
	cfg := pool.Config().Copy()
	cfg.MaxConns = int32(o.conns)
	cfg.MinConns = int32(o.conns)
	userAfterConnect := cfg.AfterConnect
	if o.transaction {
		cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
		cfg.ConnConfig.StatementCacheCapacity = 0
		cfg.ConnConfig.DescriptionCacheCapacity = 0
		prepare = nil
	}
	cfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
		if userAfterConnect != nil {
			if err := userAfterConnect(ctx, conn); err != nil {
				return err
			}
		}
		if o.transaction {
			return nil
		}
		if _, err := conn.Exec(ctx, sessionSettings); err != nil {
			return fmt.Errorf("set the delivery session's settings: %w", err)
		}
		for _, sql := range prepare {
			// Named by its text, the statement is what Query(sql) uses.
			if _, err := conn.Prepare(ctx, sql, sql); err != nil {
				return fmt.Errorf("prepare a delivery statement: %w", err)
			}
		}
		return nil
	}
	hot, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postrelay: open the delivery pool: %w", err)
	}
	// Open every connection now, in parallel, rather than when the first
	// records arrive.
	conns := make([]*pgxpool.Conn, o.conns)
	errs := make([]error, o.conns)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() { conns[i], errs[i] = hot.Acquire(ctx) })
	}
	wg.Wait()
	opened := 0
	for _, c := range conns {
		if c != nil {
			c.Release()
			opened++
		}
	}
	if err := errors.Join(errs...); err != nil {
		if ctx.Err() != nil || !isConnectError(err) {
			hot.Close()
			return nil, fmt.Errorf("postrelay: open the delivery pool: %w", err)
		}
		if o.logger != nil {
			o.logger.Warn("postrelay: delivery pool: PostgreSQL refused connections; the rest open when needed",
				"opened", opened, "wanted", o.conns, "err", errs[slices.IndexFunc(errs, func(e error) bool { return e != nil })])
		}
	}
	return hot, nil
}

// isConnectError reports whether err is PostgreSQL refusing a connection
// for want of room (too many clients, a role's or database's CONNECTION
// LIMIT: SQLSTATE class 53) or while it starts (57P03), which a later
// attempt may overcome. An unreachable server is not: a relay pointed at
// the wrong address fails at once.
func isConnectError(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return strings.HasPrefix(pe.Code, "53") || pe.Code == "57P03"
	}
	return false
}

// hotQuery runs a delivery statement on the delivery pool. Behind a
// pooler in transaction mode it runs in its own transaction, its settings
// set locally first, all sent in one round trip (BEGIN, settings,
// statement, COMMIT); the rows' Err reports a failed COMMIT once Next has
// returned false.
func (s *store) hotQuery(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if s.cfg.Pooler != PoolerTransaction {
		return s.hotPool().Query(ctx, sql, args...)
	}
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(localSettings)
	b.Queue(sql, args...)
	b.Queue("COMMIT")
	br := s.hotPool().SendBatch(ctx, b)
	for range 2 {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return nil, err
		}
	}
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return nil, err
	}
	return &txRows{Rows: rows, br: br}, nil
}

// txRows are a statement's rows inside hotQuery's transaction: when they
// end, the transaction commits and the batch closes.
type txRows struct {
	pgx.Rows
	br   pgx.BatchResults
	done bool
	err  error
}

func (r *txRows) Next() bool {
	if r.done {
		return false
	}
	if r.Rows.Next() {
		return true
	}
	r.finish()
	return false
}

func (r *txRows) finish() {
	if r.done {
		return
	}
	r.done = true
	r.Rows.Close()
	r.err = r.Rows.Err()
	if r.err == nil {
		_, r.err = r.br.Exec() // COMMIT
	}
	if err := r.br.Close(); r.err == nil {
		r.err = err
	}
}

func (r *txRows) Close() { r.finish() }

func (r *txRows) Err() error {
	if r.done {
		return r.err
	}
	return r.Rows.Err()
}

func (s *store) heartbeat(ctx context.Context, id, host string, pid int) error {
	_, err := s.pool.Exec(ctx, s.sqlHeartbeat, id, host, pid)
	return err
}

func (s *store) liveInstances(ctx context.Context, ttl time.Duration) ([]string, error) {
	rows, err := s.pool.Query(ctx, s.sqlLiveInstances, micros(ttl))
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

func (s *store) deleteInstance(ctx context.Context, id string) error {
	_, err := s.pool.Exec(ctx, s.sqlDeleteInstance, id)
	return err
}

func (s *store) reapInstances(ctx context.Context, olderThan time.Duration) error {
	_, err := s.pool.Exec(ctx, s.sqlReapInstances, micros(olderThan))
	return err
}

// acquire takes the leases of the given partitions that are free, expired or
// already ours, each with a new epoch.
func (s *store) acquire(ctx context.Context, me string, ttl time.Duration, ps []int32) (map[int]int64, error) {
	rows, err := s.pool.Query(ctx, s.sqlAcquire, me, micros(ttl), ps)
	if err != nil {
		return nil, err
	}
	got := make(map[int]int64)
	var p int32
	var epoch int64
	_, err = pgx.ForEachRow(rows, []any{&p, &epoch}, func() error {
		got[int(p)] = epoch
		return nil
	})
	return got, err
}

// renew extends the leases still held with the given epochs and returns the
// partitions renewed.
func (s *store) renew(ctx context.Context, me string, ttl time.Duration, ps []int32, epochs []int64) (map[int]bool, error) {
	rows, err := s.pool.Query(ctx, s.sqlRenew, me, micros(ttl), ps, epochs)
	if err != nil {
		return nil, err
	}
	renewed := make(map[int]bool, len(ps))
	var p int32
	_, err = pgx.ForEachRow(rows, []any{&p}, func() error {
		renewed[int(p)] = true
		return nil
	})
	return renewed, err
}

// lease is a partition's row in the partitions table.
type lease struct {
	owner     string        // "" when free
	epoch     int64         // incremented by every acquisition
	remaining time.Duration // lease_until - now() on the database clock; 0 or less: expired
}

// readLease reads partition p's lease.
func (s *store) readLease(ctx context.Context, p int) (lease, error) {
	var l lease
	var sec float64
	err := s.pool.QueryRow(ctx, s.sqlReadLease, p).Scan(&l.owner, &l.epoch, &sec)
	l.remaining = time.Duration(sec * float64(time.Second))
	return l, err
}

func (s *store) release(ctx context.Context, me string, p int, epoch int64) error {
	_, err := s.pool.Exec(ctx, s.sqlRelease, p, me, epoch)
	return err
}

func (s *store) releaseAll(ctx context.Context, me string) error {
	_, err := s.pool.Exec(ctx, s.sqlReleaseAll, me)
	return err
}

// fetched is one record read by a partition actor.
type fetched struct {
	id        int64
	key       string
	topic     string
	messageID string
	payload   []byte
	metadata  map[string]string
	mdText    string // the stored metadata's JSON text, for the history
	mdErr     error  // undecodable metadata: the record is dead-lettered at once
	attempts  int    // attempts made before this one
	createdAt time.Time
	age       time.Duration // now() - created_at on the database clock
}

// fetchReq asks for up to limit available records of partition p.
type fetchReq struct {
	p     int
	limit int
}

// fetchResult is one partition's share of a fetch.
type fetchResult struct {
	batch []fetched
	// nextHeld is how long until the partition's next held record (delayed
	// or backing off) becomes available; hasHeld says there is one.
	nextHeld time.Duration
	hasHeld  bool
	// cohort is set on a batch the tail poll handed over (see cohort).
	cohort *cohort
	// done is the delivered batch the actor left to the tail poll that
	// handed this result over, completed by its statement (see tailDone);
	// lost says its lease fence failed (nothing was written, and batch is
	// empty).
	done *tailDone
	lost bool
}

// fetch reads the available records of several partitions in one
// statement; out[i] is reqs[i]'s share.
func (s *store) fetch(ctx context.Context, reqs []fetchReq, out []fetchResult) error {
	ps, lims := fetchArgs(reqs, out)
	rows, err := s.hotQuery(ctx, s.sqlFetch, ps, lims)
	if err != nil {
		return err
	}
	_, _, err = scanFetch(rows, reqs, out)
	return err
}

// tailFetch is the tail poll's statement: the records of the partitions
// in reqs above from (see tailFetchSQL), into out, and the highest id the
// probes saw. dones[i], when set, is a delivered batch of reqs[i]'s
// partition to complete in the same statement, fenced by its lease; held
// then lists the partitions whose fence held (dones nil: no completions).
func (s *store) tailFetch(ctx context.Context, from int64, reqs []fetchReq, out []fetchResult, me string, dones []*tailDone, args *arrayText) (maxID int64, held []int32, err error) {
	args.reset()
	args.start()
	for i, r := range reqs {
		args.add(int64(r.p))
		out[i] = fetchResult{}
	}
	args.end()
	limit := 0
	if len(reqs) > 0 {
		limit = reqs[0].limit // the tail asks the same of every partition
	}
	var rows pgx.Rows
	if len(dones) == 0 {
		a := args.strings()
		rows, err = s.hotQuery(ctx, s.sqlTailFetch, from, a[0], limit)
	} else {
		// $4, $5: the fenced partitions and their epochs; $7, $8: the
		// delivered records (partition, id) of those partitions.
		array := func(add func(p int, d *tailDone)) {
			args.start()
			for i, d := range dones {
				if d != nil {
					add(reqs[i].p, d)
				}
			}
			args.end()
		}
		array(func(p int, _ *tailDone) { args.add(int64(p)) })
		array(func(_ int, d *tailDone) { args.add(d.epoch) })
		array(func(p int, d *tailDone) {
			for range d.ids {
				args.add(int64(p))
			}
		})
		array(func(_ int, d *tailDone) {
			for _, id := range d.ids {
				args.add(id)
			}
		})
		a := args.strings()
		rows, err = s.hotQuery(ctx, s.sqlTailComplete, from, a[0], limit, a[1], a[2], me, a[3], a[4])
	}
	if err != nil {
		return 0, nil, err
	}
	return scanFetch(rows, reqs, out)
}

// arrayText writes the array arguments of a statement as PostgreSQL array
// literals ("{3,17,42}") into one reused buffer and returns them as
// substrings of one string. pgx sends a string argument as text, as it is:
// a tail poll's arrays then cost one allocation, where pgx's binary array
// encoding cost several and grew its parameter and message buffers past the
// sizes it keeps (256 and 1,024 bytes) on every poll. With fetchScratch, a
// quiet poll went from 10.3 KB to 1.1 KB of garbage (BenchmarkTailPoll;
// bench/README.md, "Steady-state garbage").
type arrayText struct {
	buf  []byte
	ends []int    // where each array ends in buf
	out  []string // strings' result, reused
	any  bool     // the current array has an element
}

func (a *arrayText) reset() { a.buf, a.ends = a.buf[:0], a.ends[:0] }

// start opens an array, add appends an element to it, end closes it.
func (a *arrayText) start() { a.buf, a.any = append(a.buf, '{'), false }

func (a *arrayText) add(v int64) {
	if a.any {
		a.buf = append(a.buf, ',')
	}
	a.buf, a.any = strconv.AppendInt(a.buf, v, 10), true
}

func (a *arrayText) end() {
	a.buf = append(a.buf, '}')
	a.ends = append(a.ends, len(a.buf))
}

// strings returns the arrays written since reset, in order; the slice is
// reused by the next call.
func (a *arrayText) strings() []string {
	all := string(a.buf)
	a.out = a.out[:0]
	from := 0
	for _, e := range a.ends {
		a.out = append(a.out, all[from:e])
		from = e
	}
	return a.out
}

// maxID returns the newest record id (0 for an empty table).
func (s *store) maxID(ctx context.Context) (int64, error) {
	rows, err := s.hotQuery(ctx, s.sqlMaxID)
	if err != nil {
		return 0, err
	}
	return pgx.CollectExactlyOneRow(rows, pgx.RowTo[int64])
}

// fetchArgs returns the partitions and limits of reqs as statement
// arguments, and empties out.
func fetchArgs(reqs []fetchReq, out []fetchResult) (ps, lims []int32) {
	ps = make([]int32, len(reqs))
	lims = make([]int32, len(reqs))
	for i, r := range reqs {
		ps[i], lims[i] = int32(r.p), int32(r.limit)
		out[i] = fetchResult{}
	}
	return ps, lims
}

// scanFetch reads a fetch statement's rows into out (out[i] is reqs[i]'s
// share). A row of partition -1 carries the highest id a tail fetch saw,
// returned as maxID; each row of partition -2 names in its id a partition
// whose lease fence held in a completing tail fetch, returned in held.
//
// The rows are read into a pooled scratch slice through one set of scan
// targets, then each partition's share is copied into a slice of exactly
// its size: a steady-state batch of two records does not hold a slice
// sized for the fetch limit, no batch shares a backing array that would
// keep another partition's payloads alive, and a row costs no allocations
// beyond its values and its metadata's (scanning into a fresh variable per
// row moved five of them to the heap, and the scan's argument list with
// them).
func scanFetch(rows pgx.Rows, reqs []fetchReq, out []fetchResult) (maxID int64, held []int32, err error) {
	defer rows.Close()
	sc := fetchScratchPool.Get().(*fetchScratch)
	defer sc.release()
	sc.index(reqs)
	cur := &sc.cur
	for rows.Next() {
		*cur = fetched{}
		if err := rows.Scan(sc.dest...); err != nil {
			return 0, nil, err
		}
		switch sc.p {
		case -1:
			maxID = cur.id
			continue
		case -2:
			held = append(held, int32(cur.id))
			continue
		}
		i := sc.lookup(sc.p)
		if i < 0 {
			return 0, nil, fmt.Errorf("postrelay: fetch returned partition %d, which was not asked for", sc.p)
		}
		if cur.id == 0 { // the partition's held-records summary
			out[i].nextHeld, out[i].hasHeld = time.Duration(sc.sec*float64(time.Second)), true
			continue
		}
		cur.attempts = int(sc.attempts)
		cur.age = time.Duration(sc.sec * float64(time.Second))
		cur.mdText = sc.md
		cur.metadata, cur.mdErr = DecodeMetadata([]byte(sc.md))
		sc.rows = append(sc.rows, *cur)
		sc.at = append(sc.at, i)
		sc.counts[i]++
	}
	if err := rows.Err(); err != nil {
		return 0, nil, err
	}
	for i, n := range sc.counts {
		if n > 0 {
			out[i].batch = make([]fetched, 0, n)
		}
	}
	for k := range sc.rows {
		i := sc.at[k]
		out[i].batch = append(out[i].batch, sc.rows[k])
	}
	return maxID, held, nil
}

// fetchScratch is what scanFetch reads a fetch's rows with, pooled: at
// steady load the tail polls hundreds of times a second, and a map from
// partition to request, the per-partition counts and the scan targets
// allocated per poll were, with pgx's array encoding, most of the relay's
// garbage (bench/README.md, "Steady-state garbage"). rows[k] belongs to
// out[at[k]].
type fetchScratch struct {
	rows   []fetched
	at     []int
	counts []int   // rows per request
	slot   []int32 // partition → 1 + its request's index (0: not asked for)
	asked  []int   // the partitions set in slot
	// the scan targets, and dest pointing at them
	cur         fetched
	p, attempts int32
	md          string
	sec         float64
	dest        []any
}

var fetchScratchPool = sync.Pool{New: func() any {
	sc := new(fetchScratch)
	sc.dest = []any{&sc.p, &sc.cur.id, &sc.cur.key, &sc.cur.topic, &sc.cur.messageID, &sc.cur.payload, &sc.md, &sc.attempts, &sc.cur.createdAt, &sc.sec}
	return sc
}}

// index prepares the scratch for reqs: lookup finds a partition's request
// and counts is zeroed.
func (sc *fetchScratch) index(reqs []fetchReq) {
	sc.counts = slices.Grow(sc.counts[:0], len(reqs))[:len(reqs)]
	clear(sc.counts)
	for i, r := range reqs {
		if r.p >= len(sc.slot) {
			sc.slot = slices.Grow(sc.slot, r.p+1-len(sc.slot))[:r.p+1]
		}
		sc.slot[r.p] = int32(i + 1)
		sc.asked = append(sc.asked, r.p)
	}
}

// lookup returns the index of partition p's request, or -1.
func (sc *fetchScratch) lookup(p int32) int {
	if p < 0 || int(p) >= len(sc.slot) {
		return -1
	}
	return int(sc.slot[p]) - 1
}

// release empties the scratch (dropping its references to the records'
// values) and returns it to the pool; one that grew past what a shared
// fetch returns (a single partition's fetch is not bounded by that) is let
// go instead.
func (sc *fetchScratch) release() {
	if cap(sc.rows) > 2*batcherMaxRows {
		return
	}
	clear(sc.rows)
	sc.rows, sc.at = sc.rows[:0], sc.at[:0]
	for _, p := range sc.asked {
		sc.slot[p] = 0
	}
	sc.asked = sc.asked[:0]
	sc.cur, sc.md = fetched{}, ""
	fetchScratchPool.Put(sc)
}

// fetchOne is fetch for one partition.
func (s *store) fetchOne(ctx context.Context, p, limit int) (fetchResult, error) {
	out := make([]fetchResult, 1)
	err := s.fetch(ctx, []fetchReq{{p: p, limit: limit}}, out)
	return out[0], err
}

// completion is a batch's outcome, written in one fenced statement.
type completion struct {
	delivered []int64
	retryIDs  []int64
	retryErrs []string
	retryUS   []int64
	deadIDs   []int64
	deadErrs  []string
	// hist is the delivered records' history batch (engines with
	// Retention; see encodeHistory).
	hist historyBatch
}

// historyBatch is one partition's delivered records in history format 1
// (history_format.go) with the bounds its history row carries.
type historyBatch struct {
	records                []byte // nil: nothing to keep
	firstID, lastID        int64
	n                      int32
	minCreated, maxCreated time.Time
}

// encodeHistory encodes the records of batch that c delivered (in the
// batch's id order) into c.hist.
func (c *completion) encodeHistory(p int, batch []fetched) {
	h := &c.hist
	*h = historyBatch{}
	if len(c.delivered) == 0 {
		return
	}
	var delivered map[int64]struct{} // nil: every record of the batch was delivered
	if len(c.delivered) != len(batch) {
		delivered = make(map[int64]struct{}, len(c.delivered))
		for _, id := range c.delivered {
			delivered[id] = struct{}{}
		}
	}
	size := 1
	for i := range batch {
		r := &batch[i]
		size += historyRecordSize(r.key, r.topic, r.messageID, r.mdText, r.payload)
	}
	h.records = make([]byte, 0, size)
	h.records = append(h.records, historyFormat)
	for i := range batch {
		r := &batch[i]
		if delivered != nil {
			if _, ok := delivered[r.id]; !ok {
				continue
			}
		}
		h.records = appendHistoryRecord(h.records, r.id, p, r.createdAt, r.key, r.topic, r.messageID, r.mdText, r.payload)
		if h.n == 0 {
			h.firstID, h.minCreated, h.maxCreated = r.id, r.createdAt, r.createdAt
		}
		h.lastID = r.id // batch is in id order
		if r.createdAt.Before(h.minCreated) {
			h.minCreated = r.createdAt
		}
		if r.createdAt.After(h.maxCreated) {
			h.maxCreated = r.createdAt
		}
		h.n++
	}
}

func (c *completion) reset() {
	c.hist = historyBatch{}
	c.delivered = c.delivered[:0]
	c.retryIDs, c.retryErrs, c.retryUS = c.retryIDs[:0], c.retryErrs[:0], c.retryUS[:0]
	c.deadIDs, c.deadErrs = c.deadIDs[:0], c.deadErrs[:0]
}

func (c *completion) empty() bool {
	return len(c.delivered) == 0 && len(c.retryIDs) == 0 && len(c.deadIDs) == 0
}

// completeReq is one partition's batch outcome to write under its lease.
type completeReq struct {
	p     int
	epoch int64
	c     *completion
}

// complete writes the outcomes of several partitions' batches in one
// statement. Each is written if and only if its lease (this instance,
// epoch) is still held and unexpired; errs[i] is ErrLeaseLost for a batch
// whose fence failed, which then wrote nothing.
func (s *store) complete(ctx context.Context, me string, reqs []completeReq, errs []error) error {
	var ps []int32
	var epochs []int64
	var all completion
	var doneP, retryP, deadP []int32
	var hist historyArgs
	for _, r := range reqs {
		ps = append(ps, int32(r.p))
		epochs = append(epochs, r.epoch)
		c := r.c
		all.delivered = append(all.delivered, c.delivered...)
		all.retryIDs = append(all.retryIDs, c.retryIDs...)
		all.retryErrs = append(all.retryErrs, c.retryErrs...)
		all.retryUS = append(all.retryUS, c.retryUS...)
		all.deadIDs = append(all.deadIDs, c.deadIDs...)
		all.deadErrs = append(all.deadErrs, c.deadErrs...)
		doneP = appendN(doneP, int32(r.p), len(c.delivered))
		retryP = appendN(retryP, int32(r.p), len(c.retryIDs))
		deadP = appendN(deadP, int32(r.p), len(c.deadIDs))
		if s.retention && c.hist.n > 0 {
			hist.add(r.p, &c.hist)
		}
	}
	args := []any{me, ps, epochs,
		nonNil(doneP), nonNil(all.delivered),
		nonNil(retryP), nonNil(all.retryIDs), nonNil(all.retryErrs), nonNil(all.retryUS),
		nonNil(deadP), nonNil(all.deadIDs), nonNil(all.deadErrs),
	}
	if s.retention {
		args = append(args, nonNil(hist.partitions), nonNil(hist.firstIDs), nonNil(hist.lastIDs), nonNil(hist.ns),
			nonNil(hist.minCreated), nonNil(hist.maxCreated), nonNil(hist.records))
	}
	rows, err := s.hotQuery(ctx, s.sqlComplete, args...)
	if err != nil {
		return err
	}
	held, err := pgx.CollectExactlyOneRow(rows, pgx.RowTo[[]int32])
	if err != nil {
		return err
	}
	for i, r := range reqs {
		errs[i] = nil
		if !slices.Contains(held, int32(r.p)) {
			errs[i] = fmt.Errorf("%w: partition %d epoch %d", ErrLeaseLost, r.p, r.epoch)
		}
	}
	return nil
}

// historyArgs are the history rows of a retained completion statement
// ($13 to $19 of retainedCompleteSQL), one per partition.
type historyArgs struct {
	partitions             []int32
	firstIDs, lastIDs      []int64
	ns                     []int32
	minCreated, maxCreated []time.Time
	records                [][]byte
}

func (h *historyArgs) add(p int, b *historyBatch) {
	h.partitions = append(h.partitions, int32(p))
	h.firstIDs, h.lastIDs = append(h.firstIDs, b.firstID), append(h.lastIDs, b.lastID)
	h.ns = append(h.ns, b.n)
	h.minCreated, h.maxCreated = append(h.minCreated, b.minCreated), append(h.maxCreated, b.maxCreated)
	h.records = append(h.records, b.records)
}

// appendN appends n copies of v to s.
func appendN[T any](s []T, v T, n int) []T {
	for range n {
		s = append(s, v)
	}
	return s
}

// completeOne is complete for one partition's batch.
func (s *store) completeOne(ctx context.Context, p int, me string, epoch int64, c *completion) error {
	errs := make([]error, 1)
	if err := s.complete(ctx, me, []completeReq{{p: p, epoch: epoch, c: c}}, errs); err != nil {
		return err
	}
	return errs[0]
}

// nonNil makes a nil slice an empty array parameter rather than NULL.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// DecodeMetadata decodes a record's stored metadata (a JSON object). String
// values are taken as they are; other JSON values are kept as their JSON
// text, so metadata written by SQL clients never blocks delivery. Anything
// other than an object is an error.
func DecodeMetadata(b []byte) (map[string]string, error) {
	if string(b) == "{}" {
		return make(map[string]string, 4), nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("postrelay: metadata is not a JSON object: %w", err)
	}
	if raw == nil {
		return nil, errors.New("postrelay: metadata is not a JSON object: null")
	}
	md := make(map[string]string, len(raw))
	for k, v := range raw {
		if len(v) > 0 && v[0] == '"' {
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				return nil, fmt.Errorf("postrelay: metadata key %q: %w", k, err)
			}
			md[k] = s
			continue
		}
		md[k] = string(v)
	}
	return md, nil
}
