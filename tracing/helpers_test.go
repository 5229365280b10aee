package tracing_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/postrelay/postrelay/tracing"
)

// otelSDK is an in-memory span exporter and a manual metric reader.
type otelSDK struct {
	spans  *tracetest.InMemoryExporter
	tp     *sdktrace.TracerProvider
	reader *sdkmetric.ManualReader
	mp     *sdkmetric.MeterProvider
}

func newSDK(t testing.TB, opts ...sdktrace.TracerProviderOption) *otelSDK {
	t.Helper()
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(append([]sdktrace.TracerProviderOption{sdktrace.WithSyncer(spans)}, opts...)...)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() {
		_ = tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})
	return &otelSDK{spans: spans, tp: tp, reader: reader, mp: mp}
}

func (s *otelSDK) observer(t testing.TB, cfg tracing.Config) *tracing.Observer {
	t.Helper()
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = s.tp
	}
	if cfg.MeterProvider == nil {
		cfg.MeterProvider = s.mp
	}
	obs, err := tracing.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, obs.Close()) })
	return obs
}

// spansNamed returns the ended spans with the given name, in end order.
func (s *otelSDK) spansNamed(name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, sp := range s.spans.GetSpans().Snapshots() {
		if sp.Name() == name {
			out = append(out, sp)
		}
	}
	return out
}

// metrics collects every metric, by name.
func (s *otelSDK) metrics(t testing.TB) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, s.reader.Collect(context.Background(), &rm))
	out := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

// point is one data point reduced to what the tests compare: its
// attributes, and its value (sum, gauge) or count (histogram).
type point struct {
	attrs string
	value float64
	sum   float64 // histograms
}

func points(t testing.TB, m metricdata.Metrics) []point {
	t.Helper()
	var out []point
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		for _, p := range d.DataPoints {
			out = append(out, point{attrs: p.Attributes.Encoded(attribute.DefaultEncoder()), value: float64(p.Value)})
		}
	case metricdata.Gauge[int64]:
		for _, p := range d.DataPoints {
			out = append(out, point{attrs: p.Attributes.Encoded(attribute.DefaultEncoder()), value: float64(p.Value)})
		}
	case metricdata.Gauge[float64]:
		for _, p := range d.DataPoints {
			out = append(out, point{attrs: p.Attributes.Encoded(attribute.DefaultEncoder()), value: p.Value})
		}
	case metricdata.Histogram[float64]:
		for _, p := range d.DataPoints {
			out = append(out, point{attrs: p.Attributes.Encoded(attribute.DefaultEncoder()), value: float64(p.Count), sum: p.Sum})
		}
	default:
		t.Fatalf("metric %s: unexpected data %T", m.Name, m.Data)
	}
	return out
}

// value is the single data point's value (or histogram count) of metric
// name with the given attributes ("" for none, "topic=t" for a topic).
func value(t testing.TB, ms map[string]metricdata.Metrics, name, attrs string) float64 {
	t.Helper()
	m, ok := ms[name]
	require.True(t, ok, "metric %s not reported", name)
	for _, p := range points(t, m) {
		if p.attrs == attrs {
			return p.value
		}
	}
	t.Fatalf("metric %s has no point with attributes %q: %+v", name, attrs, points(t, m))
	return 0
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

func spanAttrs(s sdktrace.ReadOnlySpan) map[string]any {
	m := map[string]any{}
	for _, kv := range s.Attributes() {
		m[string(kv.Key)] = kv.Value.AsInterface()
	}
	return m
}
