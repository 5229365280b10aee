package engine

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/internal/pgtest"
)

// A stale owner's completion writes nothing once another instance took the
// partition over, and an expired lease cannot commit either.
func TestCompleteIsFencedByOwnerEpochAndExpiry(t *testing.T) {
	t.Parallel()
	pool, schema, cfg, st := newTestStore(t, 4)
	ctx := context.Background()

	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, NewWriter(cfg).Write(ctx, tx,
		Record{Topic: "t", Key: "k", Payload: []byte("1")}, Record{Topic: "t", Key: "k", Payload: []byte("2")}))
	require.NoError(t, tx.Commit(ctx))
	p := Partition("k", 4)

	got, err := st.acquire(ctx, "old", time.Minute, []int32{int32(p)})
	require.NoError(t, err)
	oldEpoch := got[p]
	// A second instance cannot take a live lease.
	got, err = st.acquire(ctx, "new", time.Minute, []int32{int32(p)})
	require.NoError(t, err)
	require.Empty(t, got)

	res, err := st.fetchOne(ctx, p, 10)
	require.NoError(t, err)
	batch := res.batch
	require.Len(t, batch, 2)

	// The old owner is paused past its lease; the new one takes over.
	_, err = pool.Exec(ctx, "UPDATE "+pgx.Identifier{schema, "partitions"}.Sanitize()+" SET lease_until = now() - interval '1 second' WHERE partition = $1", p)
	require.NoError(t, err)
	got, err = st.acquire(ctx, "new", time.Minute, []int32{int32(p)})
	require.NoError(t, err)
	require.Equal(t, oldEpoch+1, got[p])

	c := &completion{delivered: []int64{batch[0].id}, retryIDs: []int64{batch[1].id}, retryErrs: []string{"x"}, retryUS: []int64{1}}
	err = st.completeOne(ctx, p, "old", oldEpoch, c)
	require.ErrorIs(t, err, ErrLeaseLost)
	var n, attempts int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*), sum(attempts) FROM "+pgx.Identifier{schema, "records"}.Sanitize()).Scan(&n, &attempts))
	require.Equal(t, 2, n, "the stale owner deleted records")
	require.Zero(t, attempts, "the stale owner updated records")

	// Renewal by the stale owner fails too.
	renewed, err := st.renew(ctx, "old", time.Minute, []int32{int32(p)}, []int64{oldEpoch})
	require.NoError(t, err)
	require.Empty(t, renewed)

	// An expired lease of the current owner cannot commit either.
	_, err = pool.Exec(ctx, "UPDATE "+pgx.Identifier{schema, "partitions"}.Sanitize()+" SET lease_until = now() - interval '1 second' WHERE partition = $1", p)
	require.NoError(t, err)
	require.ErrorIs(t, st.completeOne(ctx, p, "new", oldEpoch+1, c), ErrLeaseLost)

	// With a live lease the same completion commits.
	renewed, err = st.renew(ctx, "new", time.Minute, []int32{int32(p)}, []int64{oldEpoch + 1})
	require.NoError(t, err)
	require.True(t, renewed[p])
	require.NoError(t, st.completeOne(ctx, p, "new", oldEpoch+1, c))
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*), sum(attempts) FROM "+pgx.Identifier{schema, "records"}.Sanitize()).Scan(&n, &attempts))
	require.Equal(t, 1, n)
	require.Equal(t, 1, attempts)
}

func TestDecodeMetadata(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want map[string]string
		err  bool
	}{
		{`{}`, map[string]string{}, false},
		{`{"a": "b", "n": 1, "o": {"x": [1]}, "t": true, "z": null}`, map[string]string{"a": "b", "n": "1", "o": `{"x": [1]}`, "t": "true", "z": "null"}, false},
		{`{"esc": "a\"b\\c\u00e9"}`, map[string]string{"esc": "a\"b\\cé"}, false},
		{`[1,2]`, nil, true},
		{`null`, nil, true},
		{`"s"`, nil, true},
		{``, nil, true},
	} {
		got, err := DecodeMetadata([]byte(tc.in))
		if tc.err {
			require.Error(t, err, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.want, got, tc.in)
	}
}

func FuzzDecodeMetadata(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":"b"}`, `{"n":1.5e10}`, `[]`, `{"a":{"b":"c"}}`, `{"\u0000":"x"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		md, err := DecodeMetadata(b)
		if err == nil && md == nil {
			t.Fatalf("nil map without error for %q", b)
		}
	})
}

