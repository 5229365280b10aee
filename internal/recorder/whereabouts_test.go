package recorder_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/internal/pgtest"
	"github.com/postrelay/postrelay/internal/recorder"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, pgtest.LeakOptions...)
}

// A "never delivered" report says where each missing record is: one
// dead-lettered with its last error, one held (delivery delay), one still
// pending (written while no relay ran), one delivered and one never written
// (both absent).
func TestWhereaboutsSaysWhereEachRecordIs(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.FreshSchema(t)
	ctx := context.Background()
	cfg := engine.Config{Schema: schema, Partitions: 4, MaxAttempts: 1, HeartbeatInterval: 50 * time.Millisecond,
		LeaseTTL: time.Second, PollInterval: 50 * time.Millisecond, StopTimeout: 5 * time.Second}
	require.NoError(t, engine.Migrate(ctx, pool, cfg))
	w := engine.NewWriter(cfg)
	write := func(recs ...engine.Record) {
		require.NoError(t, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return w.Write(ctx, tx, recs...) }))
	}
	write(engine.Record{Topic: "t", Key: "a", Payload: []byte("x"), MessageID: "m-dead"},
		engine.Record{Topic: "t", Key: "b", Payload: []byte("x"), MessageID: "m-delivered"},
		engine.Record{Topic: "t", Key: "c", Payload: []byte("x"), MessageID: "m-held", DeliverAfter: time.Hour})

	pub := recorder.New()
	pub.SetFail(func(_ string, m *message.Message) error {
		if m.UUID == "m-dead" {
			return errors.New("broker refused m-dead")
		}
		return nil
	})
	eng, err := engine.New(pool, pub, cfg)
	require.NoError(t, err)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- eng.Run(runCtx) }()
	require.NoError(t, pub.WaitFor(20*time.Second, func(ds []recorder.Delivery) bool { return len(ds) == 1 }))
	admin := engine.NewAdmin(pool, cfg)
	require.Eventually(t, func() bool {
		dl, err := admin.DeadLetters(ctx, engine.DeadLetterQuery{})
		return err == nil && len(dl) == 1
	}, 20*time.Second, 20*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	write(engine.Record{Topic: "t", Key: "d", Payload: []byte("x"), MessageID: "m-pending"})

	want := map[string]bool{"m-dead": true, "m-delivered": true, "m-held": true, "m-pending": true, "m-never": true}
	err = pub.WaitForAll(10*time.Millisecond, want, func(ids []string) string {
		return recorder.Whereabouts(ctx, pool, schema, ids)
	})
	require.Error(t, err)
	msg := err.Error()
	t.Log(msg)
	require.Contains(t, msg, "4 of 5 records never delivered")
	require.Contains(t, msg, "4 missing: 1 pending, 1 held (backoff or delay), 1 dead-lettered, 1 absent")
	require.Contains(t, msg, `m-dead: dead-lettered (record 1, partition`)
	require.Contains(t, msg, `after 1 attempts, last error "broker refused m-dead")`)
	require.Contains(t, msg, "m-held: held (record 3")
	require.Contains(t, msg, "m-pending: pending (record 4")
	require.Contains(t, msg, "m-never: absent")
	require.NotContains(t, msg, "m-delivered")
}
