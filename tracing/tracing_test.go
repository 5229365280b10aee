package tracing_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/postrelay/postrelay/adapters"
	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/internal/pgtest"
	"github.com/postrelay/postrelay/internal/recorder"
	"github.com/postrelay/postrelay/tracing"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, pgtest.LeakOptions...)
}

type bundle struct {
	spans  *tracetest.InMemoryExporter
	tp     *sdktrace.TracerProvider
	reader *sdkmetric.ManualReader
	obs    *tracing.Observer
	cfg    engine.Config
	run    func(pub message.Publisher)
	writer *engine.Writer
	write  func(ctx context.Context, recs ...engine.Record)
}

func setup(t *testing.T) *bundle {
	t.Helper()
	pool, schema := pgtest.FreshSchema(t)
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() {
		_ = tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})
	cfg := engine.Config{Schema: schema, Partitions: 4, HeartbeatInterval: 100 * time.Millisecond, LeaseTTL: time.Second,
		PollInterval: 200 * time.Millisecond, RetryInitial: 20 * time.Millisecond, RetryMax: 40 * time.Millisecond, MaxAttempts: 3}
	obs, err := tracing.New(tracing.Config{TracerProvider: tp, MeterProvider: mp,
		Stats: engine.NewAdmin(pool, cfg).Status})
	require.NoError(t, err)
	cfg.Observer = obs
	require.NoError(t, engine.Migrate(context.Background(), pool, cfg))
	b := &bundle{spans: spans, tp: tp, reader: reader, obs: obs, cfg: cfg, writer: engine.NewWriter(cfg)}
	b.run = func(pub message.Publisher) {
		eng, err := engine.New(pool, pub, cfg)
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- eng.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			require.NoError(t, <-done)
		})
	}
	b.write = func(ctx context.Context, recs ...engine.Record) {
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		require.NoError(t, b.writer.Write(ctx, tx, recs...))
		require.NoError(t, tx.Commit(ctx))
	}
	return b
}

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

func TestSpansPerAttempt(t *testing.T) {
	t.Parallel()
	b := setup(t)
	pub := recorder.New()
	var mu sync.Mutex
	fails := map[string]int{}
	pub.SetFail(func(_ string, m *message.Message) error {
		mu.Lock()
		defer mu.Unlock()
		switch m.UUID {
		case "flaky":
			if fails["flaky"] < 2 {
				fails["flaky"]++
				return errors.New("flaky broker")
			}
		case "poison":
			return errors.New("rejected")
		}
		return nil
	})
	b.run(pub)

	writerSpanCtx, writerSpan := b.tp.Tracer("test").Start(context.Background(), "write order")
	b.write(writerSpanCtx,
		engine.Record{Topic: "orders", Key: "a", Payload: []byte("1"), MessageID: "ok"},
		engine.Record{Topic: "orders", Key: "b", Payload: []byte("2"), MessageID: "flaky"},
		engine.Record{Topic: "orders", Key: "c", Payload: []byte("3"), MessageID: "poison"},
	)
	writerSpan.End()
	writerTrace := writerSpan.SpanContext().TraceID()

	// ok: 1 span; flaky: 3 (2 failed + delivered); poison: 3 (2 retry + dead-lettered); + the writer's.
	deadline := time.Now().Add(15 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for len(b.spans.GetSpans()) < 8 {
		require.True(t, time.Now().Before(deadline), "only %d spans", len(b.spans.GetSpans()))
		<-tick.C
	}
	spans := b.spans.GetSpans().Snapshots()
	byID := map[string][]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		if s.Name() == "write order" {
			continue
		}
		a := attrs(s)
		require.Equal(t, "publish orders", s.Name())
		require.Equal(t, trace.SpanKindProducer, s.SpanKind())
		require.Equal(t, writerTrace, s.SpanContext().TraceID(), "delivery span is in the writer's trace")
		require.Equal(t, writerSpan.SpanContext().SpanID(), s.Parent().SpanID(), "delivery span is a child of the write")
		require.Equal(t, "watermill", a["messaging.system"].AsString())
		require.Equal(t, "orders", a["messaging.destination.name"].AsString())
		require.Equal(t, "send", a["messaging.operation.type"].AsString())
		id := a["messaging.message.id"].AsString()
		byID[id] = append(byID[id], s)
	}
	require.Len(t, byID["ok"], 1)
	require.Equal(t, "delivered", attrs(byID["ok"][0])["postrelay.outcome"].AsString())
	require.Equal(t, codes.Unset, byID["ok"][0].Status().Code)

	require.Len(t, byID["flaky"], 3)
	for i, s := range byID["flaky"] {
		a := attrs(s)
		require.Equal(t, int64(i+1), a["postrelay.attempt"].AsInt64())
		if i < 2 {
			require.Equal(t, "retry", a["postrelay.outcome"].AsString())
			require.Equal(t, codes.Error, s.Status().Code)
			require.Equal(t, "flaky broker", s.Status().Description)
			require.Len(t, s.Events(), 1) // the recorded error
		} else {
			require.Equal(t, "delivered", a["postrelay.outcome"].AsString())
		}
	}
	require.Len(t, byID["poison"], 3)
	last := attrs(byID["poison"][2])
	require.Equal(t, "dead_lettered", last["postrelay.outcome"].AsString())
	require.Equal(t, int64(3), last["postrelay.attempt"].AsInt64())

	// The delivered message carries the delivering attempt's span context.
	var okMsg recorder.Delivery
	for _, d := range pub.Deliveries() {
		if d.UUID == "ok" {
			okMsg = d
		}
	}
	sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier(okMsg.Metadata)))
	require.Equal(t, byID["ok"][0].SpanContext().SpanID(), sc.SpanID())
}

