// Package pgtest gives tests their own PostgreSQL schema on the real database.
//
// The database URL comes from POSTRELAY_TEST_DATABASE_URL and defaults to the
// loopback server (postgres://postgres@127.0.0.1:5432/test). An unreachable
// database fails the test with a message saying how to start it; it never skips.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"
)

// DefaultURL is the database used when POSTRELAY_TEST_DATABASE_URL is unset.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// StartHint tells a reader how to start the local PostgreSQL server.
const StartHint = "start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start " +
	"(or set POSTRELAY_TEST_DATABASE_URL)"

// URL returns the test database URL.
func URL() string {
	if u := os.Getenv("POSTRELAY_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// Pool opens a pool on the test database and closes it when the test ends.
// It fails the test if the database cannot be reached.
func Pool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg, err := pgxpool.ParseConfig(URL())
	if err != nil {
		tb.Fatalf("pgtest: parse database url: %v", err)
	}
	cfg.MaxConns = 20
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		tb.Fatalf("pgtest: open database: %v; %s", err, StartHint)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		tb.Fatalf("pgtest: PostgreSQL at %s is unreachable: %v; %s", cfg.ConnConfig.Host, err, StartHint)
	}
	tb.Cleanup(func() { closeWithin(tb, pool, 30*time.Second) })
	return pool
}

// closeWithin closes pool, failing the test rather than hanging when a
// connection is never released (pgxpool.Close waits for every acquired one).
func closeWithin(tb testing.TB, pool *pgxpool.Pool, d time.Duration) {
	done := make(chan struct{})
	go func() { pool.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		tb.Errorf("pgtest: the pool did not close within %v: %d connection(s) still acquired "+
			"(a goroutine of the test holds a connection or a transaction it never released)", d, pool.Stat().AcquiredConns())
	}
}

// Preflight connects to the test database once and returns an error naming
// the server and the cause (connection refused, too many clients) when it
// cannot. A TestMain calls it so that a package whose database refuses
// connections fails at once with the cause, not test by test.
func Preflight() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, URL())
	if err != nil {
		return fmt.Errorf("pgtest: cannot connect to the test database: %w; %s", err, StartHint)
	}
	defer func() { _ = conn.Close(ctx) }()
	var free int
	if err := conn.QueryRow(ctx, `SELECT current_setting('max_connections')::int
		- current_setting('superuser_reserved_connections')::int - (SELECT count(*) FROM pg_stat_activity)`).Scan(&free); err == nil && free < 50 {
		fmt.Fprintf(os.Stderr, "pgtest: warning: only %d connection slots are free on the test database; "+
			"tests may fail with \"too many clients\"\n", free)
	}
	return nil
}

// NewSchemaName returns a unique schema name such as "t_1a2b3c4d5e6f".
func NewSchemaName() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "t_" + hex.EncodeToString(b[:])
}

// DropSchemaOnCleanup registers a cleanup that drops the schema.
func DropSchemaOnCleanup(tb testing.TB, pool *pgxpool.Pool, schema string) {
	tb.Helper()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
		if err != nil {
			tb.Logf("pgtest: drop schema %s: %v", schema, err)
		}
	})
}

// FreshSchema returns a pool and a unique schema name that is dropped when the test ends.
func FreshSchema(tb testing.TB) (*pgxpool.Pool, string) {
	tb.Helper()
	pool := Pool(tb)
	schema := NewSchemaName()
	DropSchemaOnCleanup(tb, pool, schema)
	return pool, schema
}

// LeakOptions are the goleak options every package's TestMain uses: pgx
// pools run health-check goroutines that end shortly after Close.
var LeakOptions = []goleak.Option{
	goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"),
	goleak.IgnoreAnyFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).triggerHealthCheck.func1"),
}
