package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Admin inspects and repairs an outbox: status, dead letters. The CLI's
// `status` and `dead` commands use it.
type Admin struct {
	pool *pgxpool.Pool
	cfg  Config
	sql  adminSQL
	err  error
}

// NewAdmin returns an Admin for the schema in cfg. An invalid config is
// reported by every call.
func NewAdmin(pool *pgxpool.Pool, cfg Config) *Admin {
	cfg, err := cfg.prepared()
	return &Admin{pool: pool, cfg: cfg, sql: newAdminSQL(cfg), err: err}
}

// DeadLetter is a record that exhausted its attempts.
type DeadLetter struct {
	ID             int64             `json:"id"`
	Partition      int               `json:"partition"`
	Key            string            `json:"key"`
	Topic          string            `json:"topic"`
	MessageID      string            `json:"message_id"`
	Payload        []byte            `json:"payload"`
	Metadata       map[string]string `json:"metadata"`
	CreatedAt      time.Time         `json:"created_at"`
	Attempts       int               `json:"attempts"`
	LastError      string            `json:"last_error"`
	DeadLetteredAt time.Time         `json:"dead_lettered_at"`
}

// DeadLetterQuery selects dead letters. Zero fields select everything.
type DeadLetterQuery struct {
	IDs   []int64 // only these ids
	Topic string  // only this topic
	Limit int     // at most this many (0: 1000)
}

// DeadLetters lists dead letters, oldest first.
func (a *Admin) DeadLetters(ctx context.Context, q DeadLetterQuery) ([]DeadLetter, error) {
	if a.err != nil {
		return nil, a.err
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 1000
	}
	rows, err := a.pool.Query(ctx, a.sql.deadLetters, nilIfEmpty(q.IDs), q.Topic, limit)
	if err != nil {
		return nil, fmt.Errorf("postrelay: list dead letters in schema %q: %w", a.cfg.Schema, err)
	}
	defer rows.Close()
	var out []DeadLetter
	for rows.Next() {
		var d DeadLetter
		var md string
		if err := rows.Scan(&d.ID, &d.Partition, &d.Key, &d.Topic, &d.MessageID, &d.Payload, &md, &d.CreatedAt,
			&d.Attempts, &d.LastError, &d.DeadLetteredAt); err != nil {
			return nil, fmt.Errorf("postrelay: list dead letters: %w", err)
		}
		d.Metadata, _ = DecodeMetadata([]byte(md))
		out = append(out, d)
	}
	return out, rows.Err()
}

// Requeue moves the selected dead letters back into the records table with
// their attempts reset, keeping message id, key, payload and metadata, and
// wakes the relay. Requeued records are delivered after records of the same
// key written before the requeue. It returns how many were requeued.
func (a *Admin) Requeue(ctx context.Context, q DeadLetterQuery) (int, error) {
	return a.moveDead(ctx, q, true)
}

// Purge deletes the selected dead letters for good and returns how many.
func (a *Admin) Purge(ctx context.Context, q DeadLetterQuery) (int, error) {
	return a.moveDead(ctx, q, false)
}

func (a *Admin) moveDead(ctx context.Context, q DeadLetterQuery, requeue bool) (int, error) {
	if a.err != nil {
		return 0, a.err
	}
	sql := a.sql.purgeDead
	if requeue {
		sql = a.sql.requeueDead
	}
	var n, ignored int
	if err := a.pool.QueryRow(ctx, sql, nilIfEmpty(q.IDs), q.Topic).Scan(&n, &ignored); err != nil {
		verb := "purge"
		if requeue {
			verb = "requeue"
		}
		return 0, fmt.Errorf("postrelay: %s dead letters in schema %q: %w", verb, a.cfg.Schema, err)
	}
	return n, nil
}

func nilIfEmpty(ids []int64) []int64 {
	if len(ids) == 0 {
		return nil
	}
	return ids
}

