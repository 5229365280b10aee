package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// store holds every SQL statement the engine runs. Statements are built once
// from the validated schema name; values always travel as parameters.
type store struct {
	pool *pgxpool.Pool
	cfg  Config

	sqlHeartbeat, sqlLiveInstances, sqlDeleteInstance, sqlReapInstances string
	sqlAcquire, sqlRenew, sqlRelease, sqlReleaseAll                     string
	sqlFetch, sqlNextAvailable, sqlComplete, sqlTail                    string
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
		sqlAcquire: `UPDATE ` + partitions + `
			SET owner = $1, epoch = epoch + 1, lease_until = now() + $2::bigint * interval '1 microsecond'
			WHERE partition = ANY($3::int[])
			  AND (owner IS NULL OR owner = $1 OR lease_until IS NULL OR lease_until <= now())
			RETURNING partition, epoch`,
		sqlRenew: `UPDATE ` + partitions + ` AS p
			SET lease_until = now() + $2::bigint * interval '1 microsecond'
			FROM unnest($3::int[], $4::bigint[]) AS h(partition, epoch)
			WHERE p.partition = h.partition AND p.epoch = h.epoch AND p.owner = $1
			RETURNING p.partition`,
		sqlRelease: `UPDATE ` + partitions + ` SET owner = NULL, lease_until = NULL
			WHERE partition = $1 AND owner = $2 AND epoch = $3`,
		sqlReleaseAll: `UPDATE ` + partitions + ` SET owner = NULL, lease_until = NULL WHERE owner = $1`,
		// Fetch the oldest available records of a partition, skipping every
		// record whose key has an earlier record still held back (delivery
		// delay or retry backoff): per-key order.
		sqlFetch: `WITH held AS (
				SELECT key, min(id) AS first_id FROM ` + records + `
				WHERE partition = $1 AND available_at IS NOT NULL AND available_at > now()
				GROUP BY key
			)
			SELECT r.id, r.key, r.topic, r.message_id, r.payload, r.metadata::text, r.attempts, r.created_at,
			       extract(epoch FROM now() - r.created_at)
			FROM ` + records + ` r
			WHERE r.partition = $1 AND (r.available_at IS NULL OR r.available_at <= now())
			  AND NOT EXISTS (SELECT 1 FROM held h WHERE h.key = r.key AND h.first_id < r.id)
			ORDER BY r.id
			LIMIT $2`,
		sqlTail: `SELECT partition, max(id) FROM ` + records + ` WHERE id > $1 GROUP BY partition`,
		sqlNextAvailable: `SELECT extract(epoch FROM min(available_at) - now()) FROM ` + records + `
			WHERE partition = $1 AND available_at IS NOT NULL AND available_at > now()`,
		// Complete a batch in one statement, fenced by the lease: the row
		// lock on the partition serializes it with a takeover, and a lease
		// that is no longer (owner, epoch) or has expired makes every part
		// a no-op.
		sqlComplete: `WITH lease AS (
				SELECT partition FROM ` + partitions + `
				WHERE partition = $1 AND owner = $2 AND epoch = $3 AND lease_until > now()
				FOR SHARE
			), done AS (
				DELETE FROM ` + records + ` r USING lease
				WHERE r.id = ANY($4::bigint[]) AND r.partition = lease.partition
				RETURNING r.id
			), retry AS (
				UPDATE ` + records + ` r
				SET attempts = r.attempts + 1, last_error = f.err,
				    available_at = now() + f.delay_us * interval '1 microsecond'
				FROM unnest($5::bigint[], $6::text[], $7::bigint[]) AS f(id, err, delay_us), lease
				WHERE r.id = f.id AND r.partition = lease.partition
				RETURNING r.id
			), dead AS (
				DELETE FROM ` + records + ` r USING unnest($8::bigint[], $9::text[]) AS d(id, err), lease
				WHERE r.id = d.id AND r.partition = lease.partition
				RETURNING r.id, r.partition, r.key, r.topic, r.message_id, r.payload, r.metadata, r.created_at,
				          r.attempts + 1 AS attempts, d.err
			), moved AS (
				INSERT INTO ` + dead + ` (id, partition, key, topic, message_id, payload, metadata, created_at, attempts, last_error)
				SELECT * FROM dead
				RETURNING id
			)
			SELECT (SELECT count(*) FROM lease), (SELECT count(*) FROM done), (SELECT count(*) FROM retry), (SELECT count(*) FROM moved)`,
	}
}

func micros(d time.Duration) int64 { return d.Microseconds() }

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
	mdErr     error // undecodable metadata: the record is dead-lettered at once
	attempts  int   // attempts made before this one
	createdAt time.Time
	age       time.Duration // now() - created_at on the database clock
}

func (s *store) fetch(ctx context.Context, p, limit int, into []fetched) ([]fetched, error) {
	rows, err := s.pool.Query(ctx, s.sqlFetch, p, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := into[:0]
	for rows.Next() {
		var f fetched
		var md string
		var attempts int32
		var ageSec float64
		if err := rows.Scan(&f.id, &f.key, &f.topic, &f.messageID, &f.payload, &md, &attempts, &f.createdAt, &ageSec); err != nil {
			return nil, err
		}
		f.attempts = int(attempts)
		f.age = time.Duration(ageSec * float64(time.Second))
		f.metadata, f.mdErr = DecodeMetadata([]byte(md))
		out = append(out, f)
	}
	return out, rows.Err()
}

// nextAvailable returns how long until the partition's next held record
// becomes available, if there is one.
func (s *store) nextAvailable(ctx context.Context, p int) (time.Duration, bool, error) {
	var sec *float64
	if err := s.pool.QueryRow(ctx, s.sqlNextAvailable, p).Scan(&sec); err != nil {
		return 0, false, err
	}
	if sec == nil {
		return 0, false, nil
	}
	return time.Duration(*sec * float64(time.Second)), true, nil
}

// completion is a batch's outcome, written in one fenced statement.
type completion struct {
	delivered []int64
	retryIDs  []int64
	retryErrs []string
	retryUS   []int64
	deadIDs   []int64
	deadErrs  []string
}

func (c *completion) reset() {
	c.delivered = c.delivered[:0]
	c.retryIDs, c.retryErrs, c.retryUS = c.retryIDs[:0], c.retryErrs[:0], c.retryUS[:0]
	c.deadIDs, c.deadErrs = c.deadIDs[:0], c.deadErrs[:0]
}

func (c *completion) empty() bool {
	return len(c.delivered) == 0 && len(c.retryIDs) == 0 && len(c.deadIDs) == 0
}

// complete writes a batch's outcome if and only if the lease (owner, epoch)
// is still held and unexpired; otherwise it writes nothing and returns
// ErrLeaseLost.
func (s *store) complete(ctx context.Context, p int, me string, epoch int64, c *completion) error {
	var leased, done, retried, moved int64
	err := s.pool.QueryRow(ctx, s.sqlComplete, p, me, epoch,
		c.delivered, c.retryIDs, c.retryErrs, c.retryUS, c.deadIDs, c.deadErrs,
	).Scan(&leased, &done, &retried, &moved)
	if err != nil {
		return err
	}
	if leased == 0 {
		return fmt.Errorf("%w: partition %d epoch %d", ErrLeaseLost, p, epoch)
	}
	return nil
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
