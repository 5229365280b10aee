package engine_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/internal/recorder"
)

// Without notifications and with the partition actors' fallback poll an
// hour away, only the tail poll can find new records: records written long
// after the relay went quiet must still arrive promptly.
func TestTailPollDeliversWithoutNotifications(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.cfg
	cfg.DisableNotify = true
	cfg.PollInterval = time.Hour
	b.writer = engine.NewWriter(cfg)
	r := start(t, b, cfg, b.pub)
	for acquired := 0; acquired < cfg.Partitions; acquired++ {
		r.waitEvent(t, 10*time.Second, func(e engine.Event) bool { return e.Kind == engine.EventLeaseAcquired })
	}
	for round := range 3 {
		for i := range 20 {
			writeTx(t, b, true, rec("wake", fmt.Sprint("k", i%5), round*20+i))
		}
		want := (round + 1) * 20
		require.NoError(t, b.pub.WaitFor(10*time.Second, func(ds []recorder.Delivery) bool { return len(ds) >= want }),
			"round %d: records must be found by the tail poll alone", round)
		if round == 0 {
			// Not a wait for a result: it lets the relay pass its busy
			// window, so that the next round meets an idle tail poll.
			<-time.After(1500 * time.Millisecond)
		}
	}
}

// A Writer notifies at most once per NotifyInterval: the application's
// commits do not queue on PostgreSQL's notification lock for the relay's
// wake-ups.
func TestWriterNotifiesAtMostOncePerInterval(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	conn, err := pgx.ConnectConfig(ctx, b.pool.Config().ConnConfig.Copy())
	require.NoError(t, err)
	defer func() { _ = conn.Close(ctx) }()
	_, err = conn.Exec(ctx, "LISTEN "+pgx.Identifier{b.cfg.NotifyChannel()}.Sanitize())
	require.NoError(t, err)

	cfg := b.cfg
	cfg.NotifyInterval = time.Hour
	b.writer = engine.NewWriter(cfg)
	for i := range 10 {
		writeTx(t, b, true, rec("n", fmt.Sprint("k", i), i))
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	n, err := conn.WaitForNotification(wctx)
	cancel()
	require.NoError(t, err, "the first write notifies")
	require.NotEmpty(t, n.Payload)
	wctx, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
	n, err = conn.WaitForNotification(wctx)
	cancel()
	require.Error(t, err, "no second notification within the interval, got %+v", n)
}
