package tracing

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/engine"
)

func TestStatsCache(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	var calls int
	var fail error
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	block := false
	c := &statsCache{
		interval: 5 * time.Second, timeout: time.Second, log: slog.New(slog.DiscardHandler),
		now: func() time.Time { return now },
		fn: func(ctx context.Context) (engine.Status, error) {
			calls++
			_, hasDeadline := ctx.Deadline()
			require.True(t, hasDeadline, "each call is bounded by StatsTimeout")
			if block {
				entered <- struct{}{}
				<-release
			}
			return engine.Status{Pending: int64(calls)}, fail
		},
	}
	ctx := context.Background()

	st, ok := c.get(ctx)
	require.True(t, ok)
	require.Equal(t, int64(1), st.Pending)

	now = now.Add(4 * time.Second) // within the interval: cached
	st, ok = c.get(ctx)
	require.True(t, ok)
	require.Equal(t, int64(1), st.Pending)
	require.Equal(t, 1, calls)

	now = now.Add(2 * time.Second) // expired, and the call fails: no value
	fail = errors.New("database down")
	_, ok = c.get(ctx)
	require.False(t, ok)
	require.Equal(t, 2, calls)
	_, ok = c.get(ctx) // the failure is cached too: no hammering a sick database
	require.False(t, ok)
	require.Equal(t, 2, calls)

	// A collection that finds a call in flight does not start another one.
	now = now.Add(10 * time.Second)
	fail, block = nil, true
	var wg sync.WaitGroup
	wg.Go(func() {
		st, ok := c.get(ctx)
		require.True(t, ok)
		require.Equal(t, int64(3), st.Pending)
	})
	<-entered
	_, ok = c.get(ctx)
	require.False(t, ok, "the in-flight call's predecessor failed")
	close(release)
	wg.Wait()
	require.Equal(t, 3, calls)
}
