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
		{"plan_tail", st.sqlTailFetch, `100, '{0,1,2,3}', 100`},
		{"plan_tail_complete", st.sqlTailComplete, `100, '{0,1,2,3}', 100, '{0,1}', '{1,1}', 'me', '{0,0,1}', '{5,9,13}'`},
		{"plan_max", st.sqlMaxID, ``},
	}
	explain := func(name, args string) string {
		call := name
		if args != "" {
			call += "(" + args + ")"
		}
		rows, err := conn.Query(ctx, "EXPLAIN EXECUTE "+call, pgx.QueryExecModeSimpleProtocol)
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
		// Every read of records is bounded by its partition: the key is
		// (partition, id) and there is no index on id alone, so a scan
		// without a partition condition reads the whole index (every dead
		// entry too, with autovacuum off) on every call.
		lines := strings.Split(plan, "\n")
		for i, l := range lines {
			if !strings.Contains(l, "Scan") || !strings.Contains(l, " on records ") {
				continue // not a scan of records
			}
			require.Less(t, i+1, len(lines), "%s: %q", s.name, l)
			require.Regexp(t, `Index Cond: \(+partition = `, lines[i+1], "%s reads records without a partition condition: %q", s.name, l)
		}
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

// The tail poll fetches only for the actors that wait for work, hands each
// its partition's records in id order, and never hands a batch to an actor
// that took the right to fetch back after the poll read it (it may have
// completed those records itself). A record whose transaction commits after
// that of a higher id is found by the next poll.
func TestTailPollHandsBatchesOnlyToWaitingActors(t *testing.T) {
	t.Parallel()
	pool, _, cfg, st := newTestStore(t, 4)
	ctx := context.Background()
	hand := make(handoffs, 4)
	tl := newTail(tailDeps{interval: cfg.TailInterval, limit: 100, store: st, handoffs: hand, waker: actors.NewWaker()})
	found, err := tl.poll(ctx)
	require.NoError(t, err, "no actor runs yet")
	require.False(t, found, "no actor runs yet")

	// Partition 0's actor is busy, 1 and 2 wait, 3 has none here.
	var hs [3]*handoff
	for p := range hs {
		hs[p] = newHandoff()
		hand[p].Store(hs[p])
	}
	hs[1].idle()
	hs[2].idle()
	var keys []string
	perPartition := map[int]int{}
	for i := range 200 {
		keys = append(keys, fmt.Sprint("k", i))
		perPartition[Partition(keys[i], 4)]++
	}
	writeKeys(t, pool, cfg, keys...)
	found, err = tl.poll(ctx)
	require.NoError(t, err)
	require.True(t, found, "records arrived")
	for p := 1; p <= 2; p++ {
		select {
		case b := <-hs[p].ch:
			require.Len(t, b.batch, perPartition[p], "partition %d", p)
			for i, r := range b.batch {
				require.Equal(t, p, Partition(r.key, 4), "partition %d got a record of another", p)
				if i > 0 {
					require.Less(t, b.batch[i-1].id, r.id, "partition %d: id order", p)
				}
			}
		default:
			t.Fatalf("partition %d waits and has records, but was handed nothing", p)
		}
		_, waiting := hs[p].waiting()
		require.False(t, waiting, "partition %d: claimed, no longer waiting", p)
	}
	require.Empty(t, hs[0].ch, "partition 0's actor is busy: nothing fetched for it")

	// An actor that woke up after the poll read its word (and went idle
	// again, a new generation) is not handed the poll's batch.
	hs[1].idle()
	word, waiting := hs[1].waiting()
	require.True(t, waiting)
	require.True(t, hs[1].reclaim())
	hs[1].idle()
	require.False(t, hs[1].claim(word, fetchResult{batch: []fetched{{id: 1}}}), "stale claim")
	require.Empty(t, hs[1].ch)

	// A record committed after a record with a higher id was already
	// handed over is still found by the tail (its lookback).
	_, err = pool.Exec(ctx, "DELETE FROM "+cfg.ident("records")) // all delivered, as completions do
	require.NoError(t, err)
	late, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = late.Rollback(ctx) }()
	lateKey := ""
	for i := 0; lateKey == ""; i++ {
		if k := fmt.Sprint("late", i); Partition(k, 4) == 2 {
			lateKey = k
		}
	}
	require.NoError(t, NewWriter(cfg).Write(ctx, late, Record{Topic: "t", Key: lateKey, Payload: []byte("late")}))
	hs[2].idle()
	writeKeys(t, pool, cfg, keys[:20]...)
	_, err = tl.poll(ctx)
	require.NoError(t, err)
	b := <-hs[2].ch
	require.Len(t, b.batch, perPartitionOf(keys[:20], 4)[2])
	for _, r := range b.batch { // delivered, as the actor's completion does
		_, err := pool.Exec(ctx, "DELETE FROM "+cfg.ident("records")+" WHERE id = $1", r.id)
		require.NoError(t, err)
	}
	require.NoError(t, late.Commit(ctx))
	hs[2].idle()
	_, err = tl.poll(ctx)
	require.NoError(t, err)
	select {
	case b := <-hs[2].ch:
		require.Len(t, b.batch, 1)
		require.Equal(t, lateKey, b.batch[0].key, "the late committer")
		require.Less(t, b.batch[0].id, tl.lastMax, "it has a lower id than records handed over before")
	default:
		t.Fatal("the late committer was not handed over")
	}
}

func perPartitionOf(keys []string, n int) map[int]int {
	m := map[int]int{}
	for _, k := range keys {
		m[Partition(k, n)]++
	}
	return m
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

func TestTailWaitStartsQuickPollsAnIntervalApart(t *testing.T) {
	t.Parallel()
	ms := time.Millisecond
	us := time.Microsecond
	for _, tc := range []struct {
		interval, took, want time.Duration
	}{
		{interval: 2 * ms, took: 0, want: 2 * ms},
		{interval: 2 * ms, took: 400 * us, want: 1600 * us}, // a quick poll: the next starts an interval after it started
		{interval: 2 * ms, took: 500 * us, want: 1500 * us},
		{interval: 2 * ms, took: 600 * us, want: 1800 * us}, // slower: three times as long again
		{interval: 2 * ms, took: 1 * ms, want: 2 * ms},      // a third of the interval or more: an interval after it ended
		{interval: 2 * ms, took: 5 * ms, want: 2 * ms},
		{interval: 50 * ms, took: 1 * ms, want: 49 * ms},
	} {
		require.Equal(t, tc.want, tailWait(tc.interval, tc.took), "%+v", tc)
	}
}
