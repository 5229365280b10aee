package tracing_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/tracing"
)

// discard is a span exporter that drops everything, so the benchmark
// measures span creation and export hand-off, not an exporter.
type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }

// BenchmarkStartAttempt measures what the Observer adds to one delivery
// attempt (StartAttempt, then FinishAttempt), with tracing off
// (noop provider: the engine's cost with metrics only), sampled out,
// recorded and exported synchronously, and recorded and batched as
// `postrelay run` does (blocking, so that no span is dropped), for records
// written without a span, with a sampled one, and with an unsampled one.
func BenchmarkStartAttempt(b *testing.B) {
	mp := sdkmetric.NewMeterProvider()
	defer func() { _ = mp.Shutdown(context.Background()) }()
	for _, pc := range []struct {
		name string
		tp   trace.TracerProvider
	}{
		{"spans_off", noop.NewTracerProvider()},
		{"sampled_out", sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()))},
		{"recorded", sdktrace.NewTracerProvider(sdktrace.WithSyncer(discard{}))},
		{"batched", sdktrace.NewTracerProvider(sdktrace.WithBatcher(discard{}, sdktrace.WithBlocking()))},
	} {
		obs, err := tracing.New(tracing.Config{TracerProvider: pc.tp, MeterProvider: mp})
		require.NoError(b, err)
		for _, w := range []struct{ name, traceparent string }{
			{"untraced_writer", ""},
			{"traced_writer", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
			// Sampled out by the SDK's default ParentBased sampler.
			{"unsampled_writer", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"},
		} {
			b.Run(pc.name+"/"+w.name, func(b *testing.B) {
				stored := map[string]string{}
				if w.traceparent != "" {
					stored["traceparent"] = w.traceparent
				}
				md := make(message.Metadata, 8)
				msg := message.NewMessage("0192d7a4-6c1e-7cc0-8f35-1b9f1a2f6c11", []byte(`{"order":1}`))
				a := engine.Attempt{Partition: 7, RecordID: 123456, Key: "customer-42", Topic: "orders",
					MessageID: msg.UUID, Attempt: 1, CreatedAt: time.Now()}
				ctx := context.Background()
				b.ReportAllocs()
				defer cpuPerOp(b)()
				for b.Loop() {
					clear(md)
					for k, v := range stored {
						md[k] = v
					}
					msg.Metadata, a.Metadata = md, md
					_, finish := obs.StartAttempt(ctx, a, msg)
					finish.FinishAttempt(engine.AttemptResult{Outcome: engine.OutcomeDelivered, Duration: time.Millisecond})
				}
			})
		}
		require.NoError(b, obs.Close())
		if sdk, ok := pc.tp.(*sdktrace.TracerProvider); ok {
			require.NoError(b, sdk.Shutdown(context.Background()))
		}
	}
}

// BenchmarkObserveEvent measures the metrics recorded for one delivered
// record (counter, two histograms).
func BenchmarkObserveEvent(b *testing.B) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	defer func() { _ = mp.Shutdown(context.Background()) }()
	obs, err := tracing.New(tracing.Config{TracerProvider: noop.NewTracerProvider(), MeterProvider: mp})
	require.NoError(b, err)
	defer func() { _ = obs.Close() }()
	e := engine.Event{Kind: engine.EventDelivered, Topic: "orders", Key: "customer-42", RecordID: 123456,
		Duration: time.Millisecond, Lag: 20 * time.Millisecond}
	b.ReportAllocs()
	for b.Loop() {
		obs.ObserveEvent(e)
	}
}

// BenchmarkSpanFloor measures what the OpenTelemetry SDK itself costs per
// span on the "recorded" and "batched" providers of BenchmarkStartAttempt,
// without postrelay: a PRODUCER span started under an already extracted
// parent and ended, with no attributes, and with the same number of
// attributes as a delivered attempt's span (11), precomputed and set in one
// call. The difference between BenchmarkStartAttempt/recorded/traced_writer
// and recorded/11_attributes here is what postrelay adds.
func BenchmarkSpanFloor(b *testing.B) {
	for _, pc := range []struct {
		name string
		tp   *sdktrace.TracerProvider
	}{
		{"recorded", sdktrace.NewTracerProvider(sdktrace.WithSyncer(discard{}))},
		{"batched", sdktrace.NewTracerProvider(sdktrace.WithBatcher(discard{}, sdktrace.WithBlocking()))},
	} {
		b.Run(pc.name, func(b *testing.B) { spanFloor(b, pc.tp.Tracer(tracing.ScopeName)) })
		require.NoError(b, pc.tp.Shutdown(context.Background()))
	}
}

func spanFloor(b *testing.B, tracer trace.Tracer) {
	tid, _ := trace.TraceIDFromHex("0af7651916cd43dd8448eb211c80319c")
	sid, _ := trace.SpanIDFromHex("b7ad6b7169203331")
	parent := trace.ContextWithRemoteSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true}))
	kind := trace.WithSpanKind(trace.SpanKindProducer)
	attrs := []attribute.KeyValue{
		attribute.String("messaging.system", "watermill"),
		attribute.String("messaging.operation.type", "send"),
		attribute.String("messaging.operation.name", "publish"),
		attribute.String("messaging.destination.name", "orders"),
		attribute.String("messaging.message.id", "0192d7a4-6c1e-7cc0-8f35-1b9f1a2f6c11"),
		attribute.Int("messaging.message.body.size", 11),
		attribute.Int("postrelay.partition", 7),
		attribute.Int("postrelay.attempt", 1),
		attribute.Int64("postrelay.record_id", 123456),
		attribute.String("postrelay.key", "customer-42"),
		attribute.String("postrelay.outcome", "delivered"),
	}
	b.Run("no_attributes", func(b *testing.B) {
		b.ReportAllocs()
		defer cpuPerOp(b)()
		for b.Loop() {
			_, span := tracer.Start(parent, "publish orders", kind)
			span.End()
		}
	})
	b.Run("11_attributes", func(b *testing.B) {
		b.ReportAllocs()
		defer cpuPerOp(b)()
		for b.Loop() {
			_, span := tracer.Start(parent, "publish orders", kind)
			span.SetAttributes(attrs...)
			span.End()
		}
	})
}
