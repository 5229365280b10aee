package engine

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/actors"
)

// The delivery statements keep their index plans whatever the table held
// when a connection first planned them. A relay usually starts before there
// is a backlog, and its delivery sessions keep the generic plan they built
// then (plan_cache_mode = force_generic_plan): built on an empty table,
// PostgreSQL planned the held-records part of the fetch as a sequential
// scan of the whole records table and the fetch itself as a bitmap scan
// plus a sort of the partition, so every later fetch read the entire
// backlog. The test plans each statement on an empty table, fills it with
// 20,000 records, and reads the plans the sessions then use.
func TestDeliveryPlansStayIndexedWhenPlannedOnAnEmptyTable(t *testing.T) {
	t.Parallel()
	pool, _, cfg, st := newTestStore(t, 8)
	ctx := context.Background()
	hot, err := openHotPool(ctx, pool)
	require.NoError(t, err)
	defer hot.Close()
	conn, err := hot.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()

	stmts := []struct {
		name, sql string
		args      string // EXECUTE arguments
	}{
		{"plan_fetch", st.sqlFetch, `'{0,1,2,3}', '{1000,1000,1000,1000}'`},
		{"plan_complete", st.sqlComplete, `'me', '{0,1}', '{1,1}', '{0,0,1}', '{5,9,13}', '{1}', '{21}', '{boom}', '{1000}', '{1}', '{25}', '{dead}'`},
		{"plan_tail", st.sqlTail, `100, '{0,1,2,3}'`},
	}
	explain := func(name, args string) string {
		rows, err := conn.Query(ctx, "EXPLAIN EXECUTE "+name+"("+args+")", pgx.QueryExecModeSimpleProtocol)
		require.NoError(t, err)
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		return strings.Join(lines, "\n")
	}
	for _, s := range stmts {
		_, err := conn.Exec(ctx, "PREPARE "+s.name+" AS "+s.sql, pgx.QueryExecModeSimpleProtocol)
		require.NoError(t, err, s.name)
		explain(s.name, s.args) // the generic plan is built now, on the empty table
	}

	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	recs := make([]Record, 20000)
	for i := range recs {
		recs[i] = Record{Topic: "t", Key: fmt.Sprint("k", i%500), Payload: []byte(`{"n":1}`)}
	}
	require.NoError(t, NewWriter(cfg).Write(ctx, tx, recs...))
	require.NoError(t, tx.Commit(ctx))
	_, err = pool.Exec(ctx, "UPDATE "+cfg.ident("records")+" SET available_at = now() + interval '1 hour' WHERE id % 97 = 0")
	require.NoError(t, err)

	for _, s := range stmts {
		plan := explain(s.name, s.args)
		t.Logf("%s plan:\n%s", s.name, plan)
		require.NotContains(t, plan, "Seq Scan on records", "%s reads the whole records table", s.name)
		require.NotContains(t, plan, "Bitmap Heap Scan on records", s.name)
		require.Contains(t, plan, "records_pkey", s.name)
		if s.name == "plan_fetch" {
			// Records come in id order straight from the key (no sort of
			// the partition), held ones from the small partial index.
			require.Contains(t, plan, "Index Scan using records_pkey on records r ")
			require.Contains(t, plan, "Index Scan using records_held on records")
		}
	}

	// And the fetch returns what it should under that plan: the oldest
	// available records of each partition, in id order, none held back.
	res, err := st.fetchOne(ctx, 0, 50)
	require.NoError(t, err)
	require.Len(t, res.batch, 50)
	for i := 1; i < len(res.batch); i++ {
		require.Less(t, res.batch[i-1].id, res.batch[i].id)
	}
	require.True(t, res.hasHeld)
	require.Greater(t, res.nextHeld, 50*time.Minute)
}

// The tail poll probes and wakes only the partitions this instance owns;
// with none owned it sends no query at all.
func TestTailPollWakesOnlyOwnedPartitions(t *testing.T) {
	t.Parallel()
	pool, _, cfg, st := newTestStore(t, 4)
	ctx := context.Background()
	var wakers []*actors.Waker
	for range 4 {
		wakers = append(wakers, actors.NewWaker())
	}
	owned := &ownedPartitions{}
	tl := newTail(tailDeps{interval: cfg.TailInterval, store: st, wakers: wakers, owned: owned, waker: actors.NewWaker()})
	found, err := tl.poll(ctx)
	require.NoError(t, err, "nothing owned yet")
	require.False(t, found, "nothing owned yet")

	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	var recs []Record
	for i := range 200 {
		recs = append(recs, Record{Topic: "t", Key: fmt.Sprint("k", i), Payload: []byte("x")})
	}
	require.NoError(t, NewWriter(cfg).Write(ctx, tx, recs...))
	require.NoError(t, tx.Commit(ctx))
	for _, w := range wakers { // drop wake-ups from before
		select {
		case <-w.C():
		default:
		}
	}
	owned.publish([]int32{1, 2})
	found, err = tl.poll(ctx)
	require.NoError(t, err)
	require.True(t, found, "partitions 1 and 2 received records")
	for p, w := range wakers {
		woken := false
		select {
		case <-w.C():
			woken = true
		default:
		}
		require.Equal(t, p == 1 || p == 2, woken, "partition %d", p)
	}
}

func TestNextTailInterval(t *testing.T) {
	t.Parallel()
	ms := time.Millisecond
	for _, tc := range []struct {
		busy       bool
		last, tail time.Duration
		want       time.Duration
	}{
		{busy: true, last: 40 * ms, tail: 2 * ms, want: 2 * ms},       // busy: back to TailInterval at once
		{busy: false, last: 2 * ms, tail: 2 * ms, want: 4 * ms},       // quiet: doubling
		{busy: false, last: 32 * ms, tail: 2 * ms, want: 50 * ms},     // capped at tailIdleInterval
		{busy: false, last: 50 * ms, tail: 2 * ms, want: 50 * ms},     // stays there
		{busy: false, last: 100 * ms, tail: 100 * ms, want: 100 * ms}, // a TailInterval above the cap is kept
		{busy: true, last: 100 * ms, tail: 100 * ms, want: 100 * ms},
	} {
		require.Equal(t, tc.want, nextTailInterval(tc.busy, tc.last, tc.tail), "%+v", tc)
	}
}
