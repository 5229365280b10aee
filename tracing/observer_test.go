package tracing_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/tracing"
)

var w3c = propagation.TraceContext{}

func traceparentOf(md map[string]string) trace.SpanContext {
	return trace.SpanContextFromContext(w3c.Extract(context.Background(), propagation.MapCarrier(md)))
}

func TestInjectWriteStoresTheWritersSpanContext(t *testing.T) {
	t.Parallel()
	sdk := newSDK(t)
	obs := sdk.observer(t, tracing.Config{})

	ts, err := trace.ParseTraceState("vendor=abc")
	require.NoError(t, err)
	ctx, span := sdk.tp.Tracer("app").Start(context.Background(), "write")
	defer span.End()
	ctx = trace.ContextWithSpanContext(ctx, span.SpanContext().WithTraceState(ts))

	md := map[string]string{"user": "x"}
	obs.InjectWrite(ctx, md)
	require.Equal(t, span.SpanContext().TraceID(), traceparentOf(md).TraceID())
	require.Equal(t, span.SpanContext().SpanID(), traceparentOf(md).SpanID())
	require.Equal(t, "vendor=abc", md["tracestate"])
	require.Equal(t, "x", md["user"])

	untraced := map[string]string{}
	obs.InjectWrite(context.Background(), untraced)
	require.Empty(t, untraced, "a writer without a span stores no trace context")
}

// attempt returns an engine.Attempt for record 42 and a message as the
// partition actor builds it: the message's metadata is the stored map.
func attempt(md map[string]string, n int) (engine.Attempt, *message.Message) {
	msg := message.NewMessage("msg-1", []byte("hello"))
	msg.Metadata = md
	return engine.Attempt{Instance: "i1", Partition: 3, RecordID: 42, Key: "acct-1", Topic: "orders",
		MessageID: "msg-1", Attempt: n, CreatedAt: time.Now(), Metadata: md}, msg
}

func TestStartAttemptContinuesTheWritersTrace(t *testing.T) {
	t.Parallel()
	sdk := newSDK(t)
	obs := sdk.observer(t, tracing.Config{System: "kafka"})

	wctx, wspan := sdk.tp.Tracer("app").Start(context.Background(), "write")
	md := map[string]string{}
	obs.InjectWrite(wctx, md)
	wspan.End()

	a, msg := attempt(md, 2)
	ctx, finish := obs.StartAttempt(context.Background(), a, msg)
	delivery := trace.SpanFromContext(ctx).SpanContext()
	require.Equal(t, wspan.SpanContext().TraceID(), delivery.TraceID())
	require.Equal(t, delivery.SpanID(), traceparentOf(msg.Metadata).SpanID(), "the message carries the delivery span")
	finish.FinishAttempt(engine.AttemptResult{Outcome: engine.OutcomeRetry, Err: errors.New("broker down"), Duration: time.Millisecond})

	spans := sdk.spansNamed("publish orders")
	require.Len(t, spans, 1)
	s := spans[0]
	require.Equal(t, trace.SpanKindProducer, s.SpanKind())
	require.Equal(t, wspan.SpanContext().SpanID(), s.Parent().SpanID())
	require.Equal(t, tracing.ScopeName, s.InstrumentationScope().Name)
	require.Equal(t, map[string]any{
		"messaging.system":            "kafka",
		"messaging.operation.type":    "send",
		"messaging.operation.name":    "publish",
		"messaging.destination.name":  "orders",
		"messaging.message.id":        "msg-1",
		"messaging.message.body.size": int64(5),
		"postrelay.partition":         int64(3),
		"postrelay.attempt":           int64(2),
		"postrelay.record_id":         int64(42),
		"postrelay.key":               "acct-1",
		"postrelay.outcome":           "retry",
		"error.type":                  "*errors.errorString",
	}, spanAttrs(s))
	require.Equal(t, codes.Error, s.Status().Code)
	require.Equal(t, "broker down", s.Status().Description)
	require.Len(t, s.Events(), 1)
	require.Equal(t, "exception", s.Events()[0].Name)
}

