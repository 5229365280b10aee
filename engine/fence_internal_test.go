package engine

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/internal/pgtest"
)

// A stale owner's completion writes nothing once another instance took the
// partition over, and an expired lease cannot commit either.
func TestCompleteIsFencedByOwnerEpochAndExpiry(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.FreshSchema(t)
	ctx := context.Background()
	cfg, err := Config{Schema: schema, Partitions: 4}.prepared()
	require.NoError(t, err)
	require.NoError(t, Migrate(ctx, pool, cfg))
	st := newStore(pool, cfg)

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

	batch, err := st.fetch(ctx, p, 10, nil)
	require.NoError(t, err)
	require.Len(t, batch, 2)

	// The old owner is paused past its lease; the new one takes over.
	_, err = pool.Exec(ctx, "UPDATE "+pgx.Identifier{schema, "partitions"}.Sanitize()+" SET lease_until = now() - interval '1 second' WHERE partition = $1", p)
	require.NoError(t, err)
	got, err = st.acquire(ctx, "new", time.Minute, []int32{int32(p)})
	require.NoError(t, err)
	require.Equal(t, oldEpoch+1, got[p])

	c := &completion{delivered: []int64{batch[0].id}, retryIDs: []int64{batch[1].id}, retryErrs: []string{"x"}, retryUS: []int64{1}}
	err = st.complete(ctx, p, "old", oldEpoch, c)
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
	require.ErrorIs(t, st.complete(ctx, p, "new", oldEpoch+1, c), ErrLeaseLost)

	// With a live lease the same completion commits.
	renewed, err = st.renew(ctx, "new", time.Minute, []int32{int32(p)}, []int64{oldEpoch + 1})
	require.NoError(t, err)
	require.True(t, renewed[p])
	require.NoError(t, st.complete(ctx, p, "new", oldEpoch+1, c))
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