// Completions of several partitions in one statement are fenced one by one:
// the batch of a partition whose lease moved writes nothing, the batch of a
// partition still held commits, and each caller learns which it was. One
// fetch serves several partitions, each with its own limit, in id order.
func TestSharedStatementsFencePerPartition(t *testing.T) {
	t.Parallel()
	pool, schema, cfg, st := newTestStore(t, 8)
	ctx := context.Background()

	// Two keys in two different partitions, three records each.
	keyA, keyB := twoPartitionKeys(8)
	pA, pB := Partition(keyA, 8), Partition(keyB, 8)
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	var recs []Record
	for i := range 3 {
		recs = append(recs, Record{Topic: "t", Key: keyA, Payload: []byte{byte(i)}}, Record{Topic: "t", Key: keyB, Payload: []byte{byte(i)}})
	}
	require.NoError(t, NewWriter(cfg).Write(ctx, tx, recs...))
	require.NoError(t, tx.Commit(ctx))

	got, err := st.acquire(ctx, "me", time.Minute, []int32{int32(pA), int32(pB)})
	require.NoError(t, err)
	require.Len(t, got, 2)

	out := make([]fetchResult, 2)
	require.NoError(t, st.fetch(ctx, []fetchReq{{p: pA, limit: 2}, {p: pB, limit: 10}}, out))
	require.Len(t, out[0].batch, 2, "partition A's limit")
	require.Len(t, out[1].batch, 3)
	for _, r := range out {
		for i := 1; i < len(r.batch); i++ {
			require.Less(t, r.batch[i-1].id, r.batch[i].id, "id order within a partition")
		}
	}
	for i, r := range out {
		require.Equal(t, len(r.batch), cap(r.batch), "a batch's slice is exactly its size")
		for j, f := range r.batch {
			require.Equal(t, []string{keyA, keyB}[i], f.key)
			require.Equal(t, []byte{byte(j)}, f.payload, "each record keeps its own values")
			require.Equal(t, "{}", f.mdText)
			require.NotNil(t, f.metadata)
		}
	}

	// Partition B is taken over by another instance (its lease expired).
	_, err = pool.Exec(ctx, "UPDATE "+pgx.Identifier{schema, "partitions"}.Sanitize()+" SET lease_until = now() - interval '1 second' WHERE partition = $1", pB)
	require.NoError(t, err)
	other, err := st.acquire(ctx, "other", time.Minute, []int32{int32(pB)})
	require.NoError(t, err)
	require.Len(t, other, 1)

	ids := func(b []fetched) []int64 {
		var out []int64
		for _, f := range b {
			out = append(out, f.id)
		}
		return out
	}
	errs := make([]error, 2)
	require.NoError(t, st.complete(ctx, "me", []completeReq{
		{p: pA, epoch: got[pA], c: &completion{delivered: ids(out[0].batch)}},
		{p: pB, epoch: got[pB], c: &completion{delivered: ids(out[1].batch)}},
	}, errs))
	require.NoError(t, errs[0], "partition A is still ours")
	require.ErrorIs(t, errs[1], ErrLeaseLost, "partition B moved")

	left := map[int]int{}
	rows, err := pool.Query(ctx, "SELECT partition, count(*) FROM "+pgx.Identifier{schema, "records"}.Sanitize()+" GROUP BY partition")
	require.NoError(t, err)
	var p32 int32
	var n int
	_, err = pgx.ForEachRow(rows, []any{&p32, &n}, func() error { left[int(p32)] = n; return nil })
	require.NoError(t, err)
	require.Equal(t, map[int]int{pA: 1, pB: 3}, left, "A's two delivered records deleted, B's batch fenced off")
}

// The fetch reports when a partition's next held record becomes available,
// and holds back the later records of its key.
func TestFetchReportsNextHeldRecord(t *testing.T) {
	t.Parallel()
	pool, _, cfg, st := newTestStore(t, 4)
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, NewWriter(cfg).Write(ctx, tx,
		Record{Topic: "t", Key: "k", Payload: []byte("later"), DeliverAfter: time.Hour},
		Record{Topic: "t", Key: "k", Payload: []byte("after the held one")}))
	require.NoError(t, tx.Commit(ctx))
	res, err := st.fetchOne(ctx, Partition("k", 4), 10)
	require.NoError(t, err)
	require.Empty(t, res.batch, "the key's later record waits for the held one")
	require.True(t, res.hasHeld)
	require.InDelta(t, time.Hour.Seconds(), res.nextHeld.Seconds(), 60)

	res, err = st.fetchOne(ctx, (Partition("k", 4)+1)%4, 10)
	require.NoError(t, err)
	require.Empty(t, res.batch)
	require.False(t, res.hasHeld)
}

// acquireAll leases every one of the store's first parts partitions to
// owner for an hour and returns their epochs.
func acquireAll(tb testing.TB, st *store, owner string, parts int) map[int]int64 {
	tb.Helper()
	all := make([]int32, parts)
	for p := range all {
		all[p] = int32(p)
	}
	epochs, err := st.acquire(context.Background(), owner, time.Hour, all)
	if err != nil {
		tb.Fatal(err)
	}
	return epochs
}