func TestStartAttemptOfAnUntracedRecordIsARoot(t *testing.T) {
	t.Parallel()
	sdk := newSDK(t)
	obs := sdk.observer(t, tracing.Config{})

	// The engine's own context may carry a span (Run called under one); an
	// untraced record's attempt must not become its child.
	runCtx, runSpan := sdk.tp.Tracer("app").Start(context.Background(), "run")
	defer runSpan.End()
	a, msg := attempt(map[string]string{}, 1)
	ctx, finish := obs.StartAttempt(runCtx, a, msg)
	finish.FinishAttempt(engine.AttemptResult{Outcome: engine.OutcomeDelivered})

	s := sdk.spansNamed("publish orders")[0]
	require.False(t, s.Parent().IsValid(), "no parent")
	require.NotEqual(t, runSpan.SpanContext().TraceID(), s.SpanContext().TraceID())
	require.Equal(t, trace.SpanFromContext(ctx).SpanContext().SpanID(), traceparentOf(msg.Metadata).SpanID())
	require.Equal(t, codes.Unset, s.Status().Code)
	require.Empty(t, s.Events())
	require.Equal(t, "delivered", spanAttrs(s)["postrelay.outcome"])
}

func TestStartAttemptSampledOutKeepsTheWritersContext(t *testing.T) {
	t.Parallel()
	writerSDK := newSDK(t)
	relaySDK := newSDK(t, sdktrace.WithSampler(sdktrace.NeverSample()))
	obs := relaySDK.observer(t, tracing.Config{})

	wctx, wspan := writerSDK.tp.Tracer("app").Start(context.Background(), "write")
	defer wspan.End()
	md := map[string]string{}
	obs.InjectWrite(wctx, md)
	stored := md["traceparent"]

	a, msg := attempt(md, 1)
	_, finish := obs.StartAttempt(context.Background(), a, msg)
	finish.FinishAttempt(engine.AttemptResult{Outcome: engine.OutcomeDelivered})
	require.Empty(t, relaySDK.spans.GetSpans())
	require.Equal(t, stored, msg.Metadata["traceparent"], "a consumer still joins the writer's trace")
}

