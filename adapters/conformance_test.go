package adapters_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/adapters/adaptertest"
	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/internal/pgtest"
)

// Every broker: records written in PostgreSQL transactions (some rolled
// back) and relayed by the engine arrive at a real subscriber of that
// broker with UUID, payload and metadata intact, in order per key, and no
// rolled-back record arrives.
func TestConformance(t *testing.T) {
	t.Parallel()
	for _, b := range adaptertest.Brokers() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			topic := adaptertest.Topic("conf_" + b.Name)
			pub, msgs := b.Open(t, topic)

			pool, schema := pgtest.FreshSchema(t)
			cfg := engine.Config{Schema: schema, Partitions: 8, HeartbeatInterval: 100 * time.Millisecond,
				LeaseTTL: time.Second, PollInterval: 200 * time.Millisecond, RetryInitial: 50 * time.Millisecond}
			ctx := context.Background()
			require.NoError(t, engine.Migrate(ctx, pool, cfg))
			eng, err := engine.New(pool, pub, cfg)
			require.NoError(t, err)
			runCtx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- eng.Run(runCtx) }()
			t.Cleanup(func() {
				stop()
				require.NoError(t, <-done)
			})

			w := engine.NewWriter(cfg)
			committed := map[string]engine.Record{}
			for i := range 12 {
				tx, err := pool.Begin(ctx)
				require.NoError(t, err)
				recs := make([]engine.Record, 5)
				for j := range recs {
					id := fmt.Sprintf("%s-%d-%d", b.Name, i, j)
					recs[j] = engine.Record{Topic: topic, Key: "key-" + strconv.Itoa(j%3), MessageID: id,
						Payload: []byte{0, 1, 2, byte(i), byte(j), 0xff}, Metadata: map[string]string{"tenant": "acme", "n": strconv.Itoa(i)}}
				}
				require.NoError(t, w.Write(ctx, tx, recs...))
				if i%4 == 3 {
					require.NoError(t, tx.Rollback(ctx))
					continue
				}
				require.NoError(t, tx.Commit(ctx))
				for _, r := range recs {
					committed[r.MessageID] = r
				}
			}

			got := map[string]bool{}
			lastID := map[string]int64{}
			timeout := time.After(60 * time.Second)
			for len(got) < len(committed) {
				var m *message.Message
				select {
				case m = <-msgs:
				case <-timeout:
					t.Fatalf("%s: %d of %d records arrived", b.Name, len(got), len(committed))
				}
				m.Ack()
				want, ok := committed[m.UUID]
				require.True(t, ok, "unexpected (rolled back?) message %s", m.UUID)
				if got[m.UUID] {
					continue // a duplicate: allowed, at least once
				}
				got[m.UUID] = true
				require.Equal(t, want.Payload, []byte(m.Payload))
				require.Equal(t, "acme", m.Metadata.Get("tenant"))
				require.Equal(t, want.Metadata["n"], m.Metadata.Get("n"))
				require.Equal(t, want.Key, m.Metadata.Get(engine.MetadataKey))
				id, err := strconv.ParseInt(m.Metadata.Get(engine.MetadataRecordID), 10, 64)
				require.NoError(t, err)
				require.Greater(t, id, lastID[want.Key], "%s: key %s out of order", b.Name, want.Key)
				lastID[want.Key] = id
			}
		})
	}
}
