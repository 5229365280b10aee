package tracing_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/internal/pgtest"
	"github.com/postrelay/postrelay/internal/recorder"
	"github.com/postrelay/postrelay/tracing"
)

// relay is a migrated schema, an Observer on in-memory exporters, and an
// engine started by run.
type relay struct {
	*otelSDK
	pool   *pgxpool.Pool
	cfg    engine.Config
	writer *engine.Writer

	mu     sync.Mutex
	events []engine.Event
}

func setupRelay(t *testing.T, mod func(*engine.Config)) *relay {
	t.Helper()
	pool, schema := pgtest.FreshSchema(t)
	sdk := newSDK(t)
	cfg := engine.Config{Schema: schema, Partitions: 4, HeartbeatInterval: 100 * time.Millisecond,
		LeaseTTL: time.Second, PollInterval: 200 * time.Millisecond, RetryInitial: 20 * time.Millisecond,
		RetryMax: 40 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	cfg.Observer = sdk.observer(t, tracing.Config{
		Stats:         engine.NewAdmin(pool, cfg).Status,
		StatsInterval: time.Nanosecond, // every collection sees the database now
	})
	require.NoError(t, engine.Migrate(context.Background(), pool, cfg))
	return &relay{otelSDK: sdk, pool: pool, cfg: cfg, writer: engine.NewWriter(cfg)}
}

// run starts the engine; the returned function stops it (also at cleanup).
func (r *relay) run(t *testing.T, pub message.Publisher) (stop func()) {
	t.Helper()
	eng, err := engine.New(r.pool, pub, r.cfg)
	require.NoError(t, err)
	events, _ := eng.Events() // closed when Run returns
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var runErr error
	wg.Go(func() { runErr = eng.Run(ctx) })
	wg.Go(func() {
		for e := range events {
			r.mu.Lock()
			r.events = append(r.events, e)
			r.mu.Unlock()
		}
	})
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			require.NoError(t, runErr)
		})
	}
	t.Cleanup(stop)
	return stop
}

// count returns how many events of kind were seen.
func (r *relay) count(kind engine.EventKind) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

func (r *relay) event(kind engine.EventKind, messageID string) (engine.Event, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		if e.Kind == kind && e.MessageID == messageID {
			return e, true
		}
	}
	return engine.Event{}, false
}

func (r *relay) write(t *testing.T, ctx context.Context, recs ...engine.Record) {
	t.Helper()
	tx, err := r.pool.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, r.writer.Write(ctx, tx, recs...))
	require.NoError(t, tx.Commit(ctx))
}

// failFirst returns a publisher that rejects message id's first n attempts
// (n < 0: every attempt).
func failFirst(id string, n int, err error) *recorder.Publisher {
	pub := recorder.New()
	var mu sync.Mutex
	seen := 0
	pub.SetFail(func(_ string, m *message.Message) error {
		mu.Lock()
		defer mu.Unlock()
		if m.UUID != id {
			return nil
		}
		seen++
		if n < 0 || seen <= n {
			return err
		}
		return nil
	})
	return pub
}

