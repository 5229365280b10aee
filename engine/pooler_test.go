package engine_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/internal/pgtest"
	"github.com/postrelay/postrelay/internal/recorder"
)

// pgbouncerPool opens a pool on the test database through the PgBouncer
// .ci/pgbouncer starts at addr, failing the test (saying how to start it)
// when nothing answers there.
func pgbouncerPool(t *testing.T, addr string, mode pgx.QueryExecMode) *pgxpool.Pool {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("PgBouncer is not running on %s: %v; start it with: .ci/pgbouncer", addr, err)
	}
	_ = conn.Close()
	cfg, err := pgxpool.ParseConfig(strings.Replace(pgtest.URL(), "127.0.0.1:5432", addr, 1))
	require.NoError(t, err)
	cfg.MaxConns = 4
	cfg.ConnConfig.DefaultQueryExecMode = mode
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// Through PgBouncer, in session pooling as configured for a direct
// connection, and in transaction pooling with Pooler "transaction" — with a
// direct ListenURL and by polling alone — every record is delivered, in
// order per key.
func TestDeliversThroughPgBouncer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, addr string
		mode       pgx.QueryExecMode
		pooler     string
		listen     bool
	}{
		{"session", "127.0.0.1:6432", pgx.QueryExecModeCacheStatement, "", false},
		{"transaction_listen_url", "127.0.0.1:6433", pgx.QueryExecModeExec, engine.PoolerTransaction, true},
		{"transaction_polling", "127.0.0.1:6433", pgx.QueryExecModeExec, engine.PoolerTransaction, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			relayPool := pgbouncerPool(t, tc.addr, tc.mode)
			cfg := b.cfg
			cfg.Pooler = tc.pooler
			cfg.DeliveryConns = 2
			if tc.listen {
				cfg.ListenURL = pgtest.URL()
			}
			rb := *b
			rb.pool = relayPool
			start(t, &rb, cfg, b.pub)
			want := map[string]bool{}
			for i := range 40 {
				id := fmt.Sprintf("%s-%d", tc.name, i)
				want[id] = true
				writeTx(t, b, true, engine.Record{Topic: "t", Key: fmt.Sprintf("k%d", i%4), Payload: []byte("x"), MessageID: id})
			}
			require.NoError(t, b.pub.WaitForAll(30*time.Second, want, b.whereabouts))
			require.NoError(t, recorder.CheckKeyOrder(b.pub.Deliveries()))
		})
	}
}

// Pooler "transaction" refuses a pool that prepares named statements, and
// Validate names a bad Pooler or DeliveryConns.
func TestPoolerAndDeliveryConnsAreValidated(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t) // pgx's default mode caches named prepared statements
	_, err := engine.New(pool, recorder.New(), engine.Config{Pooler: engine.PoolerTransaction})
	require.ErrorIs(t, err, engine.ErrInvalidConfig)
	require.ErrorContains(t, err, "default_query_exec_mode=exec")
	for _, tc := range []struct {
		cfg  engine.Config
		want string
	}{
		{engine.Config{Pooler: "statement"}, `Pooler = "statement"`},
		{engine.Config{DeliveryConns: -1}, "DeliveryConns = -1"},
		{engine.Config{DeliveryConns: 101}, "DeliveryConns = 101"},
		{engine.Config{ListenURL: "postgres://u:secret@h:x/db"}, "ListenURL"},
	} {
		err := tc.cfg.WithDefaults().Validate()
		require.ErrorIs(t, err, engine.ErrInvalidConfig)
		require.ErrorContains(t, err, tc.want)
		require.NotContains(t, err.Error(), "secret")
	}
}
