package tracing

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/postrelay/postrelay/engine"
)

// Defaults and limits of Config.
const (
	// SystemDefault is the messaging.system attribute when Config.System is
	// empty: postrelay publishes through a Watermill publisher.
	SystemDefault = "watermill"
	// StatsIntervalDefault is how long a Stats result is reused.
	StatsIntervalDefault = 5 * time.Second
	// StatsTimeoutDefault bounds one Stats call.
	StatsTimeoutDefault = 5 * time.Second
	// SystemMaxLen is the longest accepted Config.System.
	SystemMaxLen = 64
)

// Config configures an Observer. The zero value is valid: global providers,
// W3C propagation, no backlog gauges.
type Config struct {
	// TracerProvider creates the delivery spans. A noop provider
	// (go.opentelemetry.io/otel/trace/noop) turns spans off, and StartAttempt
	// then costs nothing. Defaults to the global provider
	// (otel.GetTracerProvider), read when New is called.
	TracerProvider trace.TracerProvider

	// MeterProvider creates the metric instruments. Defaults to the global
	// provider (otel.GetMeterProvider), read when New is called.
	MeterProvider metric.MeterProvider

	// Propagator writes the writer's trace context into record metadata and
	// the delivery span's context into outgoing message metadata. It is not
	// the global propagator, which is a no-op until an application sets
	// one. Defaults to W3C Trace Context plus W3C Baggage, which StartAttempt
	// then reads and writes itself, without the propagator (same headers,
	// fewer allocations); any Propagator set here is used as it is.
	Propagator propagation.TextMapPropagator

	// System is the messaging.system attribute of delivery spans: the broker
	// behind the Watermill publisher, such as "kafka" or "rabbitmq".
	// Defaults to "watermill".
	System string

	// Stats, when set, feeds the backlog gauges (pending records, oldest
	// pending age, dead letters). engine.NewAdmin(pool, cfg).Status fits. It
	// is called from metric collection, at most once per StatsInterval and
	// never twice at once. Defaults to nil: no backlog gauges.
	Stats func(ctx context.Context) (engine.Status, error)

	// StatsInterval is how long a Stats result (or failure) is reused.
	// Defaults to 5s.
	StatsInterval time.Duration

	// StatsTimeout bounds one Stats call. Defaults to 5s.
	StatsTimeout time.Duration

	// Logger reports Stats failures. Defaults to discarding.
	Logger *slog.Logger
}

// WithDefaults returns a copy of c with every unset field filled in.
func (c Config) WithDefaults() Config {
	if c.TracerProvider == nil {
		c.TracerProvider = otel.GetTracerProvider()
	}
	if c.MeterProvider == nil {
		c.MeterProvider = otel.GetMeterProvider()
	}
	if c.Propagator == nil {
		c.Propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	c.System = cmp.Or(c.System, SystemDefault)
	c.StatsInterval = cmp.Or(c.StatsInterval, StatsIntervalDefault)
	c.StatsTimeout = cmp.Or(c.StatsTimeout, StatsTimeoutDefault)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports the first invalid field of c, naming it and its value.
// Call it on a Config with defaults (New does both).
func (c Config) Validate() error {
	bad := func(field string, value any, why string) error {
		return fmt.Errorf("%w: %s = %v: %s", ErrInvalidConfig, field, value, why)
	}
	switch {
	case c.TracerProvider == nil:
		return bad("TracerProvider", nil, "must be set (WithDefaults uses the global one)")
	case c.MeterProvider == nil:
		return bad("MeterProvider", nil, "must be set (WithDefaults uses the global one)")
	case c.Propagator == nil:
		return bad("Propagator", nil, "must be set")
	case c.System == "" || len(c.System) > SystemMaxLen:
		return bad("System", fmt.Sprintf("%q", c.System), fmt.Sprintf("must be 1 to %d bytes", SystemMaxLen))
	case c.StatsInterval <= 0:
		return bad("StatsInterval", c.StatsInterval, "must be positive")
	case c.StatsTimeout <= 0:
		return bad("StatsTimeout", c.StatsTimeout, "must be positive")
	}
	return nil
}