// The exact spans of one record: one per attempt, each a PRODUCER child of
// the writer's span, with the messaging and postrelay attributes, the error
// on failed attempts, and the last attempt's outcome.
func TestSpansPerAttempt(t *testing.T) {
	t.Parallel()
	type want struct {
		outcome string
		err     string // "" for success
	}
	for _, tc := range []struct {
		name        string
		maxAttempts int
		failures    int // first attempts that fail; -1: all
		final       engine.EventKind
		want        []want
	}{
		{"delivered at once", 3, 0, engine.EventDelivered, []want{{"delivered", ""}}},
		{"fails twice then delivered", 3, 2, engine.EventDelivered,
			[]want{{"retry", "broker unavailable"}, {"retry", "broker unavailable"}, {"delivered", ""}}},
		{"dead-lettered", 2, -1, engine.EventDeadLettered,
			[]want{{"retry", "broker unavailable"}, {"dead_lettered", "broker unavailable"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := setupRelay(t, func(c *engine.Config) { c.MaxAttempts = tc.maxAttempts })
			pub := failFirst("order-1", tc.failures, errors.New("broker unavailable"))
			r.run(t, pub)

			wctx, wspan := r.tp.Tracer("app").Start(context.Background(), "place order")
			r.write(t, wctx, engine.Record{Topic: "orders", Key: "cust-9", Payload: []byte(`{"n":1}`), MessageID: "order-1"})
			wspan.End()

			var final engine.Event
			waitFor(t, 15*time.Second, "the record's last event", func() bool {
				var ok bool
				final, ok = r.event(tc.final, "order-1")
				return ok
			})
			// Spans end before the completion commits and the event is
			// emitted: all of them are exported by now.
			spans := r.spansNamed("publish orders")
			require.Len(t, spans, len(tc.want))
			for i, s := range spans {
				w := tc.want[i]
				require.Equal(t, trace.SpanKindProducer, s.SpanKind())
				require.Equal(t, wspan.SpanContext().TraceID(), s.SpanContext().TraceID())
				require.Equal(t, wspan.SpanContext().SpanID(), s.Parent().SpanID(), "a child of the writer's span")
				wantAttrs := map[string]any{
					"messaging.system":            "watermill",
					"messaging.operation.type":    "send",
					"messaging.operation.name":    "publish",
					"messaging.destination.name":  "orders",
					"messaging.message.id":        "order-1",
					"messaging.message.body.size": int64(7),
					"postrelay.partition":         int64(engine.Partition("cust-9", 4)),
					"postrelay.attempt":           int64(i + 1),
					"postrelay.record_id":         final.RecordID,
					"postrelay.key":               "cust-9",
					"postrelay.outcome":           w.outcome,
				}
				if w.err == "" {
					require.Equal(t, codes.Unset, s.Status().Code)
					require.Empty(t, s.Events())
				} else {
					wantAttrs["error.type"] = "*errors.errorString"
					require.Equal(t, codes.Error, s.Status().Code)
					require.Equal(t, w.err, s.Status().Description)
					require.Len(t, s.Events(), 1)
					require.Equal(t, "exception", s.Events()[0].Name)
				}
				require.Equal(t, wantAttrs, spanAttrs(s), "attempt %d", i+1)
			}

			ds := pub.Deliveries()
			if tc.final == engine.EventDeadLettered {
				require.Empty(t, ds)
				return
			}
			// The delivered message carries the delivering attempt's span
			// context, not the writer's.
			require.Len(t, ds, 1)
			require.Equal(t, spans[len(spans)-1].SpanContext().SpanID(), traceparentOf(ds[0].Metadata).SpanID())
		})
	}
}

// writer → relay → consumer in one trace, through a Watermill router whose
// handler starts a CONSUMER span from the message metadata.
func TestTraceRunsFromWriterToConsumer(t *testing.T) {
	t.Parallel()
	r := setupRelay(t, nil)
	consumerTracer := r.tp.Tracer("consumer")

	pubsub := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 5 * time.Second}, watermill.NopLogger{})
	require.NoError(t, err)
	handled := make(chan trace.SpanContext, 1)
	router.AddConsumerHandler("payments", "payments", pubsub, func(msg *message.Message) error {
		ctx := propagation.TraceContext{}.Extract(msg.Context(), propagation.MapCarrier(msg.Metadata))
		_, span := consumerTracer.Start(ctx, "process payments", trace.WithSpanKind(trace.SpanKindConsumer))
		defer span.End()
		handled <- span.SpanContext()
		return nil
	})
	var wg sync.WaitGroup
	wg.Go(func() { require.NoError(t, router.Run(context.Background())) })
	t.Cleanup(func() {
		require.NoError(t, router.Close())
		wg.Wait()
		require.NoError(t, pubsub.Close())
	})
	<-router.Running()
	r.run(t, pubsub)

	wctx, wspan := r.tp.Tracer("app").Start(context.Background(), "charge card")
	r.write(t, wctx, engine.Record{Topic: "payments", Key: "acct-7", Payload: []byte(`{"cents":500}`)})
	wspan.End()

	var consumer trace.SpanContext
	select {
	case consumer = <-handled:
	case <-time.After(15 * time.Second):
		t.Fatal("the consumer never handled the message")
	}
	var delivery, consumed sdktrace.ReadOnlySpan
	waitFor(t, 10*time.Second, "delivery and consumer spans", func() bool {
		d, c := r.spansNamed("publish payments"), r.spansNamed("process payments")
		if len(d) == 1 && len(c) == 1 {
			delivery, consumed = d[0], c[0]
			return true
		}
		return false
	})
	traceID := wspan.SpanContext().TraceID()
	require.Equal(t, traceID, delivery.SpanContext().TraceID())
	require.Equal(t, traceID, consumer.TraceID())
	require.Equal(t, wspan.SpanContext().SpanID(), delivery.Parent().SpanID(), "writer → relay")
	require.Equal(t, delivery.SpanContext().SpanID(), consumed.Parent().SpanID(), "relay → consumer")
}

