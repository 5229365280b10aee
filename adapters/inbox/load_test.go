package inbox_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/adapters/inbox"
)

// Purge under load: 20,000 expired ids are purged in batches while four
// workers apply 800 messages, each delivered twice. Every message inside
// the window has one effect (no redelivery re-applied), every expired id is
// gone, and the claims' latency during the purge is logged.
func TestInboxPurgeUnderLoad(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	const expired, workers, perWorker = 20000, 4, 200
	ib := b.inbox(t, inbox.Config{Consumer: "c", Retention: time.Hour, PurgeBatch: 1000})
	processed := pgx.Identifier{b.schema, "processed"}.Sanitize()
	_, err := b.pool.Exec(ctx, "INSERT INTO "+processed+" (consumer, message_id, processed_at) "+
		"SELECT 'c', 'expired-'||i, now() - interval '2 hours' - i * interval '1 ms' FROM generate_series(1, $1) i", expired)
	require.NoError(t, err)
	_, err = b.pool.Exec(ctx, "ANALYZE "+processed)
	require.NoError(t, err)

	h := ib.Handler(b.apply("c"))
	var purging atomic.Bool
	purging.Store(true)
	var purged int64
	var purgeTook time.Duration
	purgeDone := make(chan error, 1)
	go func() {
		start := time.Now()
		n, err := ib.Purge(ctx)
		purgeTook = time.Since(start)
		purged = n
		purging.Store(false)
		purgeDone <- err
	}()
	var mu sync.Mutex
	var during, after []time.Duration
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				// Deliver message i, then redeliver message i-3 (a duplicate).
				for _, j := range []int{i, i - 3} {
					if j < 0 {
						continue
					}
					id := fmt.Sprintf("live-%d-%d", w, j)
					inPurge := purging.Load()
					start := time.Now()
					if err := h(message.NewMessage(id, nil)); err != nil {
						t.Errorf("message %s: %v", id, err)
						return
					}
					d := time.Since(start)
					mu.Lock()
					if inPurge && purging.Load() {
						during = append(during, d)
					} else {
						after = append(after, d)
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	require.NoError(t, <-purgeDone)
	require.EqualValues(t, expired, purged)
	got := b.effectsByMessage(t)
	require.Len(t, got, workers*perWorker)
	for id, n := range got {
		require.Equal(t, 1, n, "message %s applied %d times", id, n)
	}
	require.EqualValues(t, workers*(perWorker-3), b.counter(t, inbox.MetricDuplicates, "c"))
	var left int
	require.NoError(t, b.pool.QueryRow(ctx, "SELECT count(*) FROM "+processed+" WHERE message_id LIKE 'expired-%'").Scan(&left))
	require.Zero(t, left)
	t.Logf("purge: %d rows in %v (%.0f rows/s, batches of 1000); handler calls (claim + one INSERT + commit): during the purge %s, after it %s",
		purged, purgeTook.Round(time.Millisecond), float64(purged)/purgeTook.Seconds(), quantiles(during), quantiles(after))
}

func quantiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "n=0"
	}
	slices.Sort(ds)
	q := func(p float64) time.Duration { return ds[int(p*float64(len(ds)-1))].Round(10 * time.Microsecond) }
	return fmt.Sprintf("n=%d p50=%v p99=%v", len(ds), q(0.5), q(0.99))
}