func TestSpansOffCostsNothing(t *testing.T) { // not parallel: AllocsPerRun
	sdk := newSDK(t)
	obs := sdk.observer(t, tracing.Config{TracerProvider: noop.NewTracerProvider()})

	wctx, wspan := sdk.tp.Tracer("app").Start(context.Background(), "write")
	defer wspan.End()
	md := map[string]string{}
	obs.InjectWrite(wctx, md)
	require.Equal(t, wspan.SpanContext().SpanID(), traceparentOf(md).SpanID(),
		"the writer's context is still stored, for a relay with spans on")

	md["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	a, msg := attempt(md, 1)
	ctx := context.Background()
	allocs := testing.AllocsPerRun(100, func() {
		got, finish := obs.StartAttempt(ctx, a, msg)
		finish.FinishAttempt(engine.AttemptResult{Outcome: engine.OutcomeDelivered})
		if got != ctx {
			panic("context changed")
		}
	})
	require.Zero(t, allocs)
	require.Equal(t, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", msg.Metadata["traceparent"])
}

func TestObserveEventMetrics(t *testing.T) {
	t.Parallel()
	sdk := newSDK(t)
	var statsCalls atomic.Int32
	obs := sdk.observer(t, tracing.Config{Stats: func(context.Context) (engine.Status, error) {
		statsCalls.Add(1)
		return engine.Status{Pending: 7, OldestPendingAge: 1500 * time.Millisecond, DeadLetters: 2}, nil
	}})

	ms := sdk.metrics(t)
	_, ok := ms[tracing.MetricInstances]
	require.False(t, ok, "no live-instances value before the coordinator reported one")

	for _, e := range []engine.Event{
		{Kind: engine.EventLeaseAcquired, Partition: 0},
		{Kind: engine.EventLeaseAcquired, Partition: 1},
		{Kind: engine.EventLeaseAcquired, Partition: 2},
		{Kind: engine.EventLeaseReleased, Partition: 1},
		{Kind: engine.EventLeaseLost, Partition: 2},
		{Kind: engine.EventInstancesChanged, Count: 3},
		{Kind: engine.EventDelivered, Topic: "a", Key: "k1", RecordID: 1, Duration: 2 * time.Millisecond, Lag: time.Second},
		{Kind: engine.EventDelivered, Topic: "a", Key: "k2", RecordID: 2, Duration: 2 * time.Millisecond, Lag: 3 * time.Second},
		{Kind: engine.EventDelivered, Topic: "b", Key: "k3", RecordID: 3, Duration: 2 * time.Millisecond, Lag: time.Second},
		{Kind: engine.EventFailed, Topic: "b", Key: "k4", RecordID: 4, Duration: time.Millisecond},
		{Kind: engine.EventFailed, Topic: "b", Key: "k4", RecordID: 4}, // cancelled before publishing
		{Kind: engine.EventDeadLettered, Topic: "b", Key: "k4", RecordID: 4, Duration: time.Millisecond},
		{Kind: engine.EventActorRestarted},
		{Kind: engine.EventBatchFetched, Count: 10},
	} {
		obs.ObserveEvent(e)
	}

	ms = sdk.metrics(t)
	require.Equal(t, 2.0, value(t, ms, tracing.MetricDelivered, "topic=a"))
	require.Equal(t, 1.0, value(t, ms, tracing.MetricDelivered, "topic=b"))
	require.Equal(t, 2.0, value(t, ms, tracing.MetricFailures, "topic=b"))
	require.Equal(t, 1.0, value(t, ms, tracing.MetricDeadLettered, "topic=b"))
	require.Equal(t, 2.0, value(t, ms, tracing.MetricDuration, "topic=a"))
	require.Equal(t, 3.0, value(t, ms, tracing.MetricDuration, "topic=b"), "every publish, not the cancelled attempt")
	require.Equal(t, 2.0, value(t, ms, tracing.MetricLag, "topic=a"))
	for _, p := range points(t, ms[tracing.MetricLag]) {
		if p.attrs == "topic=a" {
			require.InDelta(t, 4.0, p.sum, 1e-9, "lag in seconds")
		}
	}
	require.Equal(t, 1.0, value(t, ms, tracing.MetricOwned, ""))
	require.Equal(t, 3.0, value(t, ms, tracing.MetricLeaseAcquired, ""))
	require.Equal(t, 1.0, value(t, ms, tracing.MetricLeaseLost, ""))
	require.Equal(t, 3.0, value(t, ms, tracing.MetricInstances, ""))
	require.Equal(t, 1.0, value(t, ms, tracing.MetricRestarts, ""))
	require.Equal(t, 7.0, value(t, ms, tracing.MetricBacklog, ""))
	require.Equal(t, 1.5, value(t, ms, tracing.MetricOldestAge, ""))
	require.Equal(t, 2.0, value(t, ms, tracing.MetricDeadLetters, ""))
	require.Equal(t, int32(1), statsCalls.Load(), "the second collection reuses the first result (5s cache)")

	// Only low-cardinality labels: topic, never key or record id.
	for name, m := range ms {
		for _, p := range points(t, m) {
			require.Regexp(t, `^(topic=[a-z]+)?$`, p.attrs, name)
		}
	}

	require.NoError(t, obs.Close())
	ms = sdk.metrics(t)
	_, ok = ms[tracing.MetricBacklog]
	require.False(t, ok, "Close unregisters the gauges")
	require.Equal(t, int32(1), statsCalls.Load())
	require.NoError(t, obs.Close(), "a second Close is harmless")
}

// The W3C fast path keeps the stored tracestate and baggage: the delivery
// span inherits the writer's tracestate, the message carries both, and the
// publish context has the baggage. A Config.Propagator of the application's
// goes through the propagator instead, with the same result for W3C.
func TestStartAttemptCarriesTraceStateAndBaggage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		prop propagation.TextMapPropagator
	}{
		{"default", nil},
		{"application propagator", propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sdk := newSDK(t)
			obs := sdk.observer(t, tracing.Config{Propagator: tc.prop})

			ts, err := trace.ParseTraceState("vendor=abc")
			require.NoError(t, err)
			bag, err := baggage.Parse("tenant=acme")
			require.NoError(t, err)
			wctx, wspan := sdk.tp.Tracer("app").Start(context.Background(), "write")
			wctx = trace.ContextWithSpanContext(wctx, wspan.SpanContext().WithTraceState(ts))
			wctx = baggage.ContextWithBaggage(wctx, bag)
			md := map[string]string{}
			obs.InjectWrite(wctx, md)
			wspan.End()
			require.Equal(t, "tenant=acme", md["baggage"])

			a, msg := attempt(md, 1)
			ctx, finish := obs.StartAttempt(context.Background(), a, msg)
			finish.FinishAttempt(engine.AttemptResult{Outcome: engine.OutcomeDelivered})

			s := sdk.spansNamed("publish orders")[0]
			require.Equal(t, wspan.SpanContext().SpanID(), s.Parent().SpanID())
			require.Equal(t, "vendor=abc", s.SpanContext().TraceState().String())
			require.Equal(t, s.SpanContext().SpanID(), traceparentOf(msg.Metadata).SpanID())
			require.Equal(t, "vendor=abc", msg.Metadata["tracestate"])
			require.Equal(t, "tenant=acme", msg.Metadata["baggage"])
			require.Equal(t, "acme", baggage.FromContext(ctx).Member("tenant").Value())
		})
	}
}