// Metric values after a known workload: 10 records delivered (one after a
// failure), one dead-lettered after 2 attempts; 2 failed attempts.
func TestMetricsAfterAKnownWorkload(t *testing.T) {
	t.Parallel()
	r := setupRelay(t, func(c *engine.Config) { c.MaxAttempts = 2 })
	pub := recorder.New()
	var mu sync.Mutex
	flaky := 0
	pub.SetFail(func(_ string, m *message.Message) error {
		mu.Lock()
		defer mu.Unlock()
		switch m.UUID {
		case "poison":
			return errors.New("rejected")
		case "flaky":
			if flaky++; flaky == 1 {
				return errors.New("timeout")
			}
		}
		return nil
	})
	stop := r.run(t, pub)
	waitFor(t, 15*time.Second, "4 partitions acquired", func() bool { return r.count(engine.EventLeaseAcquired) == 4 })

	recs := []engine.Record{
		{Topic: "orders", Key: "p", Payload: []byte("x"), MessageID: "poison"},
		{Topic: "orders", Key: "f", Payload: []byte("x"), MessageID: "flaky"},
	}
	for _, k := range []string{"a", "b", "c", "d", "e", "f2", "g"} {
		recs = append(recs, engine.Record{Topic: "orders", Key: k, Payload: []byte("x")})
	}
	recs = append(recs, engine.Record{Topic: "invoices", Key: "h", Payload: []byte("x")},
		engine.Record{Topic: "invoices", Key: "i", Payload: []byte("x")})
	r.write(t, context.Background(), recs...)
	waitFor(t, 15*time.Second, "10 delivered and 1 dead-lettered", func() bool {
		return r.count(engine.EventDelivered) == 10 && r.count(engine.EventDeadLettered) == 1
	})

	ms := r.metrics(t)
	require.Equal(t, 8.0, value(t, ms, tracing.MetricDelivered, "topic=orders"))
	require.Equal(t, 2.0, value(t, ms, tracing.MetricDelivered, "topic=invoices"))
	require.Equal(t, 2.0, value(t, ms, tracing.MetricFailures, "topic=orders"))
	require.Equal(t, 1.0, value(t, ms, tracing.MetricDeadLettered, "topic=orders"))
	require.Equal(t, 11.0, value(t, ms, tracing.MetricDuration, "topic=orders"), "every publish: 8 + 2 + 1")
	require.Equal(t, 2.0, value(t, ms, tracing.MetricDuration, "topic=invoices"))
	require.Equal(t, 8.0, value(t, ms, tracing.MetricLag, "topic=orders"))
	require.Equal(t, 2.0, value(t, ms, tracing.MetricLag, "topic=invoices"))
	require.Equal(t, 4.0, value(t, ms, tracing.MetricOwned, ""))
	require.Equal(t, 4.0, value(t, ms, tracing.MetricLeaseAcquired, ""))
	require.Equal(t, 1.0, value(t, ms, tracing.MetricInstances, ""))
	require.Equal(t, 0.0, value(t, ms, tracing.MetricBacklog, ""))
	require.Equal(t, 0.0, value(t, ms, tracing.MetricOldestAge, ""))
	require.Equal(t, 1.0, value(t, ms, tracing.MetricDeadLetters, ""))
	_, lost := ms[tracing.MetricLeaseLost]
	require.False(t, lost, "no lease lost")
	for name, m := range ms {
		for _, p := range points(t, m) {
			require.Regexp(t, `^(topic=(orders|invoices))?$`, p.attrs, "%s: low-cardinality labels only", name)
		}
	}

	stop() // a clean stop releases every lease
	ms = r.metrics(t)
	require.Equal(t, 0.0, value(t, ms, tracing.MetricOwned, ""))
}
