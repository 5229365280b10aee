package inbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/adapters/inbox"
)

// With MissingKeyNack and the router's PoisonQueue middleware, a message
// without the configured key is dead-lettered to the poison topic, never
// applied; keyed messages around it are applied once.
func TestInboxMissingKeyIsDeadLetteredByPoisonQueue(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ib := b.inbox(t, inbox.Config{Consumer: "c", KeyMetadata: "event_id"})
	ps := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	t.Cleanup(func() { _ = ps.Close() })
	router, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	require.NoError(t, err)
	poison, err := middleware.PoisonQueueWithFilter(ps, "poison", func(err error) bool {
		return inbox.IsMissingKey(err)
	})
	require.NoError(t, err)
	router.AddMiddleware(poison)
	router.AddConsumerHandler("apply", "in", ps, ib.Handler(b.apply("c")))
	dead, err := ps.Subscribe(context.Background(), "poison")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- router.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	<-router.Running()

	keyed := func(uuid, key string) *message.Message {
		m := message.NewMessage(uuid, nil)
		m.Metadata.Set("event_id", key)
		return m
	}
	require.NoError(t, ps.Publish("in", keyed("u1", "e1"), message.NewMessage("u2", nil), keyed("u3", "e1"), keyed("u4", "e2")))
	select {
	case m := <-dead:
		require.Equal(t, "u2", m.UUID)
		require.Contains(t, m.Metadata.Get(middleware.ReasonForPoisonedKey), `no metadata "event_id"`)
		m.Ack()
	case <-time.After(10 * time.Second):
		t.Fatal("the keyless message was not dead-lettered")
	}
	// gochannel hands messages to the router concurrently: wait for the
	// two events (u1 and u3 carry the same one: whichever came first is
	// applied, the other suppressed).
	deadline := time.Now().Add(10 * time.Second)
	for len(b.effectsByMessage(t)) < 2 || b.counter(t, inbox.MetricDuplicates, "c") < 1 {
		require.True(t, time.Now().Before(deadline), "events e1 and e2 were not applied")
		<-time.After(10 * time.Millisecond)
	}
	got := b.effectsByMessage(t)
	require.Len(t, got, 2, "%v", got)
	require.Equal(t, 1, got["u4"])
	require.Equal(t, 1, got["u1"]+got["u3"], "%v", got)
	require.Equal(t, 0, b.effectCount(t, "u2"))
}
