package console

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/internal/pgtest"
)

// Every console statement reads records and dead_letters through an index:
// with sequential scans disabled, no plan falls back to one on either table
// (the planner still picks a sequential scan when no index can serve, so a
// missing index shows here). The small fixed tables (partitions,
// instances, meta) may be read whole.
func TestConsoleQueriesUseIndexes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, schema := pgtest.FreshSchema(t)
	cfg := engine.Config{Schema: schema, Partitions: 16}
	require.NoError(t, engine.Migrate(ctx, pool, cfg))
	s := newStore(pool, schema)
	parts := make([]int32, 16)
	for i := range parts {
		parts[i] = int32(i)
	}
	ids := []int64{1, 2}
	for _, q := range []struct {
		name string
		sql  string
		args []any
	}{
		{"partitions", s.sqlPartitions, []any{1000}},
		{"leases", s.sqlLeases, nil},
		{"dead count", s.sqlDeadCount, []any{DeadLetterCountCap + 1}},
		{"stuck keys", s.sqlStuck, []any{heldScan, -1, "", "", limitDefault, waitingWindow}},
		{"stuck keys of a partition", s.sqlStuck, []any{heldScan, 3, "", "k", limitDefault, waitingWindow}},
		{"retry", s.sqlRetry, []any{parts[:2], ids, "chan"}},
		{"dead-letter now", s.sqlDeadLetterNow, []any{parts[:2], ids, "chan", "why"}},
		{"dead list", s.sqlDeadList, []any{int64(math.MaxInt64), deadWindow, "", "", "quota", limitDefault}},
		{"dead window end", s.sqlDeadWindowEnd, []any{int64(math.MaxInt64), deadWindow}},
		{"dead one", s.sqlDeadOne, []any{int64(5), payloadShowMax}},
		{"dead move", s.sqlDeadMove, []any{int64(0), "orders", "", "quota", true, moveBatch, "chan", deadWindow}},
		{"lookup id", s.sqlLookupID, []any{int64(5), parts}},
		{"scan window", s.sqlScanWindow, []any{3, int64(0), recordScan}},
		{"lookup window", s.sqlLookupWindow, []any{3, int64(0), int64(100), "k", "", limitDefault}},
		{"lookup heads", s.sqlLookupHeads, []any{"m", recordScan / 16, heldScan, limitDefault}},
		{"heads beyond", s.sqlHeadsBeyond, []any{recordScan / 16}},
		{"dead by key", s.sqlDeadByKey, []any{"k", deadWindow, limitDefault}},
		{"dead by message id", s.sqlDeadByMessage, []any{"m", limitDefault}},
	} {
		plan := explainNoSeqScan(t, pool, q.sql, q.args...)
		for _, table := range []string{"records", "dead_letters"} {
			require.NotContains(t, plan, "Seq Scan on "+table, "%s:\n%s", q.name, plan)
		}
	}
}

func explainNoSeqScan(t *testing.T, pool interface {
	Begin(context.Context) (pgx.Tx, error)
}, sql string, args ...any) string {
	t.Helper()
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = tx.Exec(ctx, "SET LOCAL enable_seqscan = off")
	require.NoError(t, err)
	rows, err := tx.Query(ctx, "EXPLAIN (COSTS OFF) "+sql, args...)
	require.NoError(t, err)
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return strings.Join(lines, "\n")
}
