package adapters_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/adapters"
	"github.com/postrelay/postrelay/adapters/adaptertest"
	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/internal/pgtest"
	"github.com/postrelay/postrelay/internal/tcpproxy"
)

// A broker outage (every connection to Redis cut and refused for a while,
// through a proxy in front of the real server) makes attempts fail and be
// retried with backoff; once it ends every record is delivered, in order,
// and none is dead-lettered or lost.
func TestBrokerOutageRetriesThenDelivers(t *testing.T) {
	t.Parallel()
	adaptertest.Require(t, "127.0.0.1:6379")
	proxy, err := tcpproxy.New("127.0.0.1:6379")
	require.NoError(t, err)
	t.Cleanup(func() { _ = proxy.Close() })

	topic := adaptertest.Topic("outage")
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	t.Cleanup(func() {
		_ = client.Del(context.Background(), topic).Err()
		_ = client.Close()
	})
	sub, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{Client: client, ConsumerGroup: "outage", Consumer: "c", OldestId: "0"}, watermill.NopLogger{})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); _ = sub.Close() })
	msgs, err := sub.Subscribe(ctx, topic)
	require.NoError(t, err)

	pub, err := adapters.NewPublisher(ctx, adapters.Config{URL: "redis://" + proxy.Addr() + "/0"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })

	pool, schema := pgtest.FreshSchema(t)
	cfg := engine.Config{Schema: schema, Partitions: 4, HeartbeatInterval: 100 * time.Millisecond, LeaseTTL: time.Second,
		PollInterval: 100 * time.Millisecond, RetryInitial: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond,
		MaxAttempts: 1000, PublishTimeout: time.Second}
	require.NoError(t, engine.Migrate(ctx, pool, cfg))
	eng, err := engine.New(pool, pub, cfg)
	require.NoError(t, err)
	events := eng.Events()
	done := make(chan error, 1)
	runCtx, stop := context.WithCancel(ctx)
	go func() { done <- eng.Run(runCtx) }()
	t.Cleanup(func() { stop(); require.NoError(t, <-done) })

	w := engine.NewWriter(cfg)
	write := func(from, to int) {
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		var recs []engine.Record
		for i := from; i < to; i++ {
			recs = append(recs, engine.Record{Topic: topic, Key: fmt.Sprint("k", i%4), Payload: fmt.Appendf(nil, "%d", i), MessageID: fmt.Sprint("m", i)})
		}
		require.NoError(t, w.Write(ctx, tx, recs...))
		require.NoError(t, tx.Commit(ctx))
	}

	proxy.Cut()
	write(0, 40)
	// Wait for failed attempts during the outage.
	failures := 0
	timeout := time.After(20 * time.Second)
	for failures < 8 {
		select {
		case e := <-events:
			if e.Kind == engine.EventFailed {
				failures++
			}
			require.NotEqual(t, engine.EventDeadLettered, e.Kind)
		case <-timeout:
			t.Fatalf("only %d failed attempts during the outage", failures)
		}
	}
	proxy.Restore()
	write(40, 60)

	got := map[string]bool{}
	last := map[string]int64{}
	deadline := time.After(30 * time.Second)
	for len(got) < 60 {
		select {
		case m := <-msgs:
			m.Ack()
			if got[m.UUID] {
				continue
			}
			got[m.UUID] = true
			key := m.Metadata.Get(engine.MetadataKey)
			var id int64
			_, _ = fmt.Sscan(m.Metadata.Get(engine.MetadataRecordID), &id)
			require.Greater(t, id, last[key], "key %s out of order", key)
			last[key] = id
		case <-deadline:
			t.Fatalf("%d of 60 delivered after the outage", len(got))
		}
	}
	t.Logf("outage: %d failed attempts while cut, all 60 records delivered after restore", failures)
}
