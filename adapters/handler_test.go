package adapters_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/adapters"
	"github.com/postrelay/postrelay/engine"
)

// Handler routes get the engine's retries, dead letters and per-key order:
// a handler failing twice is retried until it succeeds, one returning a
// permanent error dead-letters at once, a panicking one is recovered and
// retried until MaxAttempts; each handler sees its own topics (and their
// names through TopicFromContext) and every key in order.
func TestHandlerRoutesRetryDeadLetterAndOrder(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	seen := map[string][]int64{} // handler → record ids in call order of successes
	topics := map[string]map[string]bool{}
	fails := map[string]int{}
	ok := func(name string) adapters.HandlerFunc {
		return func(ctx context.Context, m *message.Message) error {
			mu.Lock()
			defer mu.Unlock()
			if topics[name] == nil {
				topics[name] = map[string]bool{}
			}
			topics[name][adapters.TopicFromContext(ctx)] = true
			if _, has := ctx.Deadline(); !has {
				return errors.New("no publish deadline on the handler's context")
			}
			if string(m.Payload) == "5" && fails[m.UUID] < 2 {
				fails[m.UUID]++
				return fmt.Errorf("transient failure %d", fails[m.UUID])
			}
			if string(m.Payload) == "poison" {
				return engine.Permanent(errors.New("cannot parse"))
			}
			id, _ := strconv.ParseInt(m.Metadata.Get(engine.MetadataRecordID), 10, 64)
			seen[name+"/"+m.Metadata.Get(engine.MetadataKey)] = append(seen[name+"/"+m.Metadata.Get(engine.MetadataKey)], id)
			return nil
		}
	}
	pub, err := adapters.NewPublisher(context.Background(), adapters.Config{Routes: []adapters.Route{
		adapters.HandlerRoute("orders.*", ok("orders")),
		adapters.HandlerRoute("billing.**", ok("billing")),
		adapters.HandlerRoute("panics", func(context.Context, *message.Message) error { panic("boom") }),
	}})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, pub.Close()) })
	r := startRelay(t, pub, func(c *engine.Config) { c.MaxAttempts = 3 })

	r.write(t, append(append(records("orders.created", "o", 0, 20, 3), records("billing.eu.charged", "b", 0, 20, 3)...),
		engine.Record{Topic: "orders.created", Key: "ok0", Payload: []byte("poison"), MessageID: "poison"},
		engine.Record{Topic: "panics", Key: "p", Payload: []byte{}, MessageID: "panicked"})...)

	dead := map[string]engine.Event{}
	deadline := time.After(30 * time.Second)
	for len(dead) < 2 {
		select {
		case e := <-r.events:
			if e.Kind == engine.EventDeadLettered {
				dead[e.MessageID] = e
			}
		case <-deadline:
			t.Fatalf("dead letters %v, want poison and panicked", dead)
		}
	}
	require.Equal(t, 1, dead["poison"].Attempt, "a permanent error is not retried")
	require.Equal(t, 3, dead["panicked"].Attempt, "a panic is retried like an error")
	require.Contains(t, dead["panicked"].Err.Error(), "handler panicked")

	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, ids := range seen {
			n += len(ids)
		}
		return n == 40
	}, 30*time.Second, 10*time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	for k, ids := range seen {
		for i := 1; i < len(ids); i++ {
			require.Greater(t, ids[i], ids[i-1], "%s out of order", k)
		}
	}
	require.Equal(t, map[string]map[string]bool{"orders": {"orders.created": true}, "billing": {"billing.eu.charged": true}}, topics)
	require.Equal(t, 2, fails["o5"], "the failing record was retried")
}