// A malformed stored traceparent is ignored: the attempt's span is a root,
// and the message carries the span's valid traceparent.
func TestStartAttemptIgnoresAMalformedTraceparent(t *testing.T) {
	t.Parallel()
	sdk := newSDK(t)
	obs := sdk.observer(t, tracing.Config{})
	a, msg := attempt(map[string]string{"traceparent": "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01"}, 1)
	_, finish := obs.StartAttempt(context.Background(), a, msg)
	finish.FinishAttempt(engine.AttemptResult{Outcome: engine.OutcomeDelivered})
	s := sdk.spansNamed("publish orders")[0]
	require.False(t, s.Parent().IsValid())
	require.Equal(t, s.SpanContext().SpanID(), traceparentOf(msg.Metadata).SpanID())
}

// With the SDK's default ParentBased sampler, a record written under an
// unsampled span has an unsampled attempt: no span, the writer's context
// stays on the message, and the publish context is in the writer's trace.
func TestStartAttemptOfAnUnsampledWriterIsSampledOut(t *testing.T) {
	t.Parallel()
	sdk := newSDK(t)
	obs := sdk.observer(t, tracing.Config{})
	stored := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
	a, msg := attempt(map[string]string{"traceparent": stored}, 1)
	ctx, finish := obs.StartAttempt(context.Background(), a, msg)
	finish.FinishAttempt(engine.AttemptResult{Outcome: engine.OutcomeDelivered})
	require.Empty(t, sdk.spans.GetSpans())
	require.Equal(t, stored, msg.Metadata["traceparent"])
	require.Equal(t, "0af7651916cd43dd8448eb211c80319c", trace.SpanContextFromContext(ctx).TraceID().String())
	require.False(t, trace.SpanContextFromContext(ctx).IsSampled())
}