// Status is a snapshot of an outbox.
type Status struct {
	Schema           string            `json:"schema"`
	SchemaVersion    int               `json:"schema_version"`
	Partitions       int               `json:"partitions"`
	Instances        []InstanceStatus  `json:"instances"`
	PartitionStatus  []PartitionStatus `json:"partition_status"`
	Pending          int64             `json:"pending"`
	OldestPendingAge time.Duration     `json:"oldest_pending_age_ns"`
	DeadLetters      int64             `json:"dead_letters"`
}

// InstanceStatus is one relay instance.
type InstanceStatus struct {
	ID           string        `json:"id"`
	Hostname     string        `json:"hostname"`
	PID          int           `json:"pid"`
	StartedAt    time.Time     `json:"started_at"`
	HeartbeatAge time.Duration `json:"heartbeat_age_ns"`
	Live         bool          `json:"live"`
	Partitions   int           `json:"partitions"`
}

// PartitionStatus is one partition's lease and backlog.
type PartitionStatus struct {
	Partition        int           `json:"partition"`
	Owner            string        `json:"owner"`
	Epoch            int64         `json:"epoch"`
	LeaseRemaining   time.Duration `json:"lease_remaining_ns"`
	Pending          int64         `json:"pending"`
	OldestPendingAge time.Duration `json:"oldest_pending_age_ns"`
}

// Status reads instances, leases, backlog per partition, the oldest pending
// age and the dead-letter count. Instances count as live while their
// heartbeat is younger than LeaseTTL.
func (a *Admin) Status(ctx context.Context) (Status, error) {
	if a.err != nil {
		return Status{}, a.err
	}
	st := Status{Schema: a.cfg.Schema}
	if err := checkVersion(ctx, a.pool, a.cfg); err != nil {
		return st, err
	}
	st.SchemaVersion = SchemaVersion()
	n, err := readPartitions(ctx, a.pool, a.cfg)
	if err != nil {
		return st, err
	}
	st.Partitions = n
	wrap := func(what string, err error) error {
		return fmt.Errorf("postrelay: status of schema %q: %s: %w", a.cfg.Schema, what, err)
	}

	rows, err := a.pool.Query(ctx, a.sql.partitionStatus)
	if err != nil {
		return st, wrap("partitions", err)
	}
	owners := map[string]int{}
	var ps PartitionStatus
	var lease, age float64
	_, err = pgx.ForEachRow(rows, []any{&ps.Partition, &ps.Owner, &ps.Epoch, &lease, &ps.Pending, &age}, func() error {
		ps.LeaseRemaining = max(secs(lease), 0)
		ps.OldestPendingAge = secs(age)
		if ps.LeaseRemaining <= 0 {
			ps.Owner = "" // expired leases are free
		}
		st.PartitionStatus = append(st.PartitionStatus, ps)
		st.Pending += ps.Pending
		st.OldestPendingAge = max(st.OldestPendingAge, ps.OldestPendingAge)
		if ps.Owner != "" {
			owners[ps.Owner]++
		}
		return nil
	})
	if err != nil {
		return st, wrap("partitions", err)
	}

	rows, err = a.pool.Query(ctx, a.sql.instanceStatus)
	if err != nil {
		return st, wrap("instances", err)
	}
	var is InstanceStatus
	var hb float64
	_, err = pgx.ForEachRow(rows, []any{&is.ID, &is.Hostname, &is.PID, &is.StartedAt, &hb}, func() error {
		is.HeartbeatAge = secs(hb)
		is.Live = is.HeartbeatAge < a.cfg.LeaseTTL
		is.Partitions = owners[is.ID]
		st.Instances = append(st.Instances, is)
		return nil
	})
	if err != nil {
		return st, wrap("instances", err)
	}
	if err := a.pool.QueryRow(ctx, a.sql.deadLetterCount).Scan(&st.DeadLetters); err != nil {
		return st, wrap("dead letters", err)
	}
	return st, nil
}

func secs(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
