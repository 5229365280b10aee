package engine_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/internal/pgtest"
	"github.com/postrelay/postrelay/internal/recorder"
)

// bundle is what setup returns besides the config.
type bundle struct {
	pool   *pgxpool.Pool
	cfg    engine.Config
	writer *engine.Writer
	pub    *recorder.Publisher
}

// fastConfig has intervals short enough for tests.
func fastConfig(schema string) engine.Config {
	return engine.Config{
		Schema:            schema,
		Partitions:        16,
		HeartbeatInterval: 100 * time.Millisecond,
		LeaseTTL:          time.Second,
		PollInterval:      200 * time.Millisecond,
		RetryInitial:      20 * time.Millisecond,
		RetryMax:          200 * time.Millisecond,
		StopTimeout:       5 * time.Second,
		EventBuffer:       100000,
	}
}

// setup migrates a fresh schema and returns the pieces a test needs.
func setup(t *testing.T) *bundle {
	t.Helper()
	pool, schema := pgtest.FreshSchema(t)
	cfg := fastConfig(schema)
	require.NoError(t, engine.Migrate(context.Background(), pool, cfg))
	return &bundle{pool: pool, cfg: cfg, writer: engine.NewWriter(cfg), pub: recorder.New()}
}

// running is an engine started in the background.
type running struct {
	eng    *engine.Engine
	events <-chan engine.Event
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// start runs an engine until the test ends (or stop is called).
func start(t *testing.T, b *bundle, cfg engine.Config, pub interface {
	Publish(string, ...*message.Message) error
	Close() error
}) *running {
	t.Helper()
	eng, err := engine.New(b.pool, pub, cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	events, _ := eng.Events() // closed when Run returns
	r := &running{eng: eng, events: events, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- eng.Run(ctx) }()
	t.Cleanup(func() { require.NoError(t, r.stop()) })
	return r
}

func (r *running) stop() error {
	r.once.Do(func() {
		r.cancel()
		select {
		case r.err = <-r.done:
		case <-time.After(30 * time.Second):
			r.err = errors.New("engine did not stop within 30s")
		}
	})
	return r.err
}

// waitEvent waits for an event matching pred.
func (r *running) waitEvent(t *testing.T, timeout time.Duration, pred func(engine.Event) bool) engine.Event {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case e, ok := <-r.events:
			if !ok {
				t.Fatalf("events closed while waiting")
			}
			if pred(e) {
				return e
			}
		case <-deadline:
			t.Fatalf("no matching event within %v", timeout)
		}
	}
}

// writeTx writes records in one transaction and commits (or rolls back).
func writeTx(t *testing.T, b *bundle, commit bool, recs ...engine.Record) {
	t.Helper()
	ctx := context.Background()
	tx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, b.writer.Write(ctx, tx, recs...))
	if commit {
		require.NoError(t, tx.Commit(ctx))
	} else {
		require.NoError(t, tx.Rollback(ctx))
	}
}

func rec(topic, key string, i int) engine.Record {
	return engine.Record{Topic: topic, Key: key, Payload: fmt.Appendf(nil, "%s-%d", key, i)}
}

func count(t *testing.T, b *bundle, table string) int {
	t.Helper()
	var n int
	require.NoError(t, b.pool.QueryRow(context.Background(),
		"SELECT count(*) FROM "+pgx.Identifier{b.cfg.Schema, table}.Sanitize()).Scan(&n))
	return n
}

// unreachablePool returns a pool pointed at a closed loopback port.
func unreachablePool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig("postgres://postgres@127.0.0.1:1/test?connect_timeout=2")
	require.NoError(t, err)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}
