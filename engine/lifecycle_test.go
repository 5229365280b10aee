package engine_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/internal/recorder"
)

// A graceful stop releases every lease the engine holds: each acquired
// partition gets EventLeaseReleased, none EventLeaseLost (issue 14, defect
// 1: the coordinator took its partition actors' exits on the shutdown's own
// cancellation for losses). Heartbeats every 10 ms make it likely that the
// stop lands while a tick is in flight, when the exits used to race the
// coordinator's own shutdown; several rounds make it likelier still.
func TestGracefulStopEmitsLeaseReleasedNotLost(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.cfg
	cfg.HeartbeatInterval = 10 * time.Millisecond
	cfg.LeaseTTL = 2 * time.Second
	for round := range 4 {
		cfg.InstanceID = fmt.Sprint("graceful-", round)
		r := start(t, b, cfg, b.pub)
		acquired := map[int]bool{}
		for len(acquired) < cfg.Partitions {
			e := r.waitEvent(t, 10*time.Second, func(e engine.Event) bool { return e.Kind == engine.EventLeaseAcquired })
			acquired[e.Partition] = true
		}
		require.NoError(t, r.stop())
		released := map[int]int{}
		var lost []engine.Event
		for e := range r.events { // closed when Run returned
			switch e.Kind {
			case engine.EventLeaseReleased:
				released[e.Partition]++
			case engine.EventLeaseLost:
				lost = append(lost, e)
			}
		}
		require.Empty(t, lost, "round %d: a graceful stop loses no lease", round)
		for p := range acquired {
			require.Equal(t, 1, released[p], "round %d: partition %d released once", round, p)
		}
	}
}

// Run returns nil when its context is cancelled during start-up, as it does
// when cancelled later (issue 14, defect 3: it returned "open the delivery
// pool: context canceled", and `postrelay run` exited with an error on
// SIGTERM).
func TestRunReturnsNilWhenCancelledDuringStartup(t *testing.T) {
	t.Parallel()
	b := setup(t)

	t.Run("before it starts", func(t *testing.T) {
		eng, err := engine.New(b.pool, b.pub, b.cfg)
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		require.NoError(t, eng.Run(ctx))
	})

	t.Run("while the delivery pool opens", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var armed atomic.Bool
		pcfg := b.pool.Config().Copy()
		pcfg.MaxConns = 4
		pcfg.AfterConnect = func(actx context.Context, _ *pgx.Conn) error {
			if armed.Load() {
				cancel() // SIGTERM arrives while the engine opens its connections
				return actx.Err()
			}
			return nil
		}
		pool, err := pgxpool.NewWithConfig(context.Background(), pcfg)
		require.NoError(t, err)
		defer pool.Close()
		require.NoError(t, pool.Ping(ctx), "the pool's first connection, for the version check")
		armed.Store(true)
		eng, err := engine.New(pool, b.pub, b.cfg)
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() { done <- eng.Run(ctx) }()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not return within 30s of its context's end")
		}
		require.True(t, armed.Load())
		require.Error(t, ctx.Err(), "the context was cancelled during start-up")
	})
}

// Events(kinds...) delivers only those kinds; ending a subscription closes
// its channel at once (and again is harmless), while the others go on.
func TestEventsFiltersKindsAndUnsubscribes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	eng, err := engine.New(b.pool, b.pub, b.cfg)
	require.NoError(t, err)
	leases, endLeases := eng.Events(engine.EventLeaseAcquired, engine.EventLeaseReleased)
	gone, endGone := eng.Events()
	endGone()
	endGone()
	_, open := <-gone
	require.False(t, open, "an ended subscription is closed")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	for range b.cfg.Partitions {
		select {
		case e := <-leases:
			require.Equal(t, engine.EventLeaseAcquired, e.Kind)
		case <-time.After(10 * time.Second):
			t.Fatal("no lease acquired within 10s")
		}
	}
	writeTx(t, b, true, rec("t", "k", 1))
	require.NoError(t, b.pub.WaitFor(10*time.Second, func(ds []recorder.Delivery) bool { return len(ds) == 1 }))
	cancel()
	require.NoError(t, <-done)
	for e := range leases { // closed when Run returned
		require.Equal(t, engine.EventLeaseReleased, e.Kind, "only the kinds asked for")
	}
	endLeases() // after Run returned: harmless
	late, _ := eng.Events()
	_, open = <-late
	require.False(t, open, "a subscription after Run returned is closed")
}

// An engine runs once: a second Run, during or after the first, says so
// with ErrEngineStarted.
func TestSecondRunReturnsErrEngineStarted(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := start(t, b, b.cfg, b.pub)
	r.waitEvent(t, 10*time.Second, func(e engine.Event) bool { return e.Kind == engine.EventLeaseAcquired })
	err := r.eng.Run(context.Background())
	require.ErrorIs(t, err, engine.ErrEngineStarted, "while running")
	require.NoError(t, r.stop())
	err = r.eng.Run(context.Background())
	require.ErrorIs(t, err, engine.ErrEngineStarted, "after a clean stop")
	require.ErrorContains(t, err, "an engine runs once")
}

// A stop while the listener waits for a notification ends promptly: the
// listener waits for pgx to finish closing its connection (the cancel
// request pgx sends on the way out, which a process must not exit in the
// middle of behind an older PgBouncer), and that wait ends with the
// cleanup, not at its StopTimeout bound.
func TestStopWithTheListenerWaitingEndsWithItsConnection(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.cfg
	cfg.StopTimeout = time.Minute // longer than stop's own 30 s limit
	r := start(t, b, cfg, b.pub)
	listening := func() bool {
		var n int
		require.NoError(t, b.pool.QueryRow(context.Background(),
			`SELECT count(*) FROM pg_stat_activity WHERE state = 'idle' AND query LIKE 'LISTEN %' || $1 || '%'`,
			cfg.NotifyChannel()).Scan(&n))
		return n > 0
	}
	deadline := time.Now().Add(10 * time.Second)
	for !listening() {
		require.True(t, time.Now().Before(deadline), "the listener did not LISTEN within 10s")
		time.Sleep(10 * time.Millisecond)
	}
	require.NoError(t, r.stop())
}