// writer → relay → consumer in one trace, through a real Watermill
// subscriber (the memory broker) whose handler starts a consumer span from
// the message metadata.
func TestTraceRunsFromWriterToConsumer(t *testing.T) {
	t.Parallel()
	b := setup(t)
	mem := adapters.NewMemory(adapters.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	msgs, err := mem.Subscribe(ctx, "payments")
	require.NoError(t, err)
	b.run(mem)

	wctx, wspan := b.tp.Tracer("app").Start(context.Background(), "charge card")
	b.write(wctx, engine.Record{Topic: "payments", Key: "acct-7", Payload: []byte(`{"cents":500}`)})
	wspan.End()

	var msg *message.Message
	select {
	case msg = <-msgs:
	case <-time.After(15 * time.Second):
		t.Fatal("no message")
	}
	parent := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier(msg.Metadata))
	_, cspan := b.tp.Tracer("consumer").Start(parent, "handle payment", trace.WithSpanKind(trace.SpanKindConsumer))
	cspan.End()
	msg.Ack() // the memory broker's Publish returns, and the attempt's span ends

	var deliverySpan sdktrace.ReadOnlySpan
	deadline := time.Now().Add(10 * time.Second)
	for deliverySpan == nil {
		for _, s := range b.spans.GetSpans().Snapshots() {
			if s.Name() == "publish payments" {
				deliverySpan = s
			}
		}
		require.True(t, time.Now().Before(deadline), "no delivery span")
		<-time.After(10 * time.Millisecond) // poll the exporter again
	}
	trace := wspan.SpanContext().TraceID()
	require.Equal(t, trace, deliverySpan.SpanContext().TraceID())
	require.Equal(t, trace, cspan.SpanContext().TraceID())
	require.Equal(t, wspan.SpanContext().SpanID(), deliverySpan.Parent().SpanID())
	var consumer sdktrace.ReadOnlySpan
	for _, s := range b.spans.GetSpans().Snapshots() {
		if s.Name() == "handle payment" {
			consumer = s
		}
	}
	require.Equal(t, deliverySpan.SpanContext().SpanID(), consumer.Parent().SpanID())
}

func TestMetricsAfterAKnownWorkload(t *testing.T) {
	t.Parallel()
	b := setup(t)
	pub := recorder.New()
	var mu sync.Mutex
	failed := 0
	pub.SetFail(func(_ string, m *message.Message) error {
		mu.Lock()
		defer mu.Unlock()
		if m.UUID == "dead" {
			return errors.New("no")
		}
		if m.UUID == "retry-once" && failed == 0 {
			failed++
			return errors.New("once")
		}
		return nil
	})
	b.run(pub)
	recs := []engine.Record{{Topic: "t", Key: "d", Payload: []byte("x"), MessageID: "dead"},
		{Topic: "t", Key: "r", Payload: []byte("x"), MessageID: "retry-once"}}
	for i := range 9 {
		recs = append(recs, engine.Record{Topic: "t", Key: string(rune('a' + i)), Payload: []byte("x")})
	}
	b.write(context.Background(), recs...)
	require.NoError(t, pub.WaitFor(15*time.Second, func(ds []recorder.Delivery) bool { return len(ds) == 10 }))

	sum := func(name string) (int64, bool) {
		var rm metricdata.ResourceMetrics
		require.NoError(t, b.reader.Collect(context.Background(), &rm))
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if m.Name != name {
					continue
				}
				switch d := m.Data.(type) {
				case metricdata.Sum[int64]:
					var n int64
					for _, p := range d.DataPoints {
						n += p.Value
					}
					return n, true
				case metricdata.Gauge[int64]:
					return d.DataPoints[0].Value, true
				case metricdata.Histogram[float64]:
					var n uint64
					for _, p := range d.DataPoints {
						n += p.Count
					}
					return int64(n), true
				}
			}
		}
		return 0, false
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		delivered, _ := sum("postrelay.records.delivered")
		dead, _ := sum("postrelay.records.dead_lettered")
		if delivered == 10 && dead == 1 {
			break
		}
		require.True(t, time.Now().Before(deadline), "delivered %d dead %d", delivered, dead)
		<-time.After(20 * time.Millisecond) // poll the meter again
	}
	failures, _ := sum("postrelay.delivery.failures")
	require.Equal(t, int64(3), failures) // retry-once ×1, dead ×2 (its 3rd attempt is the dead-letter)
	owned, _ := sum("postrelay.partitions.owned")
	require.Equal(t, int64(4), owned)
	acq, _ := sum("postrelay.lease.acquisitions")
	require.Equal(t, int64(4), acq)
	live, _ := sum("postrelay.instances.live")
	require.Equal(t, int64(1), live)
	hist, ok := sum("postrelay.delivery.lag")
	require.True(t, ok)
	require.Equal(t, int64(10), hist)
	backlog, ok := sum("postrelay.backlog.records")
	require.True(t, ok)
	require.GreaterOrEqual(t, backlog, int64(0))
}

func BenchmarkStartAttempt(b *testing.B) {
	tp := sdktrace.NewTracerProvider()
	obs, err := tracing.New(tracing.Config{TracerProvider: tp, MeterProvider: sdkmetric.NewMeterProvider()})
	require.NoError(b, err)
	a := engine.Attempt{Topic: "t", Key: "k", MessageID: "m", Attempt: 1, Metadata: map[string]string{}}
	for b.Loop() {
		msg := message.NewMessage("m", nil)
		_, finish := obs.StartAttempt(context.Background(), a, msg)
		finish(engine.AttemptResult{Outcome: engine.OutcomeDelivered})
	}
}
