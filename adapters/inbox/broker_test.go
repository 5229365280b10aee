package inbox_test

import (
	"fmt"
	"testing"
	"time"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/adapters"
	"github.com/postrelay/postrelay/adapters/adaptertest"
	"github.com/postrelay/postrelay/adapters/inbox"
)

// Every broker postrelay supports, with its real subscriber: each message
// is published twice (a broker duplicate, same UUID) and consumed through
// the inbox; each has one effect and every second copy is counted as a
// suppressed duplicate. With postgres:// (watermill-sql) the claim runs in
// the subscriber's own transaction.
func TestInboxOnEveryBroker(t *testing.T) {
	t.Parallel()
	for _, br := range adaptertest.Brokers() {
		t.Run(br.Name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			consumer := "c_" + br.Name
			ib := b.inbox(t, inbox.Config{Consumer: consumer})
			topic := adaptertest.Topic("inbox_" + br.Name)
			var pub message.Publisher
			var msgs <-chan *message.Message
			if br.Subscribe == nil {
				pub, msgs = br.Open(t, topic)
			} else {
				var cfg adapters.Config
				cfg, msgs = br.Subscribe(t, topic)
				// JetStream would drop the second copy by its Msg-Id: let it through.
				cfg.NATS.DisableMsgID = true
				p, err := adapters.NewPublisher(t.Context(), cfg)
				require.NoError(t, err)
				t.Cleanup(func() { _ = p.Close() })
				pub = p
			}
			const n = 10
			// Published concurrently: memory:// blocks each Publish until the ack.
			published := make(chan error, 1)
			go func() {
				for i := range n {
					for range 2 {
						m := message.NewMessage(fmt.Sprintf("%s-%d", topic, i), []byte(`{"i":1}`))
						if err := pub.Publish(topic, m); err != nil {
							published <- err
							return
						}
					}
				}
				published <- nil
			}()
			h := ib.Handler(b.apply(consumer))
			timeout := time.After(60 * time.Second)
			for seen := 0; seen < 2*n; {
				select {
				case m := <-msgs:
					if br.Name == "postgres" {
						_, shared := wsql.TxFromContext(m.Context())
						require.True(t, shared, "a watermill-sql message carries its subscriber's transaction")
					}
					if err := h(m); err != nil {
						t.Logf("nack %s: %v", m.UUID, err)
						m.Nack()
						continue
					}
					m.Ack()
					seen++
				case <-timeout:
					t.Fatalf("%s: %d of %d deliveries within 60s", br.Name, seen, 2*n)
				}
			}
			require.NoError(t, <-published)
			// watermill-sql commits its transaction after the ack: wait for it.
			deadline := time.Now().Add(30 * time.Second)
			got := b.effectsByMessage(t)
			for len(got) < n && time.Now().Before(deadline) {
				<-time.After(20 * time.Millisecond)
				got = b.effectsByMessage(t)
			}
			require.Len(t, got, n)
			for id, c := range got {
				require.Equal(t, 1, c, "%s applied %d times", id, c)
			}
			require.EqualValues(t, n, b.counter(t, inbox.MetricProcessed, consumer))
			require.EqualValues(t, n, b.counter(t, inbox.MetricDuplicates, consumer))
		})
	}
}