// newTestStore migrates a fresh schema with the given partition count and
// returns its pool, name, config and store.
func newTestStore(t testing.TB, partitions int) (*pgxpool.Pool, string, Config, *store) {
	t.Helper()
	pool, schema := pgtest.FreshSchema(t)
	cfg, err := Config{Schema: schema, Partitions: partitions}.prepared()
	require.NoError(t, err)
	require.NoError(t, Migrate(context.Background(), pool, cfg))
	return pool, schema, cfg, newStore(pool, cfg)
}

// With Retention, one completion statement writes a history row for each
// partition whose fence held — holding exactly the records it delivered,
// not those it retried — and none for a partition whose lease expired,
// whose records stay pending.
func TestRetainedCompletionKeepsHistoryOnlyUnderTheLease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, schema := pgtest.FreshSchema(t)
	cfg, err := Config{Schema: schema, Partitions: 8, Retention: time.Hour}.prepared()
	require.NoError(t, err)
	require.NoError(t, Migrate(ctx, pool, cfg))
	st, err := openStore(ctx, pool, cfg)
	require.NoError(t, err)
	t.Cleanup(st.close)
	require.True(t, st.retention)

	// Two keys in different partitions, three records each.
	keyA, keyB := twoPartitionKeys(8)
	pa, pb := Partition(keyA, 8), Partition(keyB, 8)
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	for i := range 3 {
		require.NoError(t, NewWriter(cfg).Write(ctx, tx,
			Record{Topic: "t", Key: keyA, Payload: []byte(fmt.Sprint("a", i)), Metadata: map[string]string{"n": fmt.Sprint(i)}},
			Record{Topic: "u", Key: keyB, Payload: []byte(fmt.Sprint("b", i))}))
	}
	require.NoError(t, tx.Commit(ctx))
	got, err := st.acquire(ctx, "me", time.Minute, []int32{int32(pa), int32(pb)})
	require.NoError(t, err)
	ra, err := st.fetchOne(ctx, pa, 10)
	require.NoError(t, err)
	rb, err := st.fetchOne(ctx, pb, 10)
	require.NoError(t, err)
	require.Len(t, ra.batch, 3)
	require.Len(t, rb.batch, 3)

	// pb's lease expires before the completion.
	_, err = pool.Exec(ctx, "UPDATE "+pgx.Identifier{schema, "partitions"}.Sanitize()+" SET lease_until = now() - interval '1 second' WHERE partition = $1", pb)
	require.NoError(t, err)
	ca := &completion{delivered: []int64{ra.batch[0].id, ra.batch[1].id}, retryIDs: []int64{ra.batch[2].id}, retryErrs: []string{"x"}, retryUS: []int64{1}}
	ca.encodeHistory(pa, ra.batch)
	cb := &completion{delivered: []int64{rb.batch[0].id, rb.batch[1].id, rb.batch[2].id}}
	cb.encodeHistory(pb, rb.batch)
	errs := make([]error, 2)
	require.NoError(t, st.complete(ctx, "me", []completeReq{{p: pa, epoch: got[pa], c: ca}, {p: pb, epoch: got[pb], c: cb}}, errs))
	require.NoError(t, errs[0])
	require.ErrorIs(t, errs[1], ErrLeaseLost)

	rows, err := pool.Query(ctx, "SELECT partition, first_id, last_id, n, records FROM "+pgx.Identifier{schema, "history"}.Sanitize())
	require.NoError(t, err)
	type row struct { // in the SELECT's order
		P           int
		First, Last int64
		N           int
		Records     []byte
	}
	hist, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	require.NoError(t, err)
	require.Len(t, hist, 1, "one history row: pa's; pb's fence failed")
	h := hist[0]
	require.Equal(t, pa, h.P)
	require.Equal(t, 2, h.N)
	require.Equal(t, ra.batch[0].id, h.First)
	require.Equal(t, ra.batch[1].id, h.Last)
	var recs []historyRecord
	require.NoError(t, decodeHistory(h.Records, func(r historyRecord) error { recs = append(recs, r); return nil }))
	require.Len(t, recs, 2)
	for i, r := range recs {
		f := ra.batch[i]
		require.Equal(t, historyRecord{ID: f.id, Partition: pa, CreatedAt: f.createdAt.UTC().Truncate(time.Microsecond), Key: keyA, Topic: "t",
			MessageID: f.messageID, Metadata: f.mdText, Payload: []byte(fmt.Sprint("a", i))}, r)
	}
	var pendingA, pendingB int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FILTER (WHERE partition = $1), count(*) FILTER (WHERE partition = $2) FROM "+
		pgx.Identifier{schema, "records"}.Sanitize(), pa, pb).Scan(&pendingA, &pendingB))
	require.Equal(t, 1, pendingA, "pa's retried record stays")
	require.Equal(t, 3, pendingB, "pb's records stay: its fence failed")
}
