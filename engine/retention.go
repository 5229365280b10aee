package engine

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// History partitions: one per UTC day of delivery, named history_pYYYYMMDD,
// created historyDaysAhead days ahead and checked every
// historyMaintainInterval (and at Run).
const (
	historyDaysAhead        = 2
	historyMaintainInterval = time.Hour
	historyRetryInterval    = time.Minute
	historyPartitionPrefix  = "history_p"
	historyDay              = 24 * time.Hour
)

// retainedCompleteSQL is the completion statement of an engine with
// Retention: the same statement with a "kept" part that inserts the
// delivered records' history rows, one per partition, which the relay
// encoded from the records it published (history_format.go; schema version
// 6): $13 partitions, $14 first ids, $15 last ids, $16 record counts, $17
// and $18 the creation-time bounds, $19 the batches. A row is inserted only
// for a partition whose fence held (joined to the lease part), so a
// partition's history row commits if and only if its records' deletion
// does. PostgreSQL does no work per record: one heap row, one index entry
// and the TOAST chunks of one value per partition. Only engines with
// Retention > 0 use it; the default statement is unchanged.
func retainedCompleteSQL(complete string, cfg Config) (string, error) {
	const anchor = "), retry AS ("
	if strings.Count(complete, anchor) != 1 {
		return "", fmt.Errorf("postrelay: retention: the completion statement has no single %q part to extend", anchor)
	}
	return strings.Replace(complete, anchor, `), kept AS (
				INSERT INTO `+cfg.ident("history")+` (partition, first_id, last_id, n, min_created_at, max_created_at, records)
				SELECT h.partition, h.first_id, h.last_id, h.n, h.min_created_at, h.max_created_at, h.records
				FROM unnest($13::int[], $14::bigint[], $15::bigint[], $16::int[], $17::timestamptz[], $18::timestamptz[], $19::bytea[])
				     AS h(partition, first_id, last_id, n, min_created_at, max_created_at, records)
				JOIN lease ON lease.partition = h.partition
			`+anchor, 1), nil
}

// historyKeeper creates history partitions ahead and drops expired ones.
type historyKeeper struct{ e *Engine }

func (h *historyKeeper) Serve(ctx context.Context) error {
	timer := time.NewTimer(historyMaintainInterval)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		next := historyMaintainInterval
		if _, err := MaintainHistory(ctx, h.e.pool, h.e.cfg, time.Time{}); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			h.e.cfg.Logger.Warn("postrelay: history maintenance failed; retrying", "error", err, "retry_in", historyRetryInterval)
			next = historyRetryInterval
		}
		timer.Reset(next)
	}
}

// HistoryMaintenance is what MaintainHistory did.
type HistoryMaintenance struct {
	Created []string // partitions created
	Dropped []string // partitions dropped (expired)
}

// MaintainHistory creates the history partitions of the day of now and the
// following days, and drops every partition whose whole day ended more
// than cfg.Retention before now: a record is kept at least Retention and
// at most Retention plus one day. A zero now means the database's clock.
// The engine calls it at Run and every hour when Retention > 0; it is
// exported for operators and tests. Concurrent calls are serialized by an
// advisory lock; lock_timeout bounds how long it may queue ahead of
// completions (which insert into the same table).
func MaintainHistory(ctx context.Context, pool *pgxpool.Pool, cfg Config, now time.Time) (HistoryMaintenance, error) {
	var res HistoryMaintenance
	cfg, err := cfg.prepared()
	if err != nil {
		return res, err
	}
	if cfg.Retention <= 0 {
		return res, fmt.Errorf("%w: Retention = %v: MaintainHistory needs a positive retention", ErrInvalidConfig, cfg.Retention)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		return res, fmt.Errorf("postrelay: history maintenance: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '2s'"); err != nil {
		return res, fmt.Errorf("postrelay: history maintenance: %w", err)
	}
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext('postrelay.history'), hashtext($1))", cfg.Schema); err != nil {
		return res, fmt.Errorf("postrelay: history maintenance: lock: %w", err)
	}
	if now.IsZero() {
		if err := tx.QueryRow(ctx, "SELECT now()").Scan(&now); err != nil {
			return res, fmt.Errorf("postrelay: history maintenance: %w", err)
		}
	}
	now = now.UTC()
	rows, err := tx.Query(ctx, `SELECT c.relname FROM pg_inherits i
		JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = $1::regclass`, cfg.ident("history"))
	if err != nil {
		return res, fmt.Errorf("postrelay: history maintenance: list partitions: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return res, fmt.Errorf("postrelay: history maintenance: list partitions: %w", err)
	}
	have := map[string]bool{}
	for _, n := range names {
		have[n] = true
		day, err := time.Parse("20060102", strings.TrimPrefix(n, historyPartitionPrefix))
		if err != nil || !strings.HasPrefix(n, historyPartitionPrefix) {
			continue // not ours
		}
		if !day.Add(historyDay).After(now.Add(-cfg.Retention)) {
			if _, err := tx.Exec(ctx, "DROP TABLE "+cfg.ident(n)); err != nil {
				return res, fmt.Errorf("postrelay: history maintenance: drop %s: %w", n, err)
			}
			res.Dropped = append(res.Dropped, n)
		}
	}
	today := now.Truncate(historyDay)
	for d := range historyDaysAhead + 1 {
		day := today.Add(time.Duration(d) * historyDay)
		name := historyPartitionPrefix + day.Format("20060102")
		if have[name] {
			continue
		}
		stmt := fmt.Sprintf("CREATE TABLE %s PARTITION OF %s FOR VALUES FROM ('%s') TO ('%s')",
			cfg.ident(name), cfg.ident("history"), day.Format(time.RFC3339), day.Add(historyDay).Format(time.RFC3339))
		if _, err := tx.Exec(ctx, stmt); err != nil {
			return res, fmt.Errorf("postrelay: history maintenance: create %s: %w", name, err)
		}
		res.Created = append(res.Created, name)
	}
	if err := tx.Commit(ctx); err != nil {
		return res, fmt.Errorf("postrelay: history maintenance: commit: %w", err)
	}
	return res, nil
}
